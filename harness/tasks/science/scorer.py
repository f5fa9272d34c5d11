"""The authors' science scorer, and diagnostics reported beside (never instead of) it.

Headline metric, exactly as the SDFT authors score SciKnowEval (MANIFEST.md, section 2):

    predicted = output.split("<answer>")[-1].split("</answer>")[0].strip()
    correct   = predicted == gold letter

What that rule means, kept on purpose so numbers compare with the paper's:
- whitespace: `str.strip()` removes spaces and newlines around the letter, so the system prompt's
  own format `<answer>\\nB\\n</answer>` and `<answer> B </answer>` both count; anything else
  inside the tags does not (`B.`, `(B)`, `b`, `B: 337.310`);
- several answer tags: the text after the *last* `<answer>`, up to the first `</answer>` after it,
  is the answer; earlier answers are ignored, and a trailing unclosed `<answer>` takes the rest of
  the output;
- no `<answer>` tag: the whole output, up to the first `</answer>` if any, stripped, is the
  answer, so a bare `B` counts as correct.
`format_valid` (an `<answer>` followed by a `</answer>`) reports how often the format was followed.

Bump SCORER_VERSION whenever the behaviour changes: it is part of the task version in every key.
"""

from __future__ import annotations

from ..base import Score

SCORER_VERSION = "authors-1"
PARSED_CHARS = 64  # the stored parse of an untagged output is capped; the output itself is stored whole


def extract_answer(output: str) -> str:
    return output.split("<answer>")[-1].split("</answer>")[0].strip()


def score(output: str, gold: str, letters: str = "ABCD") -> Score:
    predicted = extract_answer(output)
    last_open = output.rfind("<answer>")
    format_valid = last_open >= 0 and output.find("</answer>", last_open) >= 0
    diagnostics = {
        "format_valid": format_valid,
        "valid_letter": len(predicted) == 1 and predicted in letters,  # answered one of the options
        "n_answer_tags": output.count("<answer>"),
        "has_reasoning": "<reasoning>" in output and "</reasoning>" in output,
    }
    return Score(predicted == gold, diagnostics, {"answer": predicted[:PARSED_CHARS]})
