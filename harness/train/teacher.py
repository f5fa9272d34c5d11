"""The SDFT teacher and the initial-model reference, without duplicating base weights under LoRA.

- LoRA + `ema`: a second adapter named 'teacher' on the same base weights, initialised as an exact
  copy of the student adapter; after each update its A and B matrices are moved towards the
  student's (teacher ← α·student + (1−α)·teacher). Note: this is an EMA of the LoRA *factors*, so
  the teacher's ΔW = EMA(B)·EMA(A), not EMA(B·A) — the only way to keep one copy of the base.
- LoRA + `frozen`: the base model with adapters disabled (the initial model).
- full fine-tuning + `ema`/`frozen`: a second full copy of the weights.
- `live`: the student itself, under stop-gradient.
The initial model (for the drift KL) is the adapter-disabled base under LoRA, and a frozen copy
under full fine-tuning.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch

TEACHER_ADAPTER = "teacher"


class TeacherHandle:
    @property
    def ema_over(self) -> str | None:
        """What the EMA averages, for the training metadata and reports: 'lora_factors' (the A and B
        matrices separately, so ΔW_teacher = EMA(B)·EMA(A) ≠ EMA(B·A)), 'weights', or None (no EMA)."""
        if self.kind != "ema":
            return None
        return "lora_factors" if self.lora else "weights"

    def __init__(self, model, kind: str, lora: bool, need_initial: bool):
        self.model, self.kind, self.lora = model, kind, lora
        self.copy = None
        self.initial = None
        if kind in ("ema", "frozen") and not lora:
            self.copy = copy.deepcopy(model).eval().requires_grad_(False)
        if lora and kind == "ema":
            model.add_adapter(TEACHER_ADAPTER, model.peft_config["default"])
            model.set_adapter("default")
            self._copy_adapter(alpha=1.0)
        if need_initial and not lora:
            self.initial = self.copy if kind == "frozen" else copy.deepcopy(model).eval().requires_grad_(False)

    def _pairs(self):
        student = {n: p for n, p in self.model.named_parameters() if ".default." in n}
        for n, p in self.model.named_parameters():
            if f".{TEACHER_ADAPTER}." in n:
                yield p, student[n.replace(f".{TEACHER_ADAPTER}.", ".default.")]

    @torch.no_grad()
    def _copy_adapter(self, alpha: float):
        for t, s in self._pairs():
            t.mul_(1 - alpha).add_(s.detach(), alpha=alpha)

    @torch.no_grad()
    def ema_update(self, alpha: float) -> None:
        if self.kind != "ema":
            return
        if self.lora:
            self._copy_adapter(alpha)
        else:
            for t, s in zip(self.copy.parameters(), self.model.parameters()):
                t.mul_(1 - alpha).add_(s.detach(), alpha=alpha)

    @contextmanager
    def teacher_weights(self):
        """Yield a module that computes the teacher (no gradients)."""
        with torch.no_grad():
            if self.kind == "live":
                yield self.model
            elif not self.lora:
                yield self.copy
            elif self.kind == "frozen":
                with self.model.disable_adapter():
                    yield self.model
            else:
                self.model.set_adapter(TEACHER_ADAPTER)
                try:
                    yield self.model
                finally:
                    self.model.set_adapter("default")
                    self.freeze_teacher()

    @contextmanager
    def initial_weights(self):
        with torch.no_grad():
            if self.lora:
                with self.model.disable_adapter():
                    yield self.model
            else:
                yield self.initial

    def freeze_teacher(self):
        for n, p in self.model.named_parameters():
            if f".{TEACHER_ADAPTER}." in n:
                p.requires_grad_(False)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.kind != "ema":
            return {}
        if self.lora:
            return {n: p.detach().clone() for n, p in self.model.named_parameters() if f".{TEACHER_ADAPTER}." in n}
        return {k: v.detach().clone() for k, v in self.copy.state_dict().items()}

    @torch.no_grad()
    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        if self.kind != "ema":
            return
        if self.lora:
            params = dict(self.model.named_parameters())
            for n, v in sd.items():
                params[n].copy_(v)
        else:
            self.copy.load_state_dict(sd)

