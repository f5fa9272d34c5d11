"""ToolAlpaca tool use behind the task interface (`base.Task`), scored exactly as the paper scores it.

Data, prompts and demonstrations: `data.py`; the paper's scorer: `scorer.py`. `version` is the
scorer version, in every tool-use evaluation key; each prompt is one user turn, rendered as
`generation.render_chat` renders a prompt string.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError
from ..base import LoadedSplit, Messages, Score, teacher_turn, user_turn
from . import data as tu
from . import scorer
from .data import ToolUseRecord
from .scorer import SCORER_VERSION
from .scorer import score as score_output

__all__ = ["ToolUseTask", "ToolUseRecord", "data", "scorer"]


class ToolUseTask:
    name = "tooluse"
    version = SCORER_VERSION
    description = "tool use (ToolAlpaca API calls, scored as the paper does)"
    splits = tu.SPLITS
    default_eval_split = "paper68"
    default_train_split = "eval_real"
    default_max_new_tokens = 1024
    summary_diagnostics = ("format_valid", "action_match", "arg_f1")

    def resolve_split(self, split: str, data_dir: Path) -> Path:
        return tu.resolve_split(split, Path(data_dir))

    def load_split(self, split: str, data_dir: Path, *, skip_invalid: bool = False,
                   demonstrations: str | None = None) -> LoadedSplit:
        """Demonstrations come from the data file itself: `golden_response` when a record has it,
        else built from the gold calls (see `data`); there is no other policy to choose."""
        if demonstrations is not None:
            raise ConfigError(f"tool use takes its demonstrations from the data file (golden_response or gold "
                              f"calls); demonstrations={demonstrations!r} is not supported")
        res = tu.load_tooluse(self.resolve_split(split, data_dir), skip_invalid=skip_invalid)
        policy = "+".join(sorted({r.demo_source for r in res.records})) or "none"
        return LoadedSplit(res.records, res.skipped, res.path, res.data_hash, policy)

    def identity(self, record: tu.ToolUseRecord) -> str:
        return record.prompt  # what `pipeline._load_split` compares for `exclude`

    def student_prompt(self, record: tu.ToolUseRecord) -> Messages:
        return user_turn(record.prompt)

    def teacher_prompt(self, record: tu.ToolUseRecord, demonstration: str | None = None,
                       template: str = "paper") -> Messages:
        demo = record.demonstration if demonstration is None else demonstration
        return user_turn(teacher_turn(record.prompt, demo, template))

    def sft_target(self, record: tu.ToolUseRecord) -> str:
        return record.demonstration

    def score(self, record: tu.ToolUseRecord, output: str) -> Score:
        s = score_output(output, record.gold_calls)
        return Score(s.correct, s.diagnostics(), {"actions": s.pred_actions, "inputs": s.pred_inputs})

    def subset(self, records: list, limit: int | None, sample: str = "first", seed: int = 0) -> list:
        return tu.subset(records, limit, sample, seed)

    def records_hash(self, records: list) -> str:
        return tu.records_hash(records)

    def describe(self, record: tu.ToolUseRecord) -> dict:
        return tu.as_dict(record)
