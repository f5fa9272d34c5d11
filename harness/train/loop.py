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
gradients are averaged over all micro-batches — so the update does not depend on N. A process
samples all its micro-batches' rollouts in one batch (one decode step at batch 4 costs far less than
two at batch 2 on a CPU); per-row random streams keep that from changing what is drawn.

Resume: checkpoints are written atomically every `save_every` steps (trainable weights, EMA teacher,
optimiser, scheduler, log); re-running the same command continues from the last one and ends with
the same weights as an uninterrupted run (data order and rollout seeds are functions of the step).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError, ConfigError
from ..hashing import hash_obj
from ..model_config import lora_target_problem, module_names
from .batches import Example, encode_records, left_pad, right_pad
from .config import TrainConfig
from .frozen import store_frozen_linears
from .losses import chunked_divergence, masked_sequence_mean, skip_mask
from .teacher import TeacherHandle

log = logging.getLogger("harness.train")
LOCK_NAME = ".harness-train.lock"  # held (flock) while a run writes its output folder

# Per-phase wall-clock seconds of one optimizer step, exclusive of each other (see `Phases`).
PHASES = ("gen_s", "teacher_s", "student_fwd_s", "student_bwd_s", "optim_s", "drift_s")
LOG_FIELDS = ["step", "epoch", "loss", "divergence", "drift_kl", "rollout_len", "tokens_per_s", "gen_tokens_per_s",
              "step_s", "gen_s", "drift_s", "lr", "grad_norm", "tokens_generated", "tokens_forwarded",
              "teacher_s", "student_fwd_s", "student_bwd_s", "optim_s", "other_s"]


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


class HiddenStates(torch.nn.Module):
    """Wraps a causal LM so the (DDP-wrapped) forward returns final hidden states, not logits:
    the head is applied later in chunks (see losses.chunked_divergence)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids):
        return self.model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                        use_cache=False).last_hidden_state


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as `generate` and the greedy decoder compute them.

    Without them a left-padded row starts at position `n_pad` instead of 0: harmless up to rounding
    for RoPE (relative), wrong for models with absolute position embeddings."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@contextmanager
def eval_mode(module):
    """Forward-only passes (teacher, drift probe) run without dropout, so they are deterministic
    functions of the weights; the previous mode is restored after."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


class Phases:
    """Exclusive wall-clock seconds per phase of one step: entering a phase inside another pauses
    the outer one (the teacher's head is computed inside the student's chunked loss loop), so the
    phases add up to the step. On GPUs the device is synchronised at each boundary, so queued
    kernels are charged to the phase that queued them."""

    def __init__(self, device: torch.device):
        self.t = dict.fromkeys(PHASES, 0.0)
        self._cuda = device.type == "cuda"
        self._stack: list[list] = []  # [name, start]

    def _now(self) -> float:
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextmanager
    def __call__(self, name: str):
        now = self._now()
        if self._stack:
            outer = self._stack[-1]
            self.t[outer[0]] += now - outer[1]
        self._stack.append([name, now])
        try:
            yield
        finally:
            now = self._now()
            _, start = self._stack.pop()
            self.t[name] += now - start
            if self._stack:
                self._stack[-1][1] = now


def _lm_head(model):
    return model.get_output_embeddings()


def _check_lora_targets(model, targets) -> None:
    """The loaded model's check: `harness run` and `harness train` check the targets against the
    config's module tree before anything runs (`harness.model_config`); this one also covers
    callers of `train()` and models whose config was not on the machine then."""
    problem = lora_target_problem(targets, module_names(model))
    if problem:
        raise ConfigError(f"train.lora_targets: {problem}")


def flops_estimate(n: int, student: float, teacher: float, rollout_prefill: float, generated: float, *,
                   lora: bool, recompute: bool) -> float:
    """Estimated FLOPs of one step, counted per token with N base parameters (attention's
    sequence-length term left out): 2N for every forward-only token (teacher prompt + completion,
    rollout prompt prefill, each sampled token), and for every token through the trained student
    2N forward + 2N backward to activations, + 2N for weight gradients with full fine-tuning (LoRA
    computes them for the small adapters only, counted as 0), + 2N when gradient checkpointing
    recomputes the forward. An estimate, not a measurement; reports say so."""
    per_trained = 4 + (0 if lora else 2) + (2 if recompute else 0)
    return float(n) * (per_trained * student + 2 * (teacher + rollout_prefill + generated))


def _n_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)


class Run:
    """State of one training run (one process)."""

    def __init__(self, cfg: TrainConfig, records, output_dir: str | Path, data_hash: str, store=None,
                 progress: Callable[[int, int, dict], None] | None = None, model=None, tokenizer=None,
                 data_source: str = "data", skipped: list[dict] | None = None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg, self.store, self.progress = cfg, store, progress
        self.out = Path(output_dir)
        self.acc = Accelerator(cpu=not torch.cuda.is_available())
        self.P, self.rank = self.acc.num_processes, self.acc.process_index
        if cfg.batch_size % cfg.micro_batch_size:
            raise ConfigError(f"train.batch_size: {cfg.batch_size} is not a multiple of micro_batch_size "
                              f"{cfg.micro_batch_size}")
        self.n_micro = cfg.batch_size // cfg.micro_batch_size
        if self.n_micro % self.P:
            raise ConfigError(f"train.batch_size: {self.n_micro} micro-batches do not split over {self.P} processes")
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
        self.n_base_params = _n_params(model)
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

    # ------------------------------------------------------------------ pieces
    @torch.no_grad()
    def rollouts(self, exs: list[Example], seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One sampled completion per prompt from the student (right-padded ids, mask).

        The samples must come from the policy itself: `generation.sample_pruned` applies
        temperature, top-p and top-k exactly as configured and nothing from the model's own
        generation_config (hub Qwen2.5-Instruct ships repetition_penalty 1.05 and top_k 20, which
        `generate` would apply, making the rollouts off-policy for the divergence they train). It
        also drops each row once it ends, so a long rollout does not make finished ones pay for
        its length. Each row draws from its own generator seeded with `seeds[i]`, so a rollout is a
        function of (seed, step, row): a resumed run samples what an uninterrupted one would, and a
        step's rows can be sampled in one batch however they are split into micro-batches and
        processes (`row_seeds`)."""
        from ..generation import sample_pruned

        cfg, pad = self.cfg, self.tok.pad_token_id
        ids, mask = left_pad([e.student_ids for e in exs], pad)
        gens = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        with eval_mode(self.model) as m, self.autocast(), self._bf16_head(m):
            rows = sample_pruned(m, ids.to(self.device), mask.to(self.device),
                                 cfg.max_rollout_tokens or cfg.max_completion_tokens, sorted(self.eos_ids),
                                 temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                 row_generators=gens)
        # each row stops at its first EOS (kept), so the length mask is the completion mask
        return right_pad(rows, pad)

    @contextmanager
    def _bf16_head(self, model):
        """Sample through a bf16 copy of the output head under bf16 autocast.

        The head stays fp32 for the chunked losses (`frozen` explains why), so autocast would cast
        all of it (136M parameters for Qwen2.5-0.5B) to bf16 at every decode step: measured, that
        cast was a fifth of rollout time. The copy is made with the same rounding autocast uses,
        so the logits are bit-identical; it is kept while the head is frozen (LoRA) and re-made per
        call when the head trains."""
        head = _lm_head(model)
        w = getattr(head, "weight", None)
        if not self.cfg.bf16 or w is None or w.dtype != torch.float32 or not isinstance(head, torch.nn.Linear):
            yield
            return
        if w.requires_grad or self._head16 is None:
            b = head.bias
            self._head16 = (w.detach().to(torch.bfloat16), None if b is None else b.detach().to(torch.bfloat16))
        w16, b16 = self._head16
        head.forward = lambda x: torch.nn.functional.linear(x, w16, b16)
        try:
            yield
        finally:
            del head.forward
            if w.requires_grad:
                self._head16 = None

    def row_seeds(self, step: int, micro: list[tuple[int, list[Example]]]) -> list[list[int]]:
        """The rollout seed of every row of `micro` (this process's micro-batches of `step`): a
        function of (seed, step, the row's position in the step's batch) only."""
        mb = self.cfg.micro_batch_size
        return [[int(hash_obj([self.cfg.seed, step, j * mb + i], n=8), 16) for i in range(len(exs))]
                for j, exs in micro]

    def step_rollouts(self, micro: list[tuple[int, list[Example]]], seeds: list[list[int]]):
        """Every rollout of this process's micro-batches sampled in one batch (decoding is memory-bound
        on a CPU: one step at batch 4 costs far less than two at batch 2), then split back per
        micro-batch, each trimmed to its own longest row."""
        comp, cmask = self.rollouts([e for _, exs in micro for e in exs], [s for row in seeds for s in row])
        out, a = [], 0
        for _, exs in micro:
            c, m = comp[a:a + len(exs)], cmask[a:a + len(exs)]
            n = int(m.sum(1).max()) if m.numel() else 0
            out.append((c[:, :n], m[:, :n]))
            a += len(exs)
        return out

    def _hidden(self, prompts: list[list[int]], comp: torch.Tensor, cmask: torch.Tensor, module=None):
        """Final hidden states at the positions that predict each completion token. With
        `module=None` the forward goes through the accelerate-wrapped student (gradients, DDP);
        otherwise through `module`'s decoder. Both get positions counted from the attention mask."""
        pids, pmask = left_pad(prompts, self.tok.pad_token_id)
        ids = torch.cat([pids, comp], 1).to(self.device)
        att = torch.cat([pmask, cmask], 1).to(self.device)
        pos = position_ids(att)
        with self.autocast():
            if module is None:
                h = self.wrapped(ids, att, pos)
            else:
                h = module.get_decoder()(input_ids=ids, attention_mask=att, position_ids=pos,
                                         use_cache=False).last_hidden_state
        P = pids.shape[1]
        return h[:, P - 1:P - 1 + comp.shape[1]]

    def _logits_fn(self, head, hidden):
        def fn(a, b):
            with self.autocast():
                return head(hidden[:, a:b]).float()
        return fn

    def divergence_loss(self, exs, comp, cmask, phases: Phases | None = None):
        """SDFT: per-token divergence between student (student prompt) and teacher (teacher prompt)
        on the same rollout tokens; teacher under stop-gradient, in eval mode (no dropout).

        Only the teacher's hidden states (B×L×H) are kept; its logits are computed chunk by chunk
        alongside the student's, and again when backward recomputes the chunk, so no B×L×V tensor
        exists at once. The output head is never a LoRA target (checked at start-up), so the
        teacher's head is usable outside its adapter context."""
        cfg = self.cfg
        ph = phases or Phases(self.device)
        with ph("teacher_s"), self.teacher.teacher_weights() as tmod, eval_mode(tmod):
            t_hidden = self._hidden([e.teacher_ids for e in exs], comp, cmask, module=tmod).detach()
            t_logits = self._logits_fn(_lm_head(tmod), t_hidden)
        with ph("student_fwd_s"):
            s_hidden = self._hidden([e.student_ids for e in exs], comp, cmask)

            def teacher_logits(a, b):
                with torch.no_grad(), ph("teacher_s"):
                    return t_logits(a, b)

            per_tok = chunked_divergence(
                s_hidden, teacher_logits, _lm_head(self.model), comp.to(self.device),
                cfg.divergence, cfg.estimator, cfg.topk, cfg.jsd_beta, cfg.chunk_tokens, cfg.temperature)
            mask = skip_mask(cmask, cfg.skip_tokens).to(self.device)
            return masked_sequence_mean(per_tok, mask), per_tok.detach(), mask

    def sft_loss(self, exs, phases: Phases | None = None):
        """SFT: next-token cross-entropy on the demonstration tokens only (prompt masked).

        The same path as the SDFT student: hidden states from the wrapped decoder, then the head a
        chunk of positions at a time, recomputed in backward, so no B×L×V tensor is kept."""
        ph = phases or Phases(self.device)
        with ph("student_fwd_s"):
            comp, cmask = right_pad([e.demo_ids for e in exs], self.tok.pad_token_id)
            h = self._hidden([e.student_ids for e in exs], comp, cmask)
            head = _lm_head(self.model)
            targets = comp.to(self.device)
            losses = []
            for a in range(0, comp.shape[1], self.cfg.chunk_tokens):
                b = min(comp.shape[1], a + self.cfg.chunk_tokens)

                def piece(hh, a=a, b=b):
                    with self.autocast():
                        logits = head(hh).float()
                    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets[:, a:b].flatten(),
                                                             reduction="none").view(logits.shape[:2])

                chunk = h[:, a:b]
                losses.append(torch.utils.checkpoint.checkpoint(piece, chunk, use_reentrant=False)
                              if chunk.requires_grad else piece(chunk))
            per_tok = torch.cat(losses, 1)
            mask = cmask.to(self.device)
            return masked_sequence_mean(per_tok, mask), comp, cmask

    @torch.no_grad()
    def drift_kl(self, exs, comp, cmask) -> float:
        """Mean per-token KL(student ‖ initial model) on the student's own rollouts (full vocab),
        both forwards in eval mode (no dropout)."""
        with eval_mode(self.model):
            s_h = self._hidden([e.student_ids for e in exs], comp, cmask, module=self.model)
            s_fn = self._logits_fn(_lm_head(self.model), s_h)
            with self.teacher.initial_weights() as imod, eval_mode(imod):
                i_h = self._hidden([e.student_ids for e in exs], comp, cmask, module=imod)
                i_fn = self._logits_fn(_lm_head(imod), i_h)
                vals = []
                for a in range(0, comp.shape[1], self.cfg.chunk_tokens):
                    b = min(comp.shape[1], a + self.cfg.chunk_tokens)
                    s = torch.log_softmax(s_fn(a, b), -1)
                    i = torch.log_softmax(i_fn(a, b), -1)
                    vals.append((s.exp() * (s - i)).sum(-1))
        kl = torch.cat(vals, 1)
        return float(masked_sequence_mean(kl, cmask.to(self.device)))

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
        if cfg.method == "sdft":
            with ph("gen_s"):
                sampled = self.step_rollouts(micro, seeds)
        elif measure_drift:  # SFT has no rollouts of its own: sample some for the probe, off the clock
            with ph("drift_s"):
                sampled = self.step_rollouts(micro, seeds)
        for k, (_, exs) in enumerate(micro):
            if cfg.method == "sdft":
                comp, cmask = sampled[k]
                loss, per_tok, mask = self.divergence_loss(exs, comp, cmask, ph)
                div = float(loss.detach())  # for 'sampled' this is the surrogate, not the KL
                n_gen = int(cmask.sum())
                stats["tokens_generated"] += n_gen
                prompt_tokens = sum(len(e.student_ids) + len(e.teacher_ids) for e in exs)
                stats["teacher_tokens"] += sum(len(e.teacher_ids) for e in exs) + n_gen
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
                        comp, cmask = sampled[k]
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

    # ------------------------------------------------------------------ checkpoints
    def trainable_state(self) -> dict[str, torch.Tensor]:
        params = dict(self.model.named_parameters())
        return {n: params[n].detach().to("cpu").contiguous() for n in self.trainable_names}

    def save_checkpoint(self) -> None:
        if not self.acc.is_main_process:
            self.acc.wait_for_everyone()
            return
        final = self.out / f"ckpt-{self.step:06d}"
        tmp = self.out / f".ckpt-{self.step:06d}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file(self.trainable_state(), tmp / "trainable.safetensors")
        ts = self.teacher.state_dict()
        if ts:
            save_file({k: v.to("cpu").contiguous() for k, v in ts.items()}, tmp / "teacher.safetensors")
        torch.save({"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()}, tmp / "optim.pt")
        (tmp / "state.json").write_text(json.dumps({"step": self.step, "key": self.key, "totals": self.totals,
                                                    "log": self.log}, default=str))
        os.replace(tmp, final)
        for old in sorted(self.out.glob("ckpt-*"))[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()

    def latest_checkpoint(self) -> Path | None:
        cks = sorted(p for p in self.out.glob("ckpt-*") if (p / "state.json").is_file())
        return cks[-1] if cks else None

    def check_resume_dir(self) -> None:
        cfg_file = self.out / "run_config.json"
        if cfg_file.is_file():
            old = json.loads(cfg_file.read_text())
            if old.get("key") != self.key:
                now = self.cfg.to_dict()
                diff = [k for k in now if old.get("config", {}).get(k) != now[k]]
                what = ", ".join(diff[:4]) if diff else "data, base model or rollout sampler"
                raise CheckpointError(f"{self.out}: holds a run with a different configuration "
                                      f"(differs in: {what}); use another --output-dir")
        elif self.out.is_dir() and any(p.name != LOCK_NAME for p in self.out.iterdir()):
            raise CheckpointError(f"{self.out}: not empty and not a harness training directory")

    def _read_checkpoint(self, ck: Path) -> tuple[dict, dict, dict | None, dict]:
        """Every part of a checkpoint, read (and checked) before any of it is applied."""
        state = json.loads((ck / "state.json").read_text())
        if not isinstance(state, dict) or not {"step", "key", "totals", "log"} <= set(state):
            raise ValueError("state.json lacks step/key/totals/log")
        if state["key"] != self.key:
            raise CheckpointError(f"{ck}: checkpoint from a different configuration")
        trainable = load_file(ck / "trainable.safetensors")
        params = dict(self.model.named_parameters())
        for n, v in trainable.items():
            if n not in params or params[n].shape != v.shape:
                raise ValueError(f"trainable.safetensors: '{n}' does not match the model")
        teacher = load_file(ck / "teacher.safetensors") if (ck / "teacher.safetensors").is_file() else None
        opt = torch.load(ck / "optim.pt", weights_only=True)
        return state, trainable, teacher, opt

    def resume(self) -> int:
        """Continue from the newest readable checkpoint. A damaged one (a truncated file after a
        crash or a full disk) is skipped with a warning for the one before it; when none is readable
        the run stops in one line and leaves every file as it is, never training over them."""
        cks = sorted((p for p in self.out.glob("ckpt-*") if (p / "state.json").is_file()), reverse=True)
        if not cks:
            return 0
        problems = []
        for ck in cks:
            try:
                state, trainable, teacher, opt = self._read_checkpoint(ck)
            except CheckpointError:
                raise
            except Exception as e:  # noqa: BLE001 - any unreadable part means: try the previous checkpoint
                problems.append(f"{ck.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                continue
            if problems:
                log.warning("%s: damaged checkpoint(s) skipped (%s); resuming from %s", self.out,
                            "; ".join(problems), ck.name)
            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for n, v in trainable.items():
                    params[n].copy_(v)
            if teacher is not None:
                self.teacher.load_state_dict(teacher)
            self.opt.load_state_dict(opt["optimizer"])
            self.sched.load_state_dict(opt["scheduler"])
            self.step, self.totals, self.log = state["step"], state["totals"], state["log"]
            return self.step
        raise CheckpointError(f"{self.out}: no readable checkpoint to resume from ({'; '.join(problems)}); "
                              "move the folder aside to start over, or use another output folder")

    def write_csv(self) -> None:
        if not self.acc.is_main_process:
            return
        tmp = self.out / ".train_log.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.log)
        os.replace(tmp, self.out / "train_log.csv")

    # ------------------------------------------------------------------ export
    def export(self) -> tuple[Path, Path | None]:
        final = self.out / "final"
        merged = self.out / "merged" if self.cfg.merge else None
        if not self.acc.is_main_process:
            self.acc.wait_for_everyone()
            return final, merged
        tmp = self.out / ".final.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        meta = {"config": self.cfg.to_dict(), "key": self.key, "data_hash": self.data_hash,
                "model_hash": self.model_hash, "steps": self.step, "totals": self.totals,
                "data_source": self.data_source, "skipped": self.skipped, "ema_over": self.teacher.ema_over}
        if self.cfg.lora:
            self.model.save_pretrained(tmp, selected_adapters=["default"], safe_serialization=True)
            acfg = json.loads((tmp / "adapter_config.json").read_text())
            acfg["base_model_name_or_path"] = self.cfg.model  # alias/folder the loader resolves
            (tmp / "adapter_config.json").write_text(json.dumps(acfg, indent=2))
        else:
            self.model.save_pretrained(tmp, safe_serialization=True)
        self.tok.save_pretrained(tmp)
        (tmp / "harness_train.json").write_text(json.dumps(meta, indent=1, default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if merged is not None:
            mtmp = self.out / ".merged.tmp"
            if mtmp.exists():
                shutil.rmtree(mtmp)
            if self.cfg.lora:
                from ..models import load_model

                m, _ = load_model(str(final), merge_adapter=True)
            else:
                m = self.model
            m.save_pretrained(mtmp, safe_serialization=True)
            self.tok.save_pretrained(mtmp)
            (mtmp / "harness_train.json").write_text(json.dumps(meta, indent=1, default=str))
            if merged.exists():
                shutil.rmtree(merged)
            os.replace(mtmp, merged)
        self.acc.wait_for_everyone()
        return final, merged

    # ------------------------------------------------------------------ main
    def _lock_output(self) -> None:
        """Hold an exclusive lock on the output folder while this run writes it, so a second run
        on the same folder stops in one line instead of reading a half-written file. Released when
        the run ends or the process dies (flock). Where flock does not exist, nothing is locked."""
        try:
            import fcntl
        except ImportError:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        f = open(self.out / LOCK_NAME, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise CheckpointError(f"{self.out}: another harness process is writing this folder; wait for it "
                                  "to finish or use another output folder") from None
        self._lock = f

    def run(self) -> TrainResult:
        if self.acc.is_main_process:
            self._lock_output()
        try:
            return self._run()
        finally:
            if getattr(self, "_lock", None) is not None:
                self._lock.close()
                self._lock = None

    def _run(self) -> TrainResult:
        self.check_resume_dir()
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "run_config.json").write_text(json.dumps(
                {"key": self.key, "config": self.cfg.to_dict(), "data_hash": self.data_hash,
                 "model_hash": self.model_hash, "data_source": self.data_source, "skipped": self.skipped,
                 "ema_over": self.teacher.ema_over}, indent=1))
        self.acc.wait_for_everyone()
        done_marker = self.out / "final" / "harness_train.json"
        start = self.resume()
        if done_marker.is_file() and start >= self.total_steps:
            return self._result(start)
        t_run = time.perf_counter()
        wall0 = self.totals.get("wall_s", 0.0)
        while self.step < self.total_steps:
            row = self.train_step()
            self.log.append(row)
            self.totals["wall_s"] = wall0 + time.perf_counter() - t_run
            if self.store is not None and self.acc.is_main_process:
                self.store.add_train_step(self.key, row["step"], row)
            if self.progress:
                self.progress(self.step, self.total_steps, row)
            if self.step % self.cfg.save_every == 0 or self.step == self.total_steps:
                self.write_csv()
                self.save_checkpoint()
        self.write_csv()
        self.export()
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
