"""harness.manifest and harness.selection: the one schema of a suite run's record, the one
selection rule, and reading manifests written before the schema (no torch)."""

from __future__ import annotations

import math

import pytest
from fake_suite_run import add_eval, build_run

from harness.errors import StoreError
from harness.manifest import (Cost, ManifestError, SequentialManifest, SuiteManifest, link_label, read_manifest,
                              val_name)
from harness.results import load
from harness.selection import choose
from harness.store import Store

TWO = {"hellaswag": ("acc", 0.25), "winogrande": ("acc", 0.5)}


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "h.db")
    yield s
    s.close()


def test_choose_one_rule():
    assert choose([None]) == 0 and choose([math.nan], by_validation=False) == 0  # nothing to choose
    assert choose([0.2, 0.6, 0.6]) == 1  # best validation score, first on ties
    assert choose([0.2, None]) is None and choose([0.2, math.nan]) is None  # not every point scored
    assert choose([0.2, 0.6], by_validation=False) is None  # `selection.metric: none`
    assert choose([]) is None


def _sft(name: str, val: list | None, test: list, selected: bool = False) -> dict:
    scores = {"tooluse": test} | ({"tooluse-val": val} if val is not None else {})
    return {"point": name, "arm": "sft", "method": "sft", "seed": 0, "hparams": {"lr": name}, "selected": selected,
            "scores": scores}


def _fallback_run(store, points, selection="validation"):
    rid = build_run(store, [{"point": "base", "arm": "base", "scores": {"tooluse": [1, 0, 0, 0]}}, *points],
                    benchmarks={})
    assert store.get_run(rid)["meta"]["selection"] == "validation"
    store.update_run_meta(rid, selection=selection)
    return load(rid, store, n_boot=200)


def test_results_fallback_uses_the_pipelines_rule(store):
    # no point marked selected (a run that stopped before `_select`): the same rule as the pipeline
    r = _fallback_run(store, [_sft("a", [0, 0], [1, 1, 1, 1]), _sft("b", [1, 0], [0, 0, 0, 0])])
    assert r.arm_points("sft") == ["b"]
    assert any("using b (best validation score)" in n for n in r.notes)


def test_results_fallback_partial_validation_is_left_unselected(store):
    # one point lacks a validation score: the pipeline would select none, so results selects none
    r = _fallback_run(store, [_sft("a", [1, 1], [0, 0, 0, 0]), _sft("b", None, [1, 1, 1, 1])])
    assert r.arm_points("sft") == []
    assert any("never selected on the test set" in n for n in r.notes)


def test_results_fallback_respects_selection_none(store):
    r = _fallback_run(store, [_sft("a", [1, 1], [0, 0, 0, 0]), _sft("b", [0, 0], [1, 1, 1, 1])], selection="none")
    assert r.arm_points("sft") == []


def test_fake_runs_are_written_through_the_schema(store):
    rid = build_run(store, [{"point": "base", "arm": "base", "scores": {"tooluse": [1, 0], "tooluse-val": [1]}}],
                    benchmarks=TWO)
    m = read_manifest(store.get_run(rid))
    assert isinstance(m, SuiteManifest) and m.task == "tooluse" and list(m.benchmarks) == list(TWO)
    labels = {e["label"] for e in store.run_evals(rid)}
    assert labels == {"base", link_label("base", val_name("tooluse"))} == {"base", "base#tooluse-val"}


def _old_single_task_manifest(store) -> dict:
    """A manifest exactly as the pipeline wrote it before `harness.manifest` (no kind, no selection)."""
    keys = {t: add_eval(store, t, "base", s) for t, s in
            (("tooluse", [1, 0, 1, 0]), ("tooluse-val", [1, 0]), ("prior/hellaswag", [1, 1, 0, 0]))}
    sft = {t: add_eval(store, t, "base", s) for t, s in
           (("tooluse", [1, 1, 1, 0]), ("tooluse-val", [1, 1]), ("prior/hellaswag", [1, 0, 0, 0]))}
    return {"suite": "old", "suite_path": "suites/old.yaml", "skipped": {},
            "precision": {"dtype": "float32", "requested": "float32", "summary": "float32"},
            "train_precision": {"sft/lr=0.0001/seed=0": "off, float32"},
            "points": [{"point": "base", "arm": "base", "method": "base", "seed": None, "hparams": {},
                        "selected": True, "train_key": None, "checkpoint": None, "cost": {}, "evals": keys},
                       {"point": "sft/lr=0.0001/seed=0", "arm": "sft", "method": "sft", "seed": 0,
                        "hparams": {"lr": 0.0001}, "selected": True, "train_key": "k" * 20,
                        "checkpoint": "results/checkpoints/kkk/final",
                        "cost": {"train_wall_s": 12.5, "wall_s": 14.0, "tokens_generated": 0,
                                 "tokens_forwarded": 900, "flops": 1.5e12, "steps": 3}, "evals": sft}],
            "benchmarks": {"hellaswag": {"metric": "acc", "chance": 0.25, "in_average": True}},
            "model": "qwen2.5-coder-0.5b-instruct", "paper_model": "Qwen2.5-7B-Instruct", "task": "tooluse",
            "demonstrations": {"train": "gold_calls", "test": "gold_calls"}, "wall_s": 99.0}


def test_old_single_task_run_still_loads(store):
    rid = store.new_run("suite", name="old", meta=_old_single_task_manifest(store))
    store.finish_run(rid)
    r = load(rid, store, n_boot=200)
    assert r.manifest.selection == "validation" and r.manifest.model == "qwen2.5-coder-0.5b-instruct"
    P = r.points.set_index("point")
    assert P.loc["sft/lr=0.0001/seed=0", "train_wall_s"] == 12.5 and P.loc["sft/lr=0.0001/seed=0", "wall_s"] == 14.0
    assert P.loc["sft/lr=0.0001/seed=0", "new_task_val"] == 1.0 and P.loc["base", "new_task"] == 0.5
    assert r.arm_points("sft") == ["sft/lr=0.0001/seed=0"] and r.prior_tasks == ["prior/hellaswag"]


def test_old_sequential_run_still_reads(store):
    # the shape `harness.sequential` wrote before the schema (cost `train_s`, no `selected`)
    old = {"suite": "sequential-quick", "suite_path": "suites/sequential-quick.yaml", "kind": "sequential",
           "precision": {"dtype": "bfloat16", "summary": "bfloat16 (auto)"}, "model": "m", "tasks": ["tooluse"],
           "stage_names": ["tooluse"], "demonstrations": {"tooluse": "gold_calls"},
           "fixed": {"base": {"tooluse": add_eval(store, "tooluse", "base", [0, 1])}},
           "points": [{"point": "sft/seed=0/stage=0", "arm": "sft", "method": "sft", "seed": 0, "stage": 0,
                       "stage_name": "tooluse", "task": "tooluse", "train_key": "c" * 20, "checkpoint": "x/merged",
                       "evals": {"tooluse": add_eval(store, "tooluse", "base", [1, 1])},
                       "cost": {"wall_s": 304.0, "train_s": 242.9, "steps": 8, "flops": 7.0e13,
                                "tokens_generated": 0, "tokens_forwarded": 5000}}],
           "wall_s": 4000.0}
    rid = store.new_run("suite", name="seq", meta=old)
    m = read_manifest(store.get_run(rid))
    assert isinstance(m, SequentialManifest)
    assert m.points[0].cost.train_wall_s == 242.9 and m.points[0].cost.steps == 8
    from harness.continual import outcomes_from_run
    from harness.report.sequential import _cost_table

    assert outcomes_from_run(rid, store).tasks == ("tooluse",)
    assert _cost_table(m).rows == [["sft/seed=0/stage=0", "tooluse", "tooluse", "8", "4.0 min", "0"]]
    with pytest.raises(StoreError, match="sequential suite run"):
        load(rid, store)


def test_a_manifest_that_does_not_validate_fails_in_one_line(store):
    meta = _old_single_task_manifest(store)
    del meta["points"][1]["arm"]
    meta["points"][0]["colour"] = "red"
    rid = store.new_run("suite", name="bad", meta=meta)
    with pytest.raises(ManifestError) as e:
        load(rid, store)
    msg = str(e.value)
    assert "\n" not in msg and rid in msg and "points.0.colour" in msg and "2 problem(s)" in msg
    assert isinstance(e.value, StoreError)  # the CLI prints it as one line (exit 2)


def test_cost_from_training_totals():
    c = Cost.from_totals({"train_s": 2.0, "wall_s": 3.0, "steps": 4, "flops": 5.0, "tokens_generated": 6,
                          "tokens_forwarded": 7, "cached": True})
    assert c.model_dump() == {"train_wall_s": 2.0, "wall_s": 3.0, "steps": 4, "flops": 5.0,
                              "tokens_generated": 6, "tokens_forwarded": 7}
    assert Cost.from_totals({"wall_s": 3.0}).train_wall_s == 3.0


@pytest.mark.parametrize("command", [["report"], ["claims"]])
def test_a_damaged_manifest_is_one_line_exit_2_and_nothing_written(tmp_path, store, capsys, command):
    """Bad input through the command line: a stored run whose manifest does not validate."""
    from harness.cli import cli_main

    meta = _old_single_task_manifest(store)
    meta["points"][0]["colour"] = "red"
    rid = store.new_run("suite", name="bad", meta=meta)
    out = tmp_path / "reports"
    capsys.readouterr()
    argv = [*command, rid, "--db", str(tmp_path / "h.db")] + (["--out", str(out)] if command == ["report"] else [])
    rc = cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and rid in err[0] and "points.0.colour" in err[0], err
    assert not out.exists()
