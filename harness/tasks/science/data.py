"""Science Q&A data: SciKnowEval Chemistry L-3, four-option multiple choice (MANIFEST.md, section 2).

Record format (JSONL, one object per line; a `.json` file may hold a list of the same objects):
`prompt` = `[{"role": "system", ...}, {"role": "user", ...}]` (the system message optional), where
the user turn is the question, a blank line, then one option per line `A: ...`, `B: ...`, ...;
`answer` = the gold letter. Optional: `output_text` (a demonstration, the paper's training-file
field) and any other fields (kept in `extra`, e.g. the derived pool's `sdpo_idx`).

Identity and ids. The eval file carries no ids, so a record is identified by its content: the
question text and its options in letter order (the identity the derived training pool was built
with: it is the SDPO chemistry items minus those whose question occurs in the 507 eval items).
`item_id` is `chem-` plus 12 hex digits of that identity, so ids are stable across files and a
demonstrations file can name records either by `id` or by carrying the record's `prompt`.

Demonstrations (`demonstrations=`):
- None (default): a record's own `output_text` when it has one, else answer-only;
- 'answer-only': always the gold letter in the answer format (`prompts.answer_only_demonstration`);
- 'output_text': every record must carry `output_text`;
- a path to a JSONL file of `{"id": ..., "output_text": ...}` or `{"prompt": [...], "output_text": ...}`
  rows: every loaded record must have one, else a DataError names the file and the record.
The policy is returned as `LoadedSplit.demo_policy` for reports.

Strictness: files are read as strict UTF-8 (`errors.read_text`). A record that is not an object,
lacks `prompt` or `answer`, has no parsable options, or whose answer is not one of its option
letters raises a DataError naming file, record (line) and field; with `skip_invalid` it is dropped
and listed in `skipped` instead. Lines that are not JSON always raise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from ...errors import DataError, read_text
from ...hashing import hash_obj
from ..base import LoadedSplit, stratified_subset
from .prompts import ANSWER_ONLY, answer_only_demonstration, user_content

SPLITS = {
    "eval507": "science/sdft_science_eval_507.jsonl",
    "train_pool": "science/derived_chemistry_train_pool_excl_sdft_eval.jsonl",
}

_OPTIONS_START = "\n\nA: "
_OPTION_LINE = re.compile(r"\n(?=[A-Z]: )")


@dataclass
class ScienceRecord:
    item_id: str
    messages: list[dict]        # [system, user] as shipped: the student prompt
    answer: str                 # gold letter
    question: str               # the user turn before the options
    options: dict[str, str]     # letter -> option text, in letter order
    demonstration: str          # text shown to the teacher, and the SFT target
    demo_source: str            # 'answer-only', 'output_text' or 'file:<name>'
    extra: dict = field(default_factory=dict)


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user"]
    content: StrictStr


class _RawRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt: list[_Message]
    answer: StrictStr
    output_text: StrictStr | None = None


class _RawDemo(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: StrictStr | None = None
    prompt: list[_Message] | None = None
    output_text: StrictStr


def _first_error(e: ValidationError) -> tuple[str, str]:
    """(field path like 'prompt[1].content', problem) of a pydantic error, for a one-line message."""
    err = e.errors()[0]
    path = ""
    for part in err["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    problem = "missing" if err["type"] == "missing" else err["msg"]
    return path or "record", problem


def parse_options(user: str) -> tuple[str, dict[str, str]] | None:
    """(question, {letter: option}) of a user turn, or None when it has no `A: ...` option block or
    the letters are not consecutive from A."""
    i = user.rfind(_OPTIONS_START)
    if i < 0:
        return None
    parts = _OPTION_LINE.split(user[i + 2:])
    letters = [p[0] for p in parts]
    if letters != [chr(ord("A") + k) for k in range(len(letters))] or len(letters) < 2:
        return None
    return user[:i], {p[0]: p[3:] for p in parts}


def question_identity(question: str, options: dict[str, str]) -> str:
    return hash_obj([question, list(options.items())])


def item_id_for(messages: list[dict]) -> str | None:
    """The id a record with these messages gets (None when its user turn has no options)."""
    parsed = parse_options(user_content(messages)) if any(m["role"] == "user" for m in messages) else None
    return None if parsed is None else "chem-" + question_identity(*parsed)[:12]


def _read_rows(path: Path, what: str) -> list[tuple[str, Any]]:
    """[(record label, parsed JSON value)] of a JSONL file (label 'line N') or a JSON list (label N)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    text = read_text(path, what)
    if path.suffix == ".json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":  # one object per line under a .json name: read it as JSONL
                raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        else:
            if not isinstance(value, list):
                raise DataError(f"{path}: expected a list of records or one JSON object per line")
            return [(str(i), v) for i, v in enumerate(value)]
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {n}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {n} is not valid JSON ({e.msg} at column {e.colno})") from None
    return rows


def _record(path: Path, label: str, raw: Any) -> ScienceRecord:
    """One validated record (demonstration not yet chosen); DataError naming file, record and field."""
    if not isinstance(raw, dict):
        raise DataError.at(path, label, None, "expected a JSON object")
    try:
        rec = _RawRecord.model_validate(raw)
    except ValidationError as e:
        raise DataError.at(path, label, *_first_error(e)) from None
    roles = [m.role for m in rec.prompt]
    if roles not in (["system", "user"], ["user"]):
        raise DataError.at(path, label, "prompt", f"expected [system, user] or [user] messages, got {roles}")
    messages = [m.model_dump() for m in rec.prompt]
    parsed = parse_options(messages[-1]["content"])
    if parsed is None:
        raise DataError.at(path, label, f"prompt[{len(messages) - 1}].content",
                           "no options block (a blank line, then 'A: ...', 'B: ...' one per line)")
    question, options = parsed
    if rec.answer not in options:
        raise DataError.at(path, label, "answer",
                           f"{rec.answer!r} is not among the option letters {', '.join(options)}")
    extra = {k: v for k, v in raw.items() if k not in ("prompt", "answer", "output_text")}
    return ScienceRecord("chem-" + question_identity(question, options)[:12], messages, rec.answer, question,
                         options, rec.output_text or "", "output_text" if rec.output_text else "",
                         {"record": label} | extra)


def resolve_split(split: str, data_dir: Path) -> Path:
    """A short split name (see SPLITS), or a path (absolute, or relative to cwd or the data dir)."""
    if split in SPLITS:
        return Path(data_dir) / SPLITS[split]
    p = Path(split).expanduser()
    if p.is_file():
        return p
    if (Path(data_dir) / split).is_file():
        return Path(data_dir) / split
    raise DataError(f"{split}: science data file not found (known splits: {', '.join(SPLITS)}; data dir {data_dir})")


def load_demonstrations(path: str | Path, data_dir: Path | None = None) -> dict[str, str]:
    """{item_id: output_text} of a demonstrations file; rows name their record by `id` or `prompt`."""
    p = Path(path).expanduser()
    if not p.is_file() and data_dir is not None and (Path(data_dir) / path).is_file():
        p = Path(data_dir) / path
    if not p.is_file():
        raise DataError(f"{path}: demonstrations file not found (or name a policy: {ANSWER_ONLY}, output_text)")
    demos: dict[str, str] = {}
    for label, raw in _read_rows(p, "demonstrations file"):
        if not isinstance(raw, dict):
            raise DataError.at(p, label, None, "expected a JSON object")
        try:
            d = _RawDemo.model_validate(raw)
        except ValidationError as e:
            raise DataError.at(p, label, *_first_error(e)) from None
        if not d.output_text.strip():
            raise DataError.at(p, label, "output_text", "empty")
        rid = d.id or (item_id_for([m.model_dump() for m in d.prompt]) if d.prompt else None)
        if rid is None:
            raise DataError.at(p, label, "id" if d.prompt is None else "prompt",
                               "missing" if d.prompt is None else "user turn has no options block")
        if demos.get(rid, d.output_text) != d.output_text:
            raise DataError.at(p, label, "output_text", f"a different demonstration for {rid} appears earlier")
        demos[rid] = d.output_text
    return demos


def records_hash(records: list[ScienceRecord]) -> str:
    """Content hash of exactly these records (ids, messages, gold, demonstrations)."""
    return hash_obj([[r.item_id, r.messages, r.answer, r.demonstration] for r in records])


def load_science(path: str | Path, skip_invalid: bool = False, demonstrations: str | None = None,
                 data_dir: Path | None = None) -> LoadedSplit:
    """Load a science file into records with demonstrations (policies in the module docstring)."""
    path = Path(path)
    rows = _read_rows(path, "science data file")
    if not rows:
        raise DataError(f"{path}: expected a non-empty list of records")
    records, skipped = [], []
    for label, raw in rows:
        try:
            records.append(_record(path, label, raw))
        except DataError as e:
            if not skip_invalid:
                raise
            skipped.append({"record": label, "problem": str(e)})
    seen: dict[str, int] = {}
    for r in records:  # the same question and options twice in a file: ids made unique by order
        n = seen.get(r.item_id, 0)
        seen[r.item_id] = n + 1
        if n:
            r.item_id = f"{r.item_id}#{n}"
    if demonstrations is None or demonstrations == ANSWER_ONLY:
        for r in records:
            if demonstrations == ANSWER_ONLY or not r.demonstration:
                r.demonstration, r.demo_source = answer_only_demonstration(r.answer), ANSWER_ONLY
    elif demonstrations == "output_text":
        for r in records:
            if not r.demonstration:
                raise DataError.at(path, r.extra["record"], "output_text",
                                   "missing (demonstrations: output_text needs one per record)")
    else:
        demos = load_demonstrations(demonstrations, data_dir)
        source = f"file:{Path(demonstrations).name}"
        for r in records:
            text = demos.get(r.item_id, demos.get(r.item_id.split("#")[0]))
            if text is None:
                raise DataError(f"{demonstrations}: no demonstration for record {r.item_id} "
                                f"({path}, record {r.extra['record']})")
            r.demonstration, r.demo_source = text, source
    policy = "+".join(sorted({r.demo_source for r in records})) or "none"
    return LoadedSplit(records, skipped, str(path), records_hash(records), policy)


def subset(records: list[ScienceRecord], limit: int | None, sample: str = "first",
           seed: int = 0) -> list[ScienceRecord]:
    """`limit` records; 'stratified' keeps the gold-letter balance (`base.stratified_subset`). The
    files carry no subtask field, and the letter is what a letter-biased small model exploits: a
    subset skewed towards one letter would reward always answering it."""
    return stratified_subset(records, limit, lambda r: r.answer, sample, seed)


def as_dict(r: ScienceRecord) -> dict[str, Any]:
    return {"item_id": r.item_id, "answer": r.answer, "question": r.question[:120],
            "n_options": len(r.options), "demo_source": r.demo_source}
