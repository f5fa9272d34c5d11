"""Content hashes that key every cached artefact.

A cache key must change whenever anything that could change the result changes: the weights,
the data, the prompt/arm, the generation settings, the decoder version and the scorer version.
Hashing weights costs about a second per GB on this CPU, so model hashes are memoised per object.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def stable_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def hash_obj(obj: Any, n: int = 16) -> str:
    """Short sha256 of a JSON-serialisable object (key order does not matter)."""
    return hashlib.sha256(stable_json(obj).encode()).hexdigest()[:n]


def hash_text(text: str, n: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def hash_file(path: str | Path, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def hash_model(model) -> str:
    """Hash of every parameter and buffer (names, dtypes, shapes, bytes), memoised on the object.

    The memo is invalidated by `forget_model_hash` after training steps change the weights.
    """
    cached = getattr(model, "_harness_weights_hash", None)
    if cached:
        return cached
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    digest = h.hexdigest()[:16]
    try:
        model._harness_weights_hash = digest
    except Exception:  # pragma: no cover - exotic wrappers
        pass
    return digest


def forget_model_hash(model) -> None:
    """Drop memoised hashes after the weights changed (wrappers such as PeftModel forward
    attribute reads to the wrapped model, so clear every level)."""
    seen = set()
    while model is not None and id(model) not in seen:
        seen.add(id(model))
        model.__dict__.pop("_harness_weights_hash", None)
        model = model.__dict__.get("base_model") or model.__dict__.get("_modules", {}).get("base_model") \
            or model.__dict__.get("_modules", {}).get("model")
