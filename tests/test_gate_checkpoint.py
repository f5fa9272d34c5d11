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
    # the baseline model itself as a checkpoint: every evaluation is a cache hit, and it passes
    r = runner.invoke(app, ["gate", "--baseline", str(path), "--candidate", str(tiny_model_dir), "--suite", str(gate),
                            "--db", str(db), "--markdown", str(tmp_path / "g.md"), "--junit", str(tmp_path / "g.xml")])
    assert r.exit_code == 0, r.output
    assert len(store.find_evals()) == n_before
    assert "tooluse" in (tmp_path / "g.md").read_text() and "<testcase" in (tmp_path / "g.xml").read_text()
    # a different checkpoint is evaluated on exactly the baseline's items
    r = runner.invoke(app, ["gate", "--baseline", str(path), "--candidate", str(tiny_model_dir_b), "--suite", str(gate),
                            "--db", str(db)])
    assert r.exit_code in (0, 1, 2) and "tooluse" in r.output
    new = [e for e in store.find_evals() if e["model"] == str(tiny_model_dir_b)]
    assert {e["task"] for e in new} == {"tooluse", "prior/winogrande"}
    assert all(len(store.examples(e["eval_key"])) == 4 for e in new)


def test_gate_exit_codes_reach_the_shell(baseline_run, tiny_model_dir, tmp_path):
    """The console script must exit with the gate's code (0 pass, 1 regression, 2 undecidable)."""
    import subprocess
    import sys

    db, runs, gate = baseline_run
    strict = tmp_path / "strict.yaml"
    strict.write_text(GATE.replace("inconclusive: pass", "inconclusive: fail"))
    base = f"{runs[0]['run_id']}#base"
    cmd = [sys.executable, "-m", "harness.cli", "gate", "--baseline", base, "--candidate", base, "--db", str(db)]
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text(GATE.replace("  prior/winogrande: {max_drop: 0.05}\n", ""))
    assert subprocess.run(cmd + ["--suite", str(lenient)], capture_output=True).returncode == 0
    strict.write_text(lenient.read_text().replace("inconclusive: pass", "inconclusive: fail"))
    r = subprocess.run(cmd + ["--suite", str(strict)], capture_output=True, text=True)
    assert r.returncode == 2, r.stdout[-500:]


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
