"""Adapters (shared files -> lm-eval schema), seeded subsets, and bad-input errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.errors import ConfigError, DataError
from harness.prior.adapters import ADAPTERS, adapt_hellaswag, adapt_mmlu, adapt_winogrande
from harness.prior.data import _allocate, prepare, select
from harness.prior.tasks import BENCHMARKS

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

EXPECTED = {  # benchmark -> (rows, split, columns the built-in task reads)
    "hellaswag": (10042, "validation", {"activity_label", "ctx_a", "ctx_b", "endings", "label"}),
    "truthfulqa_mc1": (817, "validation", {"question", "mc1_targets"}),
    "mmlu": (14042, "test", {"question", "subject", "choices", "answer"}),
    "ifeval": (541, "train", {"key", "prompt", "instruction_id_list", "kwargs"}),
    "winogrande": (1267, "validation", {"sentence", "option1", "option2", "answer"}),
    "humaneval": (164, "test", {"task_id", "prompt", "entry_point", "test"}),
    "arc_easy": (2376, "test", {"id", "question", "choices", "answerKey"}),
    "arc_challenge": (1172, "test", {"id", "question", "choices", "answerKey"}),
    "gsm8k": (1319, "test", {"question", "answer"}),
}


def test_registry_covers_all_adapters():
    assert set(ADAPTERS) == set(BENCHMARKS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_adapter_schema(name, data_dir):
    a = ADAPTERS[name](data_dir)
    rows, split, cols = EXPECTED[name]
    assert len(a.records) == len(a.ids) == rows
    assert len(set(a.ids)) == rows, "item ids must be unique"
    assert a.split == split
    assert cols <= set(a.records[0])


def test_hellaswag_query_matches_lm_eval_preprocessing(data_dir):
    """lm-eval's own process_docs on the adapted columns gives back the shared `ctx` text."""
    import datasets
    from lm_eval.tasks.hellaswag.utils import process_docs

    a = adapt_hellaswag(data_dir)
    raw = [json.loads(line) for line in open(a.sources[0], encoding="utf-8")][:200]
    out = process_docs(datasets.Dataset.from_list(a.records[:200]))
    for r, doc in zip(raw, out):
        assert doc["query"] == r["ctx"]
        assert doc["gold"] == r["label"]
        assert doc["choices"] == r["endings"]


def test_winogrande_choices_and_target_match_partial_form(data_dir):
    from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_choice, doc_to_target, doc_to_text

    a = adapt_winogrande(data_dir)
    raw = [json.loads(line) for line in open(a.sources[0], encoding="utf-8")]
    for r, doc in zip(raw, a.records):
        assert doc_to_choice(doc) == r["context_options"]
        assert doc_to_target(doc) == r["continuation"].strip()
        assert doc_to_text(doc) == r["gold"]


def test_select_is_seeded_sorted_and_stable(data_dir):
    a = ADAPTERS["arc_easy"](data_dir)
    s1, s2 = select(a, 20, seed=1), select(a, 20, seed=1)
    assert s1 == s2 == sorted(s1) and len(set(s1)) == 20
    assert select(a, 20, seed=2) != s1
    assert select(a, None, seed=1) == list(range(len(a.records)))


def test_mmlu_subset_is_stratified_by_subject(data_dir):
    a = adapt_mmlu(data_dir)
    idx = select(a, 300, seed=1234)
    assert len(idx) == 300
    counts: dict[str, int] = {}
    for i in idx:
        counts[a.strata[i]] = counts.get(a.strata[i], 0) + 1
    sizes: dict[str, int] = {}
    for s in a.strata:
        sizes[s] = sizes.get(s, 0) + 1
    for subject, n in sizes.items():  # proportional allocation, within rounding
        assert abs(counts.get(subject, 0) - 300 * n / len(a.strata)) < 1
    assert _allocate({"a": 1, "b": 1, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}


def test_prepare_writes_content_addressed_jsonl(data_dir, tmp_path):
    p1 = prepare("mmlu", data_dir, 10, seed=7, root=tmp_path)
    p2 = prepare("mmlu", data_dir, 10, seed=7, root=tmp_path)
    assert p1.data_hash == p2.data_hash and p1.folder == p2.folder
    assert len(p1.ids) == 10
    assert sum(len(v) for v in p1.part_ids.values()) == 10
    for part, files in p1.files.items():
        lines = files["test"].read_text().splitlines()
        assert len(lines) == len(p1.part_ids[part])
        assert "dev" in files  # few-shot split carried for n_shot > 0
    assert prepare("mmlu", data_dir, 10, seed=8, root=tmp_path).data_hash != p1.data_hash


def test_limit_larger_than_data_is_a_data_error(data_dir, tmp_path):
    with pytest.raises(DataError, match="limit 200 is larger than the 164 items of humaneval"):
        prepare("humaneval", data_dir, 200, seed=1, root=tmp_path)
    with pytest.raises(ConfigError, match="positive integer"):
        prepare("gsm8k", data_dir, 0, seed=1, root=tmp_path)


def _fake_data_dir(tmp: Path) -> Path:
    (tmp / "benchmarks" / "arc").mkdir(parents=True)
    return tmp


def test_missing_benchmark_file_names_the_path(tmp_path):
    d = _fake_data_dir(tmp_path)
    with pytest.raises(DataError) as e:
        ADAPTERS["arc_easy"](d)
    assert str(d / "benchmarks" / "arc" / "arc_easy_test.jsonl") in str(e.value)
    assert "not found" in str(e.value)


def test_wrong_columns_name_the_missing_ones(tmp_path):
    d = _fake_data_dir(tmp_path)
    (d / "benchmarks" / "arc" / "arc_easy_test.jsonl").write_text(json.dumps({"query": "Question: q"}) + "\n")
    with pytest.raises(DataError, match=r"record 1: missing column\(s\) choices, gold"):
        ADAPTERS["arc_easy"](d)
    mmlu = d / "benchmarks" / "mmlu" / "test"
    mmlu.mkdir(parents=True)
    (mmlu / "anatomy_test.csv").write_text("question,choice0,answer\nq,a,0\n")
    with pytest.raises(DataError, match=r"anatomy_test.csv: missing column\(s\) choice1, choice2, choice3"):
        adapt_mmlu(d)
