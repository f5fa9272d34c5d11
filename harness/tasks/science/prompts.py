"""Science prompts: the shipped chat messages for the student, the paper's teacher turn, and the
offline answer-only demonstration.

- Student: the record's messages as shipped, the system message (which asks for
  `<reasoning>...</reasoning><answer>X</answer>`) and the user turn (question, blank line,
  `A: ...` to `D: ...`).
- Teacher: the same system message; only the user turn is replaced by the paper's teacher turn
  (`base.teacher_turn`: question, blank line, "This is an example for a response to the
  question:", the demonstration, blank line, "Now answer with a response of your own, including
  the thinking process:" -- or the released code's final period with template 'code').
- Answer-only demonstration: the gold letter in the format the system message itself shows as its
  example (`<answer>\\nB\\n</answer>`), with no reasoning. The paper's GPT-4o demonstrations are not
  available offline; this policy is named `answer-only` in every report, because a teacher shown
  the answer measures copying, not reasoning.
"""

from __future__ import annotations

from ..base import Messages, replace_user_turn, teacher_turn

ANSWER_ONLY = "answer-only"


def answer_only_demonstration(letter: str) -> str:
    return f"<answer>\n{letter}\n</answer>"


def user_content(messages: Messages) -> str:
    return [m for m in messages if m["role"] == "user"][-1]["content"]


def student_prompt(messages: Messages) -> Messages:
    return [dict(m) for m in messages]


def teacher_prompt(messages: Messages, demonstration: str, template: str = "paper") -> Messages:
    return replace_user_turn(messages, teacher_turn(user_content(messages), demonstration, template))
