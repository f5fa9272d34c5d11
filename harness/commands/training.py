"""`harness train` as a function: the training settings assembled from a `--config` file and the
flags given (a flag overrides the file), every check run before the output folder or the store is
written, then the shared SFT/SDFT loop.

    from harness.commands import prepare_training
    job = prepare_training(flags={"method": "sft", "model": "path/to/model", "max_steps": 2},
                           output_dir="out", limit=4)
    res = job.run()  # train.loop.TrainResult: steps, log, totals, final_dir
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import HarnessError
from .checks import LazyStore, apply_threads, check_positive, check_writable_dir


@dataclass
class TrainingJob:
    """A checked `harness train`: the TrainConfig, the records and where they came from. `run` trains."""

    cfg: Any  # train.config.TrainConfig
    task: Any  # tasks.base.Task
    records: list
    loaded: Any  # the task's loaded split (path, skipped)
    output_dir: Path
    db: Optional[str]

    def run(self, progress: Callable[[int, int, dict], None] | None = None, store=None):
        """Train (resuming from the output folder's checkpoint if there is one); the store appears
        with the first step. `progress(step, total, log_row)` after each step."""
        from ..train.loop import train

        store = store if store is not None else LazyStore(self.db)
        return train(self.cfg, self.records, self.output_dir, self.task.records_hash(self.records), store=store,
                     progress=progress, data_source=self.loaded.path, skipped=self.loaded.skipped)


def prepare_training(*, flags: dict, output_dir: Path, config: Optional[Path] = None, split: Optional[str] = None,
                     demonstrations: Optional[str] = None, skip_invalid: bool = False, limit: Optional[int] = None,
                     data_dir: Optional[str] = None, db: Optional[str] = None,
                     threads: Optional[int] = None) -> TrainingJob:
    """Check `harness train`'s inputs and build its TrainConfig from the `config` file's mapping
    overridden by `flags` (TrainConfig field -> value, only those given). A bad value is reported
    against the file and key it came from. Nothing is written here."""
    from ..errors import ConfigError
    from ..paths import data_dir as resolve_data_dir
    from ..suite import read_mapping
    from ..tasks.registry import get_task
    from ..train.config import TrainConfig

    check_writable_dir(output_dir, "--output-dir")
    if flags.get("task") is not None:
        get_task(flags["task"], "--task")
    base = read_mapping(config) if config else {}
    check_positive(limit, "--limit")
    try:
        cfg = TrainConfig.from_dict(base | flags)
    except HarnessError as e:  # a bad key or value from the --config file: name the file and its key
        msg = str(e)
        key = msg[len("train."):].split(":", 1)[0] if msg.startswith("train.") else None
        if config and key in base and key not in flags:
            raise HarnessError(f"{config}: {msg[len('train.'):]}") from None
        raise
    if cfg.lora:  # against the model's config (no weights), before the output folder or the store is written
        from ..model_config import lora_target_problem, module_names_from_config

        modules = module_names_from_config(cfg.model)  # None: config not here yet, the loop checks it
        problem = modules and lora_target_problem(cfg.lora_targets, modules)
        if problem:
            where = ("--lora-targets" if "lora_targets" in flags else f"{config}: lora_targets"
                     if "lora_targets" in base else f"lora_targets (the default {list(cfg.lora_targets)})")
            raise HarnessError(f"{where}: {problem}")
    apply_threads(threads)
    task = get_task(cfg.task)
    try:
        loaded = task.load_split(split or task.default_train_split, resolve_data_dir(data_dir),
                                 skip_invalid=skip_invalid, demonstrations=demonstrations)
    except ConfigError as e:
        raise HarnessError(f"--demonstrations: {e}" if demonstrations is not None else str(e)) from None
    return TrainingJob(cfg=cfg, task=task, records=task.subset(loaded.records, limit), loaded=loaded,
                       output_dir=output_dir, db=db)
