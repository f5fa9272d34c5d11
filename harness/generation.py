"""Text generation behind one small interface.

Callers hand a backend chat-formatted prompts and get texts back; they never touch
`model.generate` directly, so a vLLM backend (GPU machines) plugs in without changing callers.

    backend = HFBackend(model, tokenizer, batch_size=8)
    outs = backend.generate(["Hello"], GenerationSettings(max_new_tokens=64))
"""

from __future__ import annotations

import inspect
import time
from dataclasses import asdict, dataclass
from typing import Callable, Protocol, Sequence

from .hashing import hash_text


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 1024
    temperature: float = 0.0        # 0 = greedy (the paper's evaluation)
    top_p: float = 1.0
    seed: int = 0
    chat_template: bool = True      # wrap each prompt as one user turn, no system message

    def key(self) -> dict:
        return asdict(self)


# Bump when a change to the decoding code can change what a given model generates (e.g. 230515a moved
# greedy decoding from `generate`, which applied a model's generation_config, to `greedy_pruned`).
DECODER_VERSION = 2


def decoder_id(settings: GenerationSettings, backend: str = "hf") -> str:
    """The decoding implementation behind an output; part of every tool-use evaluation's cache key,
    so outputs cached under an older decoder are recomputed rather than reused as if current."""
    if backend == "hf":
        how = "sample-generate" if settings.temperature > 0 else "greedy-pruned"
    else:
        how = "sample" if settings.temperature > 0 else "greedy"
    return f"{backend}.{how}/{DECODER_VERSION}"


@dataclass
class Generation:
    text: str
    n_prompt_tokens: int
    n_new_tokens: int


class Backend(Protocol):
    name: str

    def generate(self, prompts: Sequence[str], settings: GenerationSettings,
                 on_batch: Callable[[int, list[Generation]], None] | None = None) -> list[Generation]:
        """Generate one completion per prompt; `on_batch(start_index, outputs)` after each batch."""


def render_chat(tokenizer, prompt: str, use_template: bool = True) -> str:
    """The single-user-turn chat rendering used by evaluation and training alike."""
    if not use_template:
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        from .errors import ModelError

        raise ModelError("the tokenizer has no chat template; pass chat_template=False for a base model")
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


class HFBackend:
    """Batched with left padding, sorted by length to cut padding.

    Greedy decoding (the evaluation setting) runs `greedy_pruned`, which drops finished rows;
    sampling uses transformers `generate`.
    """

    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 8, autocast_bf16: bool = False):
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size
        self.autocast_bf16 = autocast_bf16
        self.tok.padding_side = "left"

    def generate(self, prompts, settings, on_batch=None):
        import torch

        texts = [render_chat(self.tok, p, settings.chat_template) for p in prompts]
        enc = [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -len(enc[i]))
        out: list[Generation | None] = [None] * len(texts)
        device = next(self.model.parameters()).device
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        for b in range(0, len(order), self.batch_size):
            idx = order[b:b + self.batch_size]
            batch = self.tok.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt").to(device)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                 enabled=self.autocast_bf16):
                if settings.temperature > 0:
                    # seeded by the batch's own prompts, so a sample does not depend on which call
                    # or offset the batch arrived in (evaluate() sends one batch per call)
                    torch.manual_seed(settings.seed + int(hash_text("\x00".join(texts[i] for i in idx))[:8], 16))
                    gen = self.model.generate(**batch, max_new_tokens=settings.max_new_tokens,
                                              pad_token_id=self.tok.pad_token_id, eos_token_id=eos,
                                              do_sample=True, temperature=settings.temperature,
                                              top_p=settings.top_p)
                    rows = [r.tolist() for r in gen[:, batch["input_ids"].shape[1]:]]
                else:
                    rows = greedy_pruned(self.model, batch["input_ids"], batch["attention_mask"],
                                         settings.max_new_tokens, eos)
            res = []
            for ids, i in zip(rows, idx):
                n = len(ids)
                while n and ids[n - 1] == self.tok.pad_token_id:
                    n -= 1
                text = self.tok.decode(ids[:n], skip_special_tokens=True)
                res.append(Generation(text, len(enc[i]), n))
                out[i] = res[-1]
            if on_batch:
                on_batch(b, res)
        return out  # type: ignore[return-value]


def greedy_pruned(model, input_ids, attention_mask, max_new_tokens: int, eos_token_id) -> list[list[int]]:
    """Greedy decoding that drops each row from the batch (and its KV cache) once it emits EOS.

    Why not `model.generate`: it keeps finished rows in the batch until the longest one ends, so at
    the paper's 1024-token budget one long "Thought" makes every row of its batch pay for 1024 steps.
    vLLM fixes this with continuous batching on GPUs; on CPUs this loop is the cheap equivalent.
    The per-row computation is the one `generate` does (left padding, positions from the attention
    mask, last-position logits, argmax), so outputs match it (tested against `generate`). It is pure
    greedy, as the paper evaluates: no repetition penalty or other processors from a model's
    generation_config.
    Returns each row's new token ids, EOS included when it was produced.
    """
    import torch
    from transformers import DynamicCache

    eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
    n = input_ids.shape[0]
    out: list[list[int]] = [[] for _ in range(n)]
    if max_new_tokens <= 0:
        return out
    alive = list(range(n))
    mask = attention_mask
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    # transformers renamed `past_key_values` to `cache` within 5.x; an unknown name would be swallowed by
    # **kwargs and silently decode without the cache, so pick the name the model declares.
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    cache_kw = "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=True,
                   **{cache_kw: cache}, logits_to_keep=1).logits[:, -1]
    next_pos = pos[:, -1:] + 1
    for step in range(max_new_tokens):
        tok = logits.argmax(-1)
        keep = []
        for j, (r, t) in enumerate(zip(alive, tok.tolist())):
            out[r].append(t)
            if t not in eos:
                keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(alive):
            sel = torch.tensor(keep, device=tok.device)
            cache.batch_select_indices(sel)
            alive = [alive[j] for j in keep]
            tok, mask, next_pos = tok[sel], mask[sel], next_pos[sel]
        mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        logits = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos,
                       use_cache=True, logits_to_keep=1, **{cache_kw: cache}).logits[:, -1]
        next_pos = next_pos + 1
    return out


class VLLMBackend:
    """vLLM generation for GPU machines (needs a model *path*; install `vllm` separately)."""

    name = "vllm"

    def __init__(self, model_path: str, tokenizer, **engine_kwargs):
        try:
            from vllm import LLM
        except ImportError:
            from .errors import ModelError

            raise ModelError("backend 'vllm' requested but vllm is not installed (pip install vllm)") from None
        self.llm = LLM(model=model_path, **engine_kwargs)
        self.tok = tokenizer

    def generate(self, prompts, settings, on_batch=None):
        from vllm import SamplingParams

        texts = [render_chat(self.tok, p, settings.chat_template) for p in prompts]
        sp = SamplingParams(max_tokens=settings.max_new_tokens, temperature=settings.temperature,
                            top_p=settings.top_p, seed=settings.seed)
        res = self.llm.generate(texts, sp)
        out = [Generation(r.outputs[0].text, len(r.prompt_token_ids), len(r.outputs[0].token_ids))
               for r in res]
        if on_batch:
            on_batch(0, out)
        return out


def timed(fn, *a, **kw):
    t = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t
