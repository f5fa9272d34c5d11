"""The paper's tool-use scorer, and diagnostics reported beside (never instead of) it.

The headline metric reproduces the authors' `eval_tooluse.py` exactly (see method.md):
- predicted actions: `re.findall(r'Action:\\s*(\\w+)', response)`;
- predicted inputs: every `re.findall(r'Action Input:\\s*({.*?})', response, re.DOTALL)` block is
  `json.loads`-ed (failures skipped, including over-long integers and over-deep nesting) and
  merged in order with `dict.update`;
- gold: the Action names and the merged dict of `json.loads(Action_Input)`;
- correct iff `Counter(pred_actions) == Counter(gold_actions)` and the merged dicts are equal.
Known quirks kept on purpose: a gold action such as `[Optional]updateUserProfile` can never match
`\\w+`, and nested JSON objects cannot be captured by the non-greedy pattern.

Bump SCORER_VERSION whenever the behaviour changes: it is part of every evaluation's cache key.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field

SCORER_VERSION = "paper-1"
ACTION_RE = re.compile(r"Action:\s*(\w+)")
INPUT_RE = re.compile(r"Action Input:\s*({.*?})", re.DOTALL)


def parse_actions(text: str) -> list[str]:
    return ACTION_RE.findall(text)


def parse_inputs(text: str) -> tuple[dict, int, int]:
    """Merged dict of every parsable Action Input block; also (#blocks, #parsed)."""
    merged: dict = {}
    blocks = INPUT_RE.findall(text)
    ok = 0
    for b in blocks:
        try:
            obj = json.loads(b)
        except (ValueError, RecursionError):
            # JSONDecodeError is a ValueError; a degenerate block (an integer beyond Python's
            # int-string limit, nesting deeper than the recursion limit) is as unparsable as bad
            # JSON and must not stop an evaluation. No stored score changes (these blocks used to
            # raise), so SCORER_VERSION stays.
            continue
        if isinstance(obj, dict):  # the authors' dict.update would raise on a non-dict
            merged.update(obj)
            ok += 1
    return merged, len(blocks), ok


def gold_actions(calls: list[dict]) -> list[str]:
    return [c["Action"] for c in calls]


def gold_inputs(calls: list[dict]) -> dict:
    merged: dict = {}
    for c in calls:
        merged.update(json.loads(c["Action_Input"]))
    return merged


@dataclass
class ToolUseScore:
    correct: bool                 # the paper's metric
    format_valid: bool            # at least one Action and one parsable Action Input
    action_match: bool            # multiset of action names equal
    arg_precision: float
    arg_recall: float
    arg_f1: float
    pred_actions: list[str] = field(default_factory=list)
    pred_inputs: dict = field(default_factory=dict)
    n_input_blocks: int = 0
    n_input_parsed: int = 0

    def diagnostics(self) -> dict:
        d = asdict(self)
        for k in ("pred_actions", "pred_inputs"):
            d.pop(k)
        return d


def score(response: str, calls: list[dict]) -> ToolUseScore:
    pa = parse_actions(response)
    pi, n_blocks, n_ok = parse_inputs(response)
    ga, gi = gold_actions(calls), gold_inputs(calls)
    action_match = Counter(pa) == Counter(ga)
    correct = action_match and pi == gi  # Python equality, as the authors' code: 1 != "1"
    # argument-level diagnostics: a (key, value) pair counts when key and value match exactly
    tp = sum(1 for k, v in pi.items() if k in gi and gi[k] == v)
    prec = tp / len(pi) if pi else (1.0 if not gi else 0.0)
    rec = tp / len(gi) if gi else (1.0 if not pi else 0.0)
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return ToolUseScore(correct=bool(correct), format_valid=bool(pa) and n_ok > 0,
                        action_match=action_match, arg_precision=prec, arg_recall=rec, arg_f1=f1,
                        pred_actions=pa, pred_inputs=pi, n_input_blocks=n_blocks, n_input_parsed=n_ok)
