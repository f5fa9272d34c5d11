"""Science Q&A (SciKnowEval Chemistry L-3, four-option multiple choice) behind the task interface.

Evaluates on `eval507` (the paper's 507 items) and trains on `train_pool` (1803 SDPO chemistry
items, none of whose question-and-options occurs in the eval set). Greedy, up to 2048 new tokens
(method.md). Data and demonstrations: `data.py`; prompts: `prompts.py`; scoring: `scorer.py`.
"""

from __future__ import annotations

from pathlib import Path

from ..base import LoadedSplit, Messages, Score
from . import data, prompts, scorer
from .data import ScienceRecord

__all__ = ["ScienceTask", "ScienceRecord", "data", "prompts", "scorer"]

# Bump the first part whenever prompts, record ids or demonstrations change (the scorer has its own).
VERSION = "science-1/" + scorer.SCORER_VERSION


class ScienceTask:
    name = "science"
    version = VERSION
    description = "Science Q&A (SciKnowEval Chemistry L-3, four-option multiple choice, scored as the authors do)"
    splits = data.SPLITS
    default_eval_split = "eval507"
    default_train_split = "train_pool"
    default_max_new_tokens = 2048
    summary_diagnostics = ("format_valid", "valid_letter", "has_reasoning")

    def resolve_split(self, split: str, data_dir: Path) -> Path:
        return data.resolve_split(split, data_dir)

    def load_split(self, split: str, data_dir: Path, *, skip_invalid: bool = False,
                   demonstrations: str | None = None) -> LoadedSplit:
        return data.load_science(self.resolve_split(split, data_dir), skip_invalid=skip_invalid,
                                 demonstrations=demonstrations, data_dir=Path(data_dir))

    def identity(self, record: ScienceRecord) -> str:
        return data.question_identity(record.question, record.options)

    def student_prompt(self, record: ScienceRecord) -> Messages:
        return prompts.student_prompt(record.messages)

    def teacher_prompt(self, record: ScienceRecord, demonstration: str | None = None,
                       template: str = "paper") -> Messages:
        demo = record.demonstration if demonstration is None else demonstration
        return prompts.teacher_prompt(record.messages, demo, template)

    def sft_target(self, record: ScienceRecord) -> str:
        return record.demonstration

    def score(self, record: ScienceRecord, output: str) -> Score:
        return scorer.score(output, record.answer, "".join(record.options))

    def subset(self, records: list, limit: int | None, sample: str = "first", seed: int = 0) -> list:
        return data.subset(records, limit, sample, seed)

    def records_hash(self, records: list) -> str:
        return data.records_hash(records)

    def describe(self, record: ScienceRecord) -> dict:
        return data.as_dict(record)
