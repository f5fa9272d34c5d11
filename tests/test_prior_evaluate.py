"""evaluate_prior end to end on tiny random models: records, store rows, content-keyed caching."""

from __future__ import annotations

import pytest
import torch
import yaml

from harness.errors import ConfigError, DataError
from harness.prior import evaluate as ev
from harness.prior import evaluate_prior, prior_average
from harness.store import Store

torch.set_num_threads(1)

LL = ["hellaswag", "truthfulqa_mc1", "mmlu", "winogrande"]
GEN = ["ifeval", "humaneval"]


@pytest.fixture(scope="module")
def prior_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("prior-cache")


@pytest.fixture(autouse=True)
def _cache(prior_cache, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(prior_cache))


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory):
    """Tiny generation budgets: a random model never emits a stop sequence."""
    path = tmp_path_factory.mktemp("suite") / "prior-test.yaml"
    body = {"seed": 99, "benchmarks": {
        "hellaswag": {}, "truthfulqa_mc1": {}, "mmlu": {}, "winogrande": {},
        "ifeval": {"max_gen_toks": 4}, "humaneval": {"max_gen_toks": 4, "timeout_s": 5},
        "arc_easy": {"default": False, "chat_template": True}}}
    path.write_text(yaml.safe_dump(body))
    return path


class Counter:
    """Wraps the lm-eval call to count (or interrupt) computations."""

    def __init__(self, monkeypatch, fail_on: int | None = None):
        self.calls: list[str] = []
        self.fail_on = fail_on
        real = ev._run_lm_eval

        def wrapped(lm, bundle, settings):
            self.calls.append(bundle.benchmark)
            if self.fail_on is not None and len(self.calls) == self.fail_on:
                raise KeyboardInterrupt("simulated interruption")
            return real(lm, bundle, settings)

        monkeypatch.setattr(ev, "_run_lm_eval", wrapped)


def test_evaluate_records_everything_and_reruns_from_cache(tiny_model, suite_file, data_dir, tmp_path, monkeypatch):
    model, tok = tiny_model
    store = Store(tmp_path / "s.db")
    counter = Counter(monkeypatch)
    res = evaluate_prior(model, tok, model_label="base", store=store, suite_path=suite_file,
                         benchmarks=LL + GEN, limit=3, data_dir=data_dir, batch_size=4)
    assert counter.calls == LL + GEN
    assert list(res) == LL + GEN
    for name, r in res.items():
        assert {"metric", "value", "stderr", "n", "eval_key", "wall_s", "cached", "chance"} <= set(r)
        assert r["n"] == 3 and r["cached"] is False and 0.0 <= r["value"] <= 1.0
        assert r["stderr"] is not None, name
        row = store.get_eval(r["eval_key"])
        assert row["task"] == f"prior/{name}" and row["arm"] == "base"
        s = row["settings"]
        for key in ("task_config_hash", "n_shot", "chat_template", "metric", "lm_eval_version",
                    "limit", "item_ids", "lm_eval_metric"):
            assert key in s, key
        assert s["n_shot"] == 0 and s["chat_template"] is False and s["limit"] == 3
        assert row["summary"]["task_version"], name
        examples = store.examples(r["eval_key"])
        assert [e["item_id"] for e in examples] == s["item_ids"]
        assert sum(e["score"] for e in examples) / 3 == pytest.approx(r["value"]) or name == "ifeval"
    assert res["hellaswag"]["chance"] == 0.25 and res["winogrande"]["chance"] == 0.5
    assert 0.0 < res["truthfulqa_mc1"]["chance"] < 0.5 and res["humaneval"]["chance"] == 0.0
    assert res["mmlu"]["metric"] == "acc" and res["truthfulqa_mc1"]["metric"] == "mc1"
    assert all("/" in e["item_id"] for e in store.examples(res["mmlu"]["eval_key"]))
    ex = store.examples(res["hellaswag"]["eval_key"])[0]
    assert len(ex["diagnostics"]["loglikelihoods"]) == 4 and "acc_norm" in ex["diagnostics"]
    assert "inst_level_loose_acc" in store.examples(res["ifeval"]["eval_key"])[0]["diagnostics"]
    # IFEval's headline is micro: sum followed / sum instructions, recoverable from the stored counts
    diags = [e["diagnostics"] for e in store.examples(res["ifeval"]["eval_key"])]
    assert sum(d["n_followed"] for d in diags) / sum(d["n_instructions"] for d in diags) == \
        pytest.approx(res["ifeval"]["value"])
    assert isinstance(prior_average(res), float)

    # same model, same suite: nothing recomputed, identical numbers
    again = evaluate_prior(model, tok, model_label="base", store=store, suite_path=suite_file,
                           benchmarks=LL + GEN, limit=3, data_dir=data_dir)
    assert counter.calls == LL + GEN
    assert all(r["cached"] for r in again.values())
    assert {k: v["value"] for k, v in again.items()} == {k: v["value"] for k, v in res.items()}

    # a spec string loading the same weights is the same model: still a cache hit
    from_spec = evaluate_prior(model.config._name_or_path, None, model_label="base", store=store,
                               suite_path=suite_file, benchmarks=["hellaswag"], limit=3, data_dir=data_dir)
    assert from_spec["hellaswag"]["cached"] and counter.calls == LL + GEN

    # a different subset size or chat template is a different evaluation
    other = evaluate_prior(model, tok, model_label="base", store=store, suite_path=suite_file,
                           benchmarks=["hellaswag", "arc_easy"], limit=2, data_dir=data_dir)
    assert not other["hellaswag"]["cached"] and other["hellaswag"]["eval_key"] != res["hellaswag"]["eval_key"]
    assert store.get_eval(other["arc_easy"]["eval_key"])["settings"]["chat_template"] is True


def test_different_model_never_reuses_answers(tiny_model, tiny_model_dir_b, suite_file, data_dir, tmp_path, monkeypatch):
    from harness.models import load_model

    model_a, tok_a = tiny_model
    model_b, tok_b = load_model(str(tiny_model_dir_b))
    store = Store(tmp_path / "s.db")
    counter = Counter(monkeypatch)
    kw = dict(store=store, suite_path=suite_file, benchmarks=["hellaswag", "winogrande"], limit=3, data_dir=data_dir)
    ra = evaluate_prior(model_a, tok_a, model_label="a", **kw)
    rb = evaluate_prior(model_b, tok_b, model_label="b", **kw)
    assert counter.calls == ["hellaswag", "winogrande"] * 2
    for name in ra:
        assert ra[name]["eval_key"] != rb[name]["eval_key"] and not rb[name]["cached"]
        ea, eb = store.examples(ra[name]["eval_key"]), store.examples(rb[name]["eval_key"])
        assert [e["item_id"] for e in ea] == [e["item_id"] for e in eb]  # paired items
        assert [e["diagnostics"]["loglikelihoods"] for e in ea] != [e["diagnostics"]["loglikelihoods"] for e in eb]


def test_interrupted_run_completes_only_missing_benchmarks(tiny_model, suite_file, data_dir, tmp_path, monkeypatch):
    model, tok = tiny_model
    store = Store(tmp_path / "s.db")
    names = ["hellaswag", "winogrande", "truthfulqa_mc1"]
    kw = dict(model_label="base", store=store, suite_path=suite_file, benchmarks=names, limit=2, data_dir=data_dir)
    first = Counter(monkeypatch, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        evaluate_prior(model, tok, **kw)
    assert first.calls == ["hellaswag", "winogrande"]
    second = Counter(monkeypatch)
    res = evaluate_prior(model, tok, **kw)
    assert second.calls == ["winogrande", "truthfulqa_mc1"]
    assert [res[n]["cached"] for n in names] == [True, False, False]


def test_peft_model_is_evaluated_in_memory(tiny_model, suite_file, data_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_model
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    store = Store(tmp_path / "s.db")
    res = evaluate_prior(peft_model, tok, model_label="lora", store=store, suite_path=suite_file,
                         benchmarks=["winogrande"], limit=2, data_dir=data_dir)
    assert res["winogrande"]["n"] == 2 and not res["winogrande"]["cached"]


def test_bad_requests_fail_before_any_compute(tiny_model, suite_file, data_dir, tmp_path, monkeypatch):
    model, tok = tiny_model
    store = Store(tmp_path / "s.db")
    counter = Counter(monkeypatch)
    with pytest.raises(ConfigError, match="unknown benchmark 'hellaswagg'"):
        evaluate_prior(model, tok, model_label="x", store=store, suite_path=suite_file,
                       benchmarks=["hellaswagg"], data_dir=data_dir)
    with pytest.raises(DataError, match="limit 2000 is larger than the 1267 items of winogrande"):
        evaluate_prior(model, tok, model_label="x", store=store, suite_path=suite_file,
                       benchmarks=["hellaswag", "winogrande"], limit=2000, data_dir=data_dir)
    assert counter.calls == []


def test_weights_changed_in_place_are_a_new_model(tiny_model, suite_file, data_dir, tmp_path, monkeypatch):
    """A training step changes the weights of the same object: no stale cache hit, and the
    model's train mode survives the evaluation."""
    model, tok = tiny_model
    store = Store(tmp_path / "s.db")
    kw = dict(model_label="ckpt", store=store, suite_path=suite_file, benchmarks=["winogrande"], limit=2,
              data_dir=data_dir)
    counter = Counter(monkeypatch)
    model.train()
    first = evaluate_prior(model, tok, **kw)
    assert model.training
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    second = evaluate_prior(model, tok, **kw)
    assert counter.calls == ["winogrande", "winogrande"]
    assert first["winogrande"]["eval_key"] != second["winogrande"]["eval_key"]


def _ifeval_samples(lists):
    """lm-eval log_samples records of IFEval-like documents with instruction-level lists."""
    return [{"doc_id": i, "filter": "none", "doc_hash": f"d{i}", "prompt_hash": f"p{i}", "target": None,
             "metrics": ["inst_level_loose_acc"], "inst_level_loose_acc": lst, "filtered_resps": ["answer"],
             "resps": [["answer"]]} for i, lst in enumerate(lists)]


def test_ifeval_rows_keep_instruction_counts_and_the_stderr_is_clustered():
    from types import SimpleNamespace

    from harness import metrics as M

    lists = [[True, True, True, False], [False], [True, False]]  # micro 4/7, macro (0.75 + 0 + 0.5) / 3
    bundle = SimpleNamespace(sample_keys={"ifeval": "train"})
    prepared = SimpleNamespace(ids=["a", "b", "c"], part_ids={"train": ["a", "b", "c"]})
    rows = ev._example_rows(bundle, prepared, {"ifeval": _ifeval_samples(lists)}, "inst_level_loose_acc,none")
    assert [r["score"] for r in rows] == [0.75, 0.0, 0.5]
    assert [(r["diagnostics"]["n_followed"], r["diagnostics"]["n_instructions"]) for r in rows] == \
        [(3, 4), (0, 1), (1, 2)]
    w = [r["diagnostics"]["n_instructions"] for r in rows]
    assert M.weighted_mean([r["score"] for r in rows], w) == pytest.approx(4 / 7)
    # clustered (ratio-estimator) stderr by hand: k = followed, m = instructions, p = 4/7
    p = 4 / 7
    by_hand = (3 / 2 * ((3 - 4 * p) ** 2 + (0 - p) ** 2 + (1 - 2 * p) ** 2)) ** 0.5 / 7
    se = ev._cluster_stderr(_ifeval_samples(lists), "inst_level_loose_acc")
    assert se == pytest.approx(by_hand)
