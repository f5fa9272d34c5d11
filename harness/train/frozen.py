"""Frozen base weights of a LoRA run, stored in the dtype autocast computes them in.

Under bf16 autocast every `nn.Linear` casts its fp32 weight (and bias) to bf16 at each call. For
frozen weights that cast is pure waste: it allocates and fills a bf16 copy of each matrix on every
forward, which on a CPU costs more than the matmul of a decode step (an 896x4864 projection of two
tokens: 3.9 ms with the cast, 0.8 ms without), and it keeps the fp32 original resident (a 0.5B
model's projections are 1.4 GB in fp32, 0.7 GB in bf16). Storing them in bf16 once gives the
same numbers: autocast rounds fp32 to bf16 the same way (round to nearest even), and a bf16 tensor
passes through its cast unchanged.

What stays in fp32, because some op uses it outside autocast: the input embeddings (a lookup, not
autocast), the norms, the output head (the SDFT student's chunked head runs on fp32 hidden states
without autocast, see `losses.chunked_divergence`) and every LoRA factor (trained, or averaged by
the EMA teacher, where bf16 would lose small updates).

The loader maps the checkpoint file into memory and the weights are views of that mapping; a page
read from it counts in the resident set for as long as the mapping lives, which is as long as any
tensor (the embeddings, say) still refers to the file. So after copying a projection to bf16,
the pages that lie wholly inside its fp32 original are released (`madvise(MADV_DONTNEED)`: clean
file pages, re-read from the page cache should anything touch them again). Only pages of a
mapped `*.safetensors` file are released, never anonymous memory; elsewhere (no /proc, not
Linux) nothing is released and the conversion still holds.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import torch

_MADV_DONTNEED = 4


def _checkpoint_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of safetensors files (Linux), else []."""
    try:
        lines = open("/proc/self/maps").read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].endswith(".safetensors"):
            a, b = parts[0].split("-")
            out.append((int(a, 16), int(b, 16)))
    return out


def _release_pages(t: torch.Tensor, mappings: list[tuple[int, int]]) -> int:
    """Drop the resident pages wholly inside `t`'s bytes when they belong to a mapped checkpoint
    file; returns the bytes released."""
    if t.device.type != "cpu" or not mappings or not sys.platform.startswith("linux"):
        return 0
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    if not any(a <= start and end <= b for a, b in mappings):
        return 0
    page = mmap.PAGESIZE
    a, b = -(-start // page) * page, end // page * page
    if b <= a:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return b - a if libc.madvise(a, b - a, _MADV_DONTNEED) == 0 else 0


def store_frozen_linears(model, dtype: torch.dtype = torch.bfloat16) -> tuple[int, int]:
    """Convert the frozen base projections of `model` to `dtype` in place, releasing the file pages
    of their originals. Returns (weight matrices converted, bytes of file pages released).

    Call it only when every forward of these weights runs under autocast to `dtype`."""
    head = model.get_output_embeddings()
    keep = {id(model.get_input_embeddings().weight)} | ({id(head.weight)} if head is not None else set())
    mappings = _checkpoint_mappings()
    # original -> copy, so a weight shared by several modules is converted once (the original is
    # held here until the end, so its id cannot be reused by another tensor meanwhile)
    done: dict[int, tuple[torch.Tensor, torch.nn.Parameter]] = {}
    released = 0
    with torch.no_grad():
        for name, mod in model.named_modules():
            if type(mod) is not torch.nn.Linear or "lora_" in name or mod.weight.requires_grad:
                continue
            if id(mod.weight) in keep:
                continue
            for attr in ("weight", "bias"):
                old = getattr(mod, attr)
                if old is None or old.dtype == dtype:
                    continue
                if id(old) not in done:
                    done[id(old)] = (old, torch.nn.Parameter(old.to(dtype), requires_grad=False))
                    released += _release_pages(old, mappings)
                setattr(mod, attr, done[id(old)][1])
    return sum(1 for _, new in done.values() if new.dim() == 2), released
