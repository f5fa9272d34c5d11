"""Intervals for one mean or one paired change, and the input helpers every other module uses.

Score coercion and pairing (`_arr`, `_pair`, `is_binary`), the Wilson interval of a proportion,
`mean_ci` (Wilson or Student t over items), `seed_ci` (Student t over seeds), the Agresti-Min interval
of a change of two paired proportions and `variance_floor`. The base of the package: it imports none
of the other modules, and they take these helpers from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats


def _z(conf: float) -> float:
    """Two-sided normal quantile for a confidence level."""
    return float(stats.norm.ppf(0.5 + conf / 2))


def _arr(x: Any) -> np.ndarray:
    a = np.asarray(list(x.values()) if isinstance(x, Mapping) else x, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"expected a 1-d sequence of scores, got shape {a.shape}")
    return a


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Align two paired score collections: mappings by key (same key sets required), sequences
    by position (same length required)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            raise ValueError(f"paired scores cover different items: {len(set(a) - set(b))} only in the "
                             f"first, {len(set(b) - set(a))} only in the second")
        keys = sorted(a)
        return np.asarray([a[k] for k in keys], float), np.asarray([b[k] for k in keys], float)
    x, y = _arr(a), _arr(b)
    if x.shape != y.shape:
        raise ValueError(f"paired scores differ in length: {len(x)} vs {len(y)}")
    return x, y


def is_binary(scores: Any) -> bool:
    """True when every score is exactly 0 or 1 (an empty sequence is not binary)."""
    a = _arr(scores)
    return a.size > 0 and bool(np.all((a == 0) | (a == 1)))


def wilson_interval(k: float, n: float, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n.

    Chosen over the normal (Wald) interval because it keeps near-nominal coverage for small n and
    for proportions near 0 or 1 (Wald collapses to zero width at 0/n), which is exactly where
    small CPU runs and near-chance or near-ceiling benchmarks live. `k` may be fractional (used
    for bounded [0, 1] means); then it is an approximation.
    """
    if n <= 0:
        return (0.0, 1.0)
    c, h = _wilson(k / n, n, _z(conf))
    return (max(0.0, float(c - h)), min(1.0, float(c + h)))


def _wilson(p: Any, n: Any, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre and half-width of the Wilson score interval at normal quantile z (vectorised)."""
    p, n = np.asarray(p, dtype=float), np.asarray(n, dtype=float)
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(np.maximum(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / d
    return c, h


def wilson_upper(p: Any, n: Any, conf: float = 0.95) -> Any:
    """One-sided upper `conf` Wilson bound of a proportion observed as `p` in `n` trials
    (vectorised; conf = 0.95 uses z = 1.645).

    Used as a conservative stand-in for a rate that a small sample may show as 0: the gate bounds
    the discordance rate (the per-item variance of a paired change) with it, so a sample in which
    nothing happened to flip is not mistaken for a precise one.
    """
    c, h = _wilson(p, n, float(stats.norm.ppf(conf)))
    out = np.minimum(c + h, 1.0)
    return float(out) if out.ndim == 0 else out


def mean_ci(scores: Any, conf: float = 0.95) -> tuple[float, float, float]:
    """Mean of per-item scores with a two-sided confidence interval: (mean, lo, hi).

    Binary scores get the Wilson score interval (see `wilson_interval`); other scores get a
    Student-t interval, the standard interval for a mean whose variance is estimated from the
    same sample (it widens correctly for small n). With one non-binary item, lo and hi are NaN.
    """
    a = _arr(scores)
    n = a.size
    if n == 0:
        raise ValueError("mean_ci: no scores")
    m = float(a.mean())
    if is_binary(a):
        lo, hi = wilson_interval(float(a.sum()), n, conf)
        return (m, lo, hi)
    if n < 2:
        return (m, math.nan, math.nan)
    h = float(stats.t.ppf(0.5 + conf / 2, n - 1)) * float(a.std(ddof=1)) / math.sqrt(n)
    return (m, m - h, m + h)


def _agresti_min(n01: Any, n10: Any, n: Any, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Adjusted paired difference and its standard error (vectorised over arrays of counts)."""
    n01, n10, n = (np.asarray(v, dtype=float) for v in (n01, n10, n))
    na = n + 2.0  # add 0.5 to each of the four cells
    d = ((n01 + 0.5) - (n10 + 0.5)) / na
    var = np.maximum(((n01 + 0.5) + (n10 + 0.5)) / na - d * d, 0.0) / na
    return d, np.sqrt(var)


def paired_binary_ci(a: Any, b: Any, conf: float = 0.95) -> tuple[float, float, float]:
    """Difference of two paired proportions mean(b) - mean(a) with a two-sided interval.

    Agresti & Min (2005) adjusted Wald interval: add 0.5 to each cell of the 2x2 paired table and
    use the paired variance. Chosen because the plain Wald interval has zero width when no item
    changed (the common case for a candidate close to its baseline) and undercovers with few
    discordant pairs, while this simple adjustment has near-nominal coverage down to small n and
    vectorises (the gate's simulation tests rely on that). Returns (raw difference, lo, hi).
    """
    x, y = _pair(a, b)
    n01 = float(np.sum((x == 0) & (y == 1)))
    n10 = float(np.sum((x == 1) & (y == 0)))
    d_adj, se = _agresti_min(n01, n10, x.size, _z(conf))
    h = _z(conf) * float(se)
    return (float(y.mean() - x.mean()), max(-1.0, float(d_adj) - h), min(1.0, float(d_adj) + h))


def agresti_min(n01: Any, n10: Any, n: Any) -> tuple[np.ndarray, np.ndarray]:
    """Agresti-Min adjusted change of two paired proportions and its standard error, from the
    discordant counts (arrays allowed): the estimate behind `paired_binary_ci`, for callers that
    build their own bounds (the gate's one-sided ones, vectorised over simulated trials)."""
    return _agresti_min(n01, n10, n, 0.0)


def variance_floor(n: Any, scale: Any = 1.0) -> np.ndarray:
    """Smallest per-item variance to assume for a paired change of non-binary scores on n items:
    that of one discordant pair of full size `scale` among n + 2 items, the pseudo-count that
    Agresti-Min adds in the binary case (vectorised). Without it, a small sample in which no score
    happened to change has zero variance, and a t interval on it claims infinite precision."""
    n, scale = np.asarray(n, dtype=float), np.asarray(scale, dtype=float)
    return scale ** 2 / (n + 2)


def seed_ci(values: Sequence[float], conf: float = 0.95) -> tuple[float, float, float]:
    """Mean across seeds with a Student-t interval: (mean, lo, hi).

    Seeds are few (3 in the paper), so the t quantile with n-1 degrees of freedom is essential (at
    n=3 it is 4.30, not 1.96). This interval covers training randomness; item sampling noise is
    covered by the per-item intervals. With a single seed there is no spread estimate: lo and hi
    are NaN and the report should say n=1.
    """
    a = _arr(values)
    if a.size == 0:
        raise ValueError("seed_ci: no values")
    m = float(a.mean())
    if a.size < 2:
        return (m, math.nan, math.nan)
    h = float(stats.t.ppf(0.5 + conf / 2, a.size - 1)) * float(a.std(ddof=1)) / math.sqrt(a.size)
    return (m, m - h, m + h)
