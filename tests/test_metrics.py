"""harness.metrics against hand computations (numbers worked out in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from harness import metrics as M

Z95 = 1.959963984540054  # two-sided 95%
Z95_1 = 1.6448536269514722  # one-sided 95%
Z80 = 0.8416212335729143  # power 0.8


def test_wilson_three_of_four():
    # p = .75, n = 4: centre (.75 + z^2/8)/(1 + z^2/4) = .62752, half-width .32688
    mean, lo, hi = M.mean_ci([1, 1, 1, 0])
    assert mean == 0.75
    assert lo == pytest.approx(0.3006, abs=1e-4)  # published Wilson interval for 3/4: (.3006, .9544)
    assert hi == pytest.approx(0.9544, abs=1e-4)


def test_wilson_edges_have_width():
    m, lo, hi = M.mean_ci([0] * 10)
    assert (m, lo) == (0.0, 0.0) and hi == pytest.approx(Z95**2 / (10 + Z95**2))  # 0/n upper bound
    m, lo, hi = M.mean_ci([1] * 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(10 / (10 + Z95**2))


def test_mean_ci_t_interval_for_nonbinary():
    # mean .4, sd .2, se .2/sqrt(3); t(.975, 2) = 4.302653
    m, lo, hi = M.mean_ci([0.2, 0.4, 0.6])
    h = 4.302652729911275 * 0.2 / math.sqrt(3)
    assert m == pytest.approx(0.4)
    assert (lo, hi) == (pytest.approx(0.4 - h), pytest.approx(0.4 + h))
    assert math.isnan(M.mean_ci([0.5])[1])
    with pytest.raises(ValueError):
        M.mean_ci([])


def test_is_binary():
    assert M.is_binary([0, 1, 1.0]) and not M.is_binary([0, 0.5]) and not M.is_binary([])


def test_mcnemar_exact():
    a = [1] * 5 + [0] * 1 + [1] * 4
    b = [0] * 5 + [1] * 1 + [1] * 4
    r = M.mcnemar(a, b)
    # 5 losses, 1 gain: p = 2 * P(X <= 1 | 6, 1/2) = 2 * 7/64
    assert (r["n01"], r["n10"]) == (1, 5)
    assert r["p"] == pytest.approx(14 / 64)
    assert r["p"] == pytest.approx(stats.binomtest(5, 6).pvalue)
    assert M.mcnemar([1, 0], [1, 0])["p"] == 1.0
    assert M.mcnemar([1] * 6, [0] * 6)["p"] == pytest.approx(2 / 64)
    with pytest.raises(ValueError):
        M.mcnemar([0.5], [1])


def test_paired_binary_ci_agresti_min():
    # n = 10, 1 gain, 3 losses; add .5 per cell: d = (1.5 - 3.5)/12, var = ((5/12) - d^2)/12
    a = [0, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    b = [1, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    diff, lo, hi = M.paired_binary_ci(a, b)
    d = -2 / 12
    se = math.sqrt((5 / 12 - d * d) / 12)
    assert diff == pytest.approx(-0.2)
    assert lo == pytest.approx(d - Z95 * se) and hi == pytest.approx(d + Z95 * se)
    assert lo == pytest.approx(-0.519501, abs=1e-6)


def test_paired_test_dispatch_and_mapping_alignment():
    a = {"x": 1, "y": 0, "z": 1}
    b = {"z": 1, "x": 0, "y": 0}  # aligned by key: one loss (x)
    r = M.paired_test(a, b)
    assert r["test"] == "mcnemar" and r["diff"] == pytest.approx(-1 / 3) and r["n10"] == 1
    r = M.paired_test([0.2, 0.5, 0.9], [0.3, 0.5, 1.0], n_boot=2000)
    assert r["test"] == "bootstrap" and r["diff"] == pytest.approx(0.2 / 3)
    with pytest.raises(ValueError, match="different items"):
        M.paired_test({"x": 1}, {"y": 1})
    with pytest.raises(ValueError, match="length"):
        M.paired_test([1, 0], [1])


def test_paired_bootstrap_matches_normal_theory():
    rng = np.random.default_rng(3)
    a = rng.random(400)
    b = a + 0.05 + rng.normal(0, 0.2, 400)
    r = M.paired_bootstrap(a, b, n_boot=4000, seed=1)
    d = b - a
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert r["diff"] == pytest.approx(d.mean())
    assert r["lo"] == pytest.approx(d.mean() - Z95 * se, abs=0.25 * se)
    assert r["hi"] == pytest.approx(d.mean() + Z95 * se, abs=0.25 * se)
    assert r["p"] < 0.01
    assert M.paired_bootstrap(a, b, n_boot=500, seed=1) == M.paired_bootstrap(a, b, n_boot=500, seed=1)
    assert M.paired_bootstrap(a, a, n_boot=200)["p"] == 1.0


def test_holm_and_bh_hand():
    p = [0.01, 0.04, 0.03, 0.5]
    # Holm: sorted .01*4=.04, .03*3=.09, .04*2=.08 -> .09 (monotone), .5*1
    assert M.holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    # BH: .01*4/1=.04, .03*4/2=.06, .04*4/3=.0533, .5; step-up minimum from the top
    assert M.benjamini_hochberg(p) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])
    out = M.holm([0.2, float("nan"), 0.9])
    assert out[0] == pytest.approx(0.4) and math.isnan(out[1]) and out[2] == pytest.approx(0.9)
    assert M.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_seed_ci():
    # mean 2, sd 1, t(.975, 2) = 4.302653
    m, lo, hi = M.seed_ci([1, 2, 3])
    h = 4.302652729911275 / math.sqrt(3)
    assert (m, lo, hi) == (2.0, pytest.approx(2 - h), pytest.approx(2 + h))
    m, lo, hi = M.seed_ci([0.7])
    assert m == 0.7 and math.isnan(lo) and math.isnan(hi)


def test_prior_average_and_forgetting_paper_table5():
    base = {"hellaswag": 62.0, "humaneval": 65.8, "ifeval": 74.3, "mmlu": 71.7, "truthfulqa": 47.9,
            "winogrande": 71.1}
    sdft = {"hellaswag": 61.6, "humaneval": 68.3, "ifeval": 71.9, "mmlu": 71.5, "truthfulqa": 47.3,
            "winogrande": 71.7}
    assert M.prior_average(base) == pytest.approx(392.8 / 6)  # the paper's 65.5
    assert M.prior_average(sdft) == pytest.approx(392.3 / 6)  # the paper's 65.4
    assert M.forgetting(M.prior_average(base), M.prior_average(sdft)) == pytest.approx(0.5 / 6)
    assert math.isnan(M.prior_average({"a": 1.0, "b": None}))


def test_prior_average_change_ci():
    # A: every item lost (d = -1, no spread); B: unchanged -> average change -0.5 exactly
    base = {"A": [1.0] * 50, "B": [0.0, 1.0] * 25}
    arm = {"A": [0.0] * 50, "B": [0.0, 1.0] * 25}
    r = M.prior_average_change_ci(base, arm, n_boot=500)
    assert (r["diff"], r["lo"], r["hi"]) == (-0.5, -0.5, -0.5)
    assert r["forgetting"] == 0.5
    # random case: bootstrap spread ~ analytic sqrt(sum var_k / n_k) / K
    rng = np.random.default_rng(0)
    base = {k: (rng.random(n) < 0.6).astype(float) for k, n in (("A", 300), ("B", 500))}
    arm = {k: np.where(rng.random(v.size) < 0.15, 1 - v, v) for k, v in base.items()}
    r = M.prior_average_change_ci(base, arm, n_boot=3000, seed=2)
    se = math.sqrt(sum(np.var(arm[k] - base[k], ddof=1) / base[k].size for k in base)) / 2
    assert r["diff"] == pytest.approx(np.mean([np.mean(arm[k] - base[k]) for k in base]))
    assert (r["hi"] - r["lo"]) == pytest.approx(2 * Z95 * se, rel=0.12)
    assert r["forgetting_lo"] == -r["hi"]
    with pytest.raises(ValueError):
        M.prior_average_change_ci({"A": [1]}, {"B": [1]})


def test_flip_table():
    base = {"a": 1, "b": 1, "c": 0, "d": 0, "e": 1, "x": 1}
    arm = {"a": 0, "b": 1, "c": 1, "d": 0, "e": 0, "y": 0}
    groups = {"a": "api1", "b": "api1", "c": "api2", "d": None}
    t = M.flip_table(base, arm, groups)
    assert t["total"] | {"lost": None, "gained": None} == {
        "n": 5, "right_to_wrong": 2, "wrong_to_right": 1, "both_right": 1, "both_wrong": 1,
        "lost": None, "gained": None}
    assert t["total"]["lost"] == ["a", "e"] and t["total"]["gained"] == ["c"]
    assert t["groups"]["api1"]["right_to_wrong"] == 1 and t["groups"]["api1"]["both_right"] == 1
    assert t["groups"]["api2"]["gained"] == ["c"]
    assert t["groups"][None]["n"] == 2  # d (mapped to None) and e (not in groups)
    assert t["only_base"] == ["x"] and t["only_arm"] == ["y"]


def test_mde_and_required_n():
    k = Z95_1 + Z80  # one-sided 5%, power .8: 2.486475
    assert M.mde(100, 0.5) == pytest.approx(k * math.sqrt(0.5 / 100))  # 2 p0 (1 - p0) = .5
    assert M.mde(100, 0.5) == pytest.approx(0.175820, abs=1e-6)
    assert M.mde(1000, 0.7, discordance=0.1) == pytest.approx(k * math.sqrt(0.1 / 1000))
    assert M.mde(100, 0.5, two_sided=True) == pytest.approx((Z95 + Z80) * math.sqrt(0.005))
    assert M.mde(100, 0.5, paired=False, discordance=0.01) == M.mde(100, 0.5)  # unpaired ignores discordance
    assert np.allclose(M.mde(np.array([100, 400]), 0.5), [0.175820, 0.087910], atol=1e-6)
    n = M.required_n(0.05, 0.5, discordance=0.1)
    assert n == math.ceil(k * k * 0.1 / 0.0025) == 248
    assert M.mde(n, 0.5, discordance=0.1) <= 0.05 < M.mde(n - 1, 0.5, discordance=0.1)
    assert M.required_n(-0.05, 0.5, discordance=0.1) == 248
    with pytest.raises(ValueError):
        M.required_n(0, 0.5)


def test_cost_ratio():
    r = M.cost_ratio([400.0], [100.0], what="wall-clock")
    assert r["ratio"] == 4.0 and math.isnan(r["lo"]) and "single measurement" in r["note"]
    r = M.cost_ratio([4.0, 4.0], [1.0, 1.0])
    assert (r["ratio"], r["lo"], r["hi"], r["note"]) == (4.0, 4.0, 4.0, "")
    r = M.cost_ratio([2.4, 2.6, 2.5], [1.0, 1.1, 0.9])
    assert r["lo"] < 2.5 < r["hi"]
    t = M.cost_table({"sft": {"wall_s": [10.0], "flops": [1.0]}, "sdft": {"wall_s": [40.0], "flops": [2.5]}})
    assert t["sdft"]["wall_s"]["ratio"] == 4.0 and t["sdft"]["flops"]["ratio"] == 2.5
    with pytest.raises(ValueError):
        M.cost_ratio([1.0], [0.0])


def test_is_at_chance():
    assert M.is_at_chance(0.26, 0.01, 0.25)
    assert M.is_at_chance(0.20, 0.01, 0.25)  # below chance is flagged too
    assert not M.is_at_chance(0.40, 0.01, 0.25)
    assert not M.is_at_chance(0.26, float("nan"), 0.25)


# ----- micro (ratio) averages and the hierarchical bootstrap -----------------------------------
def test_weighted_mean_is_the_micro_average():
    # prompts with 4, 1, 2 instructions, 3, 0, 1 followed: micro 4/7, macro (.75 + 0 + .5)/3
    s, w = [0.75, 0.0, 0.5], [4, 1, 2]
    assert M.weighted_mean(s, w) == pytest.approx(4 / 7)
    assert M.weighted_mean(s) == pytest.approx(1.25 / 3)
    with pytest.raises(ValueError):
        M.weighted_mean(s, [4, 0, 2])  # a prompt without instructions has no fraction to weight
    with pytest.raises(ValueError):
        M.weighted_mean(s, [4, 1])


def test_ratio_ci_width_matches_the_clustered_stderr():
    rng = np.random.default_rng(3)
    m = rng.integers(1, 6, 400)
    s = rng.binomial(m, 0.6) / m
    v, lo, hi = M.ratio_ci(s, m, n_boot=4000, seed=1)
    se = M.ratio_stderr(s, m)
    assert v == pytest.approx(float((s * m).sum() / m.sum()))
    assert lo < v < hi
    assert (hi - lo) / (2 * Z95) == pytest.approx(se, rel=0.1)


def test_ratio_ci_covers_the_micro_value_where_the_macro_interval_does_not():
    # prompts with more instructions follow fewer: the micro value (the paper's) differs from the
    # mean of per-prompt fractions, so an interval for the macro mean misses it
    rng = np.random.default_rng(0)
    ms = np.arange(1, 6)
    true = float((ms * (0.95 - 0.15 * ms)).mean() / ms.mean())
    cov_ratio = cov_macro = 0
    for r in range(300):
        m = rng.integers(1, 6, 60)
        s = rng.binomial(m, 0.95 - 0.15 * m) / m
        _, lo, hi = M.ratio_ci(s, m, n_boot=400, seed=r)
        cov_ratio += lo <= true <= hi
        _, lo, hi = M.mean_ci(s)
        cov_macro += lo <= true <= hi
    print(f"coverage of the micro value: ratio bootstrap {cov_ratio / 300:.3f}, macro t {cov_macro / 300:.3f}")
    assert 0.92 <= cov_ratio / 300 <= 0.98
    assert cov_macro / 300 < 0.7


def test_paired_ratio_bootstrap_by_hand():
    # base follows 3 of 10 instructions, arm 5 of 10: micro +0.2, although the macro mean drops
    w = [1, 2, 4, 3]
    base, arm = [1.0, 0.5, 0.0, 1 / 3], [0.0, 0.5, 0.25, 1.0]
    r = M.paired_ratio_bootstrap(base, arm, w, n_boot=2000)
    assert r["diff"] == pytest.approx(0.2)
    assert np.mean(arm) - np.mean(base) < 0
    assert r["lo"] <= 0.2 <= r["hi"] and 0 < r["p"] <= 1
    # equal weights: the same statistic as the plain paired bootstrap
    x = np.random.default_rng(1).random(300)
    y = np.clip(x + 0.05, 0, 1)
    a, b = M.paired_ratio_bootstrap(x, y, n_boot=4000), M.paired_bootstrap(x, y, n_boot=4000)
    assert a["diff"] == pytest.approx(b["diff"])
    assert a["hi"] - a["lo"] == pytest.approx(b["hi"] - b["lo"], rel=0.1)


def test_hierarchical_bootstrap_counts_seed_variance():
    # two seeds that disagree on every item: their average is 0.5 everywhere, so an item-level
    # test on seed-averaged scores sees no noise at all; the seed resample does
    n = 200
    ref = {"t": np.full((1, n), 0.5)}
    arm = {"t": np.vstack([np.ones(n), np.zeros(n)])}
    h = M.hierarchical_change_ci(ref, arm, n_boot=2000)
    assert h["diff"] == pytest.approx(0.0) and (h["n_seeds_ref"], h["n_seeds_arm"]) == (1, 2)
    assert h["lo"] <= -0.4 and h["hi"] >= 0.4
    flat = M.paired_bootstrap(ref["t"][0], arm["t"].mean(axis=0), n_boot=2000)
    assert flat["lo"] == flat["hi"] == 0.0


def test_hierarchical_bootstrap_coverage_with_seed_noise():
    # 4 seeds per arm, seed offsets sd 0.1, no true difference: the seeds-then-items interval
    # keeps its level, the item-only interval on seed-averaged scores does not
    rng = np.random.default_rng(0)
    k, n, reps = 4, 60, 200
    cov_h = cov_items = 0
    for r in range(reps):
        a = rng.random(n)

        def arm():
            p = np.clip(a[None, :] + rng.normal(0, 0.1, k)[:, None], 0, 1)
            return (rng.random((k, n)) < p).astype(float)

        x, y = arm(), arm()
        h = M.hierarchical_change_ci({"t": x}, {"t": y}, n_boot=400, seed=r)
        cov_h += h["lo"] <= 0 <= h["hi"]
        i = M.paired_bootstrap(x.mean(axis=0), y.mean(axis=0), n_boot=400, seed=r)
        cov_items += i["lo"] <= 0 <= i["hi"]
    print(f"coverage with seed noise: hierarchical {cov_h / reps:.3f}, items only {cov_items / reps:.3f}")
    assert cov_h / reps >= 0.9
    assert cov_items / reps < 0.8


def test_hierarchical_bootstrap_averages_benchmarks_and_checks_shapes():
    ref = {"a": [[1, 0, 1, 0]], "b": [[1, 1, 0, 0]]}
    arm = {"a": [[1, 1, 1, 0], [1, 1, 1, 1]], "b": [[0, 1, 0, 0], [0, 0, 0, 0]]}
    h = M.hierarchical_change_ci(ref, arm, n_boot=500)
    # a: (0.75 + 1)/2 - 0.5 = 0.375; b: (0.25 + 0)/2 - 0.5 = -0.375 -> mean 0
    assert h["diff"] == pytest.approx(0.0) and h["n_items"] == 8
    w = {"a": [1, 1, 1, 5]}  # item 4 carries five instructions: a = (3/8 + 8/8)/2 - 2/8 = 0.4375
    assert M.hierarchical_change_ci({"a": ref["a"]}, {"a": arm["a"]}, w, n_boot=200)["diff"] == pytest.approx(0.4375)
    with pytest.raises(ValueError, match="same items"):
        M.hierarchical_change_ci({"a": [[1, 0]]}, {"a": [[1, 0, 1]]})
    with pytest.raises(ValueError, match="same seeds"):
        M.hierarchical_change_ci(ref, {"a": arm["a"], "b": [[0, 1, 0, 0]]})
    with pytest.raises(ValueError, match="benchmarks differ"):
        M.hierarchical_change_ci(ref, {"a": arm["a"]})
