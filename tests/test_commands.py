"""The commands as package functions (`harness.commands`), called without typer: what they store,
what they return, and that their checks write nothing."""

from __future__ import annotations

import json

import pytest

from harness.errors import HarnessError


def _eval(tiny_model_dir, data_dir, db, **kw):
    from harness.commands import eval_task

    opts = dict(model=str(tiny_model_dir), arms="base,teacher", split="paper68", limit=2, max_new_tokens=4,
                dtype="float32", data_dir=str(data_dir), db=str(db)) | kw
    return eval_task("tooluse", **opts)


def test_eval_task_stores_a_run_linking_each_arm_and_returns_its_summary(tmp_path, tiny_model_dir, data_dir):
    from harness.store import Store

    db = tmp_path / "h.db"
    seen: dict = {}

    def progress(label, total):
        seen[label] = [total]
        return lambda done, total: seen[label].append((done, total))

    res = _eval(tiny_model_dir, data_dir, db, progress=progress)
    store = Store(db)
    run = store.get_run(res.run_id)
    assert (run["kind"], run["status"]) == ("eval-tooluse", "complete")
    assert run["config"] == {"model": str(tiny_model_dir), "arms": ["base", "teacher"], "split": "paper68",
                             "limit": 2, "max_new_tokens": 4, "dtype": "float32", "device": "cpu", "backend": "hf",
                             "teacher_template": "paper"}
    assert run["meta"]["task"] == "tooluse" and run["meta"]["model_hash"] and run["meta"]["skipped"] == []
    linked = {e["label"]: e for e in store.run_evals(res.run_id)}
    assert set(linked) == {"base", "teacher"} == set(res.results) and res.arms == ["base", "teacher"]
    for arm, summary in res.results.items():
        rows = store.examples(summary["eval_key"])
        assert linked[arm]["eval_key"] == summary["eval_key"] and linked[arm]["arm"] == arm
        assert len(rows) == 2 == summary["n"] == res.n
        assert summary["correct"] == sum(int(r["score"]) for r in rows)
        assert summary["accuracy"] == pytest.approx(summary["correct"] / 2)
        assert not summary["cached"] and linked[arm]["summary"]["accuracy"] == summary["accuracy"]
    # one bar per arm, sized up front, counting up to the items
    assert seen["base"][0] == 2 and seen["base"][-1] == (2, 2) and seen["teacher"][-1] == (2, 2)
    assert res.store_path == str(db) and res.max_new_tokens == 4 and res.dtype == "float32"

    # the same evaluation again: a new run over the cached evaluations, nothing generated or added
    n_evals = len(store.find_evals(task="tooluse"))
    again = _eval(tiny_model_dir, data_dir, db)
    assert again.run_id != res.run_id and all(r["cached"] for r in again.results.values())
    assert {a: r["eval_key"] for a, r in again.results.items()} == {a: r["eval_key"] for a, r in res.results.items()}
    assert len(Store(db).find_evals(task="tooluse")) == n_evals
    assert [r["status"] for r in Store(db).list_runs()] == ["complete", "complete"]


def test_prepare_task_eval_checks_everything_and_writes_nothing(tmp_path, tiny_model_dir, data_dir):
    from harness.commands import prepare_task_eval

    db = tmp_path / "h.db"
    job = prepare_task_eval("tooluse", model=str(tiny_model_dir), arms="base", limit=3, dtype="float32",
                            data_dir=str(data_dir), db=str(db))
    assert not db.exists()  # checked, keyed, but not written
    assert len(job.records) == 3 and job.split == "paper68"  # the task's default split
    assert job.max_new_tokens == job.task.default_max_new_tokens and job.config()["arms"] == ["base"]
    for kw, needle in [({"arms": "base,base"}, "--arms: arm 'base' is listed twice"),
                       ({"limit": 0}, "--limit must be positive, got 0"),
                       ({"limit": 10_000}, "--limit 10000: "),
                       ({"sample": "random"}, "--sample: unknown sample 'random'"),
                       ({"max_new_tokens": -1}, "--max-new-tokens must be positive, got -1"),
                       ({"threads": 0}, "--threads must be positive, got 0")]:
        with pytest.raises(HarnessError, match="^" + needle.replace("(", r"\(")) as e:
            prepare_task_eval("tooluse", **({"model": str(tiny_model_dir), "data_dir": str(data_dir), "db": str(db),
                                             "dtype": "float32"} | kw))
        assert e.value.exit_code == 2
    assert not db.exists()


def test_a_failing_evaluation_leaves_the_run_failed(tmp_path, tiny_model_dir, data_dir, monkeypatch):
    import harness.evaluate
    from harness.errors import ModelError
    from harness.store import Store

    def boom(*a, **k):
        raise ModelError("weights vanished mid-run")

    monkeypatch.setattr(harness.evaluate, "evaluate", boom)
    with pytest.raises(ModelError):
        _eval(tiny_model_dir, data_dir, tmp_path / "h.db", arms="base")
    assert [r["status"] for r in Store(tmp_path / "h.db").list_runs()] == ["failed"]


def test_results_functions_read_the_stored_run(tmp_path, tiny_model_dir, data_dir):
    from harness.commands import export_run, list_runs, run_evaluations

    db = tmp_path / "h.db"
    res = _eval(tiny_model_dir, data_dir, db, arms="base")
    path, runs = list_runs(str(db))
    assert path == str(db) and [r["run_id"] for r in runs] == [res.run_id]
    info, evals = run_evaluations(res.run_id[:12], str(db))
    assert info["run_id"] == res.run_id and [e["eval_key"] for e in evals] == [res.results["base"]["eval_key"]]
    out = tmp_path / "run.json"
    assert export_run(res.run_id, out, str(db)) == 1
    data = json.loads(out.read_text())
    assert data["run"]["run_id"] == res.run_id and len(data["evaluations"][0]["examples"]) == 2
    assert not (tmp_path / "run.json.tmp").exists()
    with pytest.raises(HarnessError, match="is a folder"):
        export_run(res.run_id, tmp_path, str(db))
    with pytest.raises(HarnessError):  # no store there: an error, never a new empty file
        list_runs(str(tmp_path / "none.db"))
    assert not (tmp_path / "none.db").exists()


def test_prepare_training_builds_the_config_from_file_and_flags(tmp_path, tiny_model_dir, data_dir):
    from harness.commands import prepare_training

    (tmp_path / "c.yaml").write_text("lr: 1.0e-4\nseed: 3\n")
    common = dict(output_dir=tmp_path / "out", config=tmp_path / "c.yaml", split="paper68", limit=4,
                  data_dir=str(data_dir), db=str(tmp_path / "h.db"))
    job = prepare_training(flags={"method": "sft", "model": str(tiny_model_dir), "seed": 5}, **common)
    assert (job.cfg.method, job.cfg.lr, job.cfg.seed, job.cfg.task) == ("sft", 1e-4, 5, "tooluse")
    assert len(job.records) == 4 and str(job.loaded.path).endswith(".json")
    (tmp_path / "c.yaml").write_text("topk: 0\n")
    with pytest.raises(HarnessError, match=r"c.yaml: topk: must be positive, got 0"):
        prepare_training(flags={"model": str(tiny_model_dir)}, **common)
    with pytest.raises(HarnessError, match="--limit must be positive"):
        prepare_training(flags={"model": str(tiny_model_dir)}, **(common | {"config": None, "limit": 0}))
    assert not (tmp_path / "h.db").exists() and not (tmp_path / "out").exists()


def test_plan_suite_rejects_a_target_outside_zero_one():
    from harness.commands import plan_suite

    with pytest.raises(HarnessError, match=r"--target-mde must be a fraction in \(0, 1\), got 1.5"):
        plan_suite("suites/quick.yaml", target_mde=1.5)
