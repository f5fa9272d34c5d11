"""The suite file, generated task configs and the prior average."""

from __future__ import annotations

import pytest
import yaml

from harness.errors import ConfigError
from harness.prior import BENCHMARKS, PAPER_SIX, load_suite, prior_average
from harness.prior.data import prepare
from harness.prior.tasks import build


def test_default_suite_is_valid_and_runs_the_paper_six():
    suite = load_suite()
    assert suite.default_benchmarks == list(PAPER_SIX)
    assert set(suite.benchmarks) == set(BENCHMARKS)
    for name in PAPER_SIX:
        s = suite.settings(name)
        assert s["n_shot"] == 0 and s["chat_template"] is False and s["in_average"] is True
    assert suite.settings("hellaswag")["metric"] == "acc"
    assert suite.settings("truthfulqa_mc1")["metric"] == "mc1"
    assert suite.settings("ifeval")["metric"] == "inst_level_loose_acc"
    assert suite.settings("humaneval")["metric"] == "pass@1"
    assert suite.settings("arc_easy")["in_average"] is False


@pytest.mark.parametrize("body, message", [
    ({"benchmarks": {"hellaswg": {}}}, "benchmarks.hellaswg: unknown benchmark"),
    ({"benchmarks": {"hellaswag": {"nshot": 1}}}, "benchmarks.hellaswag.nshot: unknown setting (allowed: "
                                                  "chat_template, default, "),
    ({"benchmarks": {"hellaswg": {"nshot": 1}}}, "benchmarks.hellaswg: unknown benchmark"),  # the name first
    ({"benchmarks": {"hellaswag": [1]}}, "benchmarks.hellaswag: expected a mapping of settings"),
    ({"benchmarks": {"hellaswag": {"n_shot": 5}}}, "benchmarks.hellaswag.n_shot: the local data has no few-shot"),
    ({"benchmarks": {"mmlu": {"n_shot": "five"}}}, "benchmarks.mmlu.n_shot: expected an integer or null, got 'five'"),
    ({"benchmarks": {"mmlu": {"chat_template": 1}}}, "benchmarks.mmlu.chat_template: expected true, false or null, got 1"),
    ({"benchmark": {}}, "benchmark: unknown key (allowed: batch_size, benchmarks, description, limit, seed)"),
    ({"seed": 1}, ": benchmarks: must map benchmark names to settings"),
    ({"seed": "1", "benchmarks": {"mmlu": {}}}, ": seed: expected an integer or null, got '1'"),
])
def test_bad_suite_names_file_and_key(tmp_path, body, message):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError) as e:
        load_suite(path)
    assert str(path) in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_suite_file(tmp_path):
    with pytest.raises(ConfigError, match="suite file not found"):
        load_suite(tmp_path / "nope.yaml")


def test_unknown_benchmark_requested_at_run_time():
    with pytest.raises(ConfigError, match="unknown benchmark 'hellaswagg'"):
        load_suite().settings("hellaswagg")


def test_generated_group_overrides_builtin_with_absolute_paths(data_dir, tmp_path):
    prepared = prepare("arc_easy", data_dir, 5, seed=1, root=tmp_path / "data")
    bundle = build(BENCHMARKS["arc_easy"], prepared, {"n_shot": 0}, root=tmp_path / "tasks")
    cfg = yaml.safe_load((bundle.folder / "harness_arc_easy.yaml").read_text())
    entry = cfg["task"][0]
    assert cfg["group"] == "harness_arc_easy" and entry["task"] == "arc_easy"
    assert entry["dataset_path"] == "json" and entry["dataset_name"] is None
    path = entry["dataset_kwargs"]["data_files"]["test"]
    assert path.startswith("/") and path.endswith(".jsonl")
    # the config hash does not depend on where the cache lives
    other = build(BENCHMARKS["arc_easy"], prepare("arc_easy", data_dir, 5, seed=1, root=tmp_path / "d2"),
                  {"n_shot": 0}, root=tmp_path / "t2")
    assert other.config_hash == bundle.config_hash
    changed = build(BENCHMARKS["arc_easy"], prepared, {"n_shot": 0, "chat_template": True}, root=tmp_path / "tasks")
    assert changed.config_hash != bundle.config_hash


def test_humaneval_task_uses_the_sandbox_shim(data_dir, tmp_path):
    prepared = prepare("humaneval", data_dir, 3, seed=1, root=tmp_path / "data")
    bundle = build(BENCHMARKS["humaneval"], prepared, {"max_gen_toks": 16, "timeout_s": 3}, root=tmp_path / "t")
    text = (bundle.folder / "harness_humaneval.yaml").read_text()
    assert "!function harness_humaneval_utils.process_results" in text
    assert "max_gen_toks: 16" in text
    assert '"timeout_s": 3.0' in (bundle.folder / "harness_humaneval_utils.py").read_text()


def test_prior_average_uses_in_average_benchmarks_only():
    res = {"hellaswag": {"value": 0.4, "in_average": True}, "mmlu": {"value": 0.2, "in_average": True},
           "arc_easy": {"value": 0.9, "in_average": False}}
    assert prior_average(res) == pytest.approx(0.3)
    with pytest.raises(ConfigError):
        prior_average({"arc_easy": {"value": 0.9, "in_average": False}})
