"""What a suite run records in `runs.meta`: its manifest, one pydantic schema.

The runners are the only writers (`pipeline.SuiteRunner` for a single-task suite,
`sequential.SequentialRunner` for a suite with stages): they build these models and store
`model_dump(mode="json")`, the whole manifest each time, so a run that stops part-way still holds a
valid one. `read_manifest` is the only reader (`results`, `continual`, the reports), so a field
has one name, one type and one meaning wherever it is used, and no reader guesses a default.

Names used throughout:
- `arm`: the suite arm a point belongs to ('base', 'teacher', 'sft', 'sdft-reverse', ...). How a
  model is prompted for an evaluation (the task's base or teacher prompt) is its *mode*; stored
  evaluations call that column `arm`, which is part of their keys, so it is not renamed there.
- `evals`: {evaluation name: eval key}. An evaluation's name is the task ('tooluse'), its
  validation split `val_name(task)` ('tooluse-val'), 'prior/<benchmark>' or the drift probe's
  task; the store links the same evaluation to the run under `link_label(point, name)`.

Older runs: manifests written before this module have the same field names and validate
unchanged (a sequential run's `cost.train_s` reads as `train_wall_s`; a missing `selection` is
the suite default, 'validation'). A manifest that does not validate fails with one line naming
the run and the field (`ManifestError`).
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from .errors import StoreError
from .paper import PAPER_MODEL

#: `kind` of a sequential (continual-learning) suite run.
SEQUENTIAL = "sequential"


class ManifestError(StoreError):
    """A stored run's manifest does not match the schema (one line: run and field)."""


def val_name(task: str) -> str:
    """The name of a task's validation evaluation in a point's `evals` (and its link label)."""
    return f"{task}-val"


def link_label(point: str, evaluation: str | None = None) -> str:
    """The label linking a point's evaluation to its run in the store (`Store.link`): the point's
    name, plus '#<evaluation name>' where the point has another evaluation of the same task (the
    validation split; every task after every stage in a sequential run), so that `RUN#LABEL`
    (`gate.outcomes.outcomes_from_store`) names one evaluation per task."""
    return point if evaluation is None else f"{point}#{evaluation}"


class _Schema(BaseModel):
    # an unknown key is a writer and a reader disagreeing: fail instead of ignoring it
    model_config = ConfigDict(extra="forbid")


class Cost(_Schema):
    """What training a point cost (None: not trained, or not measured)."""

    train_wall_s: float | None = Field(None, validation_alias=AliasChoices("train_wall_s", "train_s"))
    wall_s: float | None = None       # training including loading and export
    steps: int | None = None
    flops: float | None = None
    tokens_generated: int | float | None = None
    tokens_forwarded: int | float | None = None

    @classmethod
    def from_totals(cls, totals: Mapping[str, Any]) -> "Cost":
        """From `train.loop.train`'s totals (or a cached checkpoint's `harness_train.json`)."""
        return cls(train_wall_s=totals.get("train_s", totals.get("wall_s")), wall_s=totals.get("wall_s"),
                   steps=totals.get("steps"), flops=totals.get("flops"),
                   tokens_generated=totals.get("tokens_generated"), tokens_forwarded=totals.get("tokens_forwarded"))


class Benchmark(_Schema):
    """A prior benchmark as the prior suite scored it."""

    metric: str | None = None
    chance: float | None = None
    in_average: bool = True           # counts toward the prior average


class PointRecord(_Schema):
    """One point of a run: an untrained arm (base, teacher), or one trained (arm, seed, grid
    point[, stage]) with its training key and checkpoint."""

    point: str                        # unique in the run: 'base', 'sft/lr=0.0001/seed=0', 'sft/seed=0/stage=1'
    arm: str
    method: str                       # 'base', 'teacher', 'sft', 'sdft'
    seed: int | None = None
    hparams: dict[str, Any] = {}      # the grid values of this point
    selected: bool = False            # single-task runs: stands for its (arm, seed), `selection.choose`
    train_key: str | None = None      # a sequential stage's chain key
    checkpoint: str | None = None     # the weights every evaluation of the point read
    cost: Cost = Field(default_factory=Cost)
    evals: dict[str, str] = {}        # evaluation name -> eval key
    stage: int | None = None          # sequential runs: the stage index, its name and task
    stage_name: str | None = None
    task: str | None = None


class _Manifest(_Schema):
    suite: str | None = None
    suite_path: str | None = None
    model: str | None = None
    precision: dict[str, Any] | None = None        # `precision.Precision.to_dict`
    demonstrations: dict[str, str] = {}            # where demonstrations came from, per split or task
    points: list[PointRecord] = []
    wall_s: float | None = None                    # set when the run finishes


class SuiteManifest(_Manifest):
    """A single-task suite run (`harness run SUITE`)."""

    kind: Literal["single"] = "single"
    task: str                                      # the new task; its evaluations are named after it
    paper_model: str = PAPER_MODEL
    selection: Literal["validation", "none"] = "validation"   # the suite's `selection.metric`
    skipped: dict[str, list[dict[str, Any]]] = {}  # records `skip_invalid` dropped, per split
    train_precision: dict[str, str] = {}           # per trained point: bf16 autocast and why
    benchmarks: dict[str, Benchmark] = {}          # prior benchmarks, in suite order


class SequentialManifest(_Manifest):
    """A sequential suite run (`stages:`); `fixed` holds the untrained models' evaluations, keyed by
    prompt mode ('base', 'teacher'), then by task."""

    kind: Literal["sequential"] = SEQUENTIAL
    tasks: list[str]
    stage_names: list[str]
    fixed: dict[str, dict[str, str]] = {}


Manifest = SuiteManifest | SequentialManifest


def read_manifest(run: Mapping[str, Any]) -> Manifest:
    """The manifest of a stored suite run (a `Store.get_run` row). Raises `ManifestError` (one line:
    the run and the first field that does not validate)."""
    meta = run["meta"]
    cls = SequentialManifest if isinstance(meta, dict) and meta.get("kind") == SEQUENTIAL else SuiteManifest
    try:
        return cls.model_validate(meta)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise ManifestError(f"run '{run['run_id']}': manifest field '{where}': {err['msg']} "
                            f"({e.error_count()} problem(s); written by an incompatible version?)") from None
