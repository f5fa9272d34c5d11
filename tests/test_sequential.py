"""Sequential suites (`harness.sequential`) on a tiny random model: stage chaining, the accuracy
matrix's cells, caching and partial recompute, and the CLI."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "ci-tiny-sequential.yaml"


def write_suite(tmp_path, mutate=None, name="seq.yaml"):
    d = yaml.safe_load(SUITE.read_text())
    if mutate:
        mutate(d)
    (tmp_path / "suites").mkdir(exist_ok=True)
    p = tmp_path / "suites" / name
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


@pytest.fixture()
def env(tmp_path, tiny_model_dir, data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    return {"db": tmp_path / "results" / "h.db", "model": str(tiny_model_dir)}


def runner(path, env, **kw):
    from harness.sequential import SequentialRunner

    return SequentialRunner(path, env["db"], overrides={"model": env["model"]}, log=lambda s: None, **kw)


def test_stages_chain_from_the_previous_stage_and_fill_the_matrix(tmp_path, env):
    from harness.continual import accuracy_matrix, transfer
    from harness.sequential import outcomes
    from harness.store import Store

    r = runner(write_suite(tmp_path), env)
    assert [(p.arm, p.stage) for p in r.points] == [("sft", 0), ("sft", 1), ("sdft", 0), ("sdft", 1)]
    first, second = r.points[0], r.points[1]
    assert first.cfg.model == env["model"] and first.cfg.task == "tooluse"
    assert second.cfg.model == str(first.model_dir) and second.cfg.task == "science"
    assert all(not row["cached"] for row in r.plan())
    run_id = r.run()
    for p in r.points:
        assert p.trained() and (p.model_dir / "config.json").is_file()
        assert set(p.evals) == {"tooluse", "science"}
    store = Store(env["db"])
    meta = store.get_run(run_id)["meta"]
    assert meta["kind"] == "sequential" and meta["tasks"] == ["tooluse", "science"]
    assert set(meta["fixed"]["base"]) == {"tooluse", "science"}
    from harness.manifest import SequentialManifest, read_manifest

    manifest = read_manifest(store.get_run(run_id))
    assert isinstance(manifest, SequentialManifest) and [p.stage for p in manifest.points] == [0, 1, 0, 1]
    assert all(p.cost.steps and p.cost.train_wall_s for p in manifest.points)
    data = outcomes(run_id, store)
    assert data.tasks == ("tooluse", "science") and sorted(data.methods) == ["sdft", "sft"]
    A = accuracy_matrix(data, "sft")
    assert {k for k in A} >= {("tooluse", -1), ("tooluse", 0), ("tooluse", 1), ("science", 1)}
    # two stages: BWT is tool use after science minus tool use right after its own stage
    assert transfer(data, "sft").bwt.value == pytest.approx(A[("tooluse", 1)].acc - A[("tooluse", 0)].acc)
    # a second run recomputes nothing
    r2 = runner(write_suite(tmp_path), env)
    assert all(row["cached"] for row in r2.plan())


def test_changing_stage_two_keeps_stage_one(tmp_path, env):
    r = runner(write_suite(tmp_path), env)
    keys = [p.key for p in r.points]

    def more_science_steps(d):
        d["stages"][1]["train_overrides"]["max_steps"] = 2

    r2 = runner(write_suite(tmp_path, more_science_steps, "seq2.yaml"), env)
    keys2 = [p.key for p in r2.points]
    assert keys2[0] == keys[0] and keys2[2] == keys[2]      # stage 1 of each arm: reused
    assert keys2[1] != keys[1] and keys2[3] != keys[3]      # stage 2: retrained

    def fewer_tooluse_items(d):
        d["stages"][0]["train"]["limit"] = 4

    r3 = runner(write_suite(tmp_path, fewer_tooluse_items, "seq3.yaml"), env)
    assert all(a != b for a, b in zip(keys, [p.key for p in r3.points]))  # stage 1 changed: all retrain


def test_a_grid_in_a_sequential_suite_is_refused(tmp_path, env):
    def grid(d):
        d["arms"]["sft"] = {"grid": {"lr": [1.0e-3, 1.0e-2]}}

    with pytest.raises(ConfigError, match=r"arms\.sft\.grid: a sequential suite trains one point"):
        runner(write_suite(tmp_path, grid), env)


def test_the_single_task_runner_refuses_a_suite_with_stages_and_writes_nothing(tmp_path, env):
    from harness.pipeline import SuiteRunner

    with pytest.raises(ConfigError, match=r"seq\.yaml: stages: a suite with stages runs through "
                                          r"harness\.sequential\.SequentialRunner"):
        SuiteRunner(write_suite(tmp_path), tmp_path / "runs.db")
    assert not (tmp_path / "runs.db").exists()


def test_cli_runs_a_sequential_suite_and_renders_its_report(tmp_path, env, capsys):
    from harness.cli import cli_main

    suite = write_suite(tmp_path)
    reports = tmp_path / "reports"
    assert cli_main(["run", str(suite), "--model", env["model"], "--db", str(env["db"]), "--dry-run"]) == 0
    assert not env["db"].exists()  # the plan reads the store, never creates it
    out = capsys.readouterr().out
    assert "tooluse then science" in out and "will run" in out
    assert cli_main(["run", str(suite), "--model", env["model"], "--db", str(env["db"]),
                     "--reports", str(reports)]) == 0
    out = capsys.readouterr().out
    assert "sft: accuracy" in out and "sdft: accuracy" in out and "claim c-retain" in out
    (folder,) = [p for p in reports.iterdir() if not p.name.startswith(".")]
    md = (folder / "summary.md").read_text()
    assert "Accuracy after each stage" in md and "Backward and forward transfer" in md
    assert "answer-only" in md  # science's demonstration policy is named
    html = (folder / "report.html").read_text()
    assert "c-retain" in html or "retains earlier skills" in html
    # the report command renders the same run from the store
    assert cli_main(["report", folder.name, "--db", str(env["db"]), "--out", str(tmp_path / "r2")]) == 0
    assert (tmp_path / "r2" / folder.name / "summary.md").read_text() == md


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["stages"][1].__setitem__("tsk", "science"), r"stages\[1\]\.tsk: unknown key"),
    (lambda d: d["stages"][1].__setitem__("task", "sciense"), r"stages\[1\]\.task: .*sciense"),
    (lambda d: d["stages"][1].__setitem__("name", "tooluse"), r"stages\[1\]\.name: 'tooluse' is used twice"),
    (lambda d: d["stages"][0]["train_overrides"].__setitem__("lr", -1) if "train_overrides" in d["stages"][0]
     else d["stages"][0].__setitem__("train_overrides", {"lr": -1}), r"stages\[0\]\.train_overrides\.lr"),
    (lambda d: d["stages"][1]["train_overrides"].__setitem__("seed", 3), r"stages\[1\]\.train_overrides\.seed: set by"),
    (lambda d: d.__setitem__("task", {"name": "tooluse", "train": {"split": "eval_real"},
                                      "test": {"split": "paper68"}}), r"stages: .*not both"),
])
def test_bad_stages_fail_in_one_line_and_write_nothing(tmp_path, env, capsys, mutate, message):
    import re

    from harness.cli import cli_main

    suite = write_suite(tmp_path, mutate)
    rc = cli_main(["run", str(suite), "--model", env["model"], "--db", str(env["db"]),
                   "--reports", str(tmp_path / "reports")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and str(suite) in err
    assert re.search(message, err), err
    assert not env["db"].exists() and not (tmp_path / "reports").exists()
