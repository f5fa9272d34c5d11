"""Bad input on the command line: one clear line on stderr, exit code 2, nothing written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
    (["eval", "prior", "--backend", "vllm", "--model", "{tiny}", "--suite", "suites/prior-quick.yaml"],
     "vllm is not installed"),
    (["eval", "prior", "--backend", "tgi", "--model", "{tiny}", "--suite", "suites/prior-quick.yaml"],
     "unknown backend 'tgi'"),
    (["models", "pull", "gpt-5"], "unknown model alias 'gpt-5'"),
    (["train", "--method", "dpo", "-o", "{tmp}/o", "--model", "{tiny}"], "train.method: unknown method 'dpo'"),
    (["train", "--method", "sft", "--divergence", "tv", "-o", "{tmp}/o", "--model", "{tiny}"], "unknown divergence"),
    (["train", "--method", "sdft", "--rollout-backend", "sglang", "-o", "{tmp}/o", "--model", "{tiny}"],
     "train.rollout_backend: unknown backend 'sglang'"),
    (["train", "--method", "sft", "--rollout-backend", "vllm", "-o", "{tmp}/o", "--model", "{tiny}"],
     "train.rollout_backend: 'vllm' samples SDFT rollouts; method 'sft' has none"),
    (["train", "--method", "sdft", "--vllm-is-cap", "2", "-o", "{tmp}/o", "--model", "{tiny}"],
     "train.vllm_is_cap: corrects rollouts sampled by vLLM"),
    (["run", "suites/nope.yaml"], "suites/nope.yaml: file not found"),
    (["report", "no-such-run"], "not found"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, tiny_model_dir, data_dir, args, needle):
    args = [a.replace("{tiny}", str(tiny_model_dir)).replace("{tmp}", str(tmp_path)) for a in args]
    db = tmp_path / "h.db"
    r = harness(*args, env_extra={"HARNESS_DATA_DIR": str(data_dir), "HARNESS_DB": str(db)})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
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


def test_a_model_folder_that_cannot_load_fails_before_the_run_row(tmp_path, tiny_model_dir, data_dir):
    """A model folder whose tokenizer cannot load passes the cheap checks (config.json, weights hash)
    but is caught by the load check before the store is opened: one line, no store file."""
    import shutil

    broken = shutil.copytree(tiny_model_dir, tmp_path / "m")
    for f in broken.glob("tokenizer*"):
        f.unlink()
    db = tmp_path / "h.db"
    r = harness("eval", "tooluse", "--model", broken, "--limit", "2", "--arms", "base", "--max-new-tokens", "2",
                "--db", db, env_extra={"HARNESS_DATA_DIR": str(data_dir)})
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert r.stderr.startswith(f"error: {broken}: cannot load tokenizer"), r.stderr
    assert not db.exists()


def _cli(argv, capsys):
    from harness.cli import cli_main

    capsys.readouterr()
    rc = cli_main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err.splitlines()  # blank lines count too


def test_a_run_that_fails_midway_is_marked_failed(tmp_path, tiny_model_dir, data_dir, monkeypatch, capsys):
    """Past the checks, a failure while evaluating leaves the run row 'failed', never 'running'."""
    import harness.evaluate
    from harness.errors import ModelError
    from harness.store import Store

    def boom(*a, **k):
        raise ModelError("weights vanished mid-run")

    monkeypatch.setattr(harness.evaluate, "evaluate", boom)
    db = tmp_path / "h.db"
    rc, _, err = _cli(["eval", "tooluse", "--model", tiny_model_dir, "--limit", "1", "--arms", "base",
                       "--data-dir", data_dir, "--db", db], capsys)
    assert rc == 2 and err == ["error: weights vanished mid-run"]
    assert [run["status"] for run in Store(db).list_runs()] == ["failed"]


def test_ctrl_c_says_how_to_resume_and_exits_130(tmp_path, data_dir, monkeypatch, capsys):
    from harness.tasks.tooluse import data as tooluse

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tooluse, "load_tooluse", interrupted)
    rc, _, err = _cli(["data", "check", "paper68", "--data-dir", data_dir], capsys)
    assert rc == 130 and err == ["interrupted; re-run the same command to resume"]


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(data_dir, monkeypatch, capsys):
    from harness.tasks.tooluse import data as tooluse

    def bug(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(tooluse, "load_tooluse", bug)
    rc, _, err = _cli(["data", "check", "paper68", "--data-dir", data_dir], capsys)
    assert rc == 2 and len(err) == 1 and "internal error (RuntimeError: a bug)" in err[0] and "--debug" in err[0]
    from harness.cli import cli_main

    with pytest.raises(RuntimeError, match="a bug"):
        cli_main(["--debug", "data", "check", "paper68", "--data-dir", str(data_dir)])


def test_os_errors_are_one_line_naming_the_path(tmp_path, data_dir, monkeypatch, capsys):
    from harness.tasks.tooluse import data as tooluse

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.json"))

    monkeypatch.setattr(tooluse, "load_tooluse", denied)
    rc, _, err = _cli(["data", "check", "paper68", "--data-dir", data_dir], capsys)
    assert rc == 2 and err == [f"error: {tmp_path / 'x.json'}: Permission denied"]


def test_usage_errors_through_the_console_script(tmp_path):
    """The real entry point (not in-process): typer's vendored click errors become one line, exit 2."""
    r = harness("eval", "tooluse", "--limit", "abc")
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "error: harness eval tooluse: Invalid value for '--limit': Input should be a valid integer, unable to parse "
        "string as an integer (see harness eval tooluse --help)"], r.stderr
    r = harness()
    assert r.returncode == 2 and "Usage: harness" in r.stdout, r.stdout
    assert r.stderr.splitlines() == ["error: harness: missing command (listed above)"], r.stderr
    r = harness("-h")
    assert r.returncode == 0 and "Usage: harness" in r.stdout and not r.stderr


def test_dry_run_of_a_valid_suite_writes_nothing(tmp_path, tiny_model_dir, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "s.yaml"
    suite.write_text(Path(REPO / "suites/ci-tiny.yaml").read_text().replace(
        "suite: suites/prior-quick.yaml", f"suite: {REPO / 'suites/prior-quick.yaml'}"))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc, out, err = _cli(["run", "--dry-run", suite, "--model", tiny_model_dir, "--data-dir", data_dir,
                         "--db", tmp_path / "h.db"], capsys)
    assert rc == 0 and "steps will run" in out, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_dry_run_reads_an_existing_store_without_altering_it(tmp_path, tiny_model_dir, data_dir, capsys, monkeypatch):
    from harness.store import Store

    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "s.yaml"
    suite.write_text(Path(REPO / "suites/ci-tiny.yaml").read_text().replace(
        "suite: suites/prior-quick.yaml", f"suite: {REPO / 'suites/prior-quick.yaml'}"))
    Store(tmp_path / "h.db").close()
    before = (tmp_path / "h.db").read_bytes()
    rc, out, err = _cli(["run", "--dry-run", suite, "--model", tiny_model_dir, "--data-dir", data_dir,
                         "--db", tmp_path / "h.db"], capsys)
    assert rc == 0, err
    assert (tmp_path / "h.db").read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["h.db", "s.yaml"]


def test_results_export_leaves_no_temporary_file(tmp_path, capsys):
    from harness.store import Store

    s = Store(tmp_path / "h.db")
    rid = s.new_run("eval-tooluse")
    s.close()
    rc, _, err = _cli(["results", "export", rid, "-o", tmp_path / "run.json", "--db", tmp_path / "h.db"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.db", "run.json"]
    assert json.loads((tmp_path / "run.json").read_text())["run"]["run_id"] == rid


def test_train_checks_run_before_the_store_exists(tmp_path, tiny_model_dir, data_dir, capsys):
    """Prompt-length checks happen inside training setup, after the progress display has started;
    the store must not exist by then, and stderr holds the error line alone (no bar, no blank line)."""
    rc, _, err = _cli(["train", "--model", tiny_model_dir, "--method", "sft", "-o", tmp_path / "out",
                       "--split", "paper68", "--data-dir", data_dir, "--limit", "4", "--max-steps", "1",
                       "--max-prompt-tokens", "5", "--db", tmp_path / "h.db"], capsys)
    assert rc == 2 and len(err) == 1 and "max_prompt_tokens=5" in err[0], err
    assert not (tmp_path / "h.db").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("text,expected", [
    ("lr: 1e-4\n", 1e-4), ("lr: 2E-5\n", 2e-5), ("lr: 1.0e-4\n", 1e-4), ("lr: '1e-4'\n", "1e-4"), ("lr: 3\n", 3),
])
def test_config_files_read_exponents_as_numbers(tmp_path, text, expected):
    """YAML 1.1 reads `1e-4` (no dot) as a string; the config loader reads it as the float it means."""
    from harness.suite import read_mapping

    (tmp_path / "c.yaml").write_text(text)
    assert read_mapping(tmp_path / "c.yaml") == {"lr": expected}


def test_a_config_file_with_lr_1e_minus_4_trains_with_that_lr(tmp_path, monkeypatch):
    """`--config` with `lr: 1e-4` reaches TrainConfig as the float 0.0001 (it used to stay a string)."""
    from harness.suite import read_mapping
    from harness.train.config import TrainConfig

    (tmp_path / "c.yaml").write_text("lr: 1e-4\nmax_steps: 2\n")
    assert TrainConfig.from_dict(read_mapping(tmp_path / "c.yaml")).lr == pytest.approx(1e-4)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    from harness.errors import read_text

    (tmp_path / "d.json").write_bytes("\ufeff[1]".encode("utf-8"))
    assert read_text(tmp_path / "d.json") == "[1]"


def test_eval_prior_with_no_benchmark_in_the_average_succeeds(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """A complete evaluation of benchmarks outside the paper's average (ARC-Easy alone) is a success
    (exit 0, run 'complete'), not an error after the table."""
    import harness.prior.evaluate as pe
    from harness.store import Store

    monkeypatch.setattr(pe, "plan_keys", lambda *a, **k: {})
    monkeypatch.setattr(pe, "evaluate_prior", lambda *a, **k: {"arc_easy": {
        "metric": "acc_norm", "value": 0.5, "stderr": 0.1, "n": 2, "chance": 0.25, "wall_s": 0.1, "cached": False,
        "in_average": False}})
    rc, out, err = _cli(["eval", "prior", "--model", tiny_model_dir, "--db", tmp_path / "h.db"], capsys)
    assert rc == 0 and not err, err
    assert "none of these benchmarks counts toward the paper's average" in out
    assert [r["status"] for r in Store(tmp_path / "h.db").list_runs()] == ["complete"]


@pytest.fixture()
def nothing_fetched(tmp_path, monkeypatch):
    """An empty HARNESS_CACHE (its path, to be left absent), and every way of installing, converting or
    downloading a model made to fail: a plan must not call them. `dtype: auto`'s CPU probe caches its
    measurement in HARNESS_CACHE too, so HARNESS_DTYPE stands in for it."""
    import huggingface_hub

    import harness.model_aliases
    import harness.models

    def forbidden(*a, **k):
        raise AssertionError(f"a plan installed, converted or downloaded a model ({a})")

    def snapshot(repo_id, *a, local_files_only=False, **k):
        if not local_files_only:
            forbidden(repo_id)
        raise FileNotFoundError(f"{repo_id}: not in the local cache")  # what an empty hub cache says

    for name in ("materialise", "hub_snapshot"):
        monkeypatch.setattr(harness.models, name, forbidden)
    for name in ("materialise", "install_packages"):
        monkeypatch.setattr(harness.model_aliases, name, forbidden)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    monkeypatch.setenv("HARNESS_DTYPE", "float32")
    return cache


NOT_HERE = [
    ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct is not materialised on this machine: "
     "`harness models pull qwen2.5-coder-0.5b-instruct` installs it; keys are computed when the run starts"),
    ("example-org/not-cached", "example-org/not-cached is not in the local Hugging Face cache: "
     "`hf download example-org/not-cached` fetches it; keys are computed when the run starts"),
]


@pytest.mark.parametrize("suite_name", ["ci-tiny.yaml", "ci-tiny-sequential.yaml"])
@pytest.mark.parametrize("model,line", NOT_HERE, ids=["alias", "hub-id"])
def test_a_plan_for_a_model_not_on_this_machine_fetches_and_writes_nothing(
        tmp_path, data_dir, capsys, monkeypatch, nothing_fetched, suite_name, model, line):
    """`run --dry-run` (and `plan`, for a single-task suite) of a suite whose model would have to be
    pip-installed and converted, or downloaded: every step 'will run', one line says why, exit 0,
    and no model cache, fingerprint memo or store appears."""
    import re

    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "s.yaml"
    suite.write_text((REPO / "suites" / suite_name).read_text().replace(
        "suite: suites/prior-quick.yaml", f"suite: {REPO / 'suites/prior-quick.yaml'}"))
    db = tmp_path / "h.db"
    rc, out, err = _cli(["run", "--dry-run", suite, "--model", model, "--data-dir", data_dir, "--db", db], capsys)
    assert rc == 0, err
    assert line in out.splitlines(), out
    n = re.search(r"^(\d+) of (\d+) steps will run$", out, re.M)
    assert n and n.group(1) == n.group(2) and not re.search(r"│ cached\s*│", out), out
    if suite_name == "ci-tiny.yaml":
        rc, out, err = _cli(["plan", suite, "--model", model, "--data-dir", data_dir, "--db", db], capsys)
        assert rc == 0 and line in out.splitlines() and "planned comparisons" in out, err
    assert not nothing_fetched.exists() and not db.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_a_plan_for_a_local_model_computes_keys_and_writes_no_memo(tmp_path, tiny_model_dir, data_dir, capsys,
                                                                   monkeypatch, nothing_fetched):
    """A model folder on this machine is hashed as a run hashes it (the keys, hence what is cached,
    are those of a run) without writing the fingerprint memo, and no 'not on this machine' line.
    (The prior suite's prepared data and task files, content-addressed, may appear in the cache.)"""
    from harness.pipeline import SuiteRunner

    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "s.yaml"
    suite.write_text((REPO / "suites/ci-tiny.yaml").read_text().replace(
        "suite: suites/prior-quick.yaml", f"suite: {REPO / 'suites/prior-quick.yaml'}"))
    rc, out, err = _cli(["run", "--dry-run", suite, "--model", tiny_model_dir, "--data-dir", data_dir,
                         "--db", tmp_path / "h.db"], capsys)
    assert rc == 0 and "steps will run" in out and "keys are computed when the run starts" not in out, err
    planned = SuiteRunner(suite, tmp_path / "h.db", data_dir, overrides={"model": str(tiny_model_dir)},
                          plan_only=True)
    assert not (nothing_fetched / "fingerprints.json").exists() and not (nothing_fetched / "models").exists()
    ran = SuiteRunner(suite, tmp_path / "h.db", data_dir, overrides={"model": str(tiny_model_dir)})
    assert planned.model_note is None and planned.model_hash == ran.model_hash
    assert [p.train_key for p in planned.points] == [p.train_key for p in ran.points]
    assert sum(p.train_key is not None for p in ran.points) == 3


def test_a_plan_only_runner_keys_its_points_when_asked_to_run(tmp_path, tiny_model_dir, data_dir, monkeypatch):
    """Keys left unknown by a plan (the model was not on this machine) are computed before a run,
    and are exactly those of a runner built to run, for single-task and sequential suites alike."""
    import harness.pipeline
    import harness.sequential
    from harness.pipeline import SuiteRunner
    from harness.sequential import SequentialRunner

    monkeypatch.chdir(tmp_path)
    single = tmp_path / "s.yaml"
    single.write_text((REPO / "suites/ci-tiny.yaml").read_text().replace(
        "suite: suites/prior-quick.yaml", f"suite: {REPO / 'suites/prior-quick.yaml'}"))
    seq = REPO / "suites/ci-tiny-sequential.yaml"
    kw = {"data_dir": data_dir, "overrides": {"model": str(tiny_model_dir)}, "log": lambda m: None}
    for mod in (harness.pipeline, harness.sequential):
        monkeypatch.setattr(mod, "local_fingerprint", lambda spec: None)  # as if the model were not here
    for cls, path in ((SuiteRunner, single), (SequentialRunner, seq)):
        planned = cls(path, tmp_path / "h.db", plan_only=True, **kw)
        keys = [getattr(p, "train_key", getattr(p, "key", None)) for p in planned.points]
        assert planned.model_note and all(k is None for k in keys) and planned.plan()
        assert all(not r["cached"] for r in planned.plan())
        planned.ensure_keys()
        ran = cls(path, tmp_path / "h.db", **kw)
        assert planned.model_note is None and planned.points == ran.points
    assert not (tmp_path / "h.db").exists()


def test_plan_of_a_sequential_suite_says_what_to_use_instead(tmp_path, tiny_model_dir, capsys):
    suite = REPO / "suites/ci-tiny-sequential.yaml"
    rc, _, err = _cli(["plan", suite, "--model", tiny_model_dir, "--db", tmp_path / "h.db"], capsys)
    assert rc == 2 and err == [f"error: {suite}: stages: `harness plan` sizes the comparisons of a single-task "
                               f"suite; `harness run {suite} --dry-run` shows a sequential suite's plan"]
    assert not (tmp_path / "h.db").exists()
