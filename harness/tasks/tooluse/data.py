"""ToolAlpaca tool use, exactly as the SDFT paper builds and scores it.

Data sources, all turned into one record type (`ToolUseRecord`):
- the paper's processed files: `sdft_tooluse/eval_data_paper_68.json` (JSON list),
  `eval_data_regenerated_97.jsonl`, and a full training file with `golden_response` (JSON or
  JSONL, same fields) when a user has one;
- raw ToolAlpaca files: one entry per API (`Name`, `Description`, `NLDocumentation`). The eval
  files (`eval_real.json`, `eval_simulated.json`) carry `Instructions` with `Golden_Answers`; the
  training file (`train_data.json`) carries `Instances`, each `{input, intermediate_steps: [[[tool,
  tool_input, log?], observation], ...]}`. For an instance the question is `input` without
  ToolAlpaca's trailing "\nHint: ..." or "\nAuthentication information: ..." (the paper's
  prompt has neither), and the gold calls are its steps in order, keeping only calls of the API's
  own functions (`Function_Projection`; not the agent's `getDetails` helper or invalid actions).
  Calls whose observation was an error are kept: a retry cannot be told apart from a genuine second
  call (eval_real has both), so no guess is made. An instance with no API call, or with
  ToolAlpaca's `error` instead of steps, is an invalid record. APIs with no instances are skipped. When an entry has both, `Golden_Answers` wins.

Demonstrations. When a record has `golden_response` (a list of strings), the demonstration is
those strings joined with "\\n" (what the paper's teacher saw). Otherwise it is built
deterministically from the gold calls, one block per call, joined with "\\n":

    Thought: I need to call {Action} to answer the question.      (first call)
    Thought: Next, I need to call {Action}.                       (later calls)
    Action: {Action}
    Action Input: {Action_Input exactly as stored in the gold record}

The Action Input text is kept verbatim so that the demonstration scores 100% under the paper's
scorer whenever the gold itself is scorable.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import DataError, read_text
from ...hashing import hash_obj
from ..base import stratified_subset  # one implementation for every task

STUDENT_TEMPLATE = (
    "Your task is to answer the user's question using available tools. \n"
    "You have access to the following tools:\n"
    "Name: {name}\n"
    "Description: {description}\n"
    "Documentation:\n{nl_documentation}\n"
    "Use the following format:\n"
    "Thought: you should always think about what to do\n"
    "Action: the action to take, should be one of the tool names.\n"
    "Action Input: the input to the action, must be in JSON format. All of the action input must "
    "be realistic and from the user.\n\n"
    "Begin!\n"
    "Question: {instruction}"
)

# Data files the harness knows by short name (relative to the data dir).
SPLITS = {
    "paper68": "sdft_tooluse/eval_data_paper_68.json",
    "regen97": "sdft_tooluse/eval_data_regenerated_97.jsonl",
    "eval_real": "toolalpaca/eval_real.json",
    "eval_simulated": "toolalpaca/eval_simulated.json",
}


@dataclass
class ToolUseRecord:
    item_id: str
    prompt: str                 # the student prompt (the paper's template)
    gold_calls: list[dict]      # [{"Action": str, "Action_Input": str}] as stored
    demonstration: str          # text shown to the teacher
    api: str
    instruction: str
    demo_source: str = "gold_calls"  # or 'golden_response'
    extra: dict = field(default_factory=dict)


def build_prompt(name: str, description: str, nl_documentation: str, instruction: str) -> str:
    return STUDENT_TEMPLATE.format(name=name, description=description,
                                   nl_documentation=nl_documentation, instruction=instruction)


def demonstration_from_calls(calls: list[dict]) -> str:
    blocks = []
    for i, call in enumerate(calls):
        thought = (f"Thought: I need to call {call['Action']} to answer the question." if i == 0
                   else f"Thought: Next, I need to call {call['Action']}.")
        blocks.append(f"{thought}\nAction: {call['Action']}\nAction Input: {call['Action_Input']}")
    return "\n".join(blocks)


def _check_calls(path, idx, calls, strict_json: bool) -> list[str]:
    """Validate gold calls; return problems (empty when fine)."""
    if not isinstance(calls, list) or not calls:
        raise DataError.at(path, idx, "golden_answer", "expected a non-empty list of calls")
    problems = []
    for j, c in enumerate(calls):
        if not isinstance(c, dict) or "Action" not in c or "Action_Input" not in c:
            raise DataError.at(path, idx, f"golden_answer[{j}]", "expected keys 'Action' and 'Action_Input'")
        try:
            value = json.loads(c["Action_Input"])
        except (TypeError, json.JSONDecodeError) as e:
            problems.append(f"golden_answer[{j}].Action_Input is not JSON ({e.msg if hasattr(e, 'msg') else e})")
            continue
        if not isinstance(value, dict):  # the scorer merges inputs with dict.update
            problems.append(f"golden_answer[{j}].Action_Input is JSON but not an object")
    return problems


_INPUT_SUFFIX = re.compile(r"\n(?:Hint|Authentication information): ")


def _instance_calls(path, label, inst, functions: set[str] | None) -> tuple[list[dict], list[str]]:
    """Gold calls of one raw ToolAlpaca training instance (see the module docstring): the steps that
    called one of the API's functions, in order."""
    if not isinstance(inst, dict):
        return [], ["instance is not an object"]
    if "error" in inst and "intermediate_steps" not in inst:
        return [], [f"instance has ToolAlpaca's error instead of steps ({str(inst['error'])[:60]})"]
    if not isinstance(inst.get("input"), str):
        raise DataError.at(path, label, "input", "missing")
    steps = inst.get("intermediate_steps")
    if not isinstance(steps, list):
        raise DataError.at(path, label, "intermediate_steps", "missing")
    calls = []
    for j, step in enumerate(steps):
        ok = (isinstance(step, list) and len(step) == 2 and isinstance(step[0], list) and len(step[0]) >= 2
              and isinstance(step[0][0], str))
        if not ok:
            raise DataError.at(path, label, f"intermediate_steps[{j}]",
                               "expected [[tool, tool_input, ...], observation]")
        tool, tool_input = step[0][0], step[0][1]
        if (functions is not None and tool not in functions) or tool == "getDetails":
            continue  # the agent's helpers and invalid actions are not API calls
        if not isinstance(tool_input, str):
            tool_input = json.dumps(tool_input, ensure_ascii=False)
        calls.append({"Action": tool, "Action_Input": tool_input})
    return calls, ([] if calls else ["instance makes no API call"])


def _read_json_records(path: Path) -> list:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    text = read_text(path, "tool-use data file")
    if path.suffix != ".jsonl":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            # one JSON document per line under a .json name (as some HF exports are): read it as JSONL
            if e.msg != "Extra data":
                raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {n} is not valid JSON ({e.msg} at column {e.colno})") from None
    return out


@dataclass
class LoadResult:
    records: list[ToolUseRecord]
    skipped: list[dict]         # [{"record": id, "field": ..., "problem": ...}]
    path: str
    data_hash: str


def load_tooluse(path: str | Path, skip_invalid: bool = False) -> LoadResult:
    """Load a processed (paper) or raw ToolAlpaca file into records.

    Strict by default: a gold `Action_Input` that is not JSON raises a DataError naming the file,
    record and field. With `skip_invalid=True` such records are dropped and listed in `skipped`
    (callers store that list in the run's metadata).
    """
    path = Path(path)
    raw = _read_json_records(path)
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{path}: expected a non-empty list of records")
    is_raw_toolalpaca = isinstance(raw[0], dict) and ("Instructions" in raw[0] or "Instances" in raw[0])
    records, skipped = [], []

    def add(rid, prompt, calls, demo, demo_src, api, instruction, problems, idx_label):
        if problems:
            if not skip_invalid:
                raise DataError(f"{path}, record {idx_label}: {problems[0]} "
                                "(use --skip-invalid to skip such records)")
            skipped.append({"record": rid, "problem": "; ".join(problems)})
            return
        records.append(ToolUseRecord(rid, prompt, calls, demo, api, instruction, demo_src))

    if is_raw_toolalpaca:
        for a, api in enumerate(raw):
            if not isinstance(api, dict):
                raise DataError.at(path, a, None, "expected an object")
            golds = api.get("Golden_Answers")
            if golds is None and "Instances" in api and not api["Instances"]:
                continue  # ToolAlpaca leaves APIs it could not generate for without instances
            for key in ("Name", "Description", "NLDocumentation"):
                if key not in api:
                    raise DataError.at(path, a, key, "missing")
            if golds is None and "Instances" in api:
                if not isinstance(api["Instances"], list):
                    raise DataError.at(path, a, "Instances", "expected a list")
                proj = api.get("Function_Projection")
                functions = set(proj) if isinstance(proj, dict) and proj else None
                for k, inst in enumerate(api["Instances"]):
                    label = f"{a}.{k}"
                    calls, problems = _instance_calls(path, label, inst, functions)
                    problems = problems or _check_calls(path, label, calls, True)
                    raw_input = inst.get("input", "") if isinstance(inst, dict) else ""
                    instr = _INPUT_SUFFIX.split(raw_input, maxsplit=1)[0]
                    prompt = build_prompt(api["Name"], api["Description"], api["NLDocumentation"], instr)
                    add(f"{api['Name']}/{k}", prompt, calls,
                        demonstration_from_calls(calls) if not problems else "", "gold_calls",
                        api["Name"], instr, problems, label)
                continue
            if "Instructions" not in api:
                raise DataError.at(path, a, "Instructions", "missing")
            if golds is None:
                raise DataError.at(path, a, "Golden_Answers", "missing (this file has no gold calls)")
            if len(golds) != len(api["Instructions"]):
                raise DataError.at(path, a, "Golden_Answers", "length differs from Instructions")
            for k, (instr, calls) in enumerate(zip(api["Instructions"], golds)):
                label = f"{a}.{k}"
                problems = _check_calls(path, label, calls, True)
                prompt = build_prompt(api["Name"], api["Description"], api["NLDocumentation"], instr)
                add(f"{api['Name']}/{k}", prompt, calls,
                    demonstration_from_calls(calls) if not problems else "", "gold_calls",
                    api["Name"], instr, problems, label)
    else:
        for i, r in enumerate(raw):
            if not isinstance(r, dict):
                raise DataError.at(path, i, None, "expected an object")
            for key in ("name", "description", "nl_documentation", "instruction", "golden_answer"):
                if key not in r:
                    raise DataError.at(path, i, key, "missing")
            calls = r["golden_answer"]
            problems = _check_calls(path, i, calls, True)
            prompt = r.get("prompt") or build_prompt(r["name"], r["description"], r["nl_documentation"],
                                                     r["instruction"])
            if "golden_response" in r and r["golden_response"] is not None:
                gr = r["golden_response"]
                if not isinstance(gr, list) or not all(isinstance(s, str) for s in gr):
                    raise DataError.at(path, i, "golden_response", "expected a list of strings")
                demo, src = "\n".join(gr), "golden_response"
            else:
                demo, src = (demonstration_from_calls(calls) if not problems else ""), "gold_calls"
            add(f"{r['name']}/{hash_obj(r['instruction'], 8)}", prompt, calls, demo, src, r["name"],
                r["instruction"], problems, i)
    ids = [r.item_id for r in records]
    if len(set(ids)) != len(ids):  # duplicate instructions within an API: make ids unique by order
        seen: dict[str, int] = {}
        for r in records:
            n = seen.get(r.item_id, 0)
            seen[r.item_id] = n + 1
            if n:
                r.item_id = f"{r.item_id}#{n}"
    return LoadResult(records, skipped, str(path), records_hash(records))


def records_hash(records: list[ToolUseRecord]) -> str:
    """Content hash of exactly these records (ids, prompts, gold calls, demonstrations)."""
    return hash_obj([[r.item_id, r.prompt, r.gold_calls, r.demonstration] for r in records])


def resolve_split(split: str, data_dir: Path) -> Path:
    """A short split name (see SPLITS), a path (absolute, or relative to cwd or the data dir), or an
    http(s) URL (downloaded once into the cache, e.g. the paper's training file)."""
    if split.startswith(("http://", "https://")):
        return _download(split)
    if split in SPLITS:
        return data_dir / SPLITS[split]
    p = Path(split).expanduser()
    if p.is_file():
        return p
    if (data_dir / split).is_file():
        return data_dir / split
    raise DataError(f"{split}: tool-use data file not found (known splits: {', '.join(SPLITS)}; "
                    f"data dir {data_dir})")


def subset(records: list[ToolUseRecord], limit: int | None, sample: str = "first",
           seed: int = 0) -> list[ToolUseRecord]:
    """`limit` records, identical for every arm. `sample="first"` takes them in file order;
    `"stratified"` spreads them across APIs in proportion to each API's share of the split (largest
    remainder, at least one item per API while the limit allows), drawn with `seed` inside each API,
    and returned in file order. Stratifying matters because files are grouped by API: the first 16
    paper68 items cover 3 of its 10 APIs."""

    return stratified_subset(records, limit, lambda r: r.api, sample, seed)


def as_dict(r: ToolUseRecord) -> dict[str, Any]:
    return {"item_id": r.item_id, "api": r.api, "instruction": r.instruction,
            "n_calls": len(r.gold_calls), "demo_source": r.demo_source}


def _download(url: str) -> Path:
    import hashlib
    import os
    import urllib.error
    import urllib.request

    from ...paths import cache_dir

    name = url.rstrip("/").rsplit("/", 1)[-1] or "data.json"
    dest = cache_dir() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16] / name
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            f.write(r.read())
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"{url}: download failed ({getattr(e, 'reason', e)})") from None
    os.replace(tmp, dest)
    return dest
