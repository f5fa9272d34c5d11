"""What a training run does besides training: each a callback the loop calls after every optimizer
step and once at the end, so `loop.Run` holds setup, the step and the objectives only.

The default set (`default_callbacks`), in the order they run after a step:
- `StoreSteps`: the step's row into the results store's `train_steps` table;
- `Progress`: the caller's progress function (`harness run` prints it);
- `CsvLog`: `train_log.csv`, rewritten atomically at every checkpoint and at the end;
- `Checkpoints`: a resumable checkpoint every `save_every` steps and at the last, and at the end the
  exported `final/` (and `merged/`) model.
A callback writes only on the main process; the loop gives every process the same calls, because
saving and exporting wait for all processes.
"""

from __future__ import annotations

import csv
import os
from typing import Callable

from . import checkpoint
from .accounting import LOG_FIELDS


class TrainCallback:
    """A hook of the training loop; `run` is the `loop.Run` (its step, log, totals, config)."""

    def on_step_end(self, run, row: dict) -> None:
        """After optimizer step `run.step` (1-based), whose log row is `row`."""

    def on_train_end(self, run) -> None:
        """After the last step (also when a resumed run had no step left to take)."""


class StoreSteps(TrainCallback):
    def __init__(self, store):
        self.store = store

    def on_step_end(self, run, row):
        if run.acc.is_main_process:
            self.store.add_train_step(run.key, row["step"], row)


class Progress(TrainCallback):
    def __init__(self, fn: Callable[[int, int, dict], None]):
        self.fn = fn

    def on_step_end(self, run, row):
        self.fn(run.step, run.total_steps, row)


class CsvLog(TrainCallback):
    """`train_log.csv` (columns `accounting.LOG_FIELDS`), written with each checkpoint so the CSV
    and the checkpoint a run resumes from hold the same steps."""

    def __init__(self, every: int):
        self.every = every

    def write(self, run) -> None:
        if not run.acc.is_main_process:
            return
        tmp = run.out / ".train_log.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(run.log)
        os.replace(tmp, run.out / "train_log.csv")

    def on_step_end(self, run, row):
        if run.step % self.every == 0 or run.step == run.total_steps:
            self.write(run)

    def on_train_end(self, run):
        self.write(run)


class Checkpoints(TrainCallback):
    def __init__(self, every: int):
        self.every = every

    def on_step_end(self, run, row):
        if run.step % self.every == 0 or run.step == run.total_steps:
            checkpoint.save(run)

    def on_train_end(self, run):
        checkpoint.export(run)


def default_callbacks(save_every: int, store=None, progress=None) -> list[TrainCallback]:
    cbs: list[TrainCallback] = []
    if store is not None:
        cbs.append(StoreSteps(store))
    if progress is not None:
        cbs.append(Progress(progress))
    return cbs + [CsvLog(save_every), Checkpoints(save_every)]
