"""Cost of an arm relative to a reference (wall-clock seconds, FLOPs): the ratio of mean costs with
a delta-method interval on the log scale, one measure (`cost_ratio`) or every arm and measure
(`cost_table`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from .intervals import _arr


def cost_ratio(arm: Sequence[float] | float, ref: Sequence[float] | float, what: str = "wall-clock",
               conf: float = 0.95) -> dict:
    """Ratio of mean costs arm/ref (e.g. SDFT vs SFT wall-clock seconds or FLOPs).

    Returns dict(ratio, lo, hi, n_arm, n_ref, note). With at least two measurements on each side,
    the interval comes from the delta method on log(ratio) with a t quantile on the smaller
    sample's degrees of freedom (ratios are skewed; the log scale keeps the interval positive).
    With a single measurement on either side there is no spread to estimate: lo/hi are NaN and
    `note` says so, because one timing on shared hardware can be off by tens of percent.
    """
    a = _arr([arm] if np.isscalar(arm) else arm)
    r = _arr([ref] if np.isscalar(ref) else ref)
    if a.size == 0 or r.size == 0:
        raise ValueError("cost_ratio: no measurements")
    ma, mr = float(a.mean()), float(r.mean())
    if mr <= 0 or ma <= 0:
        raise ValueError(f"cost_ratio: {what} costs must be positive")
    ratio = ma / mr
    if a.size < 2 or r.size < 2:
        return {"ratio": ratio, "lo": math.nan, "hi": math.nan, "n_arm": int(a.size), "n_ref": int(r.size),
                "note": f"{what}: single measurement (n_arm={a.size}, n_ref={r.size}); no interval, "
                        "ratio is indicative only"}
    se = math.sqrt(a.var(ddof=1) / (a.size * ma ** 2) + r.var(ddof=1) / (r.size * mr ** 2))
    t = float(stats.t.ppf(0.5 + conf / 2, min(a.size, r.size) - 1))
    return {"ratio": ratio, "lo": ratio * math.exp(-t * se), "hi": ratio * math.exp(t * se),
            "n_arm": int(a.size), "n_ref": int(r.size), "note": ""}


def cost_table(costs: Mapping[str, Mapping[str, Sequence[float]]], reference: str = "sft",
               conf: float = 0.95) -> dict:
    """Cost ratios of every arm against `reference`, per cost measure.

    `costs` = {arm: {measure: [per-seed values]}}, e.g. {"sdft": {"wall_s": [..], "flops": [..]}}.
    Returns {arm: {measure: cost_ratio(...)}} for arms other than the reference and measures the
    reference also has (the paper: SDFT ~2.5x FLOPs, ~4x wall-clock of SFT).
    """
    if reference not in costs:
        raise ValueError(f"cost_table: reference arm {reference!r} not in {sorted(costs)}")
    ref = costs[reference]
    return {arm: {m: cost_ratio(v, ref[m], what=m, conf=conf) for m, v in measures.items() if m in ref}
            for arm, measures in costs.items() if arm != reference}
