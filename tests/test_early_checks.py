"""Checks that run before any model loads: a model's module names from its config alone (LoRA
targets), and the metrics each prior benchmark's lm-eval task declares. The CLI-level cases (one
line, exit 2, nothing written) are in test_bad_input_corpus.py."""

from __future__ import annotations

import pytest

from harness.model_config import (config_folder, lora_target_problem, module_names, module_names_from_config)
from harness.prior.evaluate import lm_metric_key
from harness.prior.tasks import BENCHMARKS, declared_metrics


def test_module_names_from_the_config_match_the_loaded_model(tiny_model_dir, tiny_model):
    from_config = module_names_from_config(str(tiny_model_dir))
    loaded = module_names(tiny_model[0])
    assert from_config == loaded
    assert from_config.adaptable == ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj")


def test_lora_targets_follow_peft_name_matching(tiny_model_dir):
    mods = module_names_from_config(str(tiny_model_dir))
    assert lora_target_problem(("q_proj", "self_attn.v_proj"), mods) is None  # a dotted suffix is a match
    assert lora_target_problem(("roj",), mods).startswith("module 'roj' not in the model (has: down_proj")
    assert "not supported" in lora_target_problem(("q_proj", "lm_head"), mods)


def test_a_config_not_on_this_machine_defers_the_check_and_fetches_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    assert module_names_from_config("smollm2-135m-instruct") is None  # alias not materialised here
    assert module_names_from_config("harness-test-org/never-downloaded") is None  # hub id, no cached config
    assert not (tmp_path / "cache").exists()  # nothing materialised, installed or downloaded


def test_an_adapter_folder_reads_its_base_models_config(tmp_path, tiny_model_dir):
    (tmp_path / "adapter_config.json").write_text('{"base_model_name_or_path": "%s"}' % tiny_model_dir)
    assert config_folder(str(tmp_path)) == tiny_model_dir


def test_a_suite_run_notes_a_deferred_check(tmp_path, tiny_model_dir, data_dir, monkeypatch):
    import harness.model_config as mc
    from harness.pipeline import SuiteRunner

    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    monkeypatch.setattr(mc, "config_folder", lambda spec: None)
    suite = tmp_path / "s.yaml"
    suite.write_text("name: t\nmodel: m\ndtype: float32\ntask: {train: {split: eval_real, skip_invalid: true, limit: 4}, "
                     "test: {split: paper68, limit: 2}}\narms: {sft: {}}\n"
                     "train: {batch_size: 4, micro_batch_size: 2, bf16: false, lora_targets: [nope]}\n")
    runner = SuiteRunner(suite, tmp_path / "h.db", overrides={"model": str(tiny_model_dir)})
    assert runner.lora_check.startswith("LoRA targets: check deferred to training")
    assert not (tmp_path / "h.db").exists()


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_benchmarks_headline_metric_is_declared_by_its_task(name):
    spec = BENCHMARKS[name]
    assert lm_metric_key(name, spec.metric) in declared_metrics(spec)


def test_declared_metrics_read_includes_and_filters():
    assert declared_metrics(BENCHMARKS["hellaswag"]) == ["acc,none", "acc_norm,none"]
    assert declared_metrics(BENCHMARKS["arc_challenge"]) == ["acc,none", "acc_norm,none"]  # via include
    assert declared_metrics(BENCHMARKS["gsm8k"]) == ["exact_match,strict-match", "exact_match,flexible-extract"]
    assert declared_metrics(BENCHMARKS["mmlu"]) == ["acc,none"]  # the group's aggregate
