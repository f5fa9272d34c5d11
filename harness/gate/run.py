"""Running the gate: resolve both sides, compare, record, and (for `harness gate`) print and write.

`run_gate` is what the CLI command and the pytest plugin (`harness.pytest_plugin`) call;
`gate_command` adds the console output and the Markdown and JUnit files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import ConfigError
from .decide import check_suites, compare
from .outcomes import OutcomeSet, as_outcome_set, load_baseline, resolve_outcomes
from .render import print_verdicts, render_junit, render_markdown
from .rules import GateConfig, load_gate_config
from .verdict import Verdict, exit_code

#: `evaluator(spec, metrics, store, baseline) -> outcome set`: measures a checkpoint candidate.
Evaluator = Callable[[str, Mapping[str, list[str]], Any, OutcomeSet], Any]


@dataclass
class GateResult:
    rows: list[Verdict]
    config: GateConfig
    baseline: OutcomeSet
    candidate: OutcomeSet
    exit_code: int


def default_evaluator() -> Evaluator | None:
    """The project's checkpoint evaluator, `harness.gate.candidate.evaluate_candidate`, or None
    where the evaluation stack cannot be imported."""
    try:
        from .candidate import evaluate_candidate
    except Exception:  # pragma: no cover - heavy optional import
        return None
    return evaluate_candidate


def lazy_default_evaluator(spec: str, metrics: Mapping[str, list[str]], store: Any, baseline: OutcomeSet) -> Any:
    """Calls `default_evaluator()` only when a checkpoint must be evaluated, so gating two stored
    results never imports the model stack (torch, transformers)."""
    ev = default_evaluator()
    if ev is None:
        raise ConfigError(f"candidate {spec!r} is not a baseline file or a stored run, and no evaluator is "
                          "available to evaluate it (harness.gate.candidate could not be imported)")
    return ev(spec, metrics, store, baseline)


def run_gate(baseline: Any, candidate: Any, gate_path: str | Path, store: Any = None,
             evaluator: Evaluator | None = None, record: bool = False) -> GateResult:
    """Resolve both sides, compare, and return rows with the exit code.

    `candidate` may be a baseline-format JSON file, a stored run (`RUN[#ARM]`), an outcome set,
    or anything else the evaluator understands (a checkpoint path or model spec): then
    `evaluator(candidate, metrics, store, baseline)` is called, where `metrics` maps each needed
    metric to the baseline's item ids (iterating it gives the metric names) and `baseline` is the
    baseline's outcome set (its metrics carry how they were measured), and must return an outcome set.
    With `record`, a 'gate' run holding the verdicts is added to the store.
    """
    cfg = load_gate_config(gate_path)
    base = load_baseline(baseline, store)
    lacking = [m for m in cfg.needed_metrics() if m not in base.metrics]
    if lacking:  # say so before an expensive evaluation of the candidate
        raise ConfigError(f"baseline {base.source} has no metric {lacking[0]!r} required by {cfg.path} "
                          f"(it has: {', '.join(sorted(base.metrics)) or 'none'})")
    if cfg.suite and base.suite and cfg.suite != base.suite:
        check_suites(cfg, base, base)
    cand = resolve_outcomes(candidate, store, role="candidate")
    if cand is None:
        if evaluator is None:
            raise ConfigError(f"candidate {candidate!r} is not a baseline file or a stored run, and no evaluator "
                              "is available to evaluate it")
        wanted = {m: sorted(base.metrics[m]["items"]) if m in base.metrics else [] for m in cfg.needed_metrics()}
        cand = as_outcome_set(evaluator(str(candidate), wanted, store, base), source=str(candidate))
    rows = compare(base, cand, cfg)
    code = exit_code(rows, cfg)
    if record and store is not None:
        rid = store.new_run("gate", name=cfg.name, config={"baseline": str(baseline), "candidate": str(candidate),
                                                           "gate": cfg.path})
        store.finish_run(rid, meta={"exit_code": code, "rows": [r.as_dict() for r in rows]})
    return GateResult(rows=rows, config=cfg, baseline=base, candidate=cand, exit_code=code)


def gate_command(baseline: str, candidate: str, suite: str | Path, db: str | Path | None = None,
                 markdown: str | Path | None = None, junit: str | Path | None = None, console: Any = None,
                 evaluator: Evaluator | None = None) -> int:
    """What `harness gate` does: run the gate, print the table, write the Markdown and JUnit files,
    and return the exit code (0 pass, 1 regression, 3 cannot decide). HarnessError propagates
    (the CLI prints it as one line, exit 2).
    The store is opened only if the file exists (`--db`, `HARNESS_DB`, or results/harness.db)."""
    from rich.console import Console

    from ..paths import results_db
    from ..store import Store

    console = console or Console()
    dbp = results_db(db)
    store = Store(dbp) if Path(dbp).is_file() else None
    try:
        res = run_gate(baseline, candidate, suite, store=store,
                       evaluator=evaluator if evaluator is not None else lazy_default_evaluator, record=True)
    finally:
        if store is not None:
            store.close()
    print_verdicts(res.rows, res.exit_code, f"harness gate: {res.baseline.source} → {res.candidate.source}", console)
    if markdown:
        Path(markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown).write_text(render_markdown(res.rows, res.baseline.source, res.candidate.source,
                                                  str(suite), res.exit_code))
    if junit:
        render_junit(res.rows, junit)
    return res.exit_code
