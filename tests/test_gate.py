"""harness.gate on synthetic per-item outcomes: verdicts, the gate's own error rates, bad input,
outputs, the store and evaluator paths, and the pytest plugin."""

from __future__ import annotations

import copy
import json
import math
from importlib.metadata import entry_points
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from scipy import stats

from harness import gate as G
from harness.errors import ConfigError, HarnessError
from harness.metrics import wilson_upper
from harness.store import Store

pytest_plugins = ["pytester"]

Z1 = 1.6448536269514722  # one-sided 95%
ZP = 0.8416212335729143  # power .8

GATE = """\
name: test-gate
suite: toy
defaults: {confidence: 0.95, power: 0.8, inconclusive: fail}
metrics:
  tooluse: {max_drop: 0.05}
  prior/hellaswag: {max_drop: 0.02}
  prior/mmlu: {max_drop: 0.02}
"""
SIZES = {"tooluse": 1500, "prior/hellaswag": 2000, "prior/mmlu": 2000}


def make_outcomes(sizes=SIZES, p=0.6, seed=0, suite="toy", source="base") -> G.OutcomeSet:
    rng = np.random.default_rng(seed)
    return G.OutcomeSet(
        metrics={m: {"task": m, "metric": "acc", "items": {f"{m}-{i:05d}": float(rng.random() < p) for i in range(n)}}
                 for m, n in sizes.items()},
        suite=suite, source=source)


def with_flips(o: G.OutcomeSet, metric: str, k: int, frm: float = 1.0, to: float = 0.0, source="cand") -> G.OutcomeSet:
    """Copy of o where the first k items of `metric` scoring `frm` now score `to`."""
    c = copy.deepcopy(o)
    c.source = source
    items = c.metrics[metric]["items"]
    for key in [k_ for k_, v in items.items() if v == frm][:k]:
        items[key] = to
    return c


def noisy(o: G.OutcomeSet, rate: float, seed: int) -> G.OutcomeSet:
    """Symmetric noise: every item flips with probability `rate` (no true change)."""
    rng = np.random.default_rng(seed)
    c = copy.deepcopy(o)
    for m in c.metrics.values():
        m["items"] = {k: (1.0 - v if rng.random() < rate else v) for k, v in m["items"].items()}
    return c


@pytest.fixture
def gate_file(tmp_path):
    def write(text=GATE, name="gate.yaml"):
        p = tmp_path / name
        p.write_text(text)
        return p
    return write


def verdicts(rows):
    return {r.metric: r.verdict for r in rows}


# ----- verdicts -----------------------------------------------------------------------------------
def test_identical_candidate_passes(gate_file):
    cfg = G.load_gate_config(gate_file())
    base = make_outcomes()
    rows = G.compare(base, copy.deepcopy(base), cfg)
    assert verdicts(rows) == {m: "pass" for m in SIZES}
    assert G.exit_code(rows) == 0
    assert all(r.diff == 0 and r.lost == 0 for r in rows)


def test_planted_regression_fails_exactly_that_metric(gate_file):
    cfg = G.load_gate_config(gate_file())
    base = make_outcomes()
    cand = with_flips(noisy(base, 0.05, seed=1), "prior/mmlu", 120)  # mmlu: -6 points, others noise
    rows = G.compare(base, cand, cfg)
    v = verdicts(rows)
    assert v["prior/mmlu"] == "fail"
    assert all(v[m] in ("pass", "improved") for m in ("tooluse", "prior/hellaswag"))
    assert G.exit_code(rows) == 1
    r = next(r for r in rows if r.metric == "prior/mmlu")
    assert r.hi < -0.02 and r.p < 0.05 and r.failed
    assert "prior/mmlu: dropped" in r.message and "allowed 2.0 pts" in r.message


def test_improvement_is_reported(gate_file):
    cfg = G.load_gate_config(gate_file())
    base = make_outcomes()
    rows = G.compare(base, with_flips(base, "tooluse", 100, frm=0.0, to=1.0), cfg)
    assert verdicts(rows)["tooluse"] == "improved" and G.exit_code(rows) == 0
    assert "improved by" in rows[0].message


def test_tiny_sample_is_inconclusive_with_hand_mde(gate_file):
    cfg = G.load_gate_config(gate_file("metrics:\n  tooluse: {max_drop: 0.05}\n"))
    base = make_outcomes({"tooluse": 20})
    (row,) = G.compare(base, copy.deepcopy(base), cfg)
    # nothing flipped: discordance bound = Wilson one-sided 95% upper bound of 0/20 = z^2 / (20 + z^2)
    psi = Z1**2 / (20 + Z1**2)
    assert row.mde == pytest.approx((Z1 + ZP) * math.sqrt(psi / 20))  # = .1919
    assert row.mde == pytest.approx(0.1919, abs=1e-4)
    assert row.needed_n == math.ceil((Z1 + ZP) ** 2 * psi / 0.05**2) == 295
    # Agresti-Min lower bound -z * sqrt((1/22)/22) = -.0748 does not rule out a 5-point drop
    assert row.lo == pytest.approx(-Z1 * math.sqrt(1 / 22 / 22))
    assert row.verdict == "inconclusive" and G.exit_code([row]) == G.EXIT_UNDECIDED == 3
    assert "n=20" in row.message and "about 295 items" in row.message


def test_inconclusive_pass_needs_the_needed_n(gate_file):
    """Defect 3: `inconclusive: pass` let a sample too small to see anything through (exit 0)."""
    cfg = G.load_gate_config(gate_file("defaults: {inconclusive: pass}\nmetrics:\n  tooluse: {max_drop: 0.05}\n"))
    base = make_outcomes({"tooluse": 20})
    (row,) = G.compare(base, with_flips(base, "tooluse", 3), cfg)  # 3 of 20 lost: a 15-point drop
    assert row.verdict == "inconclusive" and row.n < row.needed_n
    assert row.failed and row.counts_as == "undecided" and G.exit_code([row]) == 3
    assert "`inconclusive: pass` needs n >= needed n" in row.message
    # once n >= needed n the sample could have seen a drop of 5 points: the gate file's choice holds
    base = make_outcomes({"tooluse": 3000}, p=0.5)
    cand = with_flips(noisy(base, 0.02, seed=3), "tooluse", 150)  # about -5 points
    (row,) = G.compare(base, cand, cfg)
    assert row.verdict == "inconclusive" and row.n >= row.needed_n, row.message
    assert not row.failed and G.exit_code([row]) == 0 and "inconclusive (pass)" in G.render_markdown([row])


def test_continuous_zero_variance_is_not_a_precise_sample(gate_file):
    """Defect 1: when no per-item difference varies (unchanged IFEval fractions, or the same small
    shift on every item) the sample sd is 0; the paired t interval then had zero width and the
    metric passed at any n >= 2. The binary branch says inconclusive at the same n, and so must this."""
    cfg = G.load_gate_config(gate_file("metrics:\n  prior/ifeval: {max_drop: 0.03}\n"))
    items = {f"i{k}": v for k, v in enumerate([0.25, 0.5, 0.75, 1.0, 0.5, 0.0, 0.75, 0.25])}
    base = G.OutcomeSet({"prior/ifeval": {"task": "prior/ifeval", "metric": "inst_level_loose_acc", "items": items}})
    shifted = copy.deepcopy(base)
    shifted.metrics["prior/ifeval"]["items"] = {k: v - 0.01 for k, v in items.items()}
    for cand in (copy.deepcopy(base), shifted):
        (row,) = G.compare(base, cand, cfg)
        assert row.test == "paired t" and row.verdict == "inconclusive", row.message
        assert row.lo < -0.03 and G.exit_code([row]) == 3
    # the floor is one full-scale discordant pair among n + 2 items, as in Agresti-Min
    (row,) = G.compare(base, copy.deepcopy(base), cfg)
    assert row.lo == pytest.approx(-stats.t.ppf(0.95, 7) * math.sqrt(1 / 10 / 8))
    binary = G.binary_decision(0, 0, 8, 0.03)
    assert str(binary["verdict"]) == row.verdict == "inconclusive"


def test_a_drop_inside_the_mde_band_does_not_pass(gate_file):
    """Defect 2: "pass iff MDE <= A" passed an observed 3-point drop with A = 2 points at n = 4000
    because the sample could have seen a 2-point drop. Pass needs the lower bound >= -A."""
    base = make_outcomes({"tooluse": 4000}, p=0.5)
    items = base.metrics["tooluse"]["items"]
    ones = [k for k, v in items.items() if v == 1.0][:460]
    zeros = [k for k, v in items.items() if v == 0.0][:340]
    cand = copy.deepcopy(base)
    cand.metrics["tooluse"]["items"].update({k: 0.0 for k in ones} | {k: 1.0 for k in zeros})
    cfg = G.load_gate_config(gate_file("metrics:\n  tooluse: {max_drop: 0.02}\n"))
    (row,) = G.compare(base, cand, cfg)
    assert row.diff == pytest.approx(-0.03) and (row.lost, row.gained) == (460, 340)
    assert row.mde < 0.02 and row.n >= row.needed_n  # the old rule's pass condition holds
    assert row.lo < -0.02 < row.hi and row.verdict == "inconclusive", row.message
    assert G.exit_code([row]) == 3


def test_user_discordance_cannot_replace_the_data(gate_file):
    """Defect 4: 15 of 60 items discordant (12 lost, 3 gained: a 15-point drop, A = 5 points)
    with `discordance: 0.02` passed although the interval is [-24.7, -4.3]. The variance bound is
    the larger of the user's value and the data's, so the sample counts as far too small."""
    base = make_outcomes({"tooluse": 60}, p=0.5, seed=4)
    items = base.metrics["tooluse"]["items"]
    cand = copy.deepcopy(base)
    cand.metrics["tooluse"]["items"].update({k: 0.0 for k in [k for k, v in items.items() if v == 1.0][:12]}
                                            | {k: 1.0 for k in [k for k, v in items.items() if v == 0.0][:3]})
    text = "metrics:\n  tooluse: {max_drop: 0.05, discordance: 0.02, inconclusive: pass}\n"
    (row,) = G.compare(base, cand, G.load_gate_config(gate_file(text)))
    assert (round(100 * row.lo, 1), round(100 * row.hi, 1)) == (-24.7, -4.3)
    data_psi = wilson_upper(15 / 60, 60, 0.95)
    assert row.mde == pytest.approx((Z1 + ZP) * math.sqrt(data_psi / 60))
    assert row.verdict == "inconclusive" and row.needed_n > 60 and G.exit_code([row]) == 3, row.message
    # a planning value above the data's bound is honoured (more conservative)
    (row,) = G.compare(base, cand, G.load_gate_config(gate_file(text.replace("0.02", "0.9"))))
    assert row.mde == pytest.approx((Z1 + ZP) * math.sqrt(0.9 / 60))


def test_exit_codes_are_distinct_from_the_shell(tmp_path):
    """Defect 6: "cannot decide" and "bad input" both exited 2. Now 0 pass, 1 regression only,
    2 bad input, 3 cannot decide, through the real console script."""
    import subprocess
    import sys

    base = make_outcomes({"tooluse": 1500})
    small = make_outcomes({"tooluse": 20})
    files = {"base": G.save_baseline(base, tmp_path / "base.json"),
             "drop": G.save_baseline(with_flips(base, "tooluse", 300), tmp_path / "drop.json"),
             "small": G.save_baseline(small, tmp_path / "small.json")}
    gate = tmp_path / "gate.yaml"
    gate.write_text("metrics:\n  tooluse: {max_drop: 0.05}\n")

    def code(b, c):
        cmd = [sys.executable, "-m", "harness.cli", "gate", "--baseline", str(b), "--candidate", str(c),
               "--suite", str(gate), "--db", str(tmp_path / "none.db")]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path).returncode

    assert code(files["base"], files["base"]) == 0
    assert code(files["base"], files["drop"]) == 1
    assert code(tmp_path / "missing.json", files["base"]) == 2
    assert code(files["small"], files["small"]) == 3


def test_relative_allowance_and_zero_allowance(gate_file):
    base = make_outcomes({"tooluse": 3000}, p=0.5)
    cand = with_flips(base, "tooluse", 120)  # -4 points on a ~50% baseline = -8% relative
    cfg = G.load_gate_config(gate_file("metrics:\n  tooluse: {max_rel_drop: 0.02}\n"))
    (row,) = G.compare(base, cand, cfg)
    assert row.allowed == pytest.approx(0.02 * row.base) and row.allowance.startswith("2% rel = 1.0 pts")
    assert row.verdict == "fail"
    cfg = G.load_gate_config(gate_file("metrics:\n  tooluse: {max_drop: 0}\n"))
    (row,) = G.compare(base, copy.deepcopy(base), cfg)
    assert row.verdict == "inconclusive" and row.needed_n is None  # no sample proves "no drop at all"


def test_continuous_scores_use_paired_t(gate_file):
    rng = np.random.default_rng(5)
    items = {f"i{k}": float(v) for k, v in enumerate(rng.integers(0, 5, 800) / 4)}  # IFEval-like fractions
    base = G.OutcomeSet({"prior/ifeval": {"task": "prior/ifeval", "metric": "inst_level_loose_acc", "items": items}})
    cfg = G.load_gate_config(gate_file("metrics:\n  prior/ifeval: {max_drop: 0.03}\n"))
    (row,) = G.compare(base, copy.deepcopy(base), cfg)
    assert row.test == "paired t" and row.verdict == "pass"
    cand = copy.deepcopy(base)
    cand.metrics["prior/ifeval"]["items"] = {k: max(0.0, v - 0.25) if i % 2 else v
                                            for i, (k, v) in enumerate(items.items())}
    (row,) = G.compare(base, cand, cfg)
    d = np.array([cand.metrics["prior/ifeval"]["items"][k] - items[k] for k in sorted(items)])
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert row.verdict == "fail"
    assert row.hi == pytest.approx(d.mean() + stats.t.ppf(0.95, d.size - 1) * se)


def test_aggregate_mean_of(gate_file):
    text = GATE + "  prior/average: {mean_of: [prior/hellaswag, prior/mmlu], max_drop: 0.01}\n"
    cfg = G.load_gate_config(gate_file(text))
    base = make_outcomes()
    # -1.5 points on each benchmark: each within its 2-point allowance, the average beyond 1 point
    cand = with_flips(with_flips(base, "prior/hellaswag", 30), "prior/mmlu", 30)
    v = verdicts(G.compare(base, cand, cfg))
    assert v["prior/average"] == "fail"
    assert v["prior/hellaswag"] != "fail" and v["prior/mmlu"] != "fail"
    row = next(r for r in G.compare(base, cand, cfg) if r.metric == "prior/average")
    assert row.diff == pytest.approx(-0.015) and row.n == 4000


# ----- the gate's own error rates (vectorised simulation) ------------------------------------------
T = 2000


def _rates(verdict):
    return {k: float(np.mean(verdict == k)) for k in G.VERDICTS}


# Simulated trials of each branch. Binary: cells (both right, lost, gained, both wrong) with
# `churn` items flipping each way plus `drop` more lost. Continuous: IFEval-like per-item changes
# in {-.5, -.25, 0, .25, .5}, symmetric churn plus `drop` shifted to -.5. Aggregate: the mean of
# one binary and one continuous benchmark, both dropping by `drop`.
def _binary_trials(rng, n, drop, T=T, churn=0.05, allowed=0.02, **kw):
    c = rng.multinomial(n, [0.5 - churn - drop, churn + drop, churn, 0.5 - churn], size=T)
    return G.binary_decision(c[:, 2], c[:, 1], n, allowed, **kw)


_D = np.array([-0.5, -0.25, 0.0, 0.25, 0.5])


def _continuous_trials(rng, n, drop, T=T, churn=0.05, allowed=0.03, **kw):
    probs = [churn + 2 * drop, 0.1, 0.0, 0.1, churn]
    probs[2] = 1 - sum(probs)
    c = rng.multinomial(n, probs, size=T)
    mean, m2 = c @ _D / n, c @ _D ** 2 / n
    sd = np.sqrt(np.maximum(n * (m2 - mean ** 2) / max(n - 1, 1), 0.0))
    return G.continuous_decision(mean, sd, m2, n, allowed, **kw)


def _aggregate_trials(rng, n, drop, T=T, allowed=0.02):
    b = _binary_trials(rng, n, drop, T, allowed=0.0)
    c = _continuous_trials(rng, n, drop, T, allowed=0.0)
    return G.aggregate_decision(np.stack([b["center"], c["center"]], -1), np.stack([b["se"], c["se"]], -1),
                                np.stack([b["psi"], c["psi"]], -1), [n, n], allowed)


def _nominal_mde(branch, n, allowed):
    """MDE from the true per-item variance at the boundary (drop = allowed), churn 0.05."""
    k = Z1 + ZP
    v_bin = 2 * 0.05 + allowed
    v_cont = 0.25 * (2 * 0.05 + 2 * allowed) + 0.0625 * 0.2
    var = {"binary": v_bin / n, "continuous": v_cont / n, "aggregate": (v_bin / n + v_cont / n) / 4}[branch]
    return k * math.sqrt(var)


TRIALS = {"binary": _binary_trials, "continuous": _continuous_trials, "aggregate": _aggregate_trials}
ALLOWED = {"binary": 0.02, "continuous": 0.03, "aggregate": 0.02}


def _show(label, r):
    text = f"{label}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items())
    print(text)
    return text


@pytest.mark.parametrize("branch", ["binary", "continuous", "aggregate"])
def test_a_drop_of_the_allowance_or_more_rarely_passes(branch):
    """Defect 2 and the gate's own test: for every branch, a true drop of A, A + MDE or 2A passes
    (verdict pass or improved) at most alpha (+ 3 sigma of simulation error) of the time, at small
    and large n. The old rule ("pass iff MDE <= A") passed a 3-point drop with A = 2 points at
    n = 4000 about 45% of the time."""
    rng = np.random.default_rng(21)
    alpha, a = 0.05, ALLOWED[branch]
    band = 3 * math.sqrt(alpha * (1 - alpha) / T)
    seen = []
    for n in (68, 500, 4000):
        mde = _nominal_mde(branch, n, a)
        for drop in (a, a + mde, 2 * a, 1.5 * a):
            r = _rates(TRIALS[branch](rng, n, drop)["verdict"])
            seen.append(_show(f"{branch} n={n} drop={100 * drop:.1f}pts (A={100 * a:g})", r))
            assert r["pass"] + r["improved"] <= alpha + band, "\n".join(seen)


@pytest.mark.parametrize("branch", ["binary", "continuous", "aggregate"])
def test_an_unchanged_candidate_rarely_fails(branch):
    """A candidate with no true change fails at most alpha of the time at every n; once n is well
    above the needed n it passes with at least the rule's power; below it, it is inconclusive
    rather than failed."""
    rng = np.random.default_rng(22)
    alpha, power, a = 0.05, 0.8, ALLOWED[branch]
    band = 3 * math.sqrt(alpha * (1 - alpha) / T)
    seen = []
    for n in (16, 68, 500, 4000):
        out = TRIALS[branch](rng, n, 0.0)
        r = _rates(out["verdict"])
        powered = float(np.mean(n >= out["needed_n"]))
        seen.append(_show(f"{branch} n={n} drop=0 (A={100 * a:g}, share with n >= needed n {powered:.2f})", r))
        assert r["fail"] <= alpha + band, "\n".join(seen)
        if powered == 1.0:
            assert r["pass"] + r["improved"] >= power - 3 * math.sqrt(power * (1 - power) / T), "\n".join(seen)
        if powered == 0.0:
            assert r["inconclusive"] >= 1 - alpha - band or r["pass"] > 0, "\n".join(seen)
    assert "share with n >= needed n 1.00" in seen[-1]  # the largest n is powered: the pass-rate check ran


def test_tiny_samples_never_pass():
    """With a handful of items nothing is shown: every binary outcome without a net gain, every
    continuous sample (unchanged or slightly changed) and a small aggregate is inconclusive, never
    a pass, whatever the gate file says about inconclusive metrics."""
    for a in (0.02, 0.03, 0.05):
        for n in range(1, 21):
            n01, n10 = np.array([(g, lo) for lo in range(n + 1) for g in range(lo + 1) if g + lo <= n]).T
            v = G.binary_decision(n01, n10, n, a)
            assert not np.any(np.isin(v["verdict"], ["pass", "improved"])), (a, n)
            assert not np.any(G.counted(v["verdict"], n, v["needed_n"], "pass") == "pass"), (a, n)
            if n >= 2:
                rng = np.random.default_rng(n)
                d = np.concatenate([np.zeros((1, n)), np.full((1, n), -0.01), rng.normal(0, 0.02, (50, n))])
                c = G.continuous_decision(d.mean(1), d.std(1, ddof=1), (d * d).mean(1), n, a)
                assert not np.any(G.counted(c["verdict"], n, c["needed_n"], "pass") == "pass"), (a, n)
    rng = np.random.default_rng(23)
    agg = _aggregate_trials(rng, 5, 0.0, allowed=0.05)
    no_gain = agg["center"] <= 0
    r = _rates(agg["verdict"][no_gain])
    text = _show("aggregate of two 5-item benchmarks, no change, trials without an observed gain (A=5)", r)
    assert no_gain.mean() > 0.5 and r["pass"] == r["improved"] == 0.0, text


def test_shipped_gate_file_blocks_a_large_tooluse_drop():
    """Defect 3: with the shipped suites/gate.yaml, a true 20-point tool-use drop exited 0 about
    79% of the time at n = 16 (23% at n = 68). Now the gate lets it through at most alpha of the
    time; every other rule of the file likewise for a drop of twice its allowance."""
    path = Path(__file__).resolve().parents[1] / "suites" / "gate.yaml"
    cfg = G.load_gate_config(path)
    rng = np.random.default_rng(24)
    alpha = 0.05
    band = 3 * math.sqrt(alpha * (1 - alpha) / T)
    seen = []
    cases = [("tooluse", 16, 0.2), ("tooluse", 68, 0.2)]
    cases += [(r.metric, n, 2 * (r.max_drop or 0.05)) for r in cfg.rules if not r.mean_of for n in (68, 164)]
    for metric, n, drop in cases:
        rule = next(r for r in cfg.rules if r.metric == metric)
        out = _binary_trials(rng, n, drop, allowed=rule.max_drop, confidence=rule.confidence, power=rule.power,
                             discordance=rule.discordance)
        how = G.counted(out["verdict"], n, out["needed_n"], rule.inconclusive)
        r = {k: float(np.mean(how == k)) for k in ("pass", "undecided", "fail")}
        seen.append(_show(f"shipped {metric} n={n} true drop {100 * drop:g} pts: exit 0/3/1", r))
        assert r["pass"] <= alpha + band, "\n".join(seen)


def test_fail_rate_is_calibrated_at_the_boundary():
    """When the true drop equals the allowance exactly, a level-alpha test fails about alpha of the
    time: neither anti-conservative (> alpha + 3 sigma) nor useless (< alpha - 3 sigma)."""
    rng = np.random.default_rng(12)
    alpha = 0.05
    sigma = math.sqrt(alpha * (1 - alpha) / T)
    for n, allowed, cells in ((2000, 0.03, [0.5, 0.115, 0.085, 0.3]),  # true change -0.03 = -allowed
                              (2000, 0.0, [0.5, 0.1, 0.1, 0.3]),  # no change, zero allowance
                              (500, 0.0, [0.6, 0.02, 0.02, 0.36])):  # few discordant pairs
        c = rng.multinomial(n, cells, size=T)
        r = _rates(G.binary_decision(c[:, 2], c[:, 1], n, allowed, 0.95, 0.8)["verdict"])
        assert alpha - 3 * sigma <= r["fail"] <= alpha + 3 * sigma, (n, allowed, r)


def test_mde_means_what_it_says():
    """A true drop exceeding the allowance by the MDE is caught with about the stated power (MDE is
    computed from a conservative variance bound, so at least 0.8 - 3 sigma)."""
    rng = np.random.default_rng(13)
    n, allowed = 2000, 0.03
    mde = (Z1 + ZP) * math.sqrt(0.2 / n)  # discordance 0.2
    c = rng.multinomial(n, [0.5, 0.1 + (allowed + mde) / 2, 0.1 - (allowed + mde) / 2, 0.3], size=T)
    r = _rates(G.binary_decision(c[:, 2], c[:, 1], n, allowed, 0.95, 0.8)["verdict"])
    assert r["fail"] >= 0.8 - 3 * math.sqrt(0.16 / T)


def test_continuous_fail_rate_calibrated():
    rng = np.random.default_rng(14)
    alpha, n = 0.05, 300
    sigma = math.sqrt(alpha * (1 - alpha) / T)
    d = rng.normal(-0.02, 0.2, size=(T, n))  # true change = -allowance
    r = _rates(G.continuous_decision(d.mean(1), d.std(1, ddof=1), (d * d).mean(1), n, 0.02, 0.95, 0.8)["verdict"])
    assert alpha - 3 * sigma <= r["fail"] <= alpha + 3 * sigma


def test_compare_matches_vectorised_rule(gate_file):
    cfg = G.load_gate_config(gate_file("metrics:\n  tooluse: {max_drop: 0.03}\n"))
    base = make_outcomes({"tooluse": 300})
    x = np.array([base.metrics["tooluse"]["items"][k] for k in sorted(base.metrics["tooluse"]["items"])])
    for seed in range(15):
        cand = noisy(base, 0.08, seed)
        y = np.array([cand.metrics["tooluse"]["items"][k] for k in sorted(base.metrics["tooluse"]["items"])])
        (row,) = G.compare(base, cand, cfg)
        v = G.binary_decision(np.sum((x == 0) & (y == 1)), np.sum((x == 1) & (y == 0)), 300, 0.03)
        assert row.verdict == str(v["verdict"]) and row.hi == pytest.approx(float(v["hi"]))


# ----- bad input ---------------------------------------------------------------------------------
def test_baseline_from_other_suite(gate_file):
    cfg = G.load_gate_config(gate_file())
    with pytest.raises(ConfigError, match="suite 'other' but the gate file .* is for suite 'toy'"):
        G.compare(make_outcomes(suite="other"), make_outcomes(), cfg)
    with pytest.raises(ConfigError, match="from suite 'toy' but candidate cand from suite 'x'"):
        G.compare(make_outcomes(), make_outcomes(suite="x", source="cand"), G.load_gate_config(
            gate_file(GATE.replace("suite: toy\n", ""))))


def test_different_item_set_says_what_differs(gate_file):
    cfg = G.load_gate_config(gate_file())
    base = make_outcomes()
    cand = copy.deepcopy(base)
    cand.source = "cand"
    items = cand.metrics["prior/mmlu"]["items"]
    for k in sorted(items)[:3]:
        del items[k]
    items["new-item"] = 1.0
    with pytest.raises(ConfigError) as e:
        G.compare(base, cand, cfg)
    msg = str(e.value)
    assert "metric 'prior/mmlu'" in msg and "3 of the baseline's 2000 items are missing" in msg
    assert "prior/mmlu-00000" in msg and "1 candidate items are not in the baseline (e.g. new-item)" in msg
    assert "\n" not in msg
    # a candidate superset is fine: extra items are ignored
    sup = copy.deepcopy(base)
    sup.metrics["tooluse"]["items"]["extra"] = 0.0
    assert G.exit_code(G.compare(base, sup, cfg)) == 0


def test_missing_metric(gate_file):
    cfg = G.load_gate_config(gate_file())
    base = make_outcomes()
    cand = copy.deepcopy(base)
    cand.source = "cand"
    del cand.metrics["prior/hellaswag"]
    with pytest.raises(ConfigError, match="candidate cand has no metric 'prior/hellaswag' required by"):
        G.compare(base, cand, cfg)
    with pytest.raises(ConfigError, match="baseline cand has no metric 'prior/hellaswag'"):
        G.compare(cand, base, cfg)


@pytest.mark.parametrize("text, match", [
    ("metrics: [tooluse\n", r"not valid YAML/JSON \(line 2"),
    ("- a\n- b\n", "expected a mapping"),
    ("metrics: {}\n", "metrics: expected a non-empty mapping"),
    ("metrics:\n  tooluse: {max_dorp: 0.02}\n", r"metrics.tooluse.max_dorp: unknown key \(allowed: confidence, "),
    ("metrics:\n  tooluse: {max_drop: 0.02, max_rel_drop: 0.1}\n", "exactly one of max_drop"),
    ("metrics:\n  tooluse: {confidence: 0.9}\n", "exactly one of max_drop"),
    ("metrics:\n  tooluse: {max_drop: two}\n", r"metrics.tooluse.max_drop: expected a number in \[0, inf\], got 'two'"),
    ("metrics:\n  tooluse: {max_drop: 0.02, confidence: 95}\n", "metrics.tooluse.confidence: expected a number"),
    ("defaults: {inconclusive: maybe}\nmetrics:\n  tooluse: {max_drop: 0.02}\n",
     "defaults.inconclusive: expected 'pass' or 'fail'"),
    ("metric:\n  tooluse: {max_drop: 0.02}\n",
     r": metric: unknown key \(allowed: defaults, description, format, metrics, name, suite\)$"),
    ("format: harness-gate/9\nmetrics:\n  tooluse: {max_drop: 0.02}\n", "format"),
    ("metrics:\n  a: {max_drop: 0.1, mean_of: [b]}\n  c: {max_drop: 0.1, mean_of: [a]}\n", "itself an aggregate"),
    ("metrics:\n  a: {max_drop: 0.1, mean_of: tooluse}\n", "mean_of: expected a non-empty list"),
])
def test_malformed_gate_file(gate_file, text, match):
    path = gate_file(text)
    with pytest.raises(ConfigError, match=match) as e:
        G.load_gate_config(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_shipped_gate_file():
    path = Path(__file__).resolve().parents[1] / "suites" / "gate.yaml"
    cfg = G.load_gate_config(path)
    text = path.read_text()
    assert text.startswith("#") and "harness gate --baseline" in text.split("format:")[0]
    assert {"tooluse", "prior/hellaswag", "prior/truthfulqa_mc1", "prior/mmlu", "prior/ifeval", "prior/winogrande",
            "prior/humaneval"} <= set(cfg.needed_metrics())
    assert all(r.inconclusive in ("pass", "fail") and r.confidence == 0.95 for r in cfg.rules)


def test_missing_gate_file(tmp_path):
    with pytest.raises(ConfigError, match="gate file not found"):
        G.load_gate_config(tmp_path / "nope.yaml")


# ----- baseline files -------------------------------------------------------------------------------
def test_baseline_file_round_trip(tmp_path):
    base = make_outcomes({"tooluse": 5, "prior/mmlu": 7})
    path = G.save_baseline(base, tmp_path / "baselines" / "toy.json", note="unit test")
    text = path.read_text()
    doc = json.loads(text)
    assert doc["format"] == "harness-baseline/1" and doc["suite"] == "toy"
    assert doc["metrics"]["tooluse"]["n"] == 5 and doc["metrics"]["tooluse"]["item_set"] == base.item_set("tooluse")
    assert '"tooluse-00000": ' in text and text.count("\n") > 12  # one item per line: reviewable diffs
    loaded = G.load_baseline(path)
    assert loaded.metrics["prior/mmlu"]["items"] == base.metrics["prior/mmlu"]["items"]
    assert loaded.suite == "toy" and loaded.source == str(path)


def test_bad_baseline_files(tmp_path):
    p = tmp_path / "b.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match=r"b.json: not valid JSON \(line 1"):
        G.load_baseline(p)
    p.write_text(json.dumps({"format": "harness-baseline/0", "metrics": {}}))
    with pytest.raises(ConfigError, match="format 'harness-baseline/0' is not supported"):
        G.load_baseline(p)
    G.save_baseline(make_outcomes({"tooluse": 4}), p)
    doc = json.loads(p.read_text())
    doc["metrics"]["tooluse"]["items"]["tooluse-00000"] = 0.5
    doc["metrics"]["tooluse"]["items"]["sneaked-in"] = 1.0
    p.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="item_set does not match"):
        G.load_baseline(p)
    doc["metrics"]["tooluse"]["items"]["sneaked-in"] = "yes"
    p.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"metrics.tooluse.items.sneaked-in: expected a finite number"):
        G.load_baseline(p)
    with pytest.raises(ConfigError, match="baseline file not found"):
        G.load_baseline(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="no results store"):
        G.load_baseline("some-run-id")


# ----- stored runs, evaluator, run_gate ---------------------------------------------------------------
def _store_eval(store: Store, run_id: str, task: str, arm: str, scores: dict, complete: bool = True) -> str:
    key = Store.eval_key(task=task, arm=arm, run=run_id)
    store.begin_eval(key, task=task, arm=arm, model="toy", model_hash="m", data_hash="d", settings={})
    store.add_examples(key, [{"item_id": k, "idx": i, "prompt_hash": "h", "score": v}
                             for i, (k, v) in enumerate(scores.items())])
    if complete:
        store.finish_eval(key, {"accuracy": sum(scores.values()) / len(scores)})
    store.link(run_id, key, label=arm)
    return key


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "results" / "harness.db")
    yield s
    s.close()


def test_run_gate_with_stored_runs(store, gate_file):
    base = make_outcomes()
    cand = with_flips(base, "prior/hellaswag", 150)
    rb = store.new_run("suite", name="base-run", config={"suite": "toy"}, run_id="run-base")
    rc = store.new_run("suite", name="cand-run", config={"suite": {"name": "toy"}}, run_id="run-cand")
    for m in SIZES:
        _store_eval(store, rb, m, "base", base.metrics[m]["items"])
        _store_eval(store, rc, m, "sft", cand.metrics[m]["items"])
    loaded = G.load_baseline("run-base", store)
    assert loaded.suite == "toy" and loaded.metrics["tooluse"]["metric"] == "accuracy"
    assert loaded.metrics["tooluse"]["items"] == base.metrics["tooluse"]["items"]
    res = G.run_gate("run-base", "run-cand", gate_file(), store=store, record=True)
    assert verdicts(res.rows)["prior/hellaswag"] == "fail" and res.exit_code == 1
    gates = store.list_runs("gate")
    assert len(gates) == 1 and gates[0]["meta"]["exit_code"] == 1
    # a run holding two arms of the same task needs a selector
    _store_eval(store, rc, "tooluse", "sdft", base.metrics["tooluse"]["items"])
    with pytest.raises(ConfigError, match=r"2 evaluations of task 'tooluse' .*run-cand#ARM"):
        G.run_gate("run-base", "run-cand", gate_file(), store=store)
    res = G.run_gate("run-base", "run-cand#sft", gate_file(), store=store)
    assert res.exit_code == 1


def test_incomplete_evaluation_is_named(store, gate_file):
    base = make_outcomes()
    rb = store.new_run("suite", run_id="run-base")
    for m in SIZES:
        _store_eval(store, rb, m, "base", base.metrics[m]["items"], complete=(m != "prior/mmlu"))
    with pytest.raises(ConfigError, match=r"no metric 'prior/mmlu' .*\(its evaluation is incomplete\)"):
        G.compare(G.load_baseline("run-base", store), base, G.load_gate_config(gate_file()))


def test_run_gate_calls_evaluator_for_checkpoints(tmp_path, store, gate_file):
    base = make_outcomes()
    bpath = G.save_baseline(base, tmp_path / "base.json")
    calls = []

    def fake_evaluator(spec, metrics, st, baseline):
        assert baseline.source == str(bpath) and set(baseline.metrics) == set(SIZES)
        calls.append((spec, {m: len(ids) for m, ids in metrics.items()}, st))
        return {m: {"task": m, "metric": "acc", "items": dict(base.metrics[m]["items"])} for m in metrics}

    res = G.run_gate(bpath, "checkpoints/sft-step-100", gate_file(), store=store, evaluator=fake_evaluator)
    assert res.exit_code == 0 and res.candidate.source == "checkpoints/sft-step-100"
    assert calls == [("checkpoints/sft-step-100", {m: n for m, n in SIZES.items()}, store)]
    with pytest.raises(ConfigError, match="no evaluator is available"):
        G.run_gate(bpath, "checkpoints/sft-step-100", gate_file(), store=store)
    # a candidate outcome file works without store or evaluator
    cpath = G.save_baseline(with_flips(base, "tooluse", 200), tmp_path / "cand.json")
    assert G.run_gate(bpath, cpath, gate_file()).exit_code == 1
    # the baseline is checked before the (expensive) evaluation
    with pytest.raises(ConfigError, match="baseline .* has no metric 'prior/x'"):
        G.run_gate(bpath, "ckpt", gate_file(GATE + "  prior/x: {max_drop: 0.1}\n"), evaluator=fake_evaluator)
    assert len(calls) == 1


# ----- outputs -----------------------------------------------------------------------------------
def _rows(gate_file, tiny=False):
    """mmlu fails, tooluse improves, prior/near is inconclusive but powered (a -5 point change on
    3000 items, A = 5 points, `inconclusive: pass`), prior/tiny is inconclusive on 10 items."""
    text = GATE + ("  prior/near: {max_drop: 0.05, inconclusive: pass}\n"
                   "  prior/tiny: {max_drop: 0.05, inconclusive: pass}\n")
    sizes = SIZES | {"prior/near": 3000, "prior/tiny": 10}
    base = make_outcomes(sizes)
    cand = with_flips(with_flips(with_flips(base, "prior/mmlu", 150), "tooluse", 80, frm=0.0, to=1.0),
                      "prior/near", 150)
    rows = G.compare(base, cand, G.load_gate_config(gate_file(text)))
    v = {r.metric: (r.verdict, r.counts_as) for r in rows}
    assert v["prior/near"] == ("inconclusive", "pass") and v["prior/tiny"] == ("inconclusive", "undecided")
    return rows


def test_render_markdown(gate_file):
    rows = _rows(gate_file)
    md = G.render_markdown(rows, "base.json", "run-x", "suites/gate.yaml")
    assert md.startswith(G.MARKER) and "Gate failed: regression" in md
    assert "| `prior/mmlu` | 2000 |" in md and "❌ fail" in md and "🟢 improved" in md
    assert "inconclusive (pass)" in md and "Baseline `base.json` → candidate `run-x`" in md
    assert md.count("\n| `") == len(rows)


def test_render_junit(gate_file, tmp_path):
    rows = _rows(gate_file)
    path = G.render_junit(rows, tmp_path / "out" / "gate.xml")
    root = ET.parse(path).getroot()
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == [r.metric for r in rows]
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "2", "1")
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["prior/mmlu", "prior/tiny"]
    assert "exceeds the allowed" in failed[0].find("failure").get("message")
    assert failed[1].find("failure").get("type") == "inconclusive"
    assert [c.get("name") for c in cases if c.find("skipped") is not None] == ["prior/near"]


def test_render_table(gate_file):
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(G.render_table(_rows(gate_file)))
    text = console.export_text()
    assert "prior/mmlu" in text and "fail" in text and "90% CI" in text and "inconclusive (pass)" in text


def test_gate_command_writes_outputs(tmp_path, gate_file, monkeypatch):
    from rich.console import Console

    base = make_outcomes()
    bpath = G.save_baseline(base, tmp_path / "base.json")
    cpath = G.save_baseline(with_flips(base, "prior/mmlu", 150), tmp_path / "cand.json")
    monkeypatch.setenv("HARNESS_DB", str(tmp_path / "absent.db"))
    console = Console(record=True, width=200)
    code = G.gate_command(str(bpath), str(cpath), gate_file(), markdown=tmp_path / "gate.md",
                          junit=tmp_path / "gate.xml", console=console)
    assert code == 1
    assert "Gate failed" in (tmp_path / "gate.md").read_text()
    assert ET.parse(tmp_path / "gate.xml").getroot().find("testsuite").get("failures") == "1"
    assert "gate failed: regression" in console.export_text()
    assert not (tmp_path / "absent.db").exists()  # no store is created just to gate two files
    with pytest.raises(HarnessError):
        G.gate_command(str(bpath), "not-a-run", gate_file(), console=console, evaluator=None)


# ----- pytest plugin -----------------------------------------------------------------------------------
def _plugin_args() -> list[str]:
    """`-p harness.pytest_plugin` unless the installed entry point already loads it."""
    eps = entry_points(group="pytest11")
    return [] if any(ep.value == "harness.pytest_plugin" for ep in eps) else ["-p", "harness.pytest_plugin"]


def _plugin_files(pytester, cand_flips=150):
    base = make_outcomes()
    G.save_baseline(base, pytester.path / "base.json")
    G.save_baseline(with_flips(base, "prior/mmlu", cand_flips), pytester.path / "cand.json")
    (pytester.path / "gate.yaml").write_text(GATE)
    return ["--harness-baseline", "base.json", "--harness-candidate", "cand.json", "--harness-gate", "gate.yaml",
            "--harness-db", str(pytester.path / "none.db")]


def test_plugin_one_test_per_metric(pytester):
    res = pytester.runpytest(*_plugin_args(), *_plugin_files(pytester), "-v")
    res.assert_outcomes(passed=2, failed=1)
    res.stdout.fnmatch_lines(["*gate.yaml::prior/mmlu FAILED*", "*prior/mmlu: dropped * exceeds the allowed 2.0 pts*"])
    assert "Traceback" not in res.stdout.str()


def test_plugin_passes_and_bad_input(pytester):
    args = _plugin_files(pytester, cand_flips=0)
    pytester.runpytest(*_plugin_args(), *args).assert_outcomes(passed=3)
    (pytester.path / "cand.json").write_text(json.dumps({"format": "harness-baseline/1", "suite": "toy",
                                                          "metrics": {"tooluse": {"items": {"a": 1}}}}))
    res = pytester.runpytest(*_plugin_args(), *args)
    res.assert_outcomes(failed=3)
    res.stdout.fnmatch_lines(["*candidate * has no metric 'prior/hellaswag' required by*"])


def test_plugin_malformed_gate_and_inactive(pytester):
    args = _plugin_files(pytester)
    (pytester.path / "gate.yaml").write_text("metrics:\n  tooluse: {max_dorp: 1}\n")
    res = pytester.runpytest(*_plugin_args(), *args)
    assert res.ret != 0
    res.stderr.fnmatch_lines(["*metrics.tooluse.max_dorp: unknown key*"])
    pytester.makepyfile(test_plain="def test_ok():\n    assert sorted([2, 1]) == [1, 2]\n")
    pytester.runpytest(*_plugin_args()).assert_outcomes(passed=1)  # no --harness-gate: plugin inert


def test_ifeval_is_gated_on_the_micro_average(gate_file, tmp_path):
    """IFEval's metric is Σ followed / Σ instructions: prompts weigh by their instruction count. Here
    the per-prompt (macro) mean rises while the micro value falls, because the candidate loses the
    long prompts: the gate must report and judge the micro change."""
    rng = np.random.default_rng(0)
    n = 400
    counts = {f"p{i}": (6.0 if i % 2 else 1.0) for i in range(n)}
    base_items = {k: float(rng.integers(0, int(c) + 1)) / c for k, c in counts.items()}
    cand_items = {k: (min(1.0, v + 1.0) if counts[k] == 1 else max(0.0, v - 0.5)) for k, v in base_items.items()}
    metric = {"task": "prior/ifeval", "metric": "inst_level_loose_acc"}
    base = G.OutcomeSet({"prior/ifeval": metric | {"items": base_items, "weights": counts}})
    cand = G.OutcomeSet({"prior/ifeval": metric | {"items": cand_items}})
    micro = lambda it: sum(it[k] * counts[k] for k in it) / sum(counts.values())  # noqa: E731
    assert np.mean(list(cand_items.values())) > np.mean(list(base_items.values()))  # macro: better
    (row,) = G.compare(base, cand, G.load_gate_config(gate_file("metrics:\n  prior/ifeval: {max_drop: 0.03}\n")))
    assert row.base == pytest.approx(micro(base_items)) and row.cand == pytest.approx(micro(cand_items))
    assert row.diff < -0.1 and row.verdict == "fail"
    # the weights survive a baseline file, and its mean is the micro value
    path = G.save_baseline(base, tmp_path / "b.json")
    doc = json.loads(path.read_text())
    assert doc["metrics"]["prior/ifeval"]["mean"] == pytest.approx(micro(base_items))
    (again,) = G.compare(G.load_baseline(path), cand,
                         G.load_gate_config(gate_file("metrics:\n  prior/ifeval: {max_drop: 0.03}\n")))
    assert again.diff == pytest.approx(row.diff)
    bad = copy.deepcopy(base)
    bad.metrics["prior/ifeval"]["weights"] = {"p0": 1.0}
    with pytest.raises(ConfigError, match="weights: expected one weight per item"):
        G.as_outcome_set(bad)


def test_gate_and_prior_suite_files_refuse_duplicate_keys(tmp_path):
    from harness.prior.suite import load_suite as load_prior_suite

    g = tmp_path / "g.yaml"
    g.write_text("metrics:\n  tooluse: {max_drop: 0.05}\n  tooluse: {max_drop: 0.5}\n")
    with pytest.raises(ConfigError, match="duplicate key 'tooluse'"):
        G.load_gate_config(g)
    p = tmp_path / "p.yaml"
    p.write_text("benchmarks:\n  hellaswag: {}\nlimit: 4\nlimit: 40\n")
    with pytest.raises(ConfigError, match="duplicate key 'limit'"):
        load_prior_suite(p)
