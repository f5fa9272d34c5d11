"""Statistics over stored per-item outcomes: intervals, paired tests, forgetting, power.

    from harness.metrics import mean_ci, paired_test, forgetting, mde
    mean, lo, hi = mean_ci([1, 0, 1, 1])              # Wilson interval (binary scores)
    paired_test(base_scores, sft_scores)              # McNemar (binary) or paired bootstrap

Pure functions of numbers (numpy + scipy, no torch), so reports and the gate can be rebuilt from
the results store anywhere. Conventions:

- Scores are per item, in the same item order for paired functions (`a` = reference/baseline,
  `b` = arm/candidate); differences are always `b - a`, so a negative difference is a drop.
- "Binary" means every score is exactly 0 or 1; binary metrics get exact or score-based methods
  because the small test sets this project affords (68 tool-use items) break normal approximations.
- Confidence levels are two-sided unless a docstring says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "CHANCE", "is_binary", "wilson_interval", "wilson_upper", "mean_ci", "paired_binary_ci", "paired_bootstrap",
    "mcnemar", "paired_test", "holm", "benjamini_hochberg", "seed_ci", "prior_average",
    "forgetting", "prior_average_change_ci", "flip_table", "mde", "required_n", "cost_ratio",
    "cost_table", "is_at_chance", "MC_MEASURES", "choice_measures", "gold_index", "mc_item_measures", "mc_task",
]

#: Chance accuracy of the prior benchmarks whose chance level is fixed (0-shot multiple choice).
#: Generation benchmarks (IFEval, HumanEval) have chance 0; TruthfulQA mc1 has a variable number of
#: options per item, so it is left out rather than approximated.
CHANCE = {"prior/hellaswag": 0.25, "prior/mmlu": 0.25, "prior/winogrande": 0.5,
          "prior/ifeval": 0.0, "prior/humaneval": 0.0}


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


__all__ += ["agresti_min", "variance_floor", "paired_t"]


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
    lo, hi = np.quantile(boot, [0.5 - conf / 2, 0.5 + conf / 2])
    if diff == 0.0:
        p = 1.0
    else:
        p = float((1 + np.sum(np.abs(boot - diff) >= abs(diff))) / (n_boot + 1))
    return {"diff": diff, "lo": float(lo), "hi": float(hi), "p": min(1.0, p)}


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
    lo, hi = (float(v) for v in np.quantile(total, [0.5 - conf / 2, 0.5 + conf / 2]))
    p = 1.0 if diff == 0 else min(1.0, float((1 + np.sum(np.abs(total - diff) >= abs(diff))) / (n_boot + 1)))
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


def _quantiles(alpha: float, power: float, two_sided: bool) -> float:
    za = stats.norm.ppf(1 - alpha / 2) if two_sided else stats.norm.ppf(1 - alpha)
    return float(za + stats.norm.ppf(power))


def _planning_variance(p0: float, paired: bool, discordance: Any) -> Any:
    if paired and discordance is not None:
        d = np.asarray(discordance, dtype=float)
        if np.any(d < 0):
            raise ValueError("discordance must be >= 0")
        return float(d) if d.ndim == 0 else d
    if not 0 <= p0 <= 1:
        raise ValueError("p0 must be a proportion in [0, 1]")
    return 2.0 * p0 * (1.0 - p0)


def mde(n: Any, p0: float, alpha: float = 0.05, power: float = 0.8, paired: bool = True,
        discordance: Any = None, two_sided: bool = False) -> Any:
    """Minimum detectable effect: the smallest true change in accuracy that a level-`alpha` test
    on `n` items detects with probability `power`.

    Paired binary outcomes (same items, two models): the per-item difference is +-1 on discordant
    items and 0 otherwise, so its variance under "no change" is the discordance rate psi =
    P(items disagree), and MDE = (z_{1-alpha} + z_{power}) * sqrt(psi / n) (normal approximation
    of McNemar's test; it ignores the small -delta^2 correction, so it errs on the large side).
    For non-binary scores pass the second moment E[(b - a)^2] as `discordance`.
    Without a `discordance`, or with paired=False (two independent samples of n each), psi =
    2 * p0 * (1 - p0): the independent-samples value, conservative for paired model comparisons,
    whose outcomes are positively correlated. One-sided by default, as the gate's test is.
    `n` and `discordance` may be arrays.
    """
    psi = _planning_variance(p0, paired, discordance)
    n = np.asarray(n, dtype=float)
    out = _quantiles(alpha, power, two_sided) * np.sqrt(psi / n)
    return float(out) if out.ndim == 0 else out


def required_n(effect: float, p0: float, alpha: float = 0.05, power: float = 0.8, paired: bool = True,
               discordance: Any = None, two_sided: bool = False) -> Any:
    """Items needed so that `mde(n, ...) <= effect`: ceil((z_a + z_b)^2 * psi / effect^2).

    Same model and assumptions as `mde` (its exact inverse, rounded up). Raises ValueError for a
    non-positive effect, which no finite sample can detect. `discordance` may be an array (then
    so is the result).
    """
    effect = abs(float(effect))
    if effect == 0:
        raise ValueError("required_n: effect must be non-zero")
    psi = _planning_variance(p0, paired, discordance)
    out = np.ceil(_quantiles(alpha, power, two_sided) ** 2 * np.asarray(psi, dtype=float) / effect ** 2 - 1e-9)
    return int(out) if out.ndim == 0 else out.astype(int)


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


def is_at_chance(value: float, stderr: float, chance: float, conf: float = 0.95) -> bool:
    """True when `value` is not distinguishable from (or is below) the chance level.

    One-sided: flagged iff value - chance <= z * stderr with z the two-sided `conf` quantile
    (1.96). A benchmark at chance cannot show forgetting (there is nothing left to forget), so
    reports must flag it instead of reading its change as "no forgetting" (small models on MMLU
    are typically at 0.25). A NaN stderr is treated as 0.
    """
    se = 0.0 if stderr is None or math.isnan(stderr) else float(stderr)
    return float(value) - float(chance) <= _z(conf) * se


# ----- micro (ratio) means and the hierarchical bootstrap ---------------------------------------
# IFEval's headline `inst_level_loose_acc` is a ratio of sums over prompts (instructions followed /
# instructions given), not a mean of per-prompt fractions. With per-item `weights` (instructions per
# prompt) and per-item fractions as scores, the weighted mean is exactly that ratio, and resampling
# prompts (clusters) gives its bootstrap. One bootstrap below serves the ratio interval, the paired
# ratio comparison and the seeds-then-items comparison of claims.
__all__ += ["weighted_mean", "ratio_ci", "paired_ratio_bootstrap", "hierarchical_change_ci"]


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


def _percentile(boot: np.ndarray, conf: float) -> tuple[float, float]:
    lo, hi = np.quantile(boot, [0.5 - conf / 2, 0.5 + conf / 2])
    return float(lo), float(hi)


def _recentred_p(boot: np.ndarray, diff: float) -> float:
    if diff == 0.0:
        return 1.0
    return min(1.0, float((1 + np.sum(np.abs(boot - diff) >= abs(diff))) / (boot.size + 1)))


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


__all__ += ["ratio_stderr"]


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


#: The two continuous per-item measures of a multiple-choice item, from lm-eval's per-choice
#: loglikelihoods (raw sums of the continuation's token log-probabilities, not length-normalised):
#: `gold_logp` = log p(gold choice), `margin` = log p(gold) - max over the other choices.
MC_MEASURES = ("gold_logp", "margin")


def choice_measures(loglikelihoods: Sequence[float], gold: int) -> dict[str, float]:
    """{'gold_logp', 'margin'} of one multiple-choice item (see `MC_MEASURES`).

    Why: accuracy changes only when the argmax flips, so on a few hundred items a small model's
    loss of confidence stays invisible; the gold choice's log-probability and its margin over the
    best wrong choice move continuously with every item, and paired by item they detect a shift
    with far fewer items. The margin's sign is accuracy under raw loglikelihood (lm-eval's `acc`);
    benchmarks whose headline is `acc_norm` decide on length-normalised scores instead.
    """
    ll = [float(v) for v in loglikelihoods]
    if not 0 <= gold < len(ll) or len(ll) < 2:
        raise ValueError(f"choice_measures: gold {gold} outside {len(ll)} choices")
    other = max(v for i, v in enumerate(ll) if i != gold)
    return {"gold_logp": ll[gold], "margin": ll[gold] - other}


def gold_index(diag: Mapping[str, Any]) -> int | None:
    """The gold choice index a prior evaluation stored with a multiple-choice row: `gold`, else an
    integer `target` (lm-eval's, for rows stored before `gold` was)."""
    for k in ("gold", "target"):
        v = diag.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, str) and v.isdigit():
            return int(v)
    return None


def mc_item_measures(ids: Sequence[str], diags: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """{measure: {item_id: value}} (`MC_MEASURES`) for the stored rows that carry per-choice
    `loglikelihoods` and a gold index; {} for a benchmark without them (generation)."""
    out: dict[str, dict[str, float]] = {m: {} for m in MC_MEASURES}
    for i, d in zip(ids, diags):
        lls, gold = (d or {}).get("loglikelihoods"), gold_index(d or {})
        if not isinstance(lls, list) or len(lls) < 2 or gold is None or not 0 <= gold < len(lls):
            continue
        for m, v in choice_measures(lls, gold).items():
            out[m][str(i)] = v
    return out if out[MC_MEASURES[0]] else {}


def mc_task(task: str, measure: str) -> str:
    """The metric name of one continuous measure of a prior MC benchmark ('prior/mmlu', 'margin'
    -> 'mc/mmlu/margin'): results, claims and gate files use it like a task name."""
    return f"mc/{task.split('/', 1)[-1]}/{measure}"
