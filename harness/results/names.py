"""The names every part of `harness.results` shares: the reference arms, the cost columns, the MC
pseudo-task names and seeds as keys. Kept apart so the loader, `Results` and its table mixins can all
import them without importing each other."""

from __future__ import annotations

import math
from typing import Any

from .. import metrics as M

BASE, TEACHER = "base", "teacher"
COST_KEYS = ("train_wall_s", "tokens_generated", "tokens_forwarded", "flops", "steps")

mc_task = M.mc_task  # 'prior/mmlu', 'margin' -> 'mc/mmlu/margin'


def _seed_key(v: Any) -> str:
    """A seed as a stable string ('-' for none), whatever pandas made of it (None, NaN, 0.0)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
