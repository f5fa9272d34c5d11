"""Forgetting over the prior benchmarks: the unweighted prior average, its paired change with a
bootstrap interval, per-item flips, and the chance levels at which a benchmark cannot show
forgetting (`CHANCE`, `is_at_chance`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .intervals import _pair, _z
from .paired import _boot_means, _percentile, _recentred_p

#: Chance accuracy of the prior benchmarks whose chance level is fixed (0-shot multiple choice).
#: Generation benchmarks (IFEval, HumanEval) have chance 0; TruthfulQA mc1 has a variable number of
#: options per item, so it is left out rather than approximated.
CHANCE = {"prior/hellaswag": 0.25, "prior/mmlu": 0.25, "prior/winogrande": 0.5,
          "prior/ifeval": 0.0, "prior/humaneval": 0.0}


def prior_average(values: Mapping[str, float | None]) -> float:
    """Unweighted mean across prior benchmarks (the paper's headline forgetting number).

    Unweighted, as in the paper, so a 14k-item benchmark (MMLU) does not drown a 164-item one
    (HumanEval). A missing (None) or NaN benchmark makes the result NaN on purpose: silently
    averaging fewer benchmarks would change what the number means.
    """
    if not values:
        raise ValueError("prior_average: no benchmarks")
    vals = [math.nan if v is None else float(v) for v in values.values()]
    return float(np.mean(vals))


def forgetting(base_avg: float, arm_avg: float) -> float:
    """Forgetting = base - arm (positive means the arm lost prior capability)."""
    return float(base_avg) - float(arm_avg)


def prior_average_change_ci(base: Mapping[str, Any], arm: Mapping[str, Any], n_boot: int = 10000,
                            seed: int = 0, conf: float = 0.95) -> dict:
    """Change in the unweighted prior average (arm - base) with a paired bootstrap interval.

    `base` and `arm` map benchmark -> per-item scores (mappings item->score, aligned by item, or
    sequences in the same item order). Each replicate resamples items within every benchmark
    (benchmarks are fixed, items are the sampling unit), keeping the pairing between arms, then
    averages the per-benchmark mean differences with equal weights. Returns dict(diff, lo, hi, p,
    forgetting, forgetting_lo, forgetting_hi); `p` is two-sided for "no change" (re-centred
    bootstrap), and forgetting = -diff with the interval mirrored.
    """
    if set(base) != set(arm):
        raise ValueError(f"benchmarks differ: {sorted(set(base) ^ set(arm))}")
    if not base:
        raise ValueError("prior_average_change_ci: no benchmarks")
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    diff = 0.0
    for name in sorted(base):
        x, y = _pair(base[name], arm[name])
        if x.size == 0:
            raise ValueError(f"benchmark {name!r} has no items")
        d = y - x
        diff += float(d.mean())
        total += _boot_means(d, n_boot, rng)
    k = len(base)
    diff /= k
    total /= k
    lo, hi = _percentile(total, conf)
    p = _recentred_p(total, diff)
    return {"diff": diff, "lo": lo, "hi": hi, "p": p,
            "forgetting": -diff, "forgetting_lo": -hi, "forgetting_hi": -lo}


def flip_table(base: Mapping[str, float], arm: Mapping[str, float],
               groups: Mapping[str, Any] | None = None, threshold: float = 0.5) -> dict:
    """Which items flipped between a base and an arm, per group.

    An item is "right" when its score >= `threshold` (exactly the 0/1 score for binary metrics).
    `groups` maps item -> group (e.g. the tool-use API, the MMLU subject); items mapped to None or
    absent from `groups` fall in group None. Flip counts show where forgetting happens, which the
    mean hides (a net change of 0 can be 30 items lost and 30 gained).

    Returns {"total": row, "groups": {group: row}, "only_base": [...], "only_arm": [...]} where
    row = {n, right_to_wrong, wrong_to_right, both_right, both_wrong, lost: [items],
    gained: [items]}; only items present in both are compared.
    """
    common = sorted(set(base) & set(arm), key=str)

    def new_row() -> dict:
        return {"n": 0, "right_to_wrong": 0, "wrong_to_right": 0, "both_right": 0, "both_wrong": 0,
                "lost": [], "gained": []}

    total, per = new_row(), {}
    for item in common:
        rb, ra = float(base[item]) >= threshold, float(arm[item]) >= threshold
        g = (groups or {}).get(item)
        for row in (total, per.setdefault(g, new_row())):
            row["n"] += 1
            if rb and not ra:
                row["right_to_wrong"] += 1
                row["lost"].append(item)
            elif ra and not rb:
                row["wrong_to_right"] += 1
                row["gained"].append(item)
            elif ra:
                row["both_right"] += 1
            else:
                row["both_wrong"] += 1
    return {"total": total, "groups": per,
            "only_base": sorted(set(base) - set(arm), key=str),
            "only_arm": sorted(set(arm) - set(base), key=str)}


def is_at_chance(value: float, stderr: float, chance: float, conf: float = 0.95) -> bool:
    """True when `value` is not distinguishable from (or is below) the chance level.

    One-sided: flagged iff value - chance <= z * stderr with z the two-sided `conf` quantile
    (1.96). A benchmark at chance cannot show forgetting (there is nothing left to forget), so
    reports must flag it instead of reading its change as "no forgetting" (small models on MMLU
    are typically at 0.25). A NaN stderr is treated as 0.
    """
    se = 0.0 if stderr is None or math.isnan(stderr) else float(stderr)
    return float(value) - float(chance) <= _z(conf) * se
