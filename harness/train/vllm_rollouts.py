"""SDFT rollouts sampled by a vLLM engine colocated with the trainer (`rollout_backend: vllm`).

Why: sampling is most of an SDFT step (`gen_s`; on one H200, 5.7 of a 6.1 s step with HF `generate`,
README), and the public SDFT implementations sample with vLLM. Its speed here against the trainer's
own sampler is not measured yet (benchmarks/bench_vllm_rollouts.py). The samples must still be the
current student's, so each step the student's LoRA adapter as it is *now* reaches the engine:

- one engine per run (created at the first rollout, on the run's base model folder, LoRA enabled
  with a rank covering `lora_r`, in the training compute dtype: bf16 under bf16 autocast, else fp32);
- when the weights have changed (a new optimizer step), the adapter is saved (peft, safetensors) to a
  scratch folder under the run's output folder and served under a new LoRA id, because vLLM caches
  adapters by id; the previous adapter is unloaded and its folder deleted;
- prompts go in as the trainer's own token ids (`TokensPrompt`), so the engine never re-tokenises,
  and the sampled ids come back as ids, which the trainer scores as they are;
- sampling is the policy's: temperature, top-p, top-k only when set, no penalties, no
  generation_config defaults, stops at the trainer's EOS ids; each row is one request with its own
  seed, the same per-row seed the trainer's own sampler uses (`Rollouts.row_seeds`: a function of
  seed, step and row), so a resumed run asks for what an uninterrupted one did;
- the engine also reports each sampled token's log-probability under its own weights (raw
  log-softmax, before temperature), for an importance correction of the small mismatch between
  its kernels and the trainer's.

Full fine-tuning is refused by the config (it would need the whole weight set pushed each step).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError
from .batches import right_pad
from .config import TrainConfig

# On GPUs the engine shares the device with the trainer (weights, optimizer state, activations), so it
# takes a bounded share of device memory instead of vLLM's default 0.9.
COLOCATED_GPU_MEMORY_UTILIZATION = 0.3


@dataclass
class RolloutBatch:
    ids: torch.Tensor            # B x L right-padded completion ids (EOS kept where produced)
    mask: torch.Tensor           # B x L, 1 on completion tokens
    logprobs: torch.Tensor       # B x L float32, the engine's log-prob of each sampled token, 0 on padding
    prompt_ids: list[list[int]]  # the prompt ids the engine reports it decoded from


def clipped_importance_weights(student_logprobs: torch.Tensor, engine_logprobs: torch.Tensor,
                               cap: float) -> torch.Tensor:
    """Per-token weights min(p_student(y) / p_engine(y), cap), detached (`vllm_is_cap`).

    The engine's kernels (and bf16 rounding) make its distribution differ slightly from the student's,
    so its samples are slightly off-policy; weighting each token's loss by the ratio corrects that,
    and the cap keeps a token the engine found unlikely from dominating the step. Both log-probs are
    raw log-softmax (before temperature), which is the sampling distribution at temperature 1 with
    no top-p/top-k cut."""
    return torch.exp(student_logprobs.detach().float() - engine_logprobs.float()).clamp(max=cap)


class VLLMRollouts:
    """The colocated engine of one training run (one process) and the adapter it currently serves."""

    def __init__(self, cfg: TrainConfig, tokenizer, scratch_dir: str | Path, eos_ids):
        if cfg.rollout_backend != "vllm" or not cfg.lora:
            raise ConfigError("train.rollout_backend: VLLMRollouts needs rollout_backend 'vllm' with lora: true")
        self.cfg, self.tok = cfg, tokenizer
        self.scratch = Path(scratch_dir)
        self.eos = sorted(int(i) for i in eos_ids)
        self.max_tokens = cfg.max_rollout_tokens or cfg.max_completion_tokens
        self.backend = None
        self.lora = None
        self.version = None  # the weights version the engine's adapter was saved at
        self.pushes = 0

    def _engine(self):
        if self.backend is None:
            from ..models import resolve, weights_dir
            from ..vllm_backend import VLLMBackend, on_cpu

            shutil.rmtree(self.scratch, ignore_errors=True)  # adapters left by an interrupted run
            ms = resolve(self.cfg.model)
            if ms.adapter:
                raise ConfigError(f"train.model: '{self.cfg.model}' is an adapter; rollout_backend 'vllm' "
                                  "serves the trained adapter on a base model folder (merge it first)")
            kw = {} if on_cpu() else {"gpu_memory_utilization": COLOCATED_GPU_MEMORY_UTILIZATION}
            self.backend = VLLMBackend(weights_dir(ms.path), self.tok, dtype="bfloat16" if self.cfg.bf16 else "float32",
                                       max_model_len=self.cfg.max_prompt_tokens + self.max_tokens,
                                       max_lora_rank=self.cfg.lora_r, seed=self.cfg.seed, **kw)
        return self.backend

    def push(self, model, version) -> None:
        """Serve `model`'s current 'default' adapter, unless it was already pushed at `version`
        (the trainer's step: the weights change only in the optimizer step)."""
        if self.lora is not None and version == self.version:
            return
        backend = self._engine()
        self.pushes += 1
        folder = self.scratch / f"adapter-{self.pushes:06d}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder, selected_adapters=["default"], safe_serialization=True)
        old = self.lora
        self.lora = backend.lora_request(str(folder))
        self.version = version
        if old is not None:
            backend.llm.llm_engine.remove_lora(old.lora_int_id)
            shutil.rmtree(old.lora_path, ignore_errors=True)

    def sampling_params(self, seed: int):
        from vllm import SamplingParams

        cfg = self.cfg
        return SamplingParams(max_tokens=self.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                              top_k=cfg.top_k or 0, min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0,
                              frequency_penalty=0.0, seed=seed, stop_token_ids=self.eos, ignore_eos=False,
                              detokenize=False, logprobs=0)

    def sample(self, model, version, prompts: list[list[int]], seeds: list[int]) -> RolloutBatch:
        """One completion per prompt (token ids) from the student's weights at `version`, row i
        sampled with seed `seeds[i]`."""
        from vllm.inputs import TokensPrompt

        self.push(model, version)
        backend = self._engine()
        params = [self.sampling_params(s) for s in seeds]
        res = backend.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                   lora_request=self.lora, use_tqdm=False)
        rows, lps = [], []
        for r in res:
            out = r.outputs[0]
            toks = list(out.token_ids)
            # each row ends at its first EOS (kept), as `sample_pruned`'s rows do
            cut = next((k + 1 for k, t in enumerate(toks) if t in self.eos), len(toks))
            toks = toks[:cut]
            rows.append(toks)
            lps.append([out.logprobs[k][t].logprob for k, t in enumerate(toks)])
        ids, mask = right_pad(rows, self.tok.pad_token_id)
        logprobs = torch.zeros(ids.shape, dtype=torch.float32)
        for i, lp in enumerate(lps):
            logprobs[i, :len(lp)] = torch.tensor(lp, dtype=torch.float32)
        return RolloutBatch(ids, mask, logprobs, [list(r.prompt_token_ids) for r in res])

    def close(self) -> None:
        """Stop the engine and delete the scratch adapters."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        self.lora = self.version = None
        shutil.rmtree(self.scratch, ignore_errors=True)
