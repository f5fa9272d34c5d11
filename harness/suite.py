"""Suite files: one YAML that reads like the experiment it runs, validated up front.

A typo fails in the first second with the file and the key path (`arms.sdft.train.lr`), not after
an hour of training; the schema and its one-line errors come from `harness.config_schema`, as for
every file a user writes. See `suites/quick.yaml` for an annotated example.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .config_schema import Strict, config_error, unknown_key
from .errors import ConfigError, read_text
from .train.config import TrainConfig, TrainSettings

BUILTIN_ARMS = {"base", "teacher", "sft", "sdft"}


class StrictLoader(yaml.SafeLoader):
    """The safe loader, stricter where YAML surprises users: a key given twice is an error (PyYAML
    keeps the last one silently), aliases are refused (nothing here needs them, and nested
    aliases expand exponentially, the "billion laughs"), and `1e-4` is a float as in YAML 1.2
    (YAML 1.1 needs a dot, `1.0e-4`, and reads `lr: 1e-4` as a string)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(None, None, f"alias *{event.anchor} is not allowed",
                                                    event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if dup:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_mapping(path: str | Path) -> dict:
    """Read a YAML or JSON mapping (UTF-8) with one-line errors naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    text = read_text(p, "config file")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys(p)) if p.suffix == ".json" \
            else yaml.load(text, Loader=StrictLoader)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else getattr(e, "lineno", None)
        problem = getattr(e, "problem", None) or getattr(e, "msg", None)
        raise ConfigError(f"{p}: not valid YAML/JSON" + (f" (line {line})" if line is not None else "")
                          + (f": {problem}" if problem else "")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def _no_duplicate_keys(path: Path):
    def hook(pairs):
        keys = [k for k, _ in pairs]
        dups = sorted({k for k in keys if keys.count(k) > 1})
        if dups:
            raise ConfigError(f"{path}: duplicate key '{dups[0]}'")
        return dict(pairs)
    return hook


class SplitSpec(Strict):
    split: str                                  # the task's split name (paper68, eval507, ...) or file path
    limit: int | None = Field(None, gt=0)
    sample: Literal["first", "stratified"] = "first"  # which `limit` items: file order, or spread across the task's strata
    seed: int = 0                               # draws the stratified sample
    skip_invalid: bool = False
    exclude: str | None = None                  # drop items that also appear in this split (by item id)


class TaskSpec(Strict):
    """The new task: any task in `tasks.registry` (its splits, prompts and scorer)."""
    name: str = "tooluse"
    train: SplitSpec
    test: SplitSpec
    validation: SplitSpec | None = None
    max_new_tokens: int | None = Field(None, gt=0)  # default: the task's own budget (tool use 1024, science 2048)
    teacher_template: str = "paper"
    batch_size: int = Field(32, gt=0)           # rows decoded together (HF backend; freed rows are refilled)
    demonstrations: str | None = None           # the task's demonstration policy or file (science: answer-only, ...)
    backend: Literal["hf", "vllm"] = "hf"        # generation: transformers, or a vLLM engine (adapters as LoRA)

    @field_validator("backend")
    @classmethod
    def _installed(cls, v):
        if v == "vllm":
            from .errors import HarnessError
            from .evaluate import check_backend

            try:
                check_backend(v)
            except HarnessError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("name")
    @classmethod
    def _known(cls, v):
        from .tasks.registry import get_task

        try:
            get_task(v)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _default_budget(self):
        if self.max_new_tokens is None:
            from .tasks.registry import get_task

            self.max_new_tokens = get_task(self.name).default_max_new_tokens
        return self


class ArmSpec(Strict):
    method: Literal["base", "teacher", "sft", "sdft"] | None = None  # default: the arm's own name
    train: dict[str, Any] = {}                  # TrainConfig overrides for this arm
    grid: dict[str, list[Any]] = {}             # cartesian sweep over TrainConfig fields

    @field_validator("grid")
    @classmethod
    def _grid_nonempty(cls, v):
        for k, vals in v.items():
            if not isinstance(vals, list) or not vals:
                raise ValueError(f"grid '{k}' must be a non-empty list")
        return v


class PriorSpec(Strict):
    suite: str = "suites/prior.yaml"
    benchmarks: list[str] | None = None
    limit: int | None = Field(None, gt=0)
    batch_size: int = Field(8, gt=0)


class DriftProbeSpec(Strict):
    """KL(base ‖ arm) per token on fixed general text (`harness.drift_probe`), for every trained point."""
    n_per_source: int = Field(32, gt=0)         # prompts from each of GSM8K and ARC-Challenge
    new_tokens: int = Field(48, gt=0)           # length of the base model's greedy continuation scored
    batch_size: int = Field(8, gt=0)


class ClaimsSpec(Strict):
    """Equivalence margins of the claim check, per claim id (`claims.DEFAULT_MARGINS`: 'b', 'c',
    'c-mc', 'c-drift'): a claim whose 95% interval lies within ±margin is reported as equivalent
    instead of inconclusive."""
    margins: dict[str, float] = {}

    @field_validator("margins")
    @classmethod
    def _positive(cls, v):
        from .claims import DEFAULT_MARGINS

        for k, m in v.items():
            if k not in DEFAULT_MARGINS:
                raise ValueError(f"unknown claim id '{k}' (claims with a margin: {', '.join(DEFAULT_MARGINS)})")
            if not m > 0:
                raise ValueError(f"margin for '{k}' must be positive")
        return v


class SelectionSpec(Strict):
    metric: Literal["validation", "none"] = "validation"


class Suite(Strict):
    name: str
    description: str = ""
    model: str
    device: str = "cpu"
    # auto: bfloat16 where a measured probe shows native bf16 (or on CUDA), else float32 (harness.precision);
    # resolved to the concrete dtype before any key is computed
    dtype: Literal["auto", "float32", "bfloat16", "bf16-autocast", "float16"] = "auto"
    threads: int | None = Field(None, gt=0)
    task: TaskSpec | None = None                # one new task ...
    stages: list[Any] | None = None             # ... or several in sequence (harness.stages; validated there)
    arms: dict[str, ArmSpec]
    seeds: list[int] = [0]
    train: dict[str, Any] = {}                  # TrainConfig defaults shared by every trained arm
    selection: SelectionSpec = SelectionSpec()
    prior: PriorSpec | None = None
    drift_probe: DriftProbeSpec | None = None
    claims: ClaimsSpec = ClaimsSpec()

    @model_validator(mode="after")
    def _check(self):
        if not self.arms:
            raise ValueError("arms: at least one arm is required")
        if not self.seeds:
            raise ValueError("seeds: at least one seed is required")
        if self.task is None and self.stages is None:
            raise ValueError("task: required (or stages: for tasks learnt in sequence)")
        if self.task is not None and self.stages is not None:
            raise ValueError("stages: a suite has one new task (task:) or a sequence (stages:), not both")
        for name, arm in self.arms.items():
            method = arm.method or name
            if method not in BUILTIN_ARMS:
                raise ValueError(f"arms.{name}: unknown arm '{name}' — name a built-in arm (base, teacher, sft, "
                                 "sdft) or set 'method' for a named variant")
            arm.method = method
            if method in ("base", "teacher") and (arm.train or arm.grid):
                raise ValueError(f"arms.{name}: arm '{method}' is not trained; remove train/grid")
        trained = [a for a in self.arms.values() if a.method in ("sft", "sdft")]
        if (trained and self.task is not None and self.selection.metric == "validation"
                and self.task.validation is None):
            if any(len(grid_points(a.grid)) > 1 for a in trained):
                raise ValueError("task.validation: a grid needs a validation split to choose the best point "
                                 "(or set selection.metric: none)")
        return self


def grid_points(grid: dict[str, list]) -> list[dict]:
    keys = sorted(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))] or [{}]


def arm_configs(suite: Suite, arm_name: str, seed: int) -> list[tuple[dict, TrainConfig]]:
    """Every (hparams, TrainConfig) point of a trained arm for one seed."""
    arm = suite.arms[arm_name]
    out = []
    for point in grid_points(arm.grid):
        d = dict(suite.train) | dict(arm.train) | point | {"method": arm.method, "model": suite.model, "seed": seed,
                                                           "task": suite.task.name}
        # an error names the block the bad key was written in: the shared train, the arm's, or its grid
        origin = ({k: "train" for k in suite.train} | {k: f"arms.{arm_name}.train" for k in arm.train}
                  | {k: f"arms.{arm_name}.grid" for k in point})
        if "task" in origin:
            raise ConfigError(f"{origin['task']}.task: the task is set once, in task.name")
        try:
            out.append((point, TrainConfig.from_dict(d, where="train")))
        except ConfigError as e:
            msg = str(e)
            if not msg.startswith("train."):
                raise
            key = msg[len("train."):].split(":", 1)[0]
            raise ConfigError(f"{origin.get(key, f'arms.{arm_name}.train')}.{msg[len('train.'):]}") from None
    return out


def load_suite(path: str | Path, overrides: dict | None = None) -> Suite:
    """Read and validate a suite file, including every training point it implies.
    `overrides` (from CLI flags) replace top-level keys before validation."""
    data = read_mapping(path) | (overrides or {})
    try:
        suite = Suite.model_validate(data)
    except ValidationError as e:
        raise config_error(e, Suite, file=path) from None
    if suite.stages is not None:
        _check_stages(suite, path)
    for name, arm in suite.arms.items():
        if arm.method in ("sft", "sdft") and suite.stages is None:
            for k in arm.grid:
                if k not in TrainSettings.model_fields:
                    raise ConfigError(f"{path}: arms.{name}.grid.{k}: {unknown_key(TrainSettings)}")
            try:
                for seed in suite.seeds:
                    arm_configs(suite, name, seed)
            except ConfigError as e:
                raise ConfigError(f"{path}: {e}") from None
            except TypeError as e:
                raise ConfigError(f"{path}: arms.{name}: {e}") from None
    if suite.prior is not None:
        from .prior.tasks import BENCHMARKS

        for b in suite.prior.benchmarks or []:
            if b not in BENCHMARKS:
                raise ConfigError(f"{path}: prior.benchmarks: unknown benchmark '{b}' "
                                  f"(known: {', '.join(BENCHMARKS)})")
        prior_file = resolve_relative(suite.prior.suite, path)
        if not prior_file.is_file():
            raise ConfigError(f"{path}: prior.suite: file not found: {suite.prior.suite}")
        suite.prior.suite = str(prior_file)
    return suite


def _check_stages(suite: Suite, path: str | Path) -> None:
    """Replace the raw `stages:` list by validated `StageSpec`s and check every (arm, seed, stage)
    training point, so a sequential suite fails before anything runs, like a single-task one."""
    from .stages import parse_stages, stage_config

    try:
        suite.stages = parse_stages(suite.stages)
        for name, arm in suite.arms.items():
            if arm.method not in ("sft", "sdft"):
                continue
            if arm.grid:
                raise ConfigError(f"arms.{name}.grid: a sequential suite trains one point per arm and stage "
                                  "(no selection between stages)")
            if "task" in arm.train or "task" in suite.train:
                raise ConfigError(f"{'arms.' + name + '.train' if 'task' in arm.train else 'train'}.task: "
                                  "each stage sets its own task")
            origin = {k: "train" for k in suite.train} | {k: f"arms.{name}.train" for k in arm.train}
            for seed in suite.seeds:
                shared = dict(suite.train) | dict(arm.train) | {"method": arm.method, "model": suite.model,
                                                                "seed": seed}
                for j, st in enumerate(suite.stages):
                    stage_config(shared, st, j, origin)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def resolve_relative(ref: str, suite_path: str | Path) -> Path:
    """A path in a suite file: absolute, relative to the current directory, or to the repo root
    holding the suite's folder (so `suites/prior.yaml` works from anywhere)."""
    p = Path(ref).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return Path(suite_path).resolve().parent.parent / p
