"""The gate's decision: statistics per metric, and `compare`, which applies them to two outcome sets.

The decision rule, for one metric with allowed drop A (absolute, or relative x baseline mean) and
confidence level c (alpha = 1 - c), on the paired change D = mean(candidate) - mean(baseline).
"Must not drop by more than A" is a non-inferiority question, so a metric passes only when the
data show the drop is within A; a sample that merely could have seen a larger drop is not enough
(that rule passed true drops between A and A + MDE about half the time):

    L, U  = one-sided lower and upper c-confidence bounds on D (together: a two-sided
            (2c-1) interval, e.g. 90% for c = 0.95)
    MDE   = smallest drop a one-sided level-alpha test detects with the rule's power (0.8)
            at this n, using a conservative (upper c-bound) estimate of the per-item variance;
            needed n = the n at which MDE = A (`harness.metrics.mde`, `required_n`)
    fail          iff U < -A         the drop exceeds the allowance, significantly (one-sided
                                     test of H0: D >= -A at level alpha; p = its p-value)
    improved      iff L > 0          (and not fail) a significant improvement
    pass          iff L >= -A        (and not improved) non-inferiority shown: the drop is within
                                     the allowance at level alpha
    inconclusive  otherwise          neither shown; the row carries MDE and needed n

So a true drop of A or more passes at most alpha of the time, and a true drop of A + MDE or more
fails with probability at least the power. An inconclusive metric counts as failing (exit 3)
unless its rule says `inconclusive: pass` AND n >= needed n, i.e. the sample could have detected
a drop of size A; below that, "inconclusive" carries no evidence and never passes the gate. Even
then `inconclusive: pass` gives up the alpha guarantee: a powered sample lets a true drop of
A + MDE through up to 1 - power of the time (benchmarks/gate_calibration.py prints the rates).

Intervals: binary scores use the Agresti-Min adjusted paired interval (McNemar's exact p for "any
change" is reported beside it); non-binary scores use a paired t interval whose variance is at
least that of one discordant pair among n + 2 items, the same pseudo-count Agresti-Min adds, so a
small sample in which no score happened to change is not read as a zero-variance, infinitely
precise one; an aggregate (`mean_of`, e.g. the prior average) combines its components' standard
errors (benchmarks are independent samples). The variance bound used for the MDE is the Wilson
upper c-bound of the discordance rate (the mean squared per-item change); a rule's `discordance`
can only raise it (planning for more churn than observed), never replace the data's bound.
Consequence: with a 0 allowance a metric can fail or improve but never pass.

Every formula (Agresti-Min, Wilson bounds, MDE, needed n, the variance floor, micro averages, the
paired t test) comes from `harness.metrics`; this module only combines them into the rule above.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from .. import metrics as M
from ..errors import ConfigError
from .outcomes import OutcomeSet, as_outcome_set
from .rules import GateConfig, Rule
from .verdict import Verdict, message, pts


# ----- statistics (vectorised: the simulation tests call these on arrays of trials) ---------------
def _classify(lo, hi, allowed) -> np.ndarray:
    """The non-inferiority rule of the module docstring, element-wise."""
    lo, hi, allowed = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (lo, hi, allowed)))
    fail = hi < -allowed
    improved = ~fail & (lo > 0)
    passed = ~fail & ~improved & (lo >= -allowed)
    return np.where(fail, "fail", np.where(improved, "improved", np.where(passed, "pass", "inconclusive")))


def _power_terms(psi: Any, n: Any, allowed: Any, confidence: float, power: float) -> tuple[np.ndarray, np.ndarray]:
    """(MDE, needed n) from the per-item variance bound psi: the formulas of `harness.metrics`
    (one-sided level 1 - confidence). needed n is inf where no finite sample suffices (A = 0)."""
    psi, n, allowed = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (psi, n, allowed)))
    alpha = 1.0 - confidence
    with np.errstate(divide="ignore", invalid="ignore"):
        mde = np.asarray(M.mde(n, 0.0, alpha=alpha, power=power, discordance=psi), dtype=float)
    needed = np.full(psi.shape, np.inf)
    ok = (allowed > 0) & np.isfinite(psi)
    for a in np.unique(allowed[ok]):
        sel = ok & (allowed == a)
        needed[sel] = M.required_n(float(a), 0.0, alpha=alpha, power=power, discordance=psi[sel])
    return mde, needed


def _psi(data_bound: np.ndarray, discordance: float | None) -> np.ndarray:
    """The variance bound for the MDE: the data's, raised (never lowered) by a rule's planning value."""
    return data_bound if discordance is None else np.maximum(data_bound, float(discordance))


def binary_decision(n01: Any, n10: Any, n: Any, allowed: Any, confidence: float = 0.95, power: float = 0.8,
                    discordance: float | None = None) -> dict:
    """Gate statistics for paired binary outcomes, from counts (arrays allowed).

    n01 = items the candidate gained (baseline 0 -> candidate 1), n10 = items it lost. Returns
    arrays: center (adjusted change), se, lo, hi (one-sided `confidence` bounds, Agresti-Min),
    p (one-sided p-value of H0: change >= -allowed), psi (variance bound used), mde, needed_n
    (inf when allowed = 0), verdict.
    """
    n01, n10, n = (np.asarray(v, dtype=float) for v in (n01, n10, n))
    z = float(stats.norm.ppf(confidence))
    center, se = M.agresti_min(n01, n10, n)
    lo, hi = np.maximum(center - z * se, -1.0), np.minimum(center + z * se, 1.0)
    p = stats.norm.cdf((center + np.asarray(allowed, float)) / se)
    psi = _psi(np.asarray(M.wilson_upper((n01 + n10) / n, n, confidence), dtype=float), discordance)
    mde, needed = _power_terms(psi, n, allowed, confidence, power)
    return {"center": center, "se": se, "lo": lo, "hi": hi, "p": p, "psi": psi, "mde": mde, "needed_n": needed,
            "verdict": _classify(lo, hi, allowed)}


def continuous_decision(mean_d: Any, sd_d: Any, m2: Any, n: Any, allowed: Any, confidence: float = 0.95,
                        power: float = 0.8, discordance: float | None = None, scale: Any = 1.0) -> dict:
    """Gate statistics for paired non-binary scores from the per-item differences' mean, standard
    deviation (ddof=1), second moment E[d^2] and count (arrays allowed): paired t bounds, and an
    MDE from the Wilson upper bound of E[d^2] (scores scaled to [0, 1] by `scale`, the largest
    |difference| when above 1).

    The variance in the t interval is at least `harness.metrics.variance_floor` (one full-scale
    discordant pair among n + 2 items, the pseudo-count Agresti-Min adds in the binary branch).
    Without it, a sample in which no per-item score changed has se = 0 and would pass at n = 2.
    """
    mean_d, sd_d, m2, n, scale = (np.asarray(v, dtype=float) for v in (mean_d, sd_d, m2, n, scale))
    allowed = np.asarray(allowed, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.maximum(n - 1, 1)
        q = stats.t.ppf(confidence, df)
        var = np.maximum(np.nan_to_num(sd_d * sd_d, nan=0.0), M.variance_floor(n, scale))
        se = np.where(n >= 2, np.sqrt(var / n), np.inf)
        lo, hi = mean_d - q * se, mean_d + q * se
        p = np.where(n >= 2, stats.t.cdf((mean_d + allowed) / se, df), np.nan)
        psi = _psi(scale ** 2 * np.asarray(M.wilson_upper(np.clip(m2 / scale ** 2, 0, 1), n, confidence)), discordance)
        mde, needed = _power_terms(psi, n, allowed, confidence, power)
    return {"center": mean_d, "se": se, "lo": lo, "hi": hi, "p": p, "psi": psi, "mde": mde, "needed_n": needed,
            "verdict": _classify(lo, hi, allowed)}


def aggregate_decision(centers: Any, ses: Any, psis: Any, ns: Any, allowed: Any, confidence: float = 0.95,
                       power: float = 0.8) -> dict:
    """Gate statistics for an unweighted mean of K independent benchmarks, from each one's change
    estimate, standard error, variance bound psi and item count (arrays whose last axis is the K
    benchmarks): change = mean of changes, se = sqrt(sum se^2) / K, normal bounds. The MDE uses
    var = sum(psi_k / n_k) / K^2 and needed n scales the total item count by (MDE / A)^2 (every
    benchmark grown in proportion)."""
    centers, ses, psis, ns = (np.asarray(v, dtype=float) for v in (centers, ses, psis, ns))
    k = centers.shape[-1]
    center = centers.mean(axis=-1)
    se = np.sqrt(np.sum(ses ** 2, axis=-1)) / k
    z = float(stats.norm.ppf(confidence))
    lo, hi = center - z * se, center + z * se
    allowed = np.asarray(allowed, dtype=float)
    n_total = ns.sum(axis=-1)
    var_unit = np.sum(psis / ns, axis=-1) / k ** 2  # variance bound of the mean change
    mde, needed = _power_terms(var_unit * n_total, n_total, allowed, confidence, power)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(se > 0, stats.norm.cdf((center + allowed) / se), np.where(center < -allowed, 0.0, 1.0))
        p_change = np.where(se > 0, 2 * stats.norm.sf(np.abs(center) / se), np.where(center == 0, 1.0, 0.0))
    return {"center": center, "se": se, "lo": lo, "hi": hi, "p": p, "p_change": p_change, "psi": var_unit * n_total,
            "mde": mde, "needed_n": needed, "n": n_total, "verdict": _classify(lo, hi, allowed)}


# ----- comparison -------------------------------------------------------------------------------
def check_suites(cfg: GateConfig, base: OutcomeSet, cand: OutcomeSet) -> None:
    if cfg.suite and base.suite and cfg.suite != base.suite:
        raise ConfigError(f"baseline {base.source} is from suite {base.suite!r} but the gate file {cfg.path} "
                          f"is for suite {cfg.suite!r}")
    if cfg.suite and cand.suite and cfg.suite != cand.suite:
        raise ConfigError(f"candidate {cand.source} is from suite {cand.suite!r} but the gate file {cfg.path} "
                          f"is for suite {cfg.suite!r}")
    if base.suite and cand.suite and base.suite != cand.suite:
        raise ConfigError(f"baseline {base.source} is from suite {base.suite!r} but candidate {cand.source} "
                          f"from suite {cand.suite!r}")


def _examples(ids: set[str], k: int = 3) -> str:
    s = sorted(ids)
    return ", ".join(s[:k]) + (", ..." if len(s) > k else "")


def _check_items(cfg: GateConfig, base: OutcomeSet, cand: OutcomeSet) -> None:
    problems = []
    for name in cfg.needed_metrics():
        for role, o in (("baseline", base), ("candidate", cand)):
            if name not in o.metrics:
                extra = ""
                if name in (o.meta or {}).get("incomplete", []):
                    extra = " (its evaluation is incomplete)"
                raise ConfigError(f"{role} {o.source} has no metric {name!r} required by {cfg.path}{extra} "
                                  f"(it has: {', '.join(sorted(o.metrics)) or 'none'})")
        b, c = set(base.metrics[name]["items"]), set(cand.metrics[name]["items"])
        if not b:
            raise ConfigError(f"baseline {base.source}: metric {name!r} has no items")
        missing = b - c
        if missing:
            only_c = c - b
            msg = (f"metric {name!r}: baseline {base.source} and candidate {cand.source} are on different item "
                   f"sets: {len(missing)} of the baseline's {len(b)} items are missing from the candidate "
                   f"(e.g. {_examples(missing)})")
            if only_c:
                msg += f" and {len(only_c)} candidate items are not in the baseline (e.g. {_examples(only_c)})"
            problems.append(msg)
    if problems:
        more = f" (and {len(problems) - 1} more metric(s) differ)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)


def _allowed(rule: Rule, base_mean: float) -> tuple[float, str]:
    """The allowed drop in score units, and as the gate file wrote it (for the table)."""
    if rule.max_drop is not None:
        return rule.max_drop, f"{pts(rule.max_drop)} pts"
    allowed = rule.max_rel_drop * abs(base_mean)
    return allowed, f"{100 * rule.max_rel_drop:g}% rel = {pts(allowed)} pts"


def _metric_stats(x: np.ndarray, y: np.ndarray, rule: Rule, allowed: float) -> dict:
    """One metric's decision statistics, plus the two-sided "any change" p-value and the counts
    of items gained and lost: binary scores by their discordant counts, others by paired t."""
    n = x.size
    if M.is_binary(x) and M.is_binary(y):
        m = M.mcnemar(x, y)
        r = binary_decision(m["n01"], m["n10"], n, allowed, rule.confidence, rule.power, rule.discordance)
        return {k: (v.item() if isinstance(v, np.ndarray) else v) for k, v in r.items()} | {
            "p_change": m["p"], "test": "McNemar exact + Agresti-Min", "gained": m["n01"], "lost": m["n10"]}
    t = M.paired_t(x, y)
    d = y - x
    scale = max(1.0, float(np.max(np.abs(d))) if n else 1.0)
    r = continuous_decision(t["diff"], t["sd"], t["m2"], n, allowed, rule.confidence, rule.power,
                            rule.discordance, scale)
    return {k: (v.item() if isinstance(v, np.ndarray) else v) for k, v in r.items()} | {
        "p_change": t["p"], "test": "paired t", "gained": int(np.sum(d > 0)), "lost": int(np.sum(d < 0))}


def compare(baseline: OutcomeSet, candidate: OutcomeSet, cfg: GateConfig) -> list[Verdict]:
    """Compare a candidate with a baseline on every gated metric, on exactly the baseline's items.

    Raises ConfigError (exit 2) when the two come from different suites, a metric is missing, or
    the candidate lacks baseline items; extra candidate items are ignored (pairing needs the same
    items on both sides).
    """
    baseline, candidate = as_outcome_set(baseline), as_outcome_set(candidate)
    check_suites(cfg, baseline, candidate)
    _check_items(cfg, baseline, candidate)

    def pair(name: str, sign: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        bi, ci = baseline.metrics[name]["items"], candidate.metrics[name]["items"]
        keys = sorted(bi)
        x, y = sign * np.array([bi[k] for k in keys], float), sign * np.array([ci[k] for k in keys], float)
        w = baseline.metrics[name].get("weights")
        if w:  # a micro average: the paired t interval of these values is the ratio estimator's
            ww = [w[k] for k in keys]
            x, y = M.micro_scaled(x, ww), M.micro_scaled(y, ww)
        return x, y

    rows = []
    for rule in cfg.rules:
        sign = 1.0 if rule.higher_is_better else -1.0
        if rule.mean_of:
            rows.append(_aggregate(rule, [pair(m, sign) for m in rule.mean_of], baseline))
            continue
        x, y = pair(rule.metric, sign)
        allowed, text = _allowed(rule, float(x.mean()))
        s = _metric_stats(x, y, rule, allowed)
        m = baseline.metrics[rule.metric]
        needed = float(s["needed_n"])
        rows.append(Verdict(
            metric=rule.metric, task=m["task"], score=m["metric"], n=int(x.size), base=float(x.mean()),
            cand=float(y.mean()), diff=float(y.mean() - x.mean()), lo=float(s["lo"]), hi=float(s["hi"]),
            p=float(s["p"]), p_change=float(s["p_change"]), test=s["test"], allowed=allowed, allowance=text,
            confidence=rule.confidence, power=rule.power, mde=float(s["mde"]),
            needed_n=int(needed) if math.isfinite(needed) else None,
            verdict=str(s["verdict"]), on_inconclusive=rule.inconclusive, gained=s["gained"], lost=s["lost"]))
    for v in rows:
        v.message = message(v)
    return rows


def _aggregate(rule: Rule, pairs: list[tuple[np.ndarray, np.ndarray]], baseline: OutcomeSet) -> Verdict:
    """An unweighted mean over benchmarks (`aggregate_decision`); each part's estimate, standard
    error and variance bound come from its own branch (binary or continuous)."""
    k = len(pairs)
    parts = []
    for x, y in pairs:
        s = _metric_stats(x, y, Rule(metric="", max_drop=0.0, confidence=rule.confidence, power=rule.power,
                                     discordance=rule.discordance), 0.0)
        parts.append((x, y, s))
    base = float(np.mean([x.mean() for x, _, _ in parts]))
    cand = float(np.mean([y.mean() for _, y, _ in parts]))
    allowed, text = _allowed(rule, base)
    a = aggregate_decision([s["center"] for *_, s in parts], [s["se"] for *_, s in parts],
                           [s["psi"] for *_, s in parts], [x.size for x, _, _ in parts], allowed,
                           rule.confidence, rule.power)
    needed = float(a["needed_n"])
    return Verdict(metric=rule.metric, task="mean of " + ", ".join(rule.mean_of or []), score="mean",
                   n=int(a["n"]), base=base, cand=cand, diff=cand - base, lo=float(a["lo"]), hi=float(a["hi"]),
                   p=float(a["p"]), p_change=float(a["p_change"]), test=f"normal, mean of {k}", allowed=allowed,
                   allowance=text, confidence=rule.confidence, power=rule.power, mde=float(a["mde"]),
                   needed_n=int(needed) if math.isfinite(needed) else None, verdict=str(a["verdict"]),
                   on_inconclusive=rule.inconclusive,
                   gained=int(sum(s["gained"] for *_, s in parts)), lost=int(sum(s["lost"] for *_, s in parts)))
