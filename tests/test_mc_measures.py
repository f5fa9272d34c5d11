"""Continuous paired measures on multiple-choice prior benchmarks: log p(gold) and the margin over
the best other choice, from the per-choice loglikelihoods the prior evaluator stores per item."""

import math

import numpy as np
import pytest

from harness import metrics as M
from harness.claims import EQUIVALENT, NOT_MEASURED, SUPPORTED, check_claims
from harness.results import load, mc_task
from harness.errors import ConfigError
from harness.store import Store


def test_choice_measures():
    m = M.choice_measures([-1.0, -3.0, -0.5, -2.0], gold=0)
    assert m == {"gold_logp": -1.0, "margin": -0.5}
    assert M.choice_measures([-4.0, -1.0], gold=1)["margin"] == 3.0
    with pytest.raises(ValueError):
        M.choice_measures([-1.0, -2.0], gold=2)
    with pytest.raises(ValueError):
        M.choice_measures([-1.0], gold=0)


def _mc_diags(gold_logp, other):
    """Items with the gold choice first except every third (gold index 1), stored as the prior
    evaluator stores them: loglikelihoods per choice plus the gold index."""
    out = []
    for i, (g, o) in enumerate(zip(gold_logp, other)):
        if i % 3 == 2:
            out.append({"loglikelihoods": [float(o), float(g), float(o) - 1.0], "gold": 1})
        else:
            out.append({"loglikelihoods": [float(g), float(o), float(o) - 2.0], "target": 0})
    return out


def _run(tmp_path, sft_shift, sdft_shift, n=200, config=None):
    from fake_suite_run import build_run

    rng = np.random.default_rng(1)
    gold, other = rng.normal(-2.0, 1.0, n), rng.normal(-2.5, 1.0, n)
    acc = list((gold > other).astype(float))

    def arm(shift, noise):
        g = gold + shift + noise
        return {"prior/hellaswag": acc, "prior/ifeval": [0.5] * 20}, {"prior/hellaswag": _mc_diags(g, other)}

    pts = []
    for name, shift, noise in (("base", 0.0, 0.0), ("sft", sft_shift, rng.normal(0, 0.05, n)),
                               ("sdft", sdft_shift, rng.normal(0, 0.05, n))):
        scores, diags = arm(shift, noise)
        pts.append({"point": name if name == "base" else f"{name}/default/seed=0", "arm": name, "method": name,
                    "seed": None if name == "base" else 0, "scores": {"tooluse": [1, 0] * 10, **scores},
                    "diags": diags})
    store = Store(tmp_path / "h.db")
    rid = build_run(store, pts, benchmarks={"hellaswag": ("acc_norm", 0.25), "ifeval": ("inst_level_loose_acc", 0.0)})
    if config is not None:
        store.conn.execute("UPDATE runs SET config=? WHERE run_id=?", (__import__("json").dumps(config), rid))
        store.conn.commit()
    return load(rid, store, n_boot=2000), gold, other


def test_mc_measures_are_stored_per_item_and_paired(tmp_path):
    r, gold, other = _run(tmp_path, sft_shift=-0.30, sdft_shift=-0.05)
    # per item: the items frame carries both measures for MC rows and NaN for generation rows
    hs = r.items[(r.items["task"] == "prior/hellaswag") & (r.items["arm"] == "base")]
    assert hs["gold_logp"].notna().all() and hs["margin"].notna().all()
    assert r.items.loc[r.items["task"] == "prior/ifeval", "gold_logp"].isna().all()
    # the gold index is honoured (`gold` = 1 on every third item, `target` = 0 elsewhere)
    assert hs["gold_logp"].tolist() == pytest.approx(gold.tolist())
    assert hs["margin"].tolist() == pytest.approx((gold - other).tolist())
    assert r.mc_tasks() == ["mc/hellaswag/gold_logp"] and r.mc_tasks("margin") == ["mc/hellaswag/margin"]
    t = r.mc_table()
    base_sft = t[(t["ref"] == "base") & (t["arm"] == "sft") & (t["measure"] == "gold_logp")].iloc[0]
    assert base_sft["diff"] == pytest.approx(-0.30, abs=0.02) and base_sft["hi"] < 0 and base_sft["n"] == 200
    assert 0.02 < base_sft["mde"] < 0.08  # (z.975 + z.8) * sqrt(E[d^2] / n), E[d^2] ~ 0.3^2 + 0.05^2
    pair = t[(t["ref"] == "sft") & (t["arm"] == "sdft") & (t["measure"] == "margin")].iloc[0]
    assert pair["diff"] == pytest.approx(0.25, abs=0.02) and pair["lo"] > 0
    c = r.mc_change("sft", "sdft")
    assert c["diff"] == pytest.approx(0.25, abs=0.02) and c["lo"] > 0 and c["n_items"] == 200
    # accuracy is untouched: the benchmark's headline is still its stored scores
    assert r.value("base", "prior/hellaswag") == pytest.approx(float(np.mean(hs["score"])))
    assert mc_task("prior/hellaswag", "margin") in set(r.metrics.loc[r.metrics["kind"] == "mc", "task"])


def test_mc_claim_verdicts(tmp_path):
    rows = {x["id"]: x for x in check_claims(_run(tmp_path / "a", -0.30, -0.05)[0])}
    c = rows["c-mc"]
    assert c["verdict"] == SUPPORTED and c["unit"] == "nats" and c["n"] == 200
    assert "log p(gold) alone" in c["note"] and math.isfinite(c["mde"])
    same = {x["id"]: x for x in check_claims(_run(tmp_path / "b", -0.10, -0.10)[0])}["c-mc"]
    assert same["verdict"] == EQUIVALENT, (same["lo"], same["hi"])
    worse = {x["id"]: x for x in check_claims(_run(tmp_path / "c", -0.05, -0.30)[0])}["c-mc"]
    assert worse["verdict"] == "contradicted"


def test_mc_claim_not_measured_without_choice_loglikelihoods(tmp_path):
    from fake_suite_run import build_run

    store = Store(tmp_path / "h.db")
    pts = [{"point": p, "arm": p, "method": p, "scores": {"tooluse": [1, 0], "prior/hellaswag": [1, 0, 1]}}
           for p in ("base", "sft", "sdft")]
    rid = build_run(store, pts, benchmarks={"hellaswag": ("acc_norm", 0.25)})
    r = load(rid, store, n_boot=200)
    assert r.mc_tasks() == [] and r.mc_table().empty
    row = {x["id"]: x for x in check_claims(r)}["c-mc"]
    assert row["verdict"] == NOT_MEASURED


def test_unknown_claim_margin_id_is_rejected(tmp_path):
    from harness.errors import ConfigError
    from harness.suite import load_suite

    text = open("suites/quick.yaml", encoding="utf-8").read() + "\nclaims: {margins: {c_mc: 0.1}}\n"
    p = tmp_path / "s.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"claims\.margins.*unknown claim id 'c_mc'"):
        load_suite(p)


def test_report_shows_the_mc_measures(tmp_path):
    from harness.report import render

    r, _, _ = _run(tmp_path, sft_shift=-0.30, sdft_shift=-0.05)
    md = render(r, out_dir=tmp_path / "reports", n_boot=200)["markdown"].read_text(encoding="utf-8")
    section = md.split("## Gold-answer log-probability and margin (multiple choice)", 1)[1].split("\n## ", 1)[0]
    rows = [l for l in section.splitlines() if l.startswith("| ")][1:]
    # hellaswag: log p(gold) and margin for sft - base, sdft - base and sdft - sft
    assert len(rows) == 6 and sum("sdft - sft" in l for l in rows) == 2
    assert any("+0.25" in l for l in rows if "sdft - sft" in l)  # the planted SDFT - SFT shift, in nats
    assert "(c-mc)" in md


def _store_run(store, run_id, arm, evals):
    """A stored run with one evaluation per task: {task: (scores, diags)}."""
    store.new_run("suite", name=run_id, config={"suite": "toy"}, run_id=run_id)
    for task, (scores, diags) in evals.items():
        key = Store.eval_key(task=task, arm=arm, run=run_id)
        store.begin_eval(key, task=task, arm=arm, model="toy", model_hash="m", data_hash="d", settings={})
        store.add_examples(key, [{"item_id": str(i), "idx": i, "prompt_hash": "h", "score": s,
                                  "diagnostics": d} for i, (s, d) in enumerate(zip(scores, diags))])
        store.finish_eval(key, {"accuracy": float(np.mean(scores))})
        store.link(run_id, key, label=arm)


def test_gate_rules_on_mc_margins_and_drift(tmp_path):
    """Optional continuous gate rules: a margin that drops by 0.3 nats on every item fails a 0.1-nat
    allowance although accuracy did not move; an unchanged margin passes; drift KL is gated with
    `higher_is_better: false` (a rise beyond max_drop is the regression)."""
    from harness import gate as G

    rng = np.random.default_rng(0)
    n = 300
    gold, other = rng.normal(-2.0, 1.0, n), rng.normal(-6.0, 1.0, n)  # far apart: accuracy cannot flip
    acc = list((gold > other).astype(float))
    noise = lambda: rng.normal(0, 0.05, n)  # noqa: E731
    kl_base, kl_same, kl_worse = np.abs(rng.normal(0.02, 0.005, n)), None, None
    kl_same, kl_worse = np.abs(kl_base + noise() / 10), kl_base + 0.05
    store = Store(tmp_path / "h.db")
    none = [{}] * n
    _store_run(store, "run-base", "base", {"prior/mmlu": (acc, _mc_diags(gold, other)),
                                           "probe/general-kl": (list(kl_base), none)})
    _store_run(store, "run-same", "sft", {"prior/mmlu": (acc, _mc_diags(gold + noise(), other)),
                                          "probe/general-kl": (list(kl_same), none)})
    _store_run(store, "run-drop", "sft", {"prior/mmlu": (acc, _mc_diags(gold - 0.3 + noise(), other)),
                                          "probe/general-kl": (list(kl_worse), none)})
    base = G.load_baseline("run-base", store)
    assert {"mc/mmlu/margin", "mc/mmlu/gold_logp"} <= set(base.metrics)
    gate = tmp_path / "gate.yaml"
    gate.write_text("format: harness-gate/1\nmetrics:\n  prior/mmlu: {max_drop: 0.02}\n"
                    "  mc/mmlu/margin: {max_drop: 0.1}\n"
                    "  probe/general-kl: {max_drop: 0.01, higher_is_better: false}\n")
    same = {r.metric: r.verdict for r in G.run_gate("run-base", "run-same", gate, store=store).rows}
    assert same == {"prior/mmlu": "pass", "mc/mmlu/margin": "pass", "probe/general-kl": "pass"}
    drop = G.run_gate("run-base", "run-drop", gate, store=store)
    got = {r.metric: r.verdict for r in drop.rows}
    assert got == {"prior/mmlu": "pass", "mc/mmlu/margin": "fail", "probe/general-kl": "fail"}
    assert drop.exit_code == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: harness-gate/1\nmetrics:\n  probe/general-kl: {max_drop: 0.01, higher_is_better: 'no'}\n")
    with pytest.raises(ConfigError, match=r"metrics\.probe/general-kl\.higher_is_better"):
        G.load_gate_config(bad)
