"""harness.results: tidy tables and hand-computed arithmetic on tiny fabricated suite runs (no torch)."""

from __future__ import annotations

import math

import pytest
from fake_suite_run import build_run, make_suite_run
from scipy import stats

from harness import metrics as M
from harness.errors import StoreError
from harness.results import load
from harness.store import Store

TWO = {"hellaswag": ("acc", 0.25), "winogrande": ("acc", 0.5)}


def tiny_points(extra: list[dict] | None = None) -> list[dict]:
    """base / teacher / sft / sdft on 4 tool-use items and two 4-item benchmarks."""
    return [
        {"point": "base", "arm": "base", "scores": {"tooluse": [1, 0, 0, 0], "prior/hellaswag": [1, 1, 1, 0],
                                                    "prior/winogrande": [1, 0, 1, 0]}},
        {"point": "teacher", "arm": "teacher", "scores": {"tooluse": [1, 1, 1, 0]}},
        {"point": "sft/a/seed=0", "arm": "sft", "method": "sft", "seed": 0, "hparams": {"lr": 1e-5},
         "cost": {"train_wall_s": 100.0, "flops": 1e12, "steps": 4}, "curve": 4,
         "scores": {"tooluse": [1, 1, 0, 0], "tooluse-val": [1, 0], "prior/hellaswag": [1, 0, 0, 0],
                    "prior/winogrande": [0, 0, 1, 0]}},
        {"point": "sdft/a/seed=0", "arm": "sdft", "method": "sdft", "seed": 0, "hparams": {"lr": 1e-5},
         "cost": {"train_wall_s": 400.0, "flops": 2.5e12, "steps": 4}, "curve": 4,
         "scores": {"tooluse": [1, 1, 1, 0], "tooluse-val": [1, 1], "prior/hellaswag": [1, 1, 0, 0],
                    "prior/winogrande": [1, 0, 1, 0]}},
        *(extra or []),
    ]


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "h.db")
    yield s
    s.close()


@pytest.fixture()
def tiny(store):
    rid = build_run(store, tiny_points(), benchmarks=TWO, name="tiny")
    return load(rid, store, n_boot=2000)


def test_tidy_frames(tiny):
    r = tiny
    assert list(r.points["point"]) == ["base", "teacher", "sft/a/seed=0", "sdft/a/seed=0"]
    for col in ("arm", "method", "seed", "selected", "hp_lr", "new_task", "new_task_val", "prior_avg", "forgetting",
                "train_wall_s", "tokens_generated", "flops", "steps"):
        assert col in r.points, col
    m = r.metrics
    assert set(m["kind"]) == {"new", "val", "prior"}
    assert len(m[m["point"] == "teacher"]) == 1  # teacher: new task only
    assert set(r.items.columns) >= {"point", "task", "item_id", "score", "group"}
    assert len(r.items[(r.items["point"] == "base") & (r.items["task"] == "prior/hellaswag")]) == 4
    assert set(r.curves["point"]) == {"sft/a/seed=0", "sdft/a/seed=0"}
    assert {"step", "loss", "divergence", "drift_kl", "lr"} <= set(r.curves.columns)
    assert r.curves[r.curves["arm"] == "sft"]["divergence"].isna().all()
    assert r.prior_tasks == ["prior/hellaswag", "prior/winogrande"]
    assert r.sft_arm == "sft" and r.sdft_arm == "sdft"


def test_forgetting_by_hand(tiny):
    r = tiny
    P = r.points.set_index("point")
    # base: hellaswag 3/4, winogrande 2/4 -> 0.625; sft 1/4, 1/4 -> 0.25; sdft 2/4, 2/4 -> 0.5
    assert P.loc["base", "prior_avg"] == pytest.approx(0.625)
    assert P.loc["sft/a/seed=0", "prior_avg"] == pytest.approx(0.25)
    assert P.loc["sft/a/seed=0", "forgetting"] == pytest.approx(0.375)
    assert P.loc["sdft/a/seed=0", "forgetting"] == pytest.approx(0.125)
    pt = r.prior_table().set_index("arm")
    assert pt.loc["sft", "forgetting"] == pytest.approx(0.375)
    assert pt.loc["sft", "lo"] <= 0.375 <= pt.loc["sft", "hi"]
    assert pt.loc["base", "forgetting"] == 0.0
    # SDFT - SFT prior average = 0.5 - 0.25
    assert r.prior_change("sft", "sdft")["diff"] == pytest.approx(0.25)
    # new task: 1/4, 3/4 teacher, 2/4 sft, 3/4 sdft
    nt = r.new_task_table().set_index("arm")
    assert nt.loc["base", "acc"] == 0.25 and nt.loc["teacher", "acc"] == 0.75
    assert nt.loc["sft", "diff_vs_base"] == pytest.approx(0.25)
    lo, hi = M.wilson_interval(2, 4)
    assert (nt.loc["sft", "lo"], nt.loc["sft", "hi"]) == pytest.approx((lo, hi))
    assert math.isnan(nt.loc["sft", "seed_lo"])  # one seed: no across-seed interval
    assert nt.loc["sft", "val_acc"] == 0.5


def test_paired_tests_by_hand(tiny):
    r = tiny
    c = r.paired("base", "teacher", "tooluse")
    # teacher gains items 1 and 2, loses none: exact McNemar p = 2 * P(X <= 0 | 2, 0.5) = 0.5
    assert c["test"] == "mcnemar" and (c["n01"], c["n10"]) == (2, 0)
    assert c["p"] == pytest.approx(0.5) and c["diff"] == pytest.approx(0.5)
    bt = r.benchmark_table()
    row = bt[(bt["arm"] == "sft") & (bt["benchmark"] == "hellaswag")].iloc[0]
    assert row["diff"] == pytest.approx(-0.5) and row["test"] == "mcnemar"
    assert row["p"] == pytest.approx(0.5)
    p_w = bt[(bt["arm"] == "sft") & (bt["benchmark"] == "winogrande")]["p"].iloc[0]
    assert p_w == pytest.approx(1.0)  # one loss, no gain
    assert list(bt[bt["arm"] == "sft"]["p_holm"]) == pytest.approx(M.holm([0.5, 1.0]))
    # winogrande base 0.5 = its chance level: flagged
    assert bool(bt[(bt["arm"] == "sft") & (bt["benchmark"] == "winogrande")]["at_chance"].iloc[0])


def test_flip_table_by_hand(tiny):
    f = tiny.flips("sft")
    h = f[(f["task"] == "prior/hellaswag") & (f["group"] == "(all)")].iloc[0]
    assert (h["right_to_wrong"], h["wrong_to_right"], h["both_right"], h["both_wrong"]) == (2, 0, 1, 1)
    w = f[(f["task"] == "prior/winogrande") & (f["group"] == "(all)")].iloc[0]
    assert (w["right_to_wrong"], w["wrong_to_right"], w["both_right"], w["both_wrong"]) == (1, 0, 1, 2)
    assert w["net"] == -1


def test_compare_sft_sdft(tiny):
    c = tiny.compare("sft", "sdft").set_index("task")
    assert c.loc["tooluse", "diff"] == pytest.approx(0.25)
    assert c.loc["prior/hellaswag", "diff"] == pytest.approx(0.25)
    assert c.loc["prior average", "diff"] == pytest.approx(0.25)
    assert not math.isnan(c.loc["prior/hellaswag", "p_holm"])
    assert math.isnan(c.loc["tooluse", "p_holm"])


def test_cost_ratio_matched_pairs(tiny):
    r = tiny
    c = r.cost_ratio("sdft", "sft", "flops")
    assert c["ratio"] == pytest.approx(2.5) and c["n"] == 1 and "matched" in c["basis"]
    assert math.isnan(c["lo"])  # one pair: no interval
    ct = r.cost_table().set_index("arm")
    assert ct.loc["sdft", "wall_ratio"] == pytest.approx(4.0)
    assert ct.loc["sft", "wall_ratio"] == 1.0
    # gain per hour: sdft gains 0.5 over base in 400 s -> 100 * 0.5 / (400/3600) = 450 pp/h
    assert ct.loc["sdft", "gain_per_hour"] == pytest.approx(450.0)


def test_cost_ratio_per_step_without_matches(store):
    pts = tiny_points()
    pts[2]["hparams"] = {"lr": 2e-5}  # no matching grid point any more
    pts[2]["cost"] = {"train_wall_s": 100.0, "flops": 1e12, "steps": 4}
    pts[3]["cost"] = {"train_wall_s": 400.0, "flops": 5e12, "steps": 8}
    r = load(build_run(store, pts, benchmarks=TWO), store, n_boot=500)
    c = r.cost_ratio("sdft", "sft", "flops")
    assert c["ratio"] == pytest.approx((5e12 / 8) / (1e12 / 4)) and "per optimizer step" in c["basis"]


def test_seeds_aggregate_and_seed_ci(store):
    sft1 = {"point": "sft/a/seed=1", "arm": "sft", "method": "sft", "seed": 1, "hparams": {"lr": 1e-5},
            "scores": {"tooluse": [1, 1, 1, 1], "prior/hellaswag": [1, 1, 0, 0], "prior/winogrande": [0, 0, 1, 0]}}
    not_sel = {"point": "sft/b/seed=1", "arm": "sft", "method": "sft", "seed": 1, "hparams": {"lr": 5e-5},
               "selected": False, "scores": {"tooluse": [0, 0, 0, 0]}}
    r = load(build_run(store, tiny_points([sft1, not_sel]), benchmarks=TWO), store, n_boot=500)
    assert r.arm_points("sft") == ["sft/a/seed=0", "sft/a/seed=1"]
    nt = r.new_task_table().set_index("arm")
    # seeds 0.5 and 1.0 -> mean 0.75; t interval with 1 df
    m, lo, hi = M.seed_ci([0.5, 1.0])
    assert nt.loc["sft", "acc"] == pytest.approx(0.75) and nt.loc["sft", "n_seeds"] == 2
    assert (nt.loc["sft", "seed_lo"], nt.loc["sft", "seed_hi"]) == pytest.approx((lo, hi))
    assert lo == pytest.approx(0.75 - stats.t.ppf(0.975, 1) * 0.25)
    # item scores averaged over seeds -> fractional -> paired bootstrap vs base
    assert r.arm_scores("sft", "tooluse") == {"Api0/0": 1.0, "Api1/1": 1.0, "Api2/2": 0.5, "Api3/3": 0.5}
    assert nt.loc["sft", "test"] == "bootstrap"
    # prior: seed 0 avg 0.25, seed 1 avg 0.375 -> forgetting 0.625 - 0.3125
    assert r.prior_table().set_index("arm").loc["sft", "forgetting"] == pytest.approx(0.3125)


def test_selection_fallback_best_validation(store):
    pts = tiny_points()
    for p in pts[2:]:
        p["selected"] = False
    worse = {"point": "sft/b/seed=0", "arm": "sft", "method": "sft", "seed": 0, "hparams": {"lr": 5e-5},
             "selected": False, "scores": {"tooluse": [0, 0, 0, 0], "tooluse-val": [0, 0]}}
    r = load(build_run(store, pts + [worse], benchmarks=TWO), store, n_boot=500)
    assert r.arm_points("sft") == ["sft/a/seed=0"]
    assert any("no point marked selected" in n for n in r.notes)


def test_selection_never_falls_back_to_the_test_score(store, monkeypatch):
    # two sft points for seed 0, none selected, no validation split: the better *test* score
    # (sft/b, 4/4) must not be picked; the arm is left unselected with a visible note
    pts = tiny_points()
    for p in pts[2:]:
        p["selected"] = False
        p["scores"].pop("tooluse-val")
    better_on_test = {"point": "sft/b/seed=0", "arm": "sft", "method": "sft", "seed": 0, "hparams": {"lr": 5e-5},
                      "selected": False, "scores": {"tooluse": [1, 1, 1, 1]}}
    r = load(build_run(store, pts + [better_on_test], benchmarks=TWO), store, n_boot=500)
    assert any("arm sft" in n and "never selected on the test set" in n for n in r.notes)  # known at load
    assert r.arm_points("sft") == []
    nt = r.new_task_table().set_index("arm")
    assert math.isnan(nt.loc["sft", "acc"]) and nt.loc["sft", "n_seeds"] == 0
    assert r.paired("base", "sft", "tooluse") is None
    # a lone point per seed is still used (nothing to choose), e.g. sdft here
    assert r.arm_points("sdft") == ["sdft/a/seed=0"]
    # `harness run`'s closing summary shows the note too
    import io

    from rich.console import Console

    import harness.cli as cli

    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=300))
    cli._print_summary(r.run_id, store)
    assert "note: arm sft" in buf.getvalue() and "never selected on the test set" in buf.getvalue()


def _select(metric: str, groups: dict[str, float | None]) -> dict[str, bool]:
    """Run `SuiteRunner._select` on manifest points of one (arm, seed) with the given validation
    accuracies (None = no validation evaluation)."""
    from types import SimpleNamespace

    from harness.manifest import PointRecord
    from harness.pipeline import SuiteRunner

    summaries = {f"val-{k}": {"summary": {"accuracy": v}} for k, v in groups.items() if v is not None}
    fake = SimpleNamespace(suite=SimpleNamespace(selection=SimpleNamespace(metric=metric)),
                           store=SimpleNamespace(get_eval=summaries.__getitem__),
                           eval_name=lambda split: "tooluse-val")
    pts = [PointRecord(point=k, arm="sft", method="sft", seed=0, train_key=f"t-{k}",
                       evals={"tooluse": f"test-{k}"} | ({"tooluse-val": f"val-{k}"} if v is not None else {}))
           for k, v in groups.items()]
    SuiteRunner._select(fake, pts)
    return {p.point: p.selected for p in pts}


def test_pipeline_select_by_validation_never_by_position_or_test():
    assert _select("validation", {"a": 0.2, "b": 0.6, "c": 0.6}) == {"a": False, "b": True, "c": False}
    # several points and nothing to select on: none selected (the first is not silently chosen)
    assert _select("none", {"a": None, "b": None}) == {"a": False, "b": False}
    assert _select("none", {"a": 0.2, "b": 0.6}) == {"a": False, "b": False}
    assert _select("validation", {"a": 0.2, "b": None}) == {"a": False, "b": False}
    assert _select("none", {"a": None}) == {"a": True}  # one point: nothing to choose


def test_run_without_prior_or_teacher(store):
    rid = make_suite_run(store, benchmarks=(), with_teacher=False, n_tool=20, n_val=6)
    r = load(rid, store, n_boot=500)
    assert r.prior_tasks == [] and r.prior_table().empty and r.benchmark_table().empty
    assert r.points["prior_avg"].isna().all()
    assert any("forgetting is not measured" in n for n in r.notes)
    assert "teacher" not in r.arms


def test_bad_input_one_line_errors(store, tmp_path):
    with pytest.raises(StoreError) as e:
        load("no-such-run", store)
    assert "no-such-run" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(StoreError, match="not found"):
        load("x", tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    rid = store.new_run("eval-tooluse", name="plain")
    with pytest.raises(StoreError, match="not a suite run"):
        load(rid, store)
    from harness.manifest import SuiteManifest

    rid = store.new_run("suite", name="empty", meta=SuiteManifest(task="tooluse").model_dump(mode="json"))
    with pytest.raises(StoreError, match="no points"):
        load(rid, store)


def test_incomplete_eval_is_noted(store):
    rid = build_run(store, tiny_points(), benchmarks=TWO)
    meta = store.get_run(rid)["meta"]
    meta["points"][2]["evals"]["prior/hellaswag"] = "deadbeef" * 3
    store.update_run_meta(rid, points=meta["points"])
    r = load(rid, store, n_boot=500)
    assert any("missing from the store" in n for n in r.notes)
    assert math.isnan(r.points.set_index("point").loc["sft/a/seed=0", "prior_avg"])  # NaN on purpose


def test_load_by_name_and_default_db(store, monkeypatch):
    rid = build_run(store, tiny_points(), benchmarks=TWO, name="named-suite")
    monkeypatch.setenv("HARNESS_DB", str(store.path))
    assert load("named-suite").run_id == rid


IFE = TWO | {"ifeval": ("inst_level_loose_acc", 0.0)}
IFE_W = [1, 2, 4, 3]  # instructions per prompt


def ifeval_points() -> list[dict]:
    """tiny_points plus IFEval with uneven instruction counts: base follows 3 of 10 instructions
    (macro 0.458), sft 5 of 10 (macro 0.4375), sdft 5 of 10."""
    pts = tiny_points()
    for p, s in zip(pts[:1] + pts[2:], ([1.0, 0.5, 0.0, 1 / 3], [0.0, 0.5, 0.25, 1.0], [1.0, 1.0, 0.5, 0.0])):
        p["scores"]["prior/ifeval"] = s
        p["weights"] = {"prior/ifeval": IFE_W}
    return pts


def test_ifeval_is_the_micro_average_everywhere(store):
    r = load(build_run(store, ifeval_points(), benchmarks=IFE), store, n_boot=2000)
    m = r.metrics.set_index(["point", "task"])
    base = m.loc[("base", "prior/ifeval")]
    assert base["value"] == pytest.approx(0.3) and base["reported"] == pytest.approx(0.3)
    v, lo, hi = M.ratio_ci([1.0, 0.5, 0.0, 1 / 3], IFE_W, n_boot=2000)
    assert (base["lo"], base["hi"]) == pytest.approx((lo, hi))
    # paired: ratio of sums on the shared denominators, +0.2 (the macro means would say -0.02)
    c = r.paired("base", "sft", "prior/ifeval")
    assert c["test"] == "ratio bootstrap" and c["diff"] == pytest.approx(0.2)
    assert (c["ref_value"], c["value"]) == pytest.approx((0.3, 0.5))
    bt = r.benchmark_table().set_index(["arm", "benchmark"])
    assert bt.loc[("sft", "ifeval"), "diff"] == pytest.approx(0.2)
    # the prior average uses the micro value: base (0.75 + 0.5 + 0.3)/3, sft (0.25 + 0.25 + 0.5)/3
    P = r.points.set_index("point")
    assert P.loc["base", "prior_avg"] == pytest.approx(1.55 / 3)
    assert P.loc["sft/a/seed=0", "prior_avg"] == pytest.approx(1.0 / 3)
    assert r.prior_change("base", "sft")["diff"] == pytest.approx(1.0 / 3 - 1.55 / 3)
    assert r.prior_table().set_index("arm").loc["sft", "forgetting"] == pytest.approx(0.55 / 3)


def test_ifeval_weights_from_the_stored_instruction_list(store):
    # rows stored before the counts were recorded carry only lm-eval's instruction-level list
    from fake_suite_run import add_eval

    key = add_eval(store, "prior/ifeval", "base", [0.75, 0.0, 0.5])
    store.conn.execute("UPDATE examples SET diagnostics=? WHERE eval_key=? AND idx=0",
                       ('{"inst_level_loose_acc": [true, true, true, false]}', key))
    store.conn.execute("UPDATE examples SET diagnostics=? WHERE eval_key=? AND idx=1",
                       ('{"inst_level_loose_acc": [false]}', key))
    store.conn.execute("UPDATE examples SET diagnostics=? WHERE eval_key=? AND idx=2",
                       ('{"inst_level_loose_acc": [true, false]}', key))
    store.conn.commit()
    pts = [{"point": "base", "arm": "base", "method": "base", "seed": None, "hparams": {}, "selected": True,
            "train_key": None, "checkpoint": None, "cost": {}, "evals": {"prior/ifeval": key}}]
    meta = {"task": "tooluse", "points": pts,
            "benchmarks": {"ifeval": {"metric": "inst_level_loose_acc", "chance": 0.0, "in_average": True}}}
    rid = store.new_run("suite", name="old", meta=meta)
    store.finish_run(rid)
    r = load(rid, store, n_boot=500)
    assert r.value("base", "prior/ifeval") == pytest.approx(4 / 7)
    assert r.item_weights("prior/ifeval") == {"0": 4.0, "1": 1.0, "2": 2.0}


def test_seed_change_resamples_seeds_and_items(store):
    # sft: two seeds that disagree on the new task; sdft: one seed
    sft1 = {"point": "sft/a/seed=1", "arm": "sft", "method": "sft", "seed": 1, "hparams": {"lr": 1e-5},
            "scores": {"tooluse": [0, 0, 1, 1], "prior/hellaswag": [1, 1, 0, 0], "prior/winogrande": [0, 0, 1, 0]}}
    sdft1 = {"point": "sdft/a/seed=1", "arm": "sdft", "method": "sdft", "seed": 1, "hparams": {"lr": 1e-5},
             "scores": {"tooluse": [1, 1, 1, 1], "prior/hellaswag": [1, 1, 1, 0], "prior/winogrande": [1, 1, 1, 0]}}
    r = load(build_run(store, tiny_points([sft1, sdft1]), benchmarks=TWO), store, n_boot=2000)
    c = r.seed_change("sft", "sdft", ["tooluse"])
    # sft seeds 2/4 and 2/4, sdft 3/4 and 4/4 -> +0.375; per-seed differences 0.25 and 0.5
    assert c["diff"] == pytest.approx(0.375) and (c["n_seeds_ref"], c["n_seeds_arm"]) == (2, 2)
    m, lo, hi = M.seed_ci([0.25, 0.5])
    assert (c["seed_lo"], c["seed_hi"]) == pytest.approx((lo, hi)) and c["n_seed_pairs"] == 2
    assert c["lo"] <= 0.375 <= c["hi"]
    avg = r.seed_change("sft", "sdft", r.average_tasks)
    assert avg["diff"] == pytest.approx(r.arm_prior_avg("sdft") - r.arm_prior_avg("sft"))
    assert r.seed_change("sft", "sdft", ["prior/nope"]) is None
