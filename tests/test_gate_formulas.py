"""The statistics the gate takes from `harness.metrics` (one copy each), and the package's promise
that gating stored results never imports the model stack."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from harness import metrics as M
from harness.errors import ConfigError
from harness.gate import binary_decision, continuous_decision, load_gate_config


def test_paired_t_matches_scipy():
    rng = np.random.default_rng(3)
    a = rng.random(40)
    b = a + rng.normal(-0.05, 0.1, 40)
    t = M.paired_t(a, b)
    ref = stats.ttest_rel(b, a)
    d = b - a
    assert t["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert t["diff"] == pytest.approx(d.mean()) and t["sd"] == pytest.approx(d.std(ddof=1))
    assert t["m2"] == pytest.approx(np.mean(d * d)) and t["n"] == 40
    # mappings pair by item id, whatever their order
    assert M.paired_t({"x": 0.0, "y": 0.5}, {"y": 0.5, "x": 0.25})["diff"] == pytest.approx(0.125)


def test_paired_t_without_spread():
    assert M.paired_t([0.5, 0.25, 1.0], [0.5, 0.25, 1.0])["p"] == 1.0   # nothing changed
    assert M.paired_t([0.5, 0.25], [0.75, 0.5])["p"] == 0.0             # every item moved by the same amount
    assert math.isnan(M.paired_t([0.5], [0.75])["p"]) and math.isnan(M.paired_t([0.5], [0.75])["sd"])
    with pytest.raises(ValueError, match="no items"):
        M.paired_t([], [])


def test_agresti_min_is_the_estimate_behind_paired_binary_ci():
    a = np.array([1, 1, 0, 0, 1, 0, 1, 1, 0, 1] * 3, float)
    b = np.array([1, 0, 0, 1, 1, 0, 0, 1, 0, 1] * 3, float)
    m = M.mcnemar(a, b)
    center, se = M.agresti_min(m["n01"], m["n10"], a.size)
    _, lo, hi = M.paired_binary_ci(a, b, conf=0.9)
    z = stats.norm.ppf(0.95)
    assert (lo + hi) / 2 == pytest.approx(float(center)) and (hi - lo) / 2 == pytest.approx(z * float(se))
    # and the gate's one-sided 95% bounds are that two-sided 90% interval
    g = binary_decision(m["n01"], m["n10"], a.size, 0.05, confidence=0.95)
    assert float(g["lo"]) == pytest.approx(lo) and float(g["hi"]) == pytest.approx(hi)


def test_variance_floor_sets_the_gates_smallest_interval():
    assert M.variance_floor(8) == pytest.approx(0.1) and M.variance_floor(8, 2.0) == pytest.approx(0.4)
    assert np.allclose(M.variance_floor(np.array([2, 98])), [0.25, 0.01])
    # an unchanged sample of n items: the interval is exactly the floor's, not zero-width
    n = 50
    r = continuous_decision(0.0, 0.0, 0.0, n, 0.03)
    q = stats.t.ppf(0.95, n - 1)
    assert float(r["hi"]) == pytest.approx(q * math.sqrt(M.variance_floor(n) / n))


def test_importing_the_gate_leaves_the_model_stack_alone():
    code = ("import sys, harness.gate as G; G.compare; G.run_gate; "
            "assert 'torch' not in sys.modules and 'harness.evaluate' not in sys.modules, sorted(sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_gate_file_errors_name_the_allowed_keys(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("defaults: {confidnce: 0.9}\nmetrics:\n  tooluse: {max_drop: 0.02}\n")
    with pytest.raises(ConfigError, match=r"g.yaml: defaults.confidnce: unknown key \(allowed: confidence, "
                                          r"discordance, inconclusive, power\)$"):
        load_gate_config(p)
    p.write_text("metrics:\n  tooluse: 0.02\n")
    with pytest.raises(ConfigError, match=r"metrics.tooluse: expected a mapping with max_drop or max_rel_drop, "
                                          r"got 0.02$"):
        load_gate_config(p)
    p.write_text("suite: 3\nmetrics:\n  tooluse: {max_drop: 0.02}\n")
    with pytest.raises(ConfigError, match=r"g.yaml: suite: expected a string, got 3$"):
        load_gate_config(p)
    # a yes/no answer reads as pass/fail; defaults reach every rule that does not override them
    p.write_text("defaults: {inconclusive: yes, power: 0.9}\nmetrics:\n  a: {max_drop: 0.02}\n"
                 "  b: {max_rel_drop: 0.1, power: 0.7}\n")
    a, b = load_gate_config(p).rules
    assert (a.inconclusive, a.power, a.max_drop, a.confidence) == ("pass", 0.9, 0.02, 0.95)
    assert (b.inconclusive, b.power, b.max_rel_drop, b.max_drop) == ("pass", 0.7, 0.1, None)
