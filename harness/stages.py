"""Sequential suites: the `stages:` list of a suite, validated up front, and the chained checkpoint keys.

    stages:
      - {name: tooluse, task: tooluse, train: {split: eval_real, skip_invalid: true},
         test: {split: paper68, limit: 30}, max_new_tokens: 192}
      - {name: science, task: science, train: {split: train_pool, limit: 32},
         test: {split: eval507, limit: 60, sample: stratified}, train_overrides: {max_steps: 8}}

Stage j trains task `stages[j].task` starting from stage j-1's weights (stage 0 from the base
model), for each trained arm and seed; after every stage, every stage's test split is evaluated,
which fills the accuracy matrix of `harness.continual`. Errors are one line with the key path
(`stages[1].name: 'x' is used twice`), as everywhere in suite files.

Each stage's task appears once: the accuracy matrix has one row per task and BWT/FWT pair task i
with the stage that learnt it, so a task trained twice has no single "its own stage".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError, field_validator

from .config_schema import Strict, config_error, unknown_key
from .errors import ConfigError
from .hashing import hash_obj
from .suite import SplitSpec
from .train.config import TrainConfig, TrainSettings

#: Training settings a stage may not override: the arm decides the method, the suite the model and
#: seed, and the stage's own `task` the task.
NOT_PER_STAGE = ("method", "model", "seed", "task")


class StageSpec(Strict):
    name: str = Field(min_length=1)
    task: str                                   # a registered task (harness.tasks.registry)
    train: SplitSpec
    test: SplitSpec
    validation: SplitSpec | None = None
    train_overrides: dict[str, Any] = {}        # TrainConfig settings for this stage (e.g. max_steps)
    max_new_tokens: int | None = Field(None, gt=0)  # evaluation budget; None = the task's default
    batch_size: int = Field(8, gt=0)            # evaluation batch
    demonstrations: str | None = None           # the task's demonstration policy or file (science)
    teacher_template: str = "paper"             # the teacher prompt's template (method.md)

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        from .tasks.registry import get_task

        try:
            get_task(v)
        except ConfigError as e:  # pydantic adds the key path
            raise ValueError(str(e)) from None
        return v

    def max_tokens(self) -> int:
        """The evaluation budget: this stage's `max_new_tokens`, else its task's default."""
        from .tasks.registry import get_task

        return self.max_new_tokens or get_task(self.task).default_max_new_tokens


_STAGES = TypeAdapter(list[StageSpec])


def parse_stages(raw: Any, where: str = "stages") -> list[StageSpec]:
    """Validate a suite's `stages:` value; a ConfigError names the first bad key path.

    Checks beyond each stage's own keys: at least one stage, unique names, each task once (see
    the module docstring) and training overrides that name training settings (their values are
    checked with the rest of a point's settings by `stage_config`)."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list of stages, got {type(raw).__name__}")
    try:
        stages = _STAGES.validate_python(raw)
    except ValidationError as e:
        raise config_error(e, list[StageSpec], root=where) from None
    check_stages(stages, where)
    return stages


def check_stages(stages: Sequence[StageSpec], where: str = "stages") -> None:
    """The list-level rules of `parse_stages` (for callers that validated the stages themselves)."""
    if not stages:
        raise ConfigError(f"{where}: at least one stage")
    names: dict[str, int] = {}
    tasks: dict[str, str] = {}
    for i, s in enumerate(stages):
        if s.name in names:
            raise ConfigError(f"{where}[{i}].name: '{s.name}' is used twice")
        names[s.name] = i
        if s.task in tasks:
            raise ConfigError(f"{where}[{i}].task: '{s.task}' is already trained by stage '{tasks[s.task]}' "
                              "(one stage per task: the accuracy matrix has one row per task)")
        tasks[s.task] = s.name
        for k in s.train_overrides:
            if k in NOT_PER_STAGE:
                raise ConfigError(f"{where}[{i}].train_overrides.{k}: set by the arm and the suite, not per stage")
            if k not in TrainSettings.model_fields:
                raise ConfigError(f"{where}[{i}].train_overrides.{k}: {unknown_key(TrainSettings)}")


def stage_config(shared: Mapping[str, Any], stage: StageSpec, index: int,
                 origin: Mapping[str, str] | None = None, where: str = "stages") -> TrainConfig:
    """The TrainConfig of one stage: `shared` (what `suite.arm_configs` merges for a point: the
    suite's train, the arm's train and grid point, method, model, seed) with the stage's
    `train_overrides` and its task on top. An error names the block the bad value was written in: the stage's
    overrides (`stages[1].train_overrides.lr`) or, via `origin` (key -> block), the shared one."""
    own = f"{where}[{index}].train_overrides"
    origin = dict(origin or {}) | {k: own for k in stage.train_overrides}
    try:
        return TrainConfig.from_dict(dict(shared) | dict(stage.train_overrides) | {"task": stage.task}, where="train")
    except ConfigError as e:
        msg = str(e)
        if not msg.startswith("train."):
            raise
        key = msg[len("train."):].split(":", 1)[0]
        raise ConfigError(f"{origin.get(key, 'train')}.{msg[len('train.'):]}") from None


def stage_chain_keys(base_model_hash: str, stage_train_keys: Sequence[str]) -> list[str]:
    """Checkpoint keys of a sequence of stages: key_j = hash(key_{j-1}, stage j's own key), with
    key_{-1} = the base model's weights hash.

    `stage_train_keys[j]` is the content key of stage j's training alone (its TrainConfig and
    exactly the records it trains on, e.g. `TrainConfig.key(data_hash, model_hash="")`); the
    chain adds where it starts. So stage j's key changes whenever anything before it changes,
    and never when a later stage changes: editing stage 2 reuses stage 1's checkpoint."""
    keys: list[str] = []
    prev = base_model_hash
    for k in stage_train_keys:
        prev = hash_obj({"after": prev, "stage": k}, n=20)
        keys.append(prev)
    return keys
