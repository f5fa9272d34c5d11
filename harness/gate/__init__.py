"""Regression gate: does a candidate model lose more than an allowed amount on any metric?

    harness gate --baseline results/baselines/qwen2.5-0.5b.json --candidate RUN_ID_OR_CHECKPOINT \\
                 --suite suites/gate.yaml --markdown gate.md --junit gate.xml

Exit codes: 0 every metric passed or improved (or was inconclusive where the gate file allows it
and the sample could have detected a drop of the allowed size); 1 at least one metric regressed
(and only then); 2 bad input (raised as `HarnessError`, printed as one line by the CLI); 3 cannot
decide (an inconclusive metric that counts as failing). CI can therefore tell a regression from a
sample too small to judge from a broken invocation.

Data flow: the baseline and the candidate become *outcome sets* (per metric, the per-item scores
of one model: `OutcomeSet`), from a committed baseline file (`results/baselines/*.json`, see
`save_baseline`), a run in the results store (`RUN_ID` or `RUN_ID#ARM`), or, for a checkpoint with
nothing stored, an evaluator callable `evaluator(spec, metrics, store, baseline) -> outcome set`
that measures it with the baseline's own settings (carried in the baseline, see
`outcomes_from_store`) through the evaluation cache. `compare` then tests every gated metric on
exactly the baseline's items.

Modules, in the order the data passes through them:

    outcomes.py   outcome sets; baseline files; outcome sets of stored runs
    rules.py      the gate file (pydantic): `Rule`, `GateConfig`, `load_gate_config`
    candidate.py  the checkpoint evaluator (imports torch; loaded only when a checkpoint is gated)
    decide.py     the decision rule (its docstring) and `compare`; formulas from `harness.metrics`
    verdict.py    `Verdict` rows, how a verdict counts (`counted`), `exit_code`, one-line messages
    render.py     console table, Markdown PR comment, JUnit XML
    run.py        `run_gate` (CLI and pytest plugin) and `gate_command` (`harness gate`)
"""

from __future__ import annotations

from ..errors import HarnessError
from .decide import aggregate_decision, binary_decision, compare, continuous_decision
from .outcomes import (BASELINE_FORMAT, OutcomeSet, as_outcome_set, item_set_hash, load_baseline,
                       outcomes_from_store, save_baseline)
from .render import MARKER, render_junit, render_markdown, render_table
from .rules import GATE_FORMAT, GateConfig, Rule, load_gate_config
from .run import Evaluator, GateResult, default_evaluator, gate_command, lazy_default_evaluator, run_gate
from .verdict import EXIT_BAD_INPUT, EXIT_PASS, EXIT_REGRESSION, EXIT_UNDECIDED, VERDICTS, Verdict, counted, exit_code

__all__ = ["EXIT_PASS", "EXIT_REGRESSION", "EXIT_BAD_INPUT", "EXIT_UNDECIDED", "OutcomeSet", "Rule", "GateConfig",
           "Verdict", "GateResult", "as_outcome_set", "item_set_hash", "save_baseline", "load_baseline",
           "outcomes_from_store", "load_gate_config", "binary_decision", "continuous_decision", "aggregate_decision",
           "counted", "compare", "exit_code", "run_gate", "default_evaluator", "lazy_default_evaluator",
           "render_table", "render_markdown", "render_junit", "gate_command", "HarnessError",
           "BASELINE_FORMAT", "GATE_FORMAT", "VERDICTS", "MARKER", "Evaluator"]
