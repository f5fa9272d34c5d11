"""`harness run SUITE`: the whole train-and-compare loop from one suite file.

    harness run suites/quick.yaml            # run (or resume) everything, then write the report
    harness run suites/quick.yaml --dry-run  # print the plan: what is cached, what will run

For each arm × seed × grid point: train (SFT or SDFT, one shared loop), evaluate on the new task's
(`task.name`: any task in `tasks.registry`) validation split (to pick the best point per arm and seed,
the paper's protocol) and test split, and on the prior-capability suite. `base` and `teacher` are
evaluated without training.

Every artefact is keyed by content — a trained checkpoint by its training config, data and base
weights; an evaluation by the weights, items and settings — so an unchanged suite recomputes
nothing, changing one arm's setting recomputes that arm only, and a killed run resumes where it
stopped (training from its last checkpoint, evaluations from their last committed batch).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import ConfigError
from .drift_probe import TASK as DRIFT_TASK
from .evaluate import EvalRequest, backend_factory, eval_key as task_eval_key, evaluate
from .generation import GenerationSettings
from .manifest import Benchmark, Cost, PointRecord, SuiteManifest, link_label, val_name
from .models import TRAIN_META_NAME, fingerprint, local_fingerprint, not_local_reason
from .paths import data_dir as resolve_data_dir
from .precision import resolve_dtype
from .selection import choose
from .store import Store
from .suite import Suite, arm_configs, load_suite
from .tasks.base import LoadedSplit, Task, load_selection
from .tasks.registry import get_task
from .train.config import TrainConfig


@dataclass
class Point:
    name: str                       # 'base', 'teacher', 'sft/lr=0.0001/seed=0', ...
    arm: str
    method: str
    seed: int | None = None
    hparams: dict = field(default_factory=dict)
    cfg: TrainConfig | None = None
    train_key: str | None = None    # None for base/teacher, and in a plan whose model is not on this machine
    checkpoint: Path | None = None


@dataclass
class Data:
    train: LoadedSplit
    test: LoadedSplit
    validation: LoadedSplit | None


def load_split(task: Task, spec, data_dir: Path, where: str, demonstrations: str | None = None) -> LoadedSplit:
    """One split selection of a suite (`tasks.base.load_selection`); a demonstrations policy the
    task does not take is reported against `task.demonstrations`."""
    try:
        return load_selection(task, spec.split, data_dir, where=where, skip_invalid=spec.skip_invalid,
                              exclude=spec.exclude, limit=spec.limit, sample=spec.sample, seed=spec.seed,
                              demonstrations=demonstrations)
    except ConfigError as e:
        if demonstrations is not None and not str(e).startswith(where):
            raise ConfigError(f"task.demonstrations: {e}") from None
        raise


def load_data(suite: Suite, data_dir: Path) -> Data:
    t = suite.task
    task = get_task(t.name, "task.name")

    def load(spec, where):
        return load_split(task, spec, data_dir, where, t.demonstrations)

    return Data(load(t.train, "task.train"), load(t.test, "task.test"),
                load(t.validation, "task.validation") if t.validation else None)


def build_points(suite: Suite, data: Data, ckpt_root: Path, model_hash: str | None) -> list[Point]:
    """Every point of the suite. `model_hash` is the base weights' fingerprint; None (a plan whose
    model is not on this machine) leaves the trained points' keys and checkpoints unknown."""
    pts = []
    for arm_name, arm in suite.arms.items():
        if arm.method in ("base", "teacher"):
            pts.append(Point(arm_name, arm_name, arm.method))
            continue
        for seed in suite.seeds:
            for hp, cfg in arm_configs(suite, arm_name, seed):
                hp_txt = ",".join(f"{k}={v}" for k, v in sorted(hp.items()))
                name = f"{arm_name}/{hp_txt or 'default'}/seed={seed}"
                key = cfg.key(data.train.data_hash, model_hash) if model_hash is not None else None
                pts.append(Point(name, arm_name, arm.method, seed, hp, cfg, key,
                                 ckpt_root / key if key is not None else None))
    return pts


def _setting_origin(suite: Suite, p: Point, key: str) -> str:
    """The key path where the suite sets training setting `key` for point `p`: its grid, its arm's
    `train` block or the shared one (the precedence of `arm_configs`), or the default."""
    if key in p.hparams:
        return f"arms.{p.arm}.grid.{key}"
    if key in suite.arms[p.arm].train:
        return f"arms.{p.arm}.train.{key}"
    if key in suite.train:
        return f"train.{key}"
    value = getattr(p.cfg, key)
    return f"train.{key} (not set: the default {list(value) if isinstance(value, tuple) else value})"


def _trained(p: Point) -> bool:
    if p.checkpoint is None:  # keys not known yet: nothing can be cached
        return False
    marker = p.checkpoint / "final" / TRAIN_META_NAME
    return marker.is_file() and json.loads(marker.read_text()).get("key") == p.train_key


class SuiteRunner:
    def __init__(self, suite_path: str | Path, db: str | Path | Store, data_dir=None,
                 log: Callable[[str], None] = print, progress_factory=None, overrides: dict | None = None,
                 plan_only: bool = False):
        """Validates the suite and loads its data up front; the store is opened only when
        something is read or written, so bad input leaves no file behind.

        `plan_only` (`--dry-run`, `harness plan`): nothing is installed, converted, downloaded or
        written. The base model is hashed only if its files are on this machine; if not, the
        trained points' keys stay None, every step plans as 'will run', `model_note` says why, and
        `run()` would materialise the model and compute the keys first. Otherwise the model is
        materialised (or downloaded) here, as the keys need its fingerprint."""
        self.suite_path = Path(suite_path)
        self.suite = load_suite(suite_path, overrides)
        if self.suite.stages:
            raise ConfigError(f"{suite_path}: stages: a suite with stages runs through "
                              "harness.sequential.SequentialRunner (`harness run` picks it)")
        # `dtype: auto` becomes concrete here, once, before any key is computed
        self.precision = resolve_dtype(self.suite.dtype, self.suite.device)
        self.suite.dtype = self.precision.dtype
        self._store = db if isinstance(db, Store) else None
        self.db_path = Path(db.path) if isinstance(db, Store) else Path(db)
        self.data_dir = resolve_data_dir(data_dir)
        self.task = get_task(self.suite.task.name, "task.name")
        self.data = load_data(self.suite, self.data_dir)
        self.model_hash = local_fingerprint(self.suite.model) if plan_only else fingerprint(self.suite.model)
        self.model_note = (None if self.model_hash is not None else
                           f"{not_local_reason(self.suite.model)}; keys are computed when the run starts")
        self.points = build_points(self.suite, self.data, self.db_path.parent / "checkpoints", self.model_hash)
        self._plan_fps: dict[str, str | None] = {}
        n_train = len(self.data.train.records)
        for p in self.points:  # found at --dry-run, not after the base model's evaluations have run
            if p.cfg is not None and n_train < p.cfg.batch_size:
                raise ConfigError(f"{self.suite_path}: task.train: {n_train} training records, fewer than one "
                                  f"batch (train.batch_size {p.cfg.batch_size} for arm {p.arm})")
        self.lora_check = self._check_lora_targets()
        if self.suite.prior is not None:  # a metric lm-eval does not declare fails here, not after the benchmark
            from .prior.suite import load_suite as load_prior_suite

            load_prior_suite(self.suite.prior.suite)
        self.log = log
        self.progress_factory = progress_factory
        self.settings = GenerationSettings(max_new_tokens=self.suite.task.max_new_tokens)

    def _check_lora_targets(self) -> str | None:
        """Every trained point's LoRA targets against the model's module names, built from its
        config without weights (`harness.model_config`): a typo fails at --dry-run and before the
        run row, not when that point starts training after the base evaluations. Returns a note
        for the plan: checked, or deferred (to training) when the config is not on this machine."""
        from .model_config import lora_target_problem, module_names_from_config

        lora = [p for p in self.points if p.cfg is not None and p.cfg.lora]
        if not lora:
            return None
        modules = module_names_from_config(self.suite.model)
        if modules is None:
            return (f"LoRA targets: check deferred to training ({self.suite.model}: no config on this machine "
                    "yet; `harness models pull` materialises an alias)")
        for p in lora:
            problem = lora_target_problem(p.cfg.lora_targets, modules)
            if problem:
                raise ConfigError(f"{self.suite_path}: {_setting_origin(self.suite, p, 'lora_targets')}: {problem}")
        return f"LoRA targets: checked against the module names of {self.suite.model}"

    def ensure_keys(self) -> None:
        """Key the trained points if a plan-only runner could not (the model was not on this machine):
        materialises or downloads the model, as a run must."""
        if self.model_hash is None:
            self.model_hash = fingerprint(self.suite.model)
            self.points = build_points(self.suite, self.data, self.db_path.parent / "checkpoints", self.model_hash)
            self.model_note = None
            self._plan_fps.clear()

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.db_path)
        return self._store

    # ------------------------------------------------------------------ model specs
    def spec_of(self, p: Point) -> str:
        return self.suite.model if p.cfg is None else str(p.checkpoint / "final")

    def eval_name(self, split: str) -> str:
        """The name of a new-task evaluation in a point's `evals` (`manifest.val_name` for validation)."""
        return self.task.name if split == "test" else val_name(self.task.name)

    def task_request(self, p: Point, split: str) -> EvalRequest:
        d = self.data.test if split == "test" else self.data.validation
        mode = "teacher" if p.method == "teacher" else "base"  # the prompt; the stored evaluation's `arm`
        return EvalRequest(d.records, d.data_hash, mode, self.settings, self.suite.task.teacher_template,
                           split=getattr(self.suite.task, split).split, dtype=self.suite.dtype,
                           device=self.suite.device, task=self.task, demonstrations=self.suite.task.demonstrations,
                           backend=self.suite.task.backend, batch_size=self.suite.task.batch_size)

    # ------------------------------------------------------------------ plan
    def _local_fp(self, spec: str) -> str | None:
        """`local_fingerprint` once per spec: a plan never materialises, downloads or writes."""
        if spec not in self._plan_fps:
            self._plan_fps[spec] = self.model_hash if spec == self.suite.model else local_fingerprint(spec)
        return self._plan_fps[spec]

    def plan(self) -> list[dict]:
        """What would run: one row per step, with whether it is cached. Reads only what is on this
        machine (see `plan_only`): a model that is not there plans every step as 'will run'."""
        rows = []
        for p in self.points:
            if p.cfg is not None:
                rows.append({"point": p.name, "step": f"train {p.method}",
                             "cached": _trained(p), "key": p.train_key})
            trained_or_fixed = p.cfg is None or _trained(p)
            mh = self._local_fp(self.spec_of(p)) if trained_or_fixed else None
            splits = ["test"] + (["validation"] if self.data.validation is not None and p.cfg is not None else [])
            for split in splits:
                cached = mh is not None and self.store.get_eval(task_eval_key(self.task_request(p, split), mh)) is not None
                rows.append({"point": p.name, "step": f"{self.task.name} {split}", "cached": cached})
            if self.suite.prior is not None and p.method != "teacher":
                rows.append({"point": p.name, "step": "prior suite",
                             "cached": mh is not None and self._prior_cached(p, mh)})
            if self.suite.drift_probe is not None and p.cfg is not None:
                rows.append({"point": p.name, "step": "drift probe",
                             "cached": mh is not None and self.store.get_eval(self._drift_key(p, mh)) is not None})
        return rows

    def prior_model_hash(self, spec: str, weights_fp: str | None = None) -> str:
        """Weights fingerprint (`weights_fp` when the caller has it, e.g. a plan's local one) plus
        how they are loaded (dtype, adapters merged) — all of which change lm-eval's numbers."""
        from .hashing import hash_obj

        return hash_obj([weights_fp or fingerprint(spec), self.suite.dtype, "merged-adapter"])

    def _prior_cached(self, p: Point, model_hash: str) -> bool:
        from .prior.evaluate import plan_keys

        keys = plan_keys(self.prior_model_hash(self.spec_of(p), model_hash), **self._prior_kwargs())
        return all(self.store.get_eval(k) is not None for k in keys.values())

    def _prior_kwargs(self) -> dict:
        pr = self.suite.prior
        return {"suite_path": pr.suite, "benchmarks": pr.benchmarks, "limit": pr.limit, "data_dir": self.data_dir}

    # ------------------------------------------------------------------ steps
    def train_point(self, p: Point) -> dict:
        from .train.loop import train

        if _trained(p):
            meta = json.loads((p.checkpoint / "final" / TRAIN_META_NAME).read_text())
            return meta["totals"] | {"steps": meta["steps"], "cached": True}
        self.log(f"train {p.name} → {p.checkpoint}")
        cb = self._bar(f"train {p.name}")
        res = train(p.cfg, self.data.train.records, p.checkpoint, self.data.train.data_hash, store=self.store,
                    progress=(lambda s, t, row: cb(s, t)) if cb else None, data_source=self.data.train.path,
                    skipped=self.data.train.skipped)
        return res.totals | {"steps": res.steps, "cached": False}

    def eval_task(self, p: Point, split: str, run_id: str) -> dict:
        spec = self.spec_of(p)
        mh = fingerprint(spec)
        req = self.task_request(p, split)
        factory = backend_factory(self.suite.task.backend, spec, self.suite.dtype, self.suite.device,
                                  self.suite.task.batch_size)
        cb = self._bar(f"{self.task.name} {split} {p.name}")
        res = evaluate(req, self.store, mh, spec, factory, progress=cb)
        name = None if split == "test" else self.eval_name(split)  # the test evaluation is linked as the point
        self.store.link(run_id, res["eval_key"], link_label(p.name, name))
        return res

    def eval_prior(self, p: Point, run_id: str) -> dict:
        from .prior.evaluate import evaluate_prior

        spec = self.spec_of(p)
        mh = self.prior_model_hash(spec)
        pr = self.suite.prior

        def load():
            from .models import load_model

            dtype = "float32" if self.suite.dtype == "bf16-autocast" else self.suite.dtype
            return load_model(spec, dtype=dtype, device=self.suite.device, merge_adapter=True)

        return evaluate_prior(load, None, model_label=p.name, store=self.store, model_hash=mh,
                              batch_size=pr.batch_size, run_id=run_id, **self._prior_kwargs())

    def _drift_key(self, p: Point, model_hash: str) -> str:
        """The drift probe's key for a trained point whose weights hash to `model_hash` (for plans:
        the base model's hash is then known too, as the point's key needed it)."""
        from .drift_probe import probe_items, probe_key

        dp = self.suite.drift_probe
        return probe_key(self.prior_model_hash(self.suite.model, self.model_hash),
                         self.prior_model_hash(self.spec_of(p), model_hash),
                         probe_items(self.data_dir, dp.n_per_source), dp.new_tokens)

    def eval_drift(self, p: Point, run_id: str) -> dict:
        """KL(base ‖ point) per token on the general-text probe (`harness.drift_probe`), both models
        loaded as the prior suite loads them (suite dtype, adapters merged)."""
        from .drift_probe import evaluate_drift
        from .models import load_model

        dp = self.suite.drift_probe
        dtype = "float32" if self.suite.dtype == "bf16-autocast" else self.suite.dtype
        spec = self.spec_of(p)

        def loader(s):
            return lambda: load_model(s, dtype=dtype, device=self.suite.device, merge_adapter=True)

        self.log(f"drift probe {p.name}")
        return evaluate_drift(loader(self.suite.model), loader(spec), arm_label=p.name, store=self.store,
                              ref_hash=self.prior_model_hash(self.suite.model), arm_hash=self.prior_model_hash(spec),
                              data_dir=self.data_dir, n_per_source=dp.n_per_source, new_tokens=dp.new_tokens,
                              batch_size=dp.batch_size, run_id=run_id, model_desc=spec)

    def _bar(self, label):
        return self.progress_factory(label) if self.progress_factory else None

    # ------------------------------------------------------------------ main
    def run(self) -> str:
        import torch

        from .models import check_device

        check_device(self.suite.device)  # before the run row: a GPU suite on a CPU box fails in one line
        self.ensure_keys()
        if self.suite.threads:
            torch.set_num_threads(self.suite.threads)
        t0 = time.perf_counter()
        suite_dict = json.loads(self.suite.model_dump_json())
        manifest = SuiteManifest(suite=self.suite.name, suite_path=str(self.suite_path), model=self.suite.model,
                                 task=self.task.name, selection=self.suite.selection.metric,
                                 skipped=self.skipped_records(), demonstrations=self._demo_policies(),
                                 **self.precision_meta())
        run_id = self.store.new_run("suite", name=self.suite.name, config=suite_dict,
                                    meta=manifest.model_dump(mode="json"))
        self.log(f"dtype {self.precision.describe()}")
        with self.store.failing_run(run_id):
            self._run_points(run_id, manifest)
            self._select(manifest.points)
            manifest.wall_s = time.perf_counter() - t0
            self.store.finish_run(run_id, meta=manifest.model_dump(mode="json"))
        return run_id

    def precision_meta(self) -> dict:
        """How the suite's dtype (and each trained arm's bf16 autocast) was chosen, for the run record:
        summaries and reports show it, because numbers differ across dtypes."""
        train = {p.name: f"{'on' if p.cfg.bf16 else 'off'}, {p.cfg.precision.describe()}" for p in self.points
                 if p.cfg is not None and p.cfg.precision is not None}
        return {"precision": self.precision.to_dict(), "train_precision": train}

    def _demo_policies(self) -> dict[str, str]:
        """Where each split's demonstrations came from (e.g. science's 'answer-only'), for every report."""
        splits = {"train": self.data.train, "test": self.data.test, "validation": self.data.validation}
        return {name: d.demo_policy for name, d in splits.items() if d is not None}

    def skipped_records(self) -> dict[str, list[dict]]:
        """Records that `skip_invalid: true` dropped, per split (file, record, problem): stored in
        the run's metadata so no skip is silent."""
        splits = {"train": self.data.train, "test": self.data.test, "validation": self.data.validation}
        return {name: [{"file": d.path} | s for s in d.skipped] for name, d in splits.items() if d and d.skipped}

    def _run_points(self, run_id: str, manifest: SuiteManifest) -> None:
        """Train and evaluate every point in order, storing the manifest after each point."""
        for p in self.points:
            rec = PointRecord(point=p.name, arm=p.arm, method=p.method, seed=p.seed, hparams=p.hparams,
                              selected=p.cfg is None, train_key=p.train_key,
                              checkpoint=str(p.checkpoint / "final") if p.checkpoint else None)
            if p.cfg is not None:
                rec.cost = Cost.from_totals(self.train_point(p))
                if self.data.validation is not None:
                    rec.evals[self.eval_name("validation")] = self.eval_task(p, "validation", run_id)["eval_key"]
            rec.evals[self.eval_name("test")] = self.eval_task(p, "test", run_id)["eval_key"]
            if self.suite.prior is not None and p.method != "teacher":
                for bench, r in self.eval_prior(p, run_id).items():
                    rec.evals[f"prior/{bench}"] = r["eval_key"]
                    manifest.benchmarks[bench] = Benchmark(metric=r["metric"], chance=r["chance"],
                                                           in_average=r.get("in_average", True))
            if self.suite.drift_probe is not None and p.cfg is not None:
                rec.evals[DRIFT_TASK] = self.eval_drift(p, run_id)["eval_key"]
            manifest.points.append(rec)
            self.store.update_run_meta(run_id, **manifest.model_dump(mode="json"))

    def _select(self, points: list[PointRecord]) -> None:
        """Mark the point that stands for each trained (arm, seed) (`selection.choose`, on the
        new task's validation accuracy); `results` notes an arm left unselected instead of
        summarising it."""
        groups: dict[tuple, list[PointRecord]] = {}
        for e in points:
            if e.train_key:
                groups.setdefault((e.arm, e.seed), []).append(e)
        val = self.eval_name("validation")
        by_val = self.suite.selection.metric == "validation"
        for group in groups.values():
            # scores are looked up only where they can decide (several points, selecting by validation)
            scores = [self.store.get_eval(e.evals[val])["summary"]["accuracy"]
                      if by_val and len(group) > 1 and val in e.evals else None for e in group]
            best = choose(scores, by_val)
            for i, e in enumerate(group):
                e.selected = i == best
