"""Paired tests of an arm `b` against a reference `a` on the same items, and multiplicity corrections.

`paired_t`, `paired_bootstrap` (its resampler `_boot_means` also serves `aggregate`), the exact
`mcnemar` test, and `paired_test`, which picks McNemar with the Agresti-Min interval for binary scores
and the bootstrap otherwise; `holm` and `benjamini_hochberg` adjust the p-values of several tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from .intervals import _pair, is_binary, paired_binary_ci


def paired_t(a: Any, b: Any) -> dict:
    """Paired t test of "no change" in mean(b) - mean(a): dict(diff, sd, m2, n, p).

    sd is the standard deviation of the per-item differences (ddof=1; NaN for one item), m2 their
    second moment E[(b - a)^2] (the variance `mde` takes for non-binary scores) and p two-sided.
    When the differences do not vary (sd = 0) there is no t statistic: p is 1 if nothing changed
    and 0 if every item moved by the same amount; with one changed item p is NaN. Suits
    non-binary scores whose mean change is near normal; `paired_bootstrap` assumes nothing.
    """
    x, y = _pair(a, b)
    if x.size == 0:
        raise ValueError("paired_t: no items")
    d = y - x
    n = int(d.size)
    diff = float(d.mean())
    sd = float(d.std(ddof=1)) if n >= 2 else math.nan
    if n >= 2 and sd > 0:
        p = float(2 * stats.t.sf(abs(diff) / (sd / math.sqrt(n)), n - 1))
    else:
        p = 1.0 if diff == 0 else (0.0 if n >= 2 else math.nan)
    return {"diff": diff, "sd": sd, "m2": float(np.mean(d * d)), "n": n, "p": p}


def _boot_means(d: np.ndarray, n_boot: int, rng: np.random.Generator, chunk_elems: int = 4_000_000) -> np.ndarray:
    """Bootstrap replicate means of `d` (resampling its entries), in memory-bounded chunks."""
    n = d.size
    out = np.empty(n_boot)
    rows = max(1, chunk_elems // max(n, 1))
    for s in range(0, n_boot, rows):
        e = min(n_boot, s + rows)
        out[s:e] = d[rng.integers(0, n, size=(e - s, n))].mean(axis=1)
    return out


def _percentile(boot: np.ndarray, conf: float) -> tuple[float, float]:
    """The two-sided percentile interval of a bootstrap distribution."""
    lo, hi = np.quantile(boot, [0.5 - conf / 2, 0.5 + conf / 2])
    return float(lo), float(hi)


def _recentred_p(boot: np.ndarray, diff: float) -> float:
    """Two-sided p for "no difference" from the bootstrap distribution re-centred on 0, with the +1
    correction so p > 0 (every bootstrap in this package reports its p this way)."""
    if diff == 0.0:
        return 1.0
    return min(1.0, float((1 + np.sum(np.abs(boot - diff) >= abs(diff))) / (boot.size + 1)))


def paired_bootstrap(a: Any, b: Any, n_boot: int = 10000, seed: int = 0, conf: float = 0.95) -> dict:
    """Paired bootstrap over items of mean(b) - mean(a): dict(diff, lo, hi, p).

    Items are resampled with replacement and both arms keep the same resampled items, so the
    item-to-item correlation between arms (large: the same hard items stay hard) is kept; this is
    what makes a paired comparison far more sensitive than comparing two separate intervals. It
    makes no distributional assumption, so it suits non-binary scores (fractional IFEval credit,
    pass@k). The interval is the percentile interval; `p` is two-sided for "no difference",
    computed from the bootstrap distribution re-centred on 0 (with the +1 correction so p > 0).
    """
    x, y = _pair(a, b)
    if x.size == 0:
        raise ValueError("paired_bootstrap: no items")
    d = y - x
    diff = float(d.mean())
    boot = _boot_means(d, n_boot, np.random.default_rng(seed))
    lo, hi = _percentile(boot, conf)
    return {"diff": diff, "lo": lo, "hi": hi, "p": _recentred_p(boot, diff)}


def mcnemar(a: Any, b: Any) -> dict:
    """Exact McNemar test for paired binary outcomes: dict(n01, n10, p).

    n01 = items wrong in `a` and right in `b` (gains of b), n10 = right in `a`, wrong in `b`
    (losses). Only discordant items carry information about a difference; under "no difference"
    each is a gain or a loss with probability 1/2, so the exact two-sided binomial p-value on
    min(n01, n10) out of n01 + n10 is used. Exact rather than the chi-square version because
    discordant counts are often small (tens of items), where the chi-square approximation is poor.
    """
    x, y = _pair(a, b)
    if not (is_binary(x) and is_binary(y)):
        raise ValueError("mcnemar needs binary (0/1) scores")
    n01 = int(np.sum((x == 0) & (y == 1)))
    n10 = int(np.sum((x == 1) & (y == 0)))
    m = n01 + n10
    p = 1.0 if m == 0 else min(1.0, 2.0 * float(stats.binom.cdf(min(n01, n10), m, 0.5)))
    return {"n01": n01, "n10": n10, "p": p}


def paired_test(a: Any, b: Any, conf: float = 0.95, n_boot: int = 10000, seed: int = 0) -> dict:
    """Paired comparison of arm `b` against reference `a`: dict(test, diff, lo, hi, p).

    Binary scores: exact McNemar p-value with the Agresti-Min interval (`paired_binary_ci`).
    Otherwise: paired bootstrap (`paired_bootstrap`). `diff` = mean(b) - mean(a).
    """
    x, y = _pair(a, b)
    if is_binary(x) and is_binary(y):
        m = mcnemar(x, y)
        diff, lo, hi = paired_binary_ci(x, y, conf)
        return {"test": "mcnemar", "diff": diff, "lo": lo, "hi": hi, "p": m["p"],
                "n01": m["n01"], "n10": m["n10"]}
    r = paired_bootstrap(x, y, n_boot=n_boot, seed=seed, conf=conf)
    return {"test": "bootstrap", **r}


def _ranked(pvalues: Sequence[float]):
    """(p array, NaN-filled output, indices of the non-NaN p-values in ascending order)."""
    p = np.asarray(pvalues, dtype=float)
    ok = np.flatnonzero(~np.isnan(p))
    return p, np.full(p.shape, np.nan), ok[np.argsort(p[ok], kind="stable")]


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as given; NaN stays NaN).

    Controls the family-wise error rate (the chance of any false "significant") under any
    dependence between tests, which is what a gate over six correlated benchmarks needs, and is
    uniformly more powerful than Bonferroni.
    """
    p, out, order = _ranked(pvalues)
    m = order.size
    if m == 0:
        return out.tolist()
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out.tolist()


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), same order as given; NaN stays NaN.

    Controls the false discovery rate rather than the family-wise error: the better choice for
    exploratory "which items/benchmarks changed" views with many comparisons.
    """
    p, out, order = _ranked(pvalues)
    m = order.size
    if m == 0:
        return out.tolist()
    ranked = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    out[order] = np.minimum(adj, 1.0)
    return out.tolist()
