"""Bad input on the command line: one clear line on stderr, exit code 2, nothing written."""

import json
import subprocess
import sys

import pytest


def harness(*args, env_extra=None, cwd=None):
    import os

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd)


@pytest.mark.parametrize("args,needle", [
    (["eval", "tooluse", "--model", "no-such-alias"], "unknown model 'no-such-alias'"),
    (["eval", "tooluse", "--arms", "base,oracle", "--model", "{tiny}"], "unknown arm 'oracle'"),
    (["eval", "tooluse", "--limit", "0", "--model", "{tiny}"], "--limit must be positive"),
    (["eval", "tooluse", "--split", "nope.json", "--model", "{tiny}"], "nope.json: tool-use data file not found"),
    (["eval", "tooluse", "--split", "eval_real", "--model", "{tiny}"], "Action_Input is not JSON"),
    (["eval", "tooluse", "--data-dir", "/nonexistent", "--model", "{tiny}"], "/nonexistent: data directory not found"),
    (["eval", "tooluse", "--batch-size", "0", "--model", "{tiny}"], "--batch-size must be positive"),
    (["eval", "tooluse", "--teacher-template", "{{prompt}} only", "--model", "{tiny}"],
     "teacher template must contain {prompt} and {demonstration}"),
    (["eval", "tooluse", "--backend", "tgi", "--model", "{tiny}"], "unknown backend 'tgi'"),
    (["eval", "tooluse", "--backend", "vllm", "--model", "{tiny}"], "vllm is not installed"),
    (["eval", "tooluse", "--model", "{tmp}"], "folder has no config.json"),
    (["eval", "tooluse", "--device", "gpu0", "--model", "{tiny}"], "device 'gpu0': not a torch device"),
    (["eval", "prior", "--benchmarks", "hellaswag,mmlu_typo", "--model", "{tiny}", "--suite", "suites/prior-quick.yaml"],
     "mmlu_typo"),
    (["eval", "prior", "--suite", "suites/nope.yaml", "--model", "{tiny}"], "suites/nope.yaml"),
    (["eval", "prior", "--device", "gpu0", "--model", "{tiny}"], "device 'gpu0': not a torch device"),
    (["models", "pull", "gpt-5"], "unknown model alias 'gpt-5'"),
    (["train", "--method", "dpo", "-o", "{tmp}/o", "--model", "{tiny}"], "train.method: unknown method 'dpo'"),
    (["train", "--method", "sft", "--divergence", "tv", "-o", "{tmp}/o", "--model", "{tiny}"], "unknown divergence"),
    (["run", "suites/nope.yaml"], "suites/nope.yaml: file not found"),
    (["report", "no-such-run"], "not found"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, tiny_model_dir, data_dir, args, needle):
    args = [a.replace("{tiny}", str(tiny_model_dir)).replace("{tmp}", str(tmp_path)) for a in args]
    db = tmp_path / "h.db"
    r = harness(*args, env_extra={"HARNESS_DATA_DIR": str(data_dir), "HARNESS_DB": str(db)})
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not db.exists() and not (tmp_path / "o").exists()


def test_skip_invalid_lists_skipped_records_in_run_metadata(tmp_path, tiny_model_dir, data_dir):
    db = tmp_path / "h.db"
    r = harness("eval", "tooluse", "--model", tiny_model_dir, "--split", "eval_real", "--skip-invalid", "--limit", "1",
                "--arms", "base", "--max-new-tokens", "2", "--db", db, env_extra={"HARNESS_DATA_DIR": str(data_dir)})
    assert r.returncode == 0, r.stderr
    assert "base: 1/1" in r.stderr.splitlines()  # stderr is a pipe here: progress comes as log lines
    from harness.store import Store

    run = Store(db).list_runs()[0]
    assert len(run["meta"]["skipped"]) == 4 and all("not JSON" in s["problem"] for s in run["meta"]["skipped"])
    out = tmp_path / "run.json"
    r = harness("results", "export", run["run_id"], "-o", out, "--db", db)
    assert r.returncode == 0 and json.loads(out.read_text())["evaluations"][0]["examples"][0]["item_id"]
    from harness.results import examples_frame

    df = examples_frame(run["run_id"], db)
    assert list(df["label"]) == ["base"] and list(df["arm"]) == ["base"] and df["tokens"][0] > 0
    assert {"score", "output", "diag.format_valid", "diag.gen_s"} <= set(df.columns)


def test_a_run_that_fails_midway_is_marked_failed(tmp_path, tiny_model_dir, data_dir):
    """A model folder whose tokenizer cannot load passes the cheap checks (config.json, weights hash)
    and fails when generation starts: one line, and the run row says 'failed', not 'running'."""
    import shutil

    broken = shutil.copytree(tiny_model_dir, tmp_path / "m")
    for f in broken.glob("tokenizer*"):
        f.unlink()
    db = tmp_path / "h.db"
    r = harness("eval", "tooluse", "--model", broken, "--limit", "2", "--arms", "base", "--max-new-tokens", "2",
                "--db", db, env_extra={"HARNESS_DATA_DIR": str(data_dir)})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {broken}: cannot load tokenizer"), r.stderr
    from harness.store import Store

    store = Store(db)
    assert [run["status"] for run in store.list_runs()] == ["failed"]
    assert not store.find_evals(status="complete")
