"""Micro (ratio) means and the cluster and hierarchical (seeds-then-items) bootstraps.

IFEval's headline `inst_level_loose_acc` is a ratio of sums over prompts (instructions followed /
instructions given), not a mean of per-prompt fractions. With per-item `weights` (instructions per
prompt) and per-item fractions as scores, the weighted mean is exactly that ratio, and resampling
prompts (clusters) gives its bootstrap. One bootstrap (`_boot_weighted_means`) serves the ratio
interval, the paired ratio comparison and the seeds-then-items comparison of claims
(`hierarchical_change_ci`; without weights every item weighs 1). Also here: the ratio estimator's
standard error, per-item weights from stored diagnostics, and `micro_scaled`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .intervals import _arr, _pair
from .paired import _percentile, _recentred_p


def _weights(weights: Any, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = _arr(weights)
    if w.size != n:
        raise ValueError(f"weights: {w.size} values for {n} items")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError("weights must be positive and finite (e.g. instructions per prompt)")
    return w


def weighted_mean(scores: Any, weights: Any = None) -> float:
    """sum(w * s) / sum(w): with s = a prompt's fraction of instructions followed and w = its
    number of instructions, the micro average sum(followed) / sum(instructions)."""
    s = _arr(scores)
    if s.size == 0:
        raise ValueError("weighted_mean: no scores")
    w = _weights(weights, s.size)
    return float(np.dot(s, w) / w.sum())


def _boot_weighted_means(X: np.ndarray, w: np.ndarray, n_boot: int, rng: np.random.Generator,
                         chunk_elems: int = 4_000_000) -> np.ndarray:
    """Bootstrap replicates of the weighted item mean of every row of `X` (rows x items): each
    replicate draws one resample of items (clusters, with their weights) shared by all rows, so
    rows scored on the same items stay paired. Returns (rows, n_boot)."""
    k, n = X.shape
    out = np.empty((k, n_boot))
    step = max(1, chunk_elems // max(n * (k + 1), 1))
    for s in range(0, n_boot, step):
        e = min(n_boot, s + step)
        idx = rng.integers(0, n, size=(e - s, n))
        wi = w[idx]
        out[:, s:e] = (X[:, idx] * wi).sum(axis=-1) / wi.sum(axis=-1)
    return out


def ratio_ci(scores: Any, weights: Any = None, conf: float = 0.95, n_boot: int = 10000,
             seed: int = 0) -> tuple[float, float, float]:
    """Micro average `weighted_mean(scores, weights)` with a cluster (ratio) bootstrap percentile
    interval: (value, lo, hi). Prompts are resampled whole, with their instruction counts, because
    instructions of one prompt are not independent (one answer follows or ignores them together);
    an interval treating instructions as independent items would be too narrow."""
    s = _arr(scores)
    value = weighted_mean(s, weights)
    if s.size < 2:
        return (value, math.nan, math.nan)
    boot = _boot_weighted_means(s[None, :], _weights(weights, s.size), n_boot, np.random.default_rng(seed))[0]
    return (value, *_percentile(boot, conf))


def hierarchical_change_ci(ref: Mapping[str, Any], arm: Mapping[str, Any],
                           weights: Mapping[str, Any] | None = None, n_boot: int = 10000, seed: int = 0,
                           conf: float = 0.95) -> dict:
    """Change arm - ref of the unweighted average over benchmarks of each benchmark's (weighted)
    item mean, averaged over seeds, with a bootstrap over seeds and items: dict(diff, lo, hi, p,
    n_seeds_ref, n_seeds_arm, n_items).

    `ref[b]` and `arm[b]` are per-seed item scores for benchmark b, shape (seeds, items) (a 1-D
    sequence is one seed), items in the same order on both sides and in `weights[b]` (None or a
    missing entry = equal weights). Seeds are independently trained models, so every replicate
    draws each arm's seeds with replacement (one draw per arm, shared by all benchmarks: a seed is
    one model scored on all of them); items are crossed with seeds (every seed scored the same
    items), so one resample of items per benchmark is shared by every seed of both arms, which
    keeps the pairing. With one seed per arm this is the paired item bootstrap (the ratio
    bootstrap with weights); with several it adds the training randomness that a test on
    seed-averaged items leaves out. With 2-3 seeds the seed draw understates that randomness
    (a bootstrap of K values has (K-1)/K of their variance and no t quantile), so callers that
    decide on it should also consult the across-seed t interval (`seed_ci`).
    `p` is two-sided for "no change" (re-centred bootstrap, +1 correction)."""
    if set(ref) != set(arm):
        raise ValueError(f"benchmarks differ: {sorted(set(ref) ^ set(arm))}")
    if not ref:
        raise ValueError("hierarchical_change_ci: no benchmarks")
    mats = {}
    for name in sorted(ref):
        r, a = np.atleast_2d(np.asarray(ref[name], float)), np.atleast_2d(np.asarray(arm[name], float))
        if r.ndim != 2 or a.ndim != 2 or r.shape[1] != a.shape[1] or r.shape[1] == 0:
            raise ValueError(f"benchmark {name!r}: expected (seeds, items) scores on the same items, got "
                             f"{r.shape} and {a.shape}")
        mats[name] = (r, a, _weights((weights or {}).get(name), r.shape[1]))
    kr = {m[0].shape[0] for m in mats.values()}
    ka = {m[1].shape[0] for m in mats.values()}
    if len(kr) != 1 or len(ka) != 1:
        raise ValueError("every benchmark needs the same seeds on each side")
    kr, ka = kr.pop(), ka.pop()
    rng = np.random.default_rng(seed)
    seeds_r = rng.integers(0, kr, size=(n_boot, kr))
    seeds_a = rng.integers(0, ka, size=(n_boot, ka))
    total = np.zeros(n_boot)
    diff = 0.0
    for r, a, w in mats.values():
        diff += float((a @ w).mean() - (r @ w).mean()) / float(w.sum())
        boot = _boot_weighted_means(np.vstack([r, a]), w, n_boot, rng)
        total += (np.take_along_axis(boot[kr:].T, seeds_a, axis=1).mean(axis=1)
                  - np.take_along_axis(boot[:kr].T, seeds_r, axis=1).mean(axis=1))
    diff /= len(mats)
    total /= len(mats)
    lo, hi = _percentile(total, conf)
    return {"diff": diff, "lo": lo, "hi": hi, "p": _recentred_p(total, diff), "n_seeds_ref": kr,
            "n_seeds_arm": ka, "n_items": sum(m[0].shape[1] for m in mats.values())}


def paired_ratio_bootstrap(a: Any, b: Any, weights: Any = None, n_boot: int = 10000, seed: int = 0,
                           conf: float = 0.95) -> dict:
    """Paired change of the micro average, weighted_mean(b, w) - weighted_mean(a, w), with the
    paired cluster bootstrap over items (prompts): dict(diff, lo, hi, p). Both arms answered the
    same prompts, so the instruction counts (the ratio's denominators) are shared and each
    replicate resamples whole prompts for both arms at once."""
    x, y = _pair(a, b)
    if x.size == 0:
        raise ValueError("paired_ratio_bootstrap: no items")
    r = hierarchical_change_ci({"m": x}, {"m": y}, {"m": _weights(weights, x.size)}, n_boot=n_boot, seed=seed,
                               conf=conf)
    return {k: r[k] for k in ("diff", "lo", "hi", "p")}


def ratio_stderr(scores: Any, weights: Any = None) -> float:
    """Standard error of the micro average `weighted_mean(scores, weights)` clustered by item
    (ratio-estimator / delta method): sqrt(n / (n - 1) * sum((w * (s - p))^2)) / sum(w). NaN for
    fewer than two items. lm-eval reports none for IFEval's instruction-level metrics."""
    s = _arr(scores)
    if s.size < 2:
        return math.nan
    w = _weights(weights, s.size)
    p = float(np.dot(s, w) / w.sum())
    return math.sqrt(s.size / (s.size - 1) * float(np.sum((w * (s - p)) ** 2))) / float(w.sum())


def instruction_counts(diags: list[dict], metric: str | None = None) -> list[float] | None:
    """Per-item weights of a micro-averaged metric (IFEval: instructions per prompt) from stored
    diagnostics: `n_instructions`, else the length of the stored instruction-level list under
    `metric`; None unless every item has a positive count (then items weigh equally)."""
    out = []
    for d in diags:
        v = d.get("n_instructions") if isinstance(d, dict) else None
        if v is None and metric and isinstance(d, dict) and isinstance(d.get(metric), list):
            v = len(d[metric])
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            return None
        out.append(float(v))
    return out or None


def micro_scaled(x: Any, w: Any) -> np.ndarray:
    """Items of a micro average rescaled so that their plain mean is the weighted mean
    (x_i * w_i * n / sum w): paired t intervals and variances on these values are the ratio
    estimator's linearised ones (used by the gate and by power planning)."""
    x, w = np.asarray(x, dtype=float), np.asarray(w, dtype=float)
    return x * w * (w.size / w.sum())
