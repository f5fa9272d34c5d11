"""One training loop for SFT and SDFT.

    harness train --method sdft --model smollm2-135m-instruct --split eval_real --skip-invalid --max-steps 2

Why a small accelerate loop and not `transformers.Trainer`: an SDFT step samples rollouts from the
student, scores them with a teacher that is a second LoRA adapter (or weight copy) updated by EMA
after every optimizer step, and computes a full-vocabulary divergence in chunks from hidden states.
Each of those fights Trainer's fixed step structure (TRL needs ~1,200 lines of overrides for it).
One loop keeps SFT and SDFT identical in everything but the loss: optimiser, schedule,
batching, precision, budget, logging and checkpointing are shared code.

Distributed: `accelerate launch --num_processes N` runs the same code. Each optimizer step takes
`batch_size` prompts, split into micro-batches of `micro_batch_size`; micro-batch j goes to process
j mod N, every rollout's seed depends only on (seed, step, its row in the step's batch), and
gradients are averaged over all micro-batches — so the update does not depend on N. By default
(`share_rollout_prefill`) each micro-batch's rollouts are sampled from the KV cache of the student's
own forward over its prompts, which saves the rollouts' prefill; otherwise a process samples all its
micro-batches' rollouts in one batch (one decode step at batch 4 costs far less than two at batch 2
on a CPU). Per-row random streams keep either from changing what is drawn with N.

Layout: this module holds setup and the optimizer step; the losses are in `objectives.py`, the
rollouts in `rollouts.py` (both mixins of `Run`), step accounting in `accounting.py`, and everything
a run writes (store rows, CSV, progress, checkpoints, the exported model) is a callback
(`callbacks.py`) over the output folder's functions (`checkpoint.py`).

Resume: checkpoints are written atomically every `save_every` steps (trainable weights, EMA teacher,
optimiser, scheduler, log); re-running the same command continues from the last one and ends with
the same weights as an uninterrupted run (data order and rollout seeds are functions of the step).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import ConfigError
from ..model_config import lora_target_problem, module_names
from . import checkpoint
from .accounting import PHASES, Phases, flops_estimate, n_params
from .batches import Example, encode_records
from .callbacks import TrainCallback, default_callbacks
from .config import TrainConfig
from .frozen import store_frozen_linears
from .objectives import HiddenStates, Objectives, check_prefill_sharing
from .rollouts import Rollouts
from .teacher import TeacherHandle


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path
    merged_dir: Path | None
    train_key: str
    steps: int
    totals: dict
    log: list[dict] = field(default_factory=list)
    resumed_from: int = 0


def _check_lora_targets(model, targets) -> None:
    """The loaded model's check: `harness run` and `harness train` check the targets against the
    config's module tree before anything runs (`harness.model_config`); this one also covers
    callers of `train()` and models whose config was not on the machine then."""
    problem = lora_target_problem(targets, module_names(model))
    if problem:
        raise ConfigError(f"train.lora_targets: {problem}")


class Run(Rollouts, Objectives):
    """State of one training run (one process): setup, the data order, the optimizer step."""

    def __init__(self, cfg: TrainConfig, records, output_dir: str | Path, data_hash: str, store=None,
                 progress: Callable[[int, int, dict], None] | None = None, model=None, tokenizer=None,
                 data_source: str = "data", skipped: list[dict] | None = None,
                 callbacks: list[TrainCallback] | None = None):
        """`callbacks` replaces the default side effects (`callbacks.default_callbacks`: `store`
        rows, `progress`, CSV, checkpoints and export); without checkpoints a run cannot resume."""
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.callbacks = callbacks if callbacks is not None else default_callbacks(cfg.save_every, store, progress)
        self.out = Path(output_dir)
        self.acc = Accelerator(cpu=not torch.cuda.is_available())
        self.P, self.rank = self.acc.num_processes, self.acc.process_index
        if cfg.batch_size % cfg.micro_batch_size:
            raise ConfigError(f"train.batch_size: {cfg.batch_size} is not a multiple of micro_batch_size "
                              f"{cfg.micro_batch_size}")
        self.n_micro = cfg.batch_size // cfg.micro_batch_size
        if self.n_micro % self.P:
            raise ConfigError(f"train.batch_size: {self.n_micro} micro-batches do not split over {self.P} processes")
        if cfg.rollout_backend == "vllm" and self.P > 1:
            # an in-process engine sets up torch.distributed for itself, which the processes' group already holds
            raise ConfigError(f"train.rollout_backend: 'vllm' runs with one training process, not {self.P} "
                              "(use rollout_backend: hf under accelerate launch)")
        set_seed(cfg.seed)
        from ..models import fingerprint, load_model

        if model is None:
            model, tokenizer = load_model(cfg.model, dtype="float32", device=str(self.acc.device))
            self.model_hash = fingerprint(cfg.model)
        else:
            from ..hashing import hash_model

            self.model_hash = hash_model(model)
            model.to(self.acc.device)
        self.tok = tokenizer
        self.data_hash = data_hash
        self.data_source = str(data_source)
        self.skipped = list(skipped or [])  # records the loader dropped (skip_invalid): kept in the metadata
        self.key = cfg.key(data_hash, self.model_hash)
        self.examples: list[Example] = encode_records(
            records, tokenizer, cfg.max_prompt_tokens, cfg.max_completion_tokens, cfg.method,
            cfg.teacher_template, cfg.truncate_teacher_prompt, data_source, task=cfg.task)
        if len(self.examples) < cfg.batch_size:
            raise ConfigError(f"train.batch_size: {cfg.batch_size} prompts per update but only "
                              f"{len(self.examples)} training examples")
        self.steps_per_epoch = len(self.examples) // cfg.batch_size
        self.total_steps = self.steps_per_epoch * cfg.epochs
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps) if cfg.max_steps <= self.total_steps \
                else cfg.max_steps  # max_steps beyond one pass keeps cycling epochs
        self.n_base_params = n_params(model)
        model.config.use_cache = False
        if cfg.lora:
            from peft import LoraConfig, get_peft_model

            _check_lora_targets(model, cfg.lora_targets)
            lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")
            model = get_peft_model(model, lcfg)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if cfg.lora:
                model.enable_input_require_grads()
        if cfg.lora and cfg.bf16:  # every forward of the frozen base runs under bf16 autocast
            store_frozen_linears(model, torch.bfloat16)
        if cfg.shares_rollout_prefill():
            check_prefill_sharing(model)
        self.model = model
        self.teacher = TeacherHandle(model, cfg.teacher, cfg.lora, need_initial=cfg.drift_every > 0) \
            if cfg.method == "sdft" else TeacherHandle(model, "live", cfg.lora, need_initial=cfg.drift_every > 0)
        params = [p for p in model.parameters() if p.requires_grad]
        self.trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_lambda)
        self.wrapped = self.acc.prepare(HiddenStates(model))
        self.device = self.acc.device
        self._head16 = None  # the bf16 copy of the output head rollouts sample through (_bf16_head)
        self.eos_ids = {i for i in [tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)]
                        if isinstance(i, int)}
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        if isinstance(gen_eos, list):
            self.eos_ids |= set(gen_eos)
        self.step = 0
        self._vllm = None  # the colocated vLLM sampler (rollout_backend: vllm), created at first use
        self.log: list[dict] = []
        self.totals = {"tokens_generated": 0, "tokens_forwarded": 0, "flops": 0.0, "wall_s": 0.0,
                       "train_s": 0.0, "drift_s": 0.0}

    # ------------------------------------------------------------------ schedule and data
    def _lr_lambda(self, step: int) -> float:
        w = self.cfg.warmup_steps
        if w and step < w:
            return (step + 1) / w
        if self.cfg.schedule == "constant":
            return 1.0
        span = max(1, self.total_steps - w)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - w) / span)))

    def batch_indices(self, step: int) -> list[int]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        perm = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.examples))
        return perm[pos * self.cfg.batch_size:(pos + 1) * self.cfg.batch_size].tolist()

    def my_micro_batches(self, step: int) -> list[tuple[int, list[Example]]]:
        idx = self.batch_indices(step)
        mb = self.cfg.micro_batch_size
        out = []
        for j in range(self.n_micro):
            if j % self.P == self.rank:
                out.append((j, [self.examples[i] for i in idx[j * mb:(j + 1) * mb]]))
        return out

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)


    # ------------------------------------------------------------------ one optimizer step
    def train_step(self) -> dict:
        cfg = self.cfg
        step = self.step
        t0 = time.perf_counter()
        ph = Phases(self.device)
        self.model.train()
        micro = self.my_micro_batches(step)
        stats = {"loss": 0.0, "divergence": 0.0, "rollout_len": 0.0, "drift_kl": float("nan"),
                 "tokens_generated": 0, "tokens_forwarded": 0,
                 # for the FLOPs estimate: tokens through the trained student, through the teacher
                 # (forward only), and rollout prompts prefilled before sampling (forward only)
                 "student_tokens": 0, "teacher_tokens": 0, "rollout_prefill_tokens": 0}
        # Before the first update the student *is* the initial model (LoRA B = 0, or identical full
        # weights), so its drift is exactly 0: record that instead of paying a probe (~2 min on CPU).
        measure_drift = cfg.drift_every > 0 and step > 0 and step % cfg.drift_every == 0
        drifts = [0.0] if cfg.drift_every > 0 and step == 0 else []
        seeds = self.row_seeds(step, micro)
        shared_prefill = cfg.shares_rollout_prefill()  # SDFT samples inside the student's forward
        if cfg.method == "sdft" and not shared_prefill:
            with ph("gen_s"):
                sampled = self.step_rollouts(micro, seeds)
        elif cfg.method == "sft" and measure_drift:  # SFT has no rollouts of its own: sample some for the probe
            with ph("drift_s"):
                sampled = self.step_rollouts(micro, seeds)
        for k, (_, exs) in enumerate(micro):
            if cfg.method == "sdft":
                if shared_prefill:
                    loss, per_tok, mask, comp, cmask = self.sampling_divergence_loss(exs, seeds[k], ph)
                else:
                    comp, cmask, rollout_lp = sampled[k]
                    loss, per_tok, mask = self.divergence_loss(exs, comp, cmask, ph, rollout_lp)
                div = float(loss.detach())  # for 'sampled' this is the surrogate, not the KL
                n_gen = int(cmask.sum())
                stats["tokens_generated"] += n_gen
                prompt_tokens = sum(len(e.student_ids) + len(e.teacher_ids) for e in exs)
                stats["teacher_tokens"] += sum(len(e.teacher_ids) for e in exs) + n_gen
                if not shared_prefill:  # else the student's own forward was the rollouts' prefill
                    stats["rollout_prefill_tokens"] += sum(len(e.student_ids) for e in exs)
            else:
                loss, comp, cmask = self.sft_loss(exs, ph)
                div = float("nan")
                prompt_tokens = sum(len(e.student_ids) for e in exs)
            stats["student_tokens"] += sum(len(e.student_ids) for e in exs) + int(cmask.sum())
            with ph("student_bwd_s"):
                self.acc.backward(loss / len(micro))
            stats["loss"] += float(loss.detach()) / len(micro)
            stats["divergence"] += div / len(micro)
            stats["rollout_len"] += float(cmask.sum(1).float().mean()) / len(micro)
            stats["tokens_forwarded"] += prompt_tokens + int(cmask.sum()) * (2 if cfg.method == "sdft" else 1)
            if measure_drift:
                with ph("drift_s"):
                    if cfg.method == "sft":
                        comp, cmask, _ = sampled[k]
                    drifts.append(self.drift_kl(exs, comp, cmask))
        with ph("optim_s"):
            self._sync_grads()
            grad_norm = self.acc.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                 cfg.max_grad_norm)
            lr = self.sched.get_last_lr()[0]
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            if cfg.method == "sdft" and self.step % cfg.ema_every == 0:
                self.teacher.ema_update(cfg.ema_alpha)
        stats |= ph.t
        from ..hashing import forget_model_hash

        forget_model_hash(self.model)
        red = self._reduce({k: stats[k] for k in ("loss", "divergence", "rollout_len")}, "mean")
        red |= self._reduce({k: stats[k] for k in ("tokens_generated", "tokens_forwarded", "student_tokens",
                                                   "teacher_tokens", "rollout_prefill_tokens")}, "sum")
        if drifts:
            red["drift_kl"] = self._reduce({"d": sum(drifts) / len(drifts)}, "mean")["d"]
        step_s = time.perf_counter() - t0
        train_s = step_s - stats["drift_s"]
        flops = flops_estimate(self.n_base_params, red["student_tokens"], red["teacher_tokens"],
                               red["rollout_prefill_tokens"], red["tokens_generated"], lora=cfg.lora,
                               recompute=cfg.gradient_checkpointing)
        self.totals["tokens_generated"] += int(red["tokens_generated"])
        self.totals["tokens_forwarded"] += int(red["tokens_forwarded"])
        self.totals["flops"] += flops
        self.totals["train_s"] += train_s
        self.totals["drift_s"] += stats["drift_s"]
        row = {"step": self.step, "epoch": step // self.steps_per_epoch, "loss": red["loss"],
               "divergence": red["divergence"], "drift_kl": red.get("drift_kl", float("nan")),
               "rollout_len": red["rollout_len"], "tokens_per_s": red["tokens_forwarded"] / max(train_s, 1e-9),
               "gen_tokens_per_s": (red["tokens_generated"] / stats["gen_s"]) if stats["gen_s"] else float("nan"),
               "step_s": train_s, "gen_s": stats["gen_s"], "drift_s": stats["drift_s"], "lr": lr,
               "grad_norm": float(grad_norm), "tokens_generated": int(red["tokens_generated"]),
               "tokens_forwarded": int(red["tokens_forwarded"])}
        # the rest of the phase profile (gen_s and drift_s above); other_s is bookkeeping outside any phase
        row |= {k: stats[k] for k in PHASES if k not in row}
        row["other_s"] = max(0.0, step_s - sum(stats[k] for k in PHASES))
        return row

    def _sync_grads(self) -> None:
        """Average gradients across processes (DDP also does this; harmless when already averaged)."""
        if self.P == 1 or hasattr(self.wrapped, "require_backward_grad_sync"):
            return
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.copy_(self.acc.reduce(p.grad, "mean"))

    def _reduce(self, d: dict, how: str) -> dict:
        if self.P == 1:
            return {k: float(v) for k, v in d.items()}
        t = torch.tensor([float(v) for v in d.values()], device=self.device, dtype=torch.float64)
        t = self.acc.reduce(t, how)
        return {k: float(v) for k, v in zip(d, t.tolist())}


    # ------------------------------------------------------------------ main
    def resume(self) -> int:
        return checkpoint.resume(self)

    def run(self) -> TrainResult:
        lock = checkpoint.lock(self.out) if self.acc.is_main_process else None
        try:
            return self._run()
        finally:
            self.close_rollouts()
            if lock is not None:
                lock.close()

    def _run(self) -> TrainResult:
        checkpoint.check_dir(self)
        checkpoint.write_run_config(self)
        start = self.resume()
        if (self.out / checkpoint.DONE_MARKER).is_file() and start >= self.total_steps:
            return self._result(start)
        t_run = time.perf_counter()
        wall0 = self.totals.get("wall_s", 0.0)
        while self.step < self.total_steps:
            row = self.train_step()
            self.log.append(row)
            self.totals["wall_s"] = wall0 + time.perf_counter() - t_run
            for cb in self.callbacks:
                cb.on_step_end(self, row)
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self._result(start)

    def _result(self, start: int) -> TrainResult:
        final = self.out / "final"
        merged = self.out / "merged"
        return TrainResult(self.out, final, merged if merged.is_dir() else None, self.key, self.step,
                           dict(self.totals), list(self.log), resumed_from=start)


def train(cfg: TrainConfig, records, output_dir, data_hash: str, store=None, progress=None, model=None,
          tokenizer=None, data_source: str = "data", skipped: list[dict] | None = None) -> TrainResult:
    """Train `cfg.model` on tool-use records with SFT or SDFT; resumable; returns the result.

    `skipped` lists the records the loader dropped (`skip_invalid`); it is written to
    `run_config.json` and the final folder's `harness_train.json`, so no skip is silent."""
    return Run(cfg, records, output_dir, data_hash, store, progress, model, tokenizer, data_source, skipped).run()
