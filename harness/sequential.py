"""`harness run` for a suite with `stages:`: continual learning, one task after another.

    harness run suites/sequential-quick.yaml            # tool use, then science; SFT and SDFT
    harness run suites/sequential-quick.yaml --dry-run  # the plan: what is cached, what will run

For each trained arm (SFT, SDFT) and seed, stage j trains its task starting from stage j-1's
weights (stage 0 from the base model), with the arm's shared settings plus the stage's
`train_overrides`. After every stage, every task of the sequence is evaluated on its test split
(the columns of the accuracy matrix, `harness.continual`); the base model is evaluated once on
each (the column "before training"), the teacher too when the suite lists it, and the prior suite
after every stage when the suite asks for it.

Keys chain (`stages.stage_chain_keys`): stage j's checkpoint key is the hash of stage j-1's key
and stage j's own training key (its settings and exactly the records it trains on), so changing
stage 2 never retrains stage 1, and changing stage 1 retrains everything after it. Each stage
exports a merged model folder, which the next stage trains from and every evaluation reads; an
evaluation is keyed by the content of those weights like any other, so a killed run resumes
where it stopped and a finished one recomputes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .continual import RUN_KIND as KIND, outcomes_from_run as outcomes  # noqa: F401  (re-exported)
from .errors import ConfigError
from .evaluate import EvalRequest, eval_key as task_eval_key, evaluate, hf_backend_factory
from .generation import GenerationSettings
from .manifest import Cost, PointRecord, SequentialManifest, link_label
from .models import TRAIN_META_NAME, fingerprint, local_fingerprint, not_local_reason
from .paths import data_dir as resolve_data_dir
from .precision import resolve_dtype
from .stages import stage_chain_keys, stage_config
from .store import Store
from .suite import Suite, load_suite
from .tasks.base import LoadedSplit, Task
from .tasks.registry import get_task
from .train.config import TrainConfig

STAGE_MARKER = "harness_stage.json"  # written after a stage's training and export: its chain key


@dataclass
class StageData:
    name: str
    task: Task
    train: LoadedSplit
    test: LoadedSplit
    settings: GenerationSettings
    batch_size: int
    teacher_template: str
    demonstrations: str | None
    test_split: str


@dataclass
class StagePoint:
    """One trained stage of one (arm, seed) chain. `key` and `checkpoint` are None in a plan whose
    base model is not on this machine (the chain keys start from its fingerprint)."""

    arm: str
    method: str
    seed: int
    stage: int
    cfg: TrainConfig
    key: str | None
    checkpoint: Path | None
    evals: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.arm}/seed={self.seed}/stage={self.stage}"

    @property
    def model_dir(self) -> Path:
        """The merged model this stage exports: the next stage's start and every evaluation's model."""
        return self.checkpoint / "merged"

    def trained(self) -> bool:
        if self.checkpoint is None:
            return False
        marker = self.checkpoint / STAGE_MARKER
        try:
            return (json.loads(marker.read_text()).get("key") == self.key
                    and (self.model_dir / TRAIN_META_NAME).is_file())
        except (OSError, json.JSONDecodeError):
            return False


def is_sequential(path: str | Path) -> bool:
    """Whether a suite file declares `stages:` (read without validating the rest)."""
    from .suite import read_mapping

    return "stages" in read_mapping(path)


class SequentialRunner:
    """Validates the suite and loads every stage's data up front; the store is opened only when
    something is read or written, so bad input leaves no file behind.

    `plan_only` (`--dry-run`): nothing is installed, converted, downloaded or written. The base
    model is hashed only if its files are on this machine; if not, the chain keys stay None, every
    step plans as 'will run', `model_note` says why, and `run()` would materialise the model and
    compute the keys first. Otherwise the model is materialised (or downloaded) here."""

    def __init__(self, suite_path: str | Path, db: str | Path | Store, data_dir=None,
                 log: Callable[[str], None] = print, progress_factory=None, overrides: dict | None = None,
                 plan_only: bool = False):
        self.suite_path = Path(suite_path)
        self.suite: Suite = load_suite(suite_path, overrides)
        if not self.suite.stages:
            raise ConfigError(f"{suite_path}: stages: a sequential suite needs at least one stage")
        self.precision = resolve_dtype(self.suite.dtype, self.suite.device)
        self.suite.dtype = self.precision.dtype
        self._store = db if isinstance(db, Store) else None
        self.db_path = Path(db.path) if isinstance(db, Store) else Path(db)
        self.data_dir = resolve_data_dir(data_dir)
        self.log, self.progress_factory = log, progress_factory
        self.stages = [self._load_stage(j) for j in range(len(self.suite.stages))]
        self.base_hash = local_fingerprint(self.suite.model) if plan_only else fingerprint(self.suite.model)
        self.model_note = (None if self.base_hash is not None else
                           f"{not_local_reason(self.suite.model)}; keys are computed when the run starts")
        self.points = self._build_chains(self.db_path.parent / "checkpoints")

    # ------------------------------------------------------------------ set-up
    def _load_stage(self, j: int) -> StageData:
        from .pipeline import load_split

        st = self.suite.stages[j]
        task = get_task(st.task, f"stages[{j}].task")
        where = f"stages[{j}]"
        train = load_split(task, st.train, self.data_dir, f"{where}.train", st.demonstrations)
        test = load_split(task, st.test, self.data_dir, f"{where}.test", st.demonstrations)
        return StageData(st.name, task, train, test, GenerationSettings(max_new_tokens=st.max_tokens()),
                         st.batch_size, st.teacher_template, st.demonstrations, st.test.split)

    def _build_chains(self, ckpt_root: Path) -> list[StagePoint]:
        """Every (arm, seed) chain of stages, keyed from `self.base_hash` (None: keys unknown, and
        every stage's `cfg.model` stays the base model until the run keys them)."""
        suite = self.suite
        points = []
        for arm_name, arm in suite.arms.items():
            if arm.method not in ("sft", "sdft"):
                continue
            if arm.grid:
                raise ConfigError(f"{self.suite_path}: arms.{arm_name}.grid: a sequential suite trains one point per "
                                  "arm and stage (no selection between stages)")
            for seed in suite.seeds:
                own, cfgs = [], []
                for j, (st, data) in enumerate(zip(suite.stages, self.stages)):
                    shared = (dict(suite.train) | dict(arm.train)
                              | {"method": arm.method, "model": suite.model, "seed": seed, "merge": True})
                    cfg = stage_config(shared, st, j)   # validated by load_suite already
                    if len(data.train.records) < cfg.batch_size:
                        raise ConfigError(f"{self.suite_path}: stages[{j}].train: {len(data.train.records)} training "
                                          f"records, fewer than one batch (train.batch_size {cfg.batch_size})")
                    own.append(cfg.key(data.train.data_hash, ""))
                    cfgs.append(cfg)
                if self.base_hash is None:
                    points += [StagePoint(arm_name, arm.method, seed, j, cfg, None, None) for j, cfg in enumerate(cfgs)]
                    continue
                prev_dir = None
                for j, (cfg, key) in enumerate(zip(cfgs, stage_chain_keys(self.base_hash, own))):
                    if prev_dir is not None:  # trains from the previous stage's merged weights
                        cfg = dataclasses.replace(cfg, model=str(prev_dir))
                    p = StagePoint(arm_name, arm.method, seed, j, cfg, key, ckpt_root / key)
                    points.append(p)
                    prev_dir = p.model_dir
        return points

    def ensure_keys(self) -> None:
        """Key the chains if a plan-only runner could not (the model was not on this machine):
        materialises or downloads the model, as a run must."""
        if self.base_hash is None:
            self.base_hash = fingerprint(self.suite.model)
            self.points = self._build_chains(self.db_path.parent / "checkpoints")
            self.model_note = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.db_path)
        return self._store

    @property
    def decode_width(self) -> int:
        """Rows the one shared backend decodes together: the widest stage's batch size."""
        return max(d.batch_size for d in self.stages)

    def _request(self, data: StageData, mode: str = "base") -> EvalRequest:
        """`mode`: the prompt ('base' or 'teacher'), stored as the evaluation's `arm`."""
        return EvalRequest(data.test.records, data.test.data_hash, mode, data.settings, data.teacher_template,
                           split=data.test_split, dtype=self.suite.dtype, device=self.suite.device, task=data.task,
                           demonstrations=data.demonstrations, batch_size=self.decode_width)

    def _fixed_modes(self) -> list[str]:
        """The untrained models' prompt modes the suite lists (its base and teacher arms)."""
        return [a.method for a in self.suite.arms.values() if a.method in ("base", "teacher")] or ["base"]

    # ------------------------------------------------------------------ plan
    def plan(self) -> list[dict]:
        """What would run, one row per step, with whether it is cached; reads only what is on this
        machine (see `plan_only`)."""
        rows = []
        base_hash = self.base_hash
        for mode in dict.fromkeys(["base"] + self._fixed_modes()):
            for data in self.stages:
                cached = (base_hash is not None
                          and self.store.get_eval(task_eval_key(self._request(data, mode), base_hash)) is not None)
                rows.append({"point": mode, "step": f"{data.task.name} test", "cached": cached})
        for p in self.points:
            trained = p.trained()
            rows.append({"point": p.name, "step": f"train {p.method} on {self.stages[p.stage].name}",
                         "cached": trained, "key": p.key})
            mh = local_fingerprint(str(p.model_dir)) if trained else None
            for data in self.stages:
                cached = mh is not None and self.store.get_eval(task_eval_key(self._request(data), mh)) is not None
                rows.append({"point": p.name, "step": f"{data.task.name} test", "cached": cached})
        return rows

    # ------------------------------------------------------------------ steps
    def _bar(self, label):
        return self.progress_factory(label) if self.progress_factory else None

    def train_stage(self, p: StagePoint) -> dict:
        from .train.loop import train

        if p.trained():
            meta = json.loads((p.model_dir / TRAIN_META_NAME).read_text())
            return meta["totals"] | {"steps": meta["steps"], "cached": True}
        data = self.stages[p.stage]
        self.log(f"train {p.name} ({data.name}) → {p.checkpoint}")
        cb = self._bar(f"train {p.name}")
        res = train(p.cfg, data.train.records, p.checkpoint, data.train.data_hash, store=self.store,
                    progress=(lambda s, t, row: cb(s, t)) if cb else None, data_source=data.train.path,
                    skipped=data.train.skipped)
        (p.checkpoint / STAGE_MARKER).write_text(json.dumps({"key": p.key, "stage": p.stage, "arm": p.arm,
                                                             "seed": p.seed, "train_key": res.train_key}))
        return res.totals | {"steps": res.steps, "cached": False}

    def eval_all_tasks(self, spec: str, label: str, run_id: str, mode: str = "base") -> dict[str, str]:
        """Every stage's task on one model (prompted in `mode`), one lazily loaded backend shared by
        all of them; {task: eval key}."""
        mh = fingerprint(spec)
        factory = hf_backend_factory(spec, self.suite.dtype, self.suite.device, self.decode_width)
        out = {}
        for data in self.stages:
            res = evaluate(self._request(data, mode), self.store, mh, spec, factory,
                           progress=self._bar(f"{data.task.name} {label}"))
            self.store.link(run_id, res["eval_key"], link_label(label, data.task.name))
            out[data.task.name] = res["eval_key"]
        return out

    def eval_prior(self, spec: str, label: str, run_id: str) -> dict[str, str]:
        from .hashing import hash_obj
        from .models import load_model
        from .prior.evaluate import evaluate_prior

        pr = self.suite.prior
        dtype = "float32" if self.suite.dtype == "bf16-autocast" else self.suite.dtype
        mh = hash_obj([fingerprint(spec), self.suite.dtype, "merged-adapter"])
        res = evaluate_prior(lambda: load_model(spec, dtype=dtype, device=self.suite.device, merge_adapter=True),
                             None, model_label=label, store=self.store, model_hash=mh, batch_size=pr.batch_size,
                             run_id=run_id, suite_path=pr.suite, benchmarks=pr.benchmarks, limit=pr.limit,
                             data_dir=self.data_dir)
        return {f"prior/{b}": r["eval_key"] for b, r in res.items()}

    # ------------------------------------------------------------------ main
    def run(self) -> str:
        import torch

        from .models import check_device

        check_device(self.suite.device)
        self.ensure_keys()
        if self.suite.threads:
            torch.set_num_threads(self.suite.threads)
        t0 = time.perf_counter()
        manifest = SequentialManifest(suite=self.suite.name, suite_path=str(self.suite_path), model=self.suite.model,
                                      precision=self.precision.to_dict(), tasks=[d.task.name for d in self.stages],
                                      stage_names=[d.name for d in self.stages],
                                      demonstrations={d.task.name: d.train.demo_policy for d in self.stages})
        run_id = self.store.new_run("suite", name=self.suite.name, config=json.loads(self.suite.model_dump_json()),
                                    meta=manifest.model_dump(mode="json"))
        self.log(f"dtype {self.precision.describe()}")

        def save():
            self.store.update_run_meta(run_id, **manifest.model_dump(mode="json"))

        with self.store.failing_run(run_id):
            for mode in dict.fromkeys(["base"] + self._fixed_modes()):
                evals = self.eval_all_tasks(self.suite.model, mode, run_id, mode=mode)
                if mode == "base" and self.suite.prior is not None:
                    evals |= self.eval_prior(self.suite.model, "base", run_id)
                manifest.fixed[mode] = evals
                save()
            for p in self.points:
                totals = self.train_stage(p)
                spec = str(p.model_dir)
                p.evals = self.eval_all_tasks(spec, p.name, run_id)
                if self.suite.prior is not None:
                    p.evals |= self.eval_prior(spec, p.name, run_id)
                data = self.stages[p.stage]
                manifest.points.append(PointRecord(point=p.name, arm=p.arm, method=p.method, seed=p.seed,
                                                   stage=p.stage, stage_name=data.name, task=data.task.name,
                                                   train_key=p.key, checkpoint=spec, evals=p.evals,
                                                   cost=Cost.from_totals(totals)))
                save()
            manifest.wall_s = time.perf_counter() - t0
            self.store.finish_run(run_id, meta=manifest.model_dump(mode="json"))
        return run_id
