"""Evaluate a model on a registered new task (`harness eval tooluse|science`) or on the prior suite
(`harness eval prior`), as a command does it: every option checked, then one run row in the store
that links the evaluations it made or found cached.

Each is split in two, `prepare_*` (all checks; nothing written) and `.run(progress)` (the store
written, the model loaded only if something must be generated), so a caller can show a progress
display only once the checks have passed; `eval_task` and `eval_prior` do both in one call.

    from harness.commands import eval_task
    res = eval_task("tooluse", model="path/to/model", arms="base,teacher", limit=10)
    res.results["teacher"]["accuracy"], res.run_id
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import HarnessError
from .checks import apply_threads, check_model_loads, check_positive, open_store

# progress(label, total) -> callback(done, total): one per arm, made when the arm starts
ArmProgress = Callable[[str, int], Callable[[int, int], None]]


@dataclass
class TaskEvalResult:
    """What `harness eval <task>` reports: per arm the evaluation summary (`accuracy`, `ci95`,
    `correct`, `n`, the task's diagnostics, `eval_key`, `cached`, ...), and where it is stored."""

    run_id: str
    store_path: str
    task: Any  # tasks.base.Task
    model: str
    data_path: str
    n: int
    max_new_tokens: int
    dtype: str
    precision: Any  # precision.Precision: the resolved dtype and why
    arms: list[str]
    results: dict[str, dict]
    demo_policy: str
    skipped: list = field(default_factory=list)


@dataclass
class TaskEval:
    """A checked `harness eval <task>`: the records, settings and keys it will use. `run` writes."""

    task: Any
    model: str
    arms: list[str]
    split: str
    limit: Optional[int]
    sample: str
    sample_seed: int
    max_new_tokens: int
    dtype: str
    device: str
    backend: str
    teacher_template: str
    demonstrations: Optional[str]
    precision: Any
    loaded: Any  # the task's loaded split (path, records, skipped, demo_policy)
    records: list
    factory: Callable
    model_hash: str
    db: Optional[str]

    def config(self) -> dict:
        """The run row's config: what was asked for (options left at their default are not added, so
        runs from before those options existed read the same)."""
        config = {"model": self.model, "arms": self.arms, "split": self.split, "limit": self.limit,
                  "max_new_tokens": self.max_new_tokens, "dtype": self.dtype, "device": self.device,
                  "backend": self.backend, "teacher_template": self.teacher_template}
        if self.sample != "first":
            config |= {"sample": self.sample, "sample_seed": self.sample_seed}
        if self.demonstrations is not None:
            config["demonstrations"] = self.demonstrations
        return config

    def run(self, progress: ArmProgress | None = None, store=None) -> TaskEvalResult:
        """Write the run row, evaluate each arm (cached evaluations are reused), link them, finish
        the run; a failure past this point leaves the run row 'failed'."""
        from ..evaluate import EvalRequest, evaluate
        from ..generation import GenerationSettings

        store = store if store is not None else open_store(self.db)
        loaded, task = self.loaded, self.task
        run_id = store.new_run(f"eval-{task.name}", config=self.config(),
                               meta={"data_path": loaded.path, "skipped": loaded.skipped, "model_hash": self.model_hash,
                                     "precision": self.precision.to_dict(), "task": task.name,
                                     "demo_policy": loaded.demo_policy})
        settings = GenerationSettings(max_new_tokens=self.max_new_tokens)
        data_hash = task.records_hash(self.records)
        results = {}
        with store.failing_run(run_id):
            for arm in self.arms:
                cb = progress(arm, len(self.records)) if progress else None
                req = EvalRequest(self.records, data_hash, arm, settings, self.teacher_template, self.split,
                                  self.dtype, device=self.device, backend=self.backend, task=task,
                                  demonstrations=self.demonstrations,
                                  batch_size=getattr(self.factory, "batch_size", 8))
                res = evaluate(req, store, self.model_hash, self.model, self.factory, progress=cb)
                store.link(run_id, res["eval_key"], arm)
                results[arm] = res
        store.finish_run(run_id)
        return TaskEvalResult(run_id=run_id, store_path=str(store.path), task=task, model=self.model,
                              data_path=loaded.path, n=len(self.records), max_new_tokens=self.max_new_tokens,
                              dtype=self.dtype, precision=self.precision, arms=list(self.arms), results=results,
                              demo_policy=loaded.demo_policy, skipped=list(loaded.skipped))


def prepare_task_eval(task_name: str, *, model: str = "qwen2.5-coder-0.5b-instruct", arms: str = "base,teacher",
                      split: Optional[str] = None, limit: Optional[int] = None, sample: str = "first",
                      sample_seed: int = 0, max_new_tokens: Optional[int] = None, batch_size: int = 32,
                      dtype: str = "auto", device: str = "cpu", backend: str = "hf", teacher_template: str = "paper",
                      demonstrations: Optional[str] = None, skip_invalid: bool = False,
                      data_dir: Optional[str] = None, db: Optional[str] = None, threads: Optional[int] = None,
                      trust_remote_code: bool = False) -> TaskEval:
    """Check every option of `harness eval <task>` (messages name the command-line option), load and
    subset the split, fingerprint the model; nothing is written and no weights are loaded. `split`
    None is the task's default evaluation split."""
    from ..errors import ConfigError
    from ..evaluate import backend_factory, check_arms, check_backend
    from ..models import check_device, fingerprint
    from ..vllm_backend import cpu_build
    from ..paths import data_dir as resolve_data_dir
    from ..precision import check_choice, resolve_dtype
    from ..tasks.base import teacher_turn
    from ..tasks.registry import get_task

    task = get_task(task_name)
    split = task.default_eval_split if split is None else split
    arm_list = check_arms(arms.split(","))
    dup = next((a for i, a in enumerate(arm_list) if a in arm_list[:i]), None)
    if dup:
        raise HarnessError(f"--arms: arm '{dup}' is listed twice")
    check_positive(limit, "--limit")
    if sample not in ("first", "stratified"):
        raise HarnessError(f"--sample: unknown sample '{sample}' (first, stratified)")
    max_new_tokens = task.default_max_new_tokens if max_new_tokens is None else max_new_tokens
    check_positive(max_new_tokens, "--max-new-tokens")
    check_positive(batch_size, "--batch-size")
    check_choice(dtype, "--dtype")
    if "teacher" in arm_list:
        teacher_turn("", "", teacher_template)  # a bad template fails here, before anything is written
    check_backend(backend)
    if backend == "vllm" and device == "cpu" and not cpu_build():
        device = "cuda"  # a GPU build of vLLM runs on the GPU; the key and the run record say so
    check_device(device)
    prec = resolve_dtype(dtype, device)  # `auto` -> concrete, before any key is computed
    try:
        loaded = task.load_split(split, resolve_data_dir(data_dir), skip_invalid=skip_invalid,
                                 demonstrations=demonstrations)
    except ConfigError as e:
        raise HarnessError(f"--demonstrations: {e}" if demonstrations is not None else str(e)) from None
    factory = backend_factory(backend, model, prec.dtype, device, batch_size, trust_remote_code)
    if limit is not None and limit > len(loaded.records):  # as a suite does: never a silent shortfall
        raise HarnessError(f"--limit {limit}: {loaded.path} holds only {len(loaded.records)} records")
    records = task.subset(loaded.records, limit, sample, sample_seed)
    apply_threads(threads)
    check_model_loads(model, trust_remote_code)
    return TaskEval(task=task, model=model, arms=arm_list, split=split, limit=limit, sample=sample,
                    sample_seed=sample_seed, max_new_tokens=max_new_tokens, dtype=prec.dtype, device=device,
                    backend=backend, teacher_template=teacher_template, demonstrations=demonstrations,
                    precision=prec, loaded=loaded, records=records, factory=factory,
                    model_hash=fingerprint(model),  # no weights loaded unless something must be generated
                    db=db)


def eval_task(task_name: str, *, progress: ArmProgress | None = None, store=None, **options) -> TaskEvalResult:
    """`harness eval <task>` in one call: `prepare_task_eval(task_name, **options).run(progress, store)`."""
    return prepare_task_eval(task_name, **options).run(progress, store)


# ----------------------------------------------------------------------------- prior suite
@dataclass
class PriorEvalResult:
    """What `harness eval prior` reports: per benchmark `metric`, `value`, `stderr`, `n`, `chance`,
    `wall_s`, `cached`, `in_average`; `average` is the paper's prior average over the benchmarks
    present that count toward it, None when none does."""

    run_id: str
    store_path: str
    model: str
    limit: Optional[int]
    results: dict[str, dict]
    precision: Any
    average: Optional[float]


@dataclass
class PriorEval:
    """A checked `harness eval prior`: the weights dtype and model hash its keys use. `run` writes."""

    model: str
    suite: Path
    benchmarks: Optional[str]
    limit: Optional[int]
    batch_size: int
    dtype: str  # the weights dtype (bf16-autocast evaluates fp32 weights, as `harness run` does)
    device: str
    data_dir: Optional[str]
    db: Optional[str]
    precision: Any
    model_hash: str
    backend: str = "hf"

    @property
    def bench_list(self) -> Optional[list[str]]:
        return self.benchmarks.split(",") if self.benchmarks else None

    def run(self, progress: Callable[[str, str, Any], None] | None = None, store=None) -> PriorEvalResult:
        """Write the run row and evaluate the suite (cached by content); `progress(event, benchmark,
        info)` as `prior.evaluate.evaluate_prior` reports it."""
        from ..models import load_model
        from ..prior.evaluate import evaluate_prior, prior_average

        store = store if store is not None else open_store(self.db)
        model, dtype, device = self.model, self.dtype, self.device
        run_id = store.new_run("eval-prior", config={"model": model, "suite": str(self.suite), "limit": self.limit,
                                                     "benchmarks": self.benchmarks, "dtype": dtype,
                                                     "backend": self.backend},
                               meta={"precision": self.precision.to_dict()})
        extra: dict[str, Any] = {}
        if self.backend == "vllm":
            from ..prior import vllm_lm

            extra = {"lm_factory": lambda: vllm_lm.make_vllm_lm(model, dtype, batch_size="auto"),
                     "scorer": vllm_lm.scorer_id()}
        with store.failing_run(run_id):
            res = evaluate_prior(lambda: load_model(model, dtype=dtype, device=device, merge_adapter=True), None,
                                 model_label=model, store=store, suite_path=self.suite, model_hash=self.model_hash,
                                 benchmarks=self.bench_list, limit=self.limit, data_dir=self.data_dir,
                                 batch_size=self.batch_size, progress=progress, run_id=run_id, **extra)
        store.finish_run(run_id)
        counted = any(r.get("in_average", True) and r.get("value") is not None for r in res.values())
        return PriorEvalResult(run_id=run_id, store_path=str(store.path), model=model, limit=self.limit, results=res,
                               precision=self.precision, average=prior_average(res) if counted else None)


def prepare_prior_eval(*, model: str = "qwen2.5-coder-0.5b-instruct", suite: Path = Path("suites/prior.yaml"),
                       benchmarks: Optional[str] = None, limit: Optional[int] = None, batch_size: int = 8,
                       dtype: str = "auto", device: str = "cpu", data_dir: Optional[str] = None,
                       db: Optional[str] = None, threads: Optional[int] = None, backend: str = "hf") -> PriorEval:
    """Check every option of `harness eval prior`, the suite file, its benchmark names and data, and
    that the model loads; nothing is written. `backend` 'vllm' scores through lm-eval's own vLLM model
    (`prior.vllm_lm`), keyed apart from the HF scorer's results."""
    from ..evaluate import check_backend
    from ..hashing import hash_obj
    from ..models import check_device, fingerprint
    from ..precision import check_choice, resolve_dtype
    from ..prior.evaluate import plan_keys

    check_positive(limit, "--limit")
    check_positive(batch_size, "--batch-size")
    apply_threads(threads)
    check_device(device)
    check_choice(dtype, "--dtype")
    check_backend(backend)
    scorer = None
    if backend == "vllm":
        from ..prior.vllm_lm import scorer_id

        scorer = scorer_id()
    prec = resolve_dtype(dtype, device)  # `auto` -> concrete, before the key below
    weights = "float32" if prec.dtype == "bf16-autocast" else prec.dtype  # weights dtype, as `harness run`
    mh = hash_obj([fingerprint(model), weights, "merged-adapter"])  # same recipe as `harness run`
    # suite file, benchmark names and data are checked here, before the store is written to
    plan_keys(mh, suite_path=suite, benchmarks=benchmarks.split(",") if benchmarks else None, limit=limit,
              data_dir=data_dir, **({"scorer": scorer} if scorer else {}))
    check_model_loads(model)
    return PriorEval(model=model, suite=suite, benchmarks=benchmarks, limit=limit, batch_size=batch_size,
                     dtype=weights, device=device, data_dir=data_dir, db=db, precision=prec, model_hash=mh,
                     backend=backend)


def eval_prior(*, progress: Callable[[str, str, Any], None] | None = None, store=None, **options) -> PriorEvalResult:
    """`harness eval prior` in one call: `prepare_prior_eval(**options).run(progress, store)`."""
    return prepare_prior_eval(**options).run(progress, store)
