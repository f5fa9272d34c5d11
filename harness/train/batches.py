"""Turn a task's records into token ids for training, with no silent truncation.

Prompts and the SFT target come from the task (`tasks.base.Task`) and are rendered as evaluation
renders them (`tasks.base.render_messages`), so a model is trained on exactly the prompt format it
is later scored on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError, DataError
from ..tasks.base import Task, render_messages
from ..tasks.registry import get_task


@dataclass
class Example:
    item_id: str
    student_ids: list[int]      # chat-rendered student prompt (ends with the assistant header)
    teacher_ids: list[int]      # chat-rendered teacher prompt (demonstration in context)
    demo_ids: list[int]         # demonstration + end-of-turn, the SFT target


def encode_records(records: list, tok, max_prompt_tokens: int, max_completion_tokens: int,
                   method: str, teacher_template: str = "paper", truncate_teacher: bool = False,
                   source: str = "data", task: str | Task = "tooluse") -> list[Example]:
    """One `Example` per record of `task` (a registered name or the task); a prompt longer than
    `max_prompt_tokens` or an SFT target longer than `max_completion_tokens` is a DataError."""
    task = get_task(task) if isinstance(task, str) else task
    if method == "sdft" and not any(r.demonstration for r in records):
        raise ConfigError(f"{source}: no record has a demonstration; SDFT needs one per prompt")
    out = []
    eos = tok.eos_token or ""
    for i, r in enumerate(records):
        if not r.demonstration:
            raise DataError.at(source, r.item_id, "demonstration", "empty (SFT and SDFT need demonstrations)")
        s = tok(render_messages(tok, task.student_prompt(r)), add_special_tokens=False)["input_ids"]
        t = tok(render_messages(tok, task.teacher_prompt(r, template=teacher_template)),
                add_special_tokens=False)["input_ids"]
        d = tok(task.sft_target(r) + eos, add_special_tokens=False)["input_ids"]
        if len(s) > max_prompt_tokens:
            raise DataError.at(source, r.item_id, "prompt",
                               f"{len(s)} tokens > max_prompt_tokens={max_prompt_tokens}")
        if len(t) > max_prompt_tokens:
            if not truncate_teacher:
                raise DataError.at(source, r.item_id, "teacher prompt",
                                   f"{len(t)} tokens > max_prompt_tokens={max_prompt_tokens}; raise the limit or "
                                   "opt in to left truncation (truncate_teacher_prompt)")
            t = t[-max_prompt_tokens:]
        if method == "sft" and len(d) > max_completion_tokens:
            raise DataError.at(source, r.item_id, "demonstration",
                               f"{len(d)} tokens > max_completion_tokens={max_completion_tokens}")
        out.append(Example(r.item_id, s, t, d))
    return out


def left_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, n - len(s):] = torch.tensor(s)
            mask[i, n - len(s):] = 1
    return ids, mask


def right_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
    return ids, mask
