"""harness.claims: verdict rules, and verdicts on fabricated runs whose answer is planted."""

from __future__ import annotations

import io
import math

import pytest
from fake_suite_run import make_suite_run
from rich.console import Console

from harness.claims import CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, SUPPORTED, band_verdict, check_claims, sign_verdict
from harness.cli_render import claims_table, print_claims
from harness.commands import check_run_claims
from harness.errors import StoreError
from harness.results import load
from harness.store import Store

NAN = math.nan


@pytest.mark.parametrize("lo,hi,verdict", [
    (0.01, 0.2, SUPPORTED), (-0.2, -0.01, CONTRADICTED), (-0.1, 0.1, INCONCLUSIVE),
    (0.0, 0.1, INCONCLUSIVE), (-0.1, 0.0, INCONCLUSIVE), (NAN, NAN, NOT_MEASURED)])
def test_sign_verdict(lo, hi, verdict):
    assert sign_verdict(lo, hi) == verdict


@pytest.mark.parametrize("ratio,lo,hi,claim,verdict", [
    (2.5, 2.2, 2.8, 2.5, SUPPORTED),          # inside [1.67, 3.75]
    (2.5, NAN, NAN, 2.5, SUPPORTED),          # no interval: the point decides
    (1.2, 1.0, 1.5, 2.5, CONTRADICTED),       # entirely below the band
    (9.0, 7.0, 11.0, 4.0, CONTRADICTED),      # entirely above [2.67, 6]
    (2.7, 2.2, 3.2, 4.0, INCONCLUSIVE),       # straddles the lower edge 2.67
    (1.5, NAN, NAN, 2.5, CONTRADICTED),
    (NAN, NAN, NAN, 2.5, NOT_MEASURED)])
def test_band_verdict(ratio, lo, hi, claim, verdict):
    assert band_verdict(ratio, lo, hi, claim) == verdict


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "h.db")
    yield s
    s.close()


def verdicts(store, **kw) -> dict[str, dict]:
    rid = make_suite_run(store, **kw)
    return {r["id"]: r for r in check_claims(load(rid, store, n_boot=2000))}


def test_planted_supported(store):
    v = verdicts(store, n_tool=300, n_prior=200, acc={"base": 0.4, "teacher": 0.9, "sft": 0.55, "sdft": 0.75},
                 prior_drop={"sft": 0.10, "sdft": 0.0})
    assert {k: r["verdict"] for k, r in v.items()} == {
        "a": SUPPORTED, "b": SUPPORTED, "c": SUPPORTED, "c-drift": NOT_MEASURED, "c-mc": NOT_MEASURED, "d-flops": SUPPORTED, "d-wall": SUPPORTED}
    assert v["a"]["measured"] == pytest.approx(0.5) and v["a"]["test"].startswith("exact McNemar")
    assert v["b"]["measured"] == pytest.approx(0.20) and v["b"]["lo"] > 0
    assert v["c"]["measured"] == pytest.approx(0.10, abs=0.01)
    assert v["d-flops"]["measured"] == pytest.approx(2.5, rel=0.05)
    assert "paper, Qwen2.5-7B-Instruct" in v["b"]["paper"]


def test_planted_contradicted(store):
    v = verdicts(store, n_tool=300, n_prior=200, acc={"base": 0.6, "teacher": 0.2, "sft": 0.7, "sdft": 0.4},
                 prior_drop={"sft": 0.0, "sdft": 0.15},
                 cost={"sft": {"train_wall_s": 100.0, "flops": 1e14},
                       "sdft": {"train_wall_s": 100.0, "flops": 1e15}})
    assert {k: r["verdict"] for k, r in v.items()} == {
        "a": CONTRADICTED, "b": CONTRADICTED, "c": CONTRADICTED, "c-drift": NOT_MEASURED, "c-mc": NOT_MEASURED, "d-flops": CONTRADICTED,
        "d-wall": CONTRADICTED}
    assert v["b"]["hi"] < 0 and v["c"]["hi"] < 0


def test_planted_inconclusive(store):
    # 20 items, 5-point differences; SDFT wall-clock ~2.67x with seed noise straddles the band edge
    v = verdicts(store, n_tool=20, n_prior=20, seeds=(0, 1, 2), jitter=1,
                 acc={"base": 0.40, "teacher": 0.45, "sft": 0.50, "sdft": 0.55},
                 prior_drop={"sft": 0.05, "sdft": 0.0}, benchmarks=("hellaswag", "winogrande"),
                 cost={"sft": {"train_wall_s": 100.0, "flops": 1e14},
                       "sdft": {"train_wall_s": 267.0, "flops": 2.5e14}})
    for k in ("a", "b", "c", "d-wall"):
        assert v[k]["verdict"] == INCONCLUSIVE, (k, v[k])
    assert v["d-wall"]["lo"] < 4.0 / 1.5 < v["d-wall"]["hi"]


def test_not_measured_when_pieces_missing(store):
    v = verdicts(store, benchmarks=(), with_teacher=False, n_tool=20, n_val=6,
                 cost={"sft": {}, "sdft": {}})
    assert v["a"]["verdict"] == NOT_MEASURED and "teacher" in v["a"]["note"]
    assert v["c"]["verdict"] == NOT_MEASURED and "no prior benchmarks" in v["c"]["note"]
    assert v["d-flops"]["verdict"] == NOT_MEASURED
    assert v["b"]["verdict"] in (SUPPORTED, INCONCLUSIVE, CONTRADICTED)


def test_claims_table_and_command(store):
    rid = make_suite_run(store, n_tool=30, n_prior=30)
    rows = check_claims(load(rid, store, n_boot=500))
    buf = io.StringIO()
    Console(file=buf, width=220).print(claims_table(rows))
    out = buf.getvalue()
    assert "(a) teacher" in out and "(d-wall)" in out and "paper, Qwen2.5-7B-Instruct" in out
    buf = io.StringIO()
    res, again = check_run_claims(rid, store)
    assert [r["id"] for r in again] == [r["id"] for r in rows]
    print_claims(Console(file=buf, width=220), res, again)
    assert "verdict rules" in buf.getvalue() and f"run {res.run_id}" in buf.getvalue()
    with pytest.raises(StoreError):
        check_run_claims("nope", store)


@pytest.mark.parametrize("verdict,seed_lo,seed_hi,expected", [
    (SUPPORTED, 0.01, 0.2, SUPPORTED), (SUPPORTED, -0.05, 0.2, INCONCLUSIVE),
    (CONTRADICTED, -0.2, -0.01, CONTRADICTED), (CONTRADICTED, -0.2, 0.01, INCONCLUSIVE),
    (INCONCLUSIVE, 0.01, 0.2, INCONCLUSIVE), (SUPPORTED, NAN, NAN, SUPPORTED)])
def test_seed_agreement(verdict, seed_lo, seed_hi, expected):
    from harness.claims import seed_agreement

    v, note = seed_agreement(verdict, {"seed_lo": seed_lo, "seed_hi": seed_hi, "n_seed_pairs": 1})
    assert v == expected
    assert ("n/a" in note) == math.isnan(seed_lo)


def test_seed_variance_makes_a_multi_seed_claim_inconclusive(store):
    # 3 seeds whose accuracies spread +-20 pp around a 20-pp SDFT advantage: averaged per item the
    # advantage looks certain on 300 items, but three training runs per arm cannot show it
    kw = dict(n_tool=300, n_prior=200, seeds=(0, 1, 2), seed_spread=0.2,
              acc={"base": 0.4, "teacher": 0.9, "sft": 0.45, "sdft": 0.65})
    rid = make_suite_run(store, **kw)
    r = load(rid, store, n_boot=2000)
    assert r.paired(r.sft_arm, r.sdft_arm, "tooluse")["lo"] > 0  # the seed-blind item-level test
    v = {row["id"]: row for row in check_claims(r)}
    assert v["b"]["measured"] == pytest.approx(0.20)
    assert v["b"]["test"].startswith("hierarchical bootstrap") and v["b"]["verdict"] == INCONCLUSIVE
    assert v["b"]["lo"] < 0 < v["b"]["hi"] and "across-seed" in v["b"]["note"]
    assert v["c"]["test"].startswith("hierarchical bootstrap")


def test_multi_seed_claims_still_decide_consistent_effects(store):
    v = verdicts(store, n_tool=300, n_prior=200, seeds=(0, 1, 2),
                 acc={"base": 0.4, "teacher": 0.9, "sft": 0.45, "sdft": 0.75}, prior_drop={"sft": 0.15, "sdft": 0.0})
    assert v["b"]["verdict"] == SUPPORTED and v["b"]["test"].startswith("hierarchical")
    assert v["c"]["verdict"] == SUPPORTED and v["c"]["test"].startswith("hierarchical")


def test_flops_are_labelled_an_estimate(store):
    import inspect
    import re

    import harness.claims as C

    v = verdicts(store, n_tool=30, n_prior=30)
    assert "estimated" in v["d-flops"]["claim"] and "estimate" in v["d-flops"]["note"]
    assert not re.search(r"flops[^.;]*\bexact\b", inspect.getsource(C), re.IGNORECASE | re.DOTALL)


@pytest.mark.parametrize("lo,hi,margin,verdict", [
    (-0.01, 0.01, 0.02, "equivalent within the margin"), (-0.03, 0.01, 0.02, INCONCLUSIVE),
    (0.001, 0.01, 0.02, SUPPORTED), (-0.01, -0.001, 0.02, CONTRADICTED), (-0.01, 0.01, None, INCONCLUSIVE)])
def test_sign_verdict_with_an_equivalence_margin(lo, hi, margin, verdict):
    assert sign_verdict(lo, hi, margin) == verdict


def _drift_run(tmp_path, sft_kl, sdft_kl, config=None):
    import numpy as np
    from fake_suite_run import build_run

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.004, 64)
    store = Store(tmp_path / "h.db")
    pts = [{"point": "base", "scores": {"tooluse": [1, 0] * 10}},
           {"point": "sft/default/seed=0", "arm": "sft", "method": "sft", "seed": 0, "train_key": "k1",
            "scores": {"tooluse": [1, 1] * 10, "probe/general-kl": list(np.abs(sft_kl + noise))}},
           {"point": "sdft/default/seed=0", "arm": "sdft", "method": "sdft", "seed": 0, "train_key": "k2",
            "scores": {"tooluse": [1, 0] * 10,
                       "probe/general-kl": list(np.abs(sdft_kl + noise + rng.normal(0, 0.002, 64)))}}]
    rid = build_run(store, pts, benchmarks={})
    if config is not None:
        store.conn.execute("UPDATE runs SET config=? WHERE run_id=?", (__import__("json").dumps(config), rid))
        store.conn.commit()
    return {r["id"]: r for r in check_claims(load(rid, store, n_boot=2000))}


def test_drift_claim_is_paired_over_prompts_and_can_be_equivalent(tmp_path):
    rows = _drift_run(tmp_path / "a", 0.05, 0.02)
    d = rows["c-drift"]
    assert d["verdict"] == SUPPORTED and d["unit"] == "nats" and d["n"] == 64
    assert d["measured"] == pytest.approx(0.03, abs=0.002) and d["lo"] > 0
    assert "nats" in d["rule"] and "0.01 nats" in d["rule"]
    same = _drift_run(tmp_path / "b", 0.03, 0.03)["c-drift"]
    assert same["verdict"] == "equivalent within the margin", (same["lo"], same["hi"])
    # the suite's margin is honoured: a margin smaller than the interval gives "inconclusive"
    tight = _drift_run(tmp_path / "c", 0.03, 0.03, {"claims": {"margins": {"c-drift": 0.0001}}})["c-drift"]
    assert tight["verdict"] == INCONCLUSIVE and "0.0001 nats" in tight["rule"]


def test_drift_claim_not_measured_without_the_probe(tmp_path):
    from fake_suite_run import build_run

    store = Store(tmp_path / "h.db")
    rid = build_run(store, [{"point": "base", "scores": {"tooluse": [1, 0]}},
                            {"point": "sft", "arm": "sft", "method": "sft", "scores": {"tooluse": [1, 1]}},
                            {"point": "sdft", "arm": "sdft", "method": "sdft", "scores": {"tooluse": [0, 1]}}],
                    benchmarks={})
    row = {r["id"]: r for r in check_claims(load(rid, store, n_boot=200))}["c-drift"]
    assert row["verdict"] == NOT_MEASURED and "drift_probe" in row["note"]


def test_power_terms_match_the_mde_formula_and_invert():
    from scipy import stats

    from harness.claims import power_terms

    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    mde, need = power_terms([(0.2, 100)], 0.05)
    assert mde == pytest.approx(z * math.sqrt(0.2 / 100))
    assert power_terms([(0.2, need)], None)[0] <= 0.05 < power_terms([(0.2, need - 1)], None)[0]
    # an average of two benchmarks: variance sum(psi/n)/K^2
    mde2, _ = power_terms([(0.2, 100), (0.1, 50)], None)
    assert mde2 == pytest.approx(z * math.sqrt((0.2 / 100 + 0.1 / 50) / 4))


def test_every_difference_claim_reports_its_power(tmp_path):
    store = Store(tmp_path / "h.db")
    rid = make_suite_run(store, seeds=(0,))
    rows = {r["id"]: r for r in check_claims(load(rid, store, n_boot=300))}
    for cid in ("a", "b", "c"):
        r = rows[cid]
        assert r["mde"] > 0 and r["n_needed"] and "paper" in r["n_needed_for"], cid
    # (b): the paper's +7.4 pp needs far more items than this run's n
    assert rows["b"]["n_needed"] > rows["b"]["n"] and rows["b"]["mde"] > 0.074
    from harness.claims import lead_sentences
    from harness.formatting import claim_power

    assert claim_power(rows["b"]).startswith("MDE ") and "items for the paper's +7.4 pp" in claim_power(rows["b"])
    assert any("MDE" in s for s in lead_sentences(list(rows.values())))


def test_the_lead_sentence_quotes_the_deciding_measure_first(tmp_path):
    """"Yes: SDFT forgot less" must be followed by the measure that supports it, not by an
    inconclusive one that happens to come first in the claim order."""
    from harness.claims import INCONCLUSIVE, SUPPORTED, lead_sentences

    store = Store(tmp_path / "h.db")
    rid = make_suite_run(store, seeds=(0,))
    rows = {r["id"]: r for r in check_claims(load(rid, store, n_boot=300))}
    rows["c-drift"] = dict(rows["c"], id="c-drift", verdict=SUPPORTED)
    rows["c"] = dict(rows["c"], verdict=INCONCLUSIVE)
    first = lead_sentences(list(rows.values()))[0]
    assert first.startswith("Yes: SDFT forgot less than SFT here: SFT minus SDFT drift from the base")
    assert "the prior-suite average of SDFT minus SFT is" in first  # still quoted, after it


def test_drift_verdict_error_rates_by_simulation():
    """c-drift (and every sign / equivalence verdict) on a paired bootstrap over 64 prompts: with no true
    difference, 'supported' or 'contradicted' comes out at most ~5% of the time; with a true difference
    exactly at the margin, 'equivalent' comes out at most ~5% of the time (one side of a 95% interval)."""
    import numpy as np

    from harness import metrics as M
    from harness.claims import EQUIVALENT

    rng = np.random.default_rng(7)
    margin, n, trials = 0.01, 64, 300

    def rate(true_diff, verdicts):
        hits = 0
        for t in range(trials):
            base = rng.gamma(2.0, 0.01, n)                   # per-prompt KL of one arm
            other = base + true_diff + rng.normal(0, 0.01, n)
            c = M.paired_test(base, other, n_boot=400, seed=t)
            hits += sign_verdict(c["lo"], c["hi"], margin) in verdicts
        return hits / trials

    false_sign = rate(0.0, {SUPPORTED, CONTRADICTED})
    false_equiv = rate(margin, {EQUIVALENT})
    print(f"\nnull: supported/contradicted {false_sign:.3f}; true diff = margin: equivalent {false_equiv:.3f}")
    assert false_sign <= 0.09, false_sign
    assert false_equiv <= 0.07, false_equiv
    assert rate(3 * margin, {SUPPORTED}) >= 0.9  # and a clear difference is found
