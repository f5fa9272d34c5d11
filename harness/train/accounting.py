"""What one training step costs: its wall-clock split into exclusive phases, and its FLOPs.

Kept apart from the loop because reports, claims and benchmarks read these definitions
(`PHASES`, `LOG_FIELDS`, `flops_estimate`) without running a step."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

# Per-phase wall-clock seconds of one optimizer step, exclusive of each other (see `Phases`).
PHASES = ("gen_s", "teacher_s", "student_fwd_s", "student_bwd_s", "optim_s", "drift_s")
LOG_FIELDS = ["step", "epoch", "loss", "divergence", "drift_kl", "rollout_len", "tokens_per_s", "gen_tokens_per_s",
              "step_s", "gen_s", "drift_s", "lr", "grad_norm", "tokens_generated", "tokens_forwarded",
              "teacher_s", "student_fwd_s", "student_bwd_s", "optim_s", "other_s"]


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


def n_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)

