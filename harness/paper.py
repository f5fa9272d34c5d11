"""The paper's reported numbers, as data, for reports to show beside measured ones.

    from harness.paper import table5_row, PAPER_LABEL
    table5_row("tooluse", "sdft")   # {'task_acc': 0.706, 'hellaswag': 0.616, ..., 'prior_avg': 0.654}

Source: Shenfeld et al., "Self-Distillation Enables Continual Learning", arXiv 2601.19897, Table 5
(Qwen2.5-7B-Instruct), transcribed in the project's shared docs (../shared/docs/method.md). Values are
kept exactly as printed (percent, one decimal) in `TABLE5`; `table5_row` returns fractions so they
sit beside measured numbers, which the harness stores as fractions. A cell the paper leaves empty
is None. These numbers come from a 7B model: a report on another model must label them
"paper, Qwen2.5-7B-Instruct" (`PAPER_LABEL`), never present them as a target for a different model.
"""

from __future__ import annotations

PAPER = "Shenfeld et al., Self-Distillation Enables Continual Learning, arXiv 2601.19897"
PAPER_MODEL = "Qwen2.5-7B-Instruct"
PAPER_LABEL = f"paper, {PAPER_MODEL}"

#: Table 5 columns: harness benchmark name -> the paper's column title.
BENCHMARK_TITLES = {"hellaswag": "HellaSwag", "humaneval": "HumanEval", "ifeval": "IFEval",
                    "mmlu": "MMLU", "truthfulqa_mc1": "TruthfulQA", "winogrande": "Winogrande"}

#: The paper's task names -> harness task names.
TASKS = {"Tool use": "tooluse", "Science": "science", "Medical": "medical"}

_COLS = ("task_acc", "hellaswag", "humaneval", "ifeval", "mmlu", "truthfulqa_mc1", "winogrande", "prior_avg")
_N = None  # a cell the paper leaves empty

#: Table 5 as printed, percent: (task, method) -> column -> value. Methods use harness arm names
#: where one exists ('base', 'sft', 'sdft'); the paper's other baselines keep their own names.
TABLE5: dict[tuple[str, str], dict[str, float | None]] = {
    (task, method): dict(zip(_COLS, row))
    for task, method, row in [
        ("tooluse", "base", (42.9, 62.0, 65.8, 74.3, 71.7, 47.9, 71.1, 65.5)),
        ("tooluse", "sft", (63.2, 57.3, 50.0, 49.8, 70.2, 37.5, 73.1, 56.0)),
        ("tooluse", "dft", (64.2, 59.7, 61.4, 60.2, 71.6, 40.2, 71.5, 60.8)),
        ("tooluse", "sft+re-invoke", (63.1, 61.7, 68.9, 59.1, 71.5, 49.1, 71.6, 63.7)),
        ("tooluse", "sdft", (70.6, 61.6, 68.3, 71.9, 71.5, 47.3, 71.7, 65.4)),
        ("science", "base", (32.1, _N, _N, _N, _N, _N, _N, 65.5)),
        ("science", "sft", (66.2, 55.0, 54.8, 35.3, 64.6, 36.8, 73.7, 53.4)),
        ("science", "sdft", (70.2, 60.9, 68.9, 66.8, 70.7, 46.5, 73.1, 64.5)),
        ("medical", "base", (30.1, _N, _N, _N, _N, _N, _N, 65.5)),
        ("medical", "sft", (35.5, 59.5, 62.1, 56.6, 70.5, 39.8, 72.9, 60.2)),
        ("medical", "sdft", (40.2, 61.4, 67.7, 72.3, 71.5, 47.3, 71.9, 65.4)),
    ]
}

#: Cells kept as printed although they disagree with the rest of the table (shown in reports).
DISCREPANCIES = {
    ("tooluse", "sft"): "printed prior average 56.0 is not the mean of its printed benchmarks (56.3)",
}

#: Other numbers the paper states in its text (fractions or ratios), used by `harness.claims`.
CLAIMS = {
    "teacher_tooluse_acc": 1.00,     # demonstration-conditioned teacher solves 100% of tool use
    "base_tooluse_acc": 0.429,       # Table 5 (the text rounds it to 42%)
    "sdft_flops_ratio": 2.5,         # SDFT ~2.5x the FLOPs of SFT
    "sdft_wall_ratio": 4.0,          # SDFT ~4x the wall-clock of SFT
    "kl_to_base_sft": 1.26,          # nats, SFT model vs base policy
    "kl_to_base_teacher": 0.68,      # nats, teacher vs base policy
}


#: The teacher's (demonstration in context) accuracy the paper's text states, per harness task; tool use only.
TEACHER_ACC = {"tooluse": CLAIMS["teacher_tooluse_acc"]}


def teacher_acc(task: str) -> float | None:
    """The paper's teacher accuracy on `task` (a fraction), None where the paper states none."""
    return TEACHER_ACC.get(task)


def table5_row(task: str, arm: str) -> dict[str, float | None] | None:
    """The Table 5 row for a harness task ('tooluse', 'science', 'medical') and an arm or method
    name ('base', 'sft', 'sdft', 'dft', 'sft+re-invoke'), as fractions (None for empty cells);
    None when the paper has no such row. Variants of an arm (e.g. 'sdft-reverse') get no row:
    the paper did not run them."""
    row = TABLE5.get((task, arm))
    if row is None:
        return None
    return {k: (None if v is None else round(v / 100.0, 6)) for k, v in row.items()}


def table5_rows(task: str) -> dict[str, dict[str, float | None]]:
    """Every Table 5 row of one task, method -> row (fractions), in the paper's order."""
    return {m: table5_row(t, m) for (t, m) in TABLE5 if t == task}
