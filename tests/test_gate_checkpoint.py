"""The gate on real (tiny) checkpoints: a stored baseline run vs a checkpoint the gate evaluates
itself with the baseline's settings, on exactly the baseline's items, through the cache."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app

GATE = """format: harness-gate/1
name: tiny
defaults: {confidence: 0.95, power: 0.8, inconclusive: pass}
metrics:
  tooluse: {max_drop: 0.05}
  prior/winogrande: {max_drop: 0.05}
"""


@pytest.fixture()
def baseline_run(tmp_path, tiny_model_dir, data_dir, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    db = tmp_path / "h.db"
    runner = CliRunner()
    r = runner.invoke(app, ["eval", "tooluse", "--model", str(tiny_model_dir), "--arms", "base", "--limit", "4",
                            "--max-new-tokens", "4", "--dtype", "float32", "--db", str(db)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r2 = runner.invoke(app, ["eval", "prior", "--model", str(tiny_model_dir), "--suite", "suites/prior-quick.yaml",
                             "--benchmarks", "winogrande", "--limit", "4", "--dtype", "float32", "--db", str(db)],
                       catch_exceptions=False)
    assert r2.exit_code == 0, r2.output
    from harness.store import Store

    runs = Store(db).list_runs()
    gate = tmp_path / "gate.yaml"
    gate.write_text(GATE)
    return db, runs, gate


def test_gate_evaluates_a_checkpoint_candidate(baseline_run, tiny_model_dir, tiny_model_dir_b, tmp_path):
    from harness.gate import save_baseline, load_baseline
    from harness.store import Store

    db, runs, gate = baseline_run
    store = Store(db)
    # a committed-style baseline file combining both runs' outcomes
    tool = load_baseline(runs[0]["run_id"], store).metrics
    prior = load_baseline(runs[1]["run_id"], store).metrics
    path = save_baseline({"metrics": tool | prior}, tmp_path / "baseline.json")
    runner = CliRunner()
    r = runner.invoke(app, ["results", "baseline", runs[0]["run_id"], "-o", str(tmp_path / "tool.json"), "--db", str(db)])
    assert r.exit_code == 0 and load_baseline(str(tmp_path / "tool.json")).metrics["tooluse"]["items"] == tool["tooluse"]["items"]
    n_before = len(store.find_evals())
    # the baseline model itself as a checkpoint: every evaluation is a cache hit; 4 items cannot
    # show a drop within 5 points, so the gate cannot decide (exit 3) even with `inconclusive: pass`
    r = runner.invoke(app, ["gate", "--baseline", str(path), "--candidate", str(tiny_model_dir), "--suite", str(gate),
                            "--db", str(db), "--markdown", str(tmp_path / "g.md"), "--junit", str(tmp_path / "g.xml")])
    assert r.exit_code == 3 and "gate cannot decide" in r.output, r.output
    assert len(store.find_evals()) == n_before
    assert "tooluse" in (tmp_path / "g.md").read_text() and "<testcase" in (tmp_path / "g.xml").read_text()
    # a different checkpoint is evaluated on exactly the baseline's items
    r = runner.invoke(app, ["gate", "--baseline", str(path), "--candidate", str(tiny_model_dir_b), "--suite", str(gate),
                            "--db", str(db)])
    # 4 items can never show a drop within the allowance: regression or cannot decide, never a pass
    assert r.exit_code in (1, 3) and "tooluse" in r.output, r.output
    new = [e for e in store.find_evals() if e["model"] == str(tiny_model_dir_b)]
    assert {e["task"] for e in new} == {"tooluse", "prior/winogrande"}
    assert all(len(store.examples(e["eval_key"])) == 4 for e in new)


def test_gate_exit_codes_reach_the_shell(baseline_run, tiny_model_dir, tmp_path):
    """The console script must exit with the gate's code (0 pass, 2 bad input, 3 cannot decide;
    1 = regression is checked on outcome files in test_gate.py)."""
    import subprocess
    import sys

    db, runs, gate = baseline_run
    base = f"{runs[0]['run_id']}#base"
    cmd = [sys.executable, "-m", "harness.cli", "gate", "--baseline", base, "--candidate", base, "--db", str(db)]
    only_tool = GATE.replace("  prior/winogrande: {max_drop: 0.05}\n", "")
    lenient = tmp_path / "lenient.yaml"  # 4 unchanged items do show a drop within 100 points
    lenient.write_text(only_tool.replace("max_drop: 0.05", "max_drop: 1.0"))
    r = subprocess.run(cmd + ["--suite", str(lenient)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-500:]
    undecided = tmp_path / "undecided.yaml"  # ... but not within 5 points: n < needed n
    undecided.write_text(only_tool)
    r = subprocess.run(cmd + ["--suite", str(undecided)], capture_output=True, text=True)
    assert r.returncode == 3, r.stdout[-500:]
    r = subprocess.run(cmd + ["--suite", str(tmp_path / "absent.yaml")], capture_output=True, text=True)
    assert r.returncode == 2 and "gate file not found" in r.stderr, r.stderr[-500:]


def test_gate_refuses_a_baseline_generated_by_another_backend(baseline_run, tiny_model_dir_b, tmp_path):
    """The gate generates with transformers; a vLLM-made baseline would compare two decoders."""
    import json

    from harness.gate import load_baseline, save_baseline
    from harness.store import Store

    db, runs, gate = baseline_run
    store = Store(db)
    path = save_baseline({"metrics": load_baseline(runs[0]["run_id"], store).metrics}, tmp_path / "b.json")
    (ref,) = store.find_evals(task="tooluse")
    settings = ref["settings"] | {"decoder": "vllm.greedy/2"}
    with store.transaction() as c:
        c.execute("UPDATE evaluations SET settings=? WHERE eval_key=?", (json.dumps(settings), ref["eval_key"]))
    only_tool = tmp_path / "tool.yaml"
    only_tool.write_text(GATE.replace("  prior/winogrande: {max_drop: 0.05}\n", ""))
    r = CliRunner().invoke(app, ["gate", "--baseline", str(path), "--candidate", str(tiny_model_dir_b),
                                 "--suite", str(only_tool), "--db", str(db)])
    from harness.errors import ConfigError

    assert isinstance(r.exception, ConfigError) and "generated with vllm.greedy/2" in str(r.exception), r.output


def test_candidate_is_measured_with_the_baselines_own_settings(tiny_model_dir, tiny_model_dir_b, data_dir,
                                                              tmp_path, monkeypatch):
    """Defect 5: the candidate got the newest stored evaluation's settings (here a later tool-use
    evaluation of the same items with another token budget) and prior benchmarks ran in float32
    whatever the baseline used. Now both come from the baseline: its own evaluation (eval_key)
    and its dtype (bfloat16 here, recovered from the prior evaluation's model hash)."""
    import json

    from harness.gate import load_baseline, save_baseline
    from harness.hashing import hash_obj
    from harness.models import fingerprint
    from harness.store import Store

    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    db = tmp_path / "h.db"
    runner = CliRunner()

    def ok(args):
        r = runner.invoke(app, args + ["--db", str(db)], catch_exceptions=False)
        assert r.exit_code == 0, r.output

    tool = ["eval", "tooluse", "--model", str(tiny_model_dir), "--arms", "base", "--limit", "4", "--dtype", "float32"]
    ok(tool + ["--max-new-tokens", "4"])
    ok(["eval", "prior", "--model", str(tiny_model_dir), "--suite", "suites/prior-quick.yaml", "--benchmarks",
        "winogrande", "--limit", "4", "--dtype", "bfloat16"])
    store = Store(db)
    metrics = {}
    for run in store.list_runs():
        metrics |= load_baseline(run["run_id"], store).metrics
    path = save_baseline({"metrics": metrics}, tmp_path / "baseline.json")
    doc = json.loads(path.read_text())["metrics"]
    assert doc["tooluse"]["dtype"] == "float32" and doc["tooluse"]["settings"]["generation"]
    ok(tool + ["--max-new-tokens", "2"])  # newer, same items, another budget: must not be copied
    gate = tmp_path / "gate.yaml"
    gate.write_text(GATE)
    r = runner.invoke(app, ["gate", "--baseline", str(path), "--candidate", str(tiny_model_dir_b), "--suite",
                            str(gate), "--db", str(db)])
    assert r.exit_code in (1, 3), r.output  # 4 items: never a pass
    new = {e["task"]: e for e in store.find_evals() if e["model"] == str(tiny_model_dir_b)}
    assert set(new) == {"tooluse", "prior/winogrande"}
    assert new["tooluse"]["settings"]["generation"] == doc["tooluse"]["settings"]["generation"]
    newest = [e for e in store.find_evals(task="tooluse") if e["model"] == str(tiny_model_dir)][-1]
    assert newest["settings"]["generation"] != doc["tooluse"]["settings"]["generation"]
    assert new["prior/winogrande"]["model_hash"] == hash_obj([fingerprint(str(tiny_model_dir_b)), "bfloat16",
                                                              "merged-adapter"])


def test_candidate_settings_come_from_the_baseline_or_refuse(tmp_path):
    """Without its own evaluation in the store, a baseline's carried settings and dtype are used;
    with neither, the gate refuses (one line naming the file and metric) instead of borrowing
    another stored evaluation's settings."""
    from harness.errors import ConfigError
    from harness.gate.candidate import _baseline_dtype, _baseline_measurement, evaluate_candidate
    from harness.gate import OutcomeSet
    from harness.store import Store

    store = Store(tmp_path / "h.db")
    carried = {"task": "prior/winogrande", "metric": "acc", "items": {"a": 1.0}, "eval_key": "not-stored",
               "arm": "base", "settings": {"suite": "suites/prior-quick.yaml", "limit": 4}, "dtype": "bfloat16"}
    base = OutcomeSet({"prior/winogrande": carried}, source="base.json")
    assert _baseline_measurement("prior/winogrande", base, store) == (carried["settings"], "base")
    assert _baseline_dtype("prior/winogrande", base, store) == "bfloat16"
    bare = OutcomeSet({"prior/winogrande": {"task": "prior/winogrande", "metric": "acc", "items": {"a": 1.0}}},
                      source="hand.json")
    with pytest.raises(ConfigError, match=r"hand.json: metrics.prior/winogrande: no eval_key .* `harness results "
                                          r"baseline"):
        evaluate_candidate("some-model", {"prior/winogrande": ["a"]}, store, bare)
    with pytest.raises(ConfigError, match=r"hand.json: metrics.prior/winogrande: cannot tell which dtype"):
        _baseline_dtype("prior/winogrande", bare, store)
