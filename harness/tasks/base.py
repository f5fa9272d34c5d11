"""The task interface: what evaluation, training and the pipeline need from a new skill.

A task lives in one small folder (data loader, prompts, scorer) and is registered by one line in
`registry.TASKS`. The protocol is shaped by what the callers do today for tool use:

- `pipeline._load_split`: resolve a split name or path, load it strictly (or skip invalid records
  and list them), drop items that also occur in another split, take `limit` items (file order or
  stratified), and hash exactly the chosen records for the training key -> `load_split`,
  `identity`, `subset`, `records_hash`, or all of it at once with `load_selection` below;
- `evaluate.evaluate`: a prompt per arm (student, or teacher with the demonstration), one score per
  output with diagnostics and parsed fields to store, summary means of some diagnostics, and a
  version in the evaluation key -> `student_prompt`, `teacher_prompt`, `score`,
  `summary_diagnostics`, `version`;
- `train/batches.encode_records`: student and teacher prompts and the SFT target per record ->
  `student_prompt`, `teacher_prompt`, `sft_target`.

Prompts are chat messages (`[{"role", "content"}, ...]`), not strings: a task may ship a system
message (science does), and the teacher keeps it while replacing only the user turn (method.md).
Tool use is one user turn, so its messages render exactly as `generation.render_chat` renders its
prompt string today (`render_messages` below is that rendering generalised).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from ..errors import ConfigError, DataError

__all__ = ["Messages", "Record", "Score", "LoadedSplit", "Task", "TEACHER_TEMPLATES", "teacher_turn",
           "user_turn", "replace_user_turn", "render_messages", "stratified_subset", "load_selection"]

Messages = list[dict[str, str]]

# The teacher sees the question, then the demonstration (method.md). The paper's text ends the
# closing instruction with a colon, the released code with a period; both are offered.
TEACHER_TEMPLATES = {
    "paper": "{prompt}\n\nThis is an example for a response to the question:\n{demonstration}\n\n"
             "Now answer with a response of your own, including the thinking process:",
    "code": "{prompt}\n\nThis is an example for a response to the question:\n{demonstration}\n\n"
            "Now answer with a response of your own, including the thinking process.",
}


def teacher_turn(prompt: str, demonstration: str, template: str = "paper") -> str:
    """The teacher's single user turn. `template` is 'paper', 'code', or a custom string with
    `{prompt}` and `{demonstration}` fields."""
    fmt = TEACHER_TEMPLATES.get(template, template)
    if "{prompt}" not in fmt or "{demonstration}" not in fmt:
        raise DataError(f"teacher template must contain {{prompt}} and {{demonstration}}: {template!r}")
    # one pass, so a prompt or demonstration that itself contains "{demonstration}" stays verbatim
    fields = {"{prompt}": prompt, "{demonstration}": demonstration}
    return re.sub(r"\{prompt\}|\{demonstration\}", lambda m: fields[m.group(0)], fmt)



@runtime_checkable
class Record(Protocol):
    """What every task's record carries: a stable id (the store keys per-item outcomes by it) and
    the demonstration the teacher sees (empty when the split has none)."""

    item_id: str
    demonstration: str


@dataclass
class Score:
    """One output's outcome. `correct` is the task's headline metric (the paper's rule);
    `diagnostics` are reported beside it (numbers or booleans, averaged in summaries);
    `parsed` is what the scorer read from the output, stored for inspection."""

    correct: bool
    diagnostics: dict[str, Any] = field(default_factory=dict)
    parsed: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedSplit:
    """A loaded split. `data_hash` covers exactly `records` (it enters training keys);
    `demo_policy` names where the demonstrations came from, for every report."""

    records: list
    skipped: list[dict]         # [{"record": id, "problem": ...}] dropped under skip_invalid
    path: str
    data_hash: str
    demo_policy: str


@runtime_checkable
class Task(Protocol):
    """A new skill to learn. Implementations are stateless; `registry.TASKS` holds one instance each.

    `version` goes into every evaluation and training key: bump it whenever prompts, scoring,
    record ids or demonstrations change, so no stored outcome is reused across a change."""

    name: str
    version: str
    description: str                    # one line for help texts and report titles
    splits: Mapping[str, str]           # short split name -> path relative to the data dir
    default_eval_split: str             # what `harness eval <task>` evaluates unless told otherwise
    default_train_split: str            # what `harness train --task <task>` trains on unless told otherwise
    default_max_new_tokens: int         # the paper's generation budget for this task
    summary_diagnostics: tuple[str, ...]  # diagnostics whose means an evaluation summary reports

    def resolve_split(self, split: str, data_dir: Path) -> Path:
        """A short split name, or a file path (absolute, or relative to cwd or the data dir)."""

    def load_split(self, split: str, data_dir: Path, *, skip_invalid: bool = False,
                   demonstrations: str | None = None) -> LoadedSplit:
        """Load every record of a split; bad records raise a DataError naming file, record and
        field unless `skip_invalid`. `demonstrations`: a task-specific policy name or file."""

    def identity(self, record) -> str:
        """Content identity of a record's question, used to drop one split's items from another
        (`exclude`) and to check that train and test are disjoint."""

    def student_prompt(self, record) -> Messages:
        """The prompt without demonstration (arm `base`, the SDFT student, the SFT input)."""

    def teacher_prompt(self, record, demonstration: str | None = None, template: str = "paper") -> Messages:
        """The student prompt with its user turn replaced by the teacher turn (`teacher_turn`);
        `demonstration` defaults to the record's own."""

    def sft_target(self, record) -> str:
        """The assistant text SFT trains on (without end-of-turn; the encoder appends it)."""

    def score(self, record, output: str) -> Score:
        """The paper's per-item metric on a generated output, with diagnostics."""

    def subset(self, records: list, limit: int | None, sample: str = "first", seed: int = 0) -> list:
        """`limit` records, identical for every arm: 'first' in file order or 'stratified'."""

    def records_hash(self, records: list) -> str:
        """Content hash of exactly these records (ids, prompts, gold, demonstrations)."""

    def describe(self, record) -> dict[str, Any]:
        """A small JSON-able summary of a record for reports and metadata."""


def user_turn(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def replace_user_turn(messages: Messages, text: str) -> Messages:
    """A copy of `messages` whose last user turn is `text`; every other message is kept as is."""
    idx = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not idx:
        raise DataError("prompt has no user turn to replace")
    out = [dict(m) for m in messages]
    out[idx[-1]]["content"] = text
    return out


def render_messages(tokenizer, messages: Messages, use_template: bool = True) -> str:
    """Chat rendering for evaluation and training alike, ending with the assistant header.

    Without a chat template (a base model) the contents are joined by a blank line: a single user
    turn is its content unchanged, exactly as `generation.render_chat` renders a prompt string."""
    if not use_template:
        return "\n\n".join(m["content"] for m in messages)
    if not getattr(tokenizer, "chat_template", None):
        from ..errors import ModelError

        raise ModelError("the tokenizer has no chat template; pass chat_template=False for a base model")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def stratified_subset(records: Sequence, limit: int | None, stratum: Callable[[Any], str],
                      sample: str = "first", seed: int = 0) -> list:
    """`limit` records, identical for every arm, returned in file order.

    `sample="first"` takes them in file order. `"stratified"` spreads them across strata in
    proportion to each stratum's share (largest remainder, at least one per stratum while the limit
    allows), drawn with `seed` inside each stratum: a file grouped by stratum would otherwise give a
    small limit only its first strata. Tool use's `subset` is this with the API as
    the stratum."""
    records = list(records)
    if limit is None:
        return records
    if limit <= 0:
        raise DataError(f"limit must be positive, got {limit}")
    if sample == "first" or limit >= len(records):
        return records[:limit]
    if sample != "stratified":
        raise DataError(f"unknown sample '{sample}' (first, stratified)")
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(stratum(r), []).append(i)
    keys = sorted(groups)
    quota = {k: 0 for k in keys}
    if limit >= len(keys):
        quota = {k: 1 for k in keys}
        rest = limit - len(keys)
        share = {k: rest * (len(groups[k]) - 1) / max(1, len(records) - len(keys)) for k in keys}
    else:
        share = {k: limit * len(groups[k]) / len(records) for k in keys}
    for k in keys:
        quota[k] += int(share[k])
    left = limit - sum(quota.values())
    for k in sorted(keys, key=lambda k: (-(share[k] - int(share[k])), k)):
        if left <= 0:
            break
        if quota[k] < len(groups[k]):
            quota[k] += 1
            left -= 1
    rng = random.Random(seed)
    chosen: list[int] = []
    for k in keys:
        chosen += rng.sample(groups[k], min(quota[k], len(groups[k])))
    return [records[i] for i in sorted(chosen)]


def load_selection(task: Task, split: str, data_dir: Path, *, where: str, skip_invalid: bool = False,
                   exclude: str | None = None, limit: int | None = None, sample: str = "first",
                   seed: int = 0, demonstrations: str | None = None) -> LoadedSplit:
    """A suite's split selection for any task, as `pipeline._load_split` does it for tool use:
    load, drop the items whose identity also occurs in `exclude`, take `limit` items, and hash
    exactly those. `where` is the suite key path that errors name (e.g. 'task.train')."""
    loaded = task.load_split(split, data_dir, skip_invalid=skip_invalid, demonstrations=demonstrations)
    records = loaded.records
    if exclude:
        other = task.load_split(exclude, data_dir, skip_invalid=True)  # only identities are needed
        drop = {task.identity(r) for r in other.records}
        records = [r for r in records if task.identity(r) not in drop]
        if not records:
            raise ConfigError(f"{where}.exclude: removes every item of {split}")
    if limit is not None and limit > len(records):
        raise ConfigError(f"{where}.limit: {limit} is more than the {len(records)} items available")
    records = task.subset(records, limit, sample, seed)
    return LoadedSplit(records, loaded.skipped, loaded.path, task.records_hash(records), loaded.demo_policy)
