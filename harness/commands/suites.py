"""Opening a suite as `harness run` and `harness plan` do: a single-task suite gets a `SuiteRunner`,
a suite with `stages:` a `SequentialRunner`. A plan (dry run) reads the store if there is one and
never creates or alters it, nor materialises or downloads the model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from ..errors import HarnessError
from .checks import read_only_store


def is_sequential_suite(suite: Path) -> bool:
    from ..sequential import is_sequential

    return Path(suite).is_file() and is_sequential(suite)


def open_suite(suite: Path, db: Optional[str] = None, data_dir: Optional[str] = None, *, model: Optional[str] = None,
               plan_only: bool = False, log: Callable[[str], None] | None = None, progress_factory=None):
    """The runner for `suite` (`model` overrides the suite's). With `plan_only` its store is the
    existing one read-only, or an empty in-memory one."""
    from ..paths import results_db

    dbp = results_db(db)
    overrides = {"model": model} if model else None
    if is_sequential_suite(suite):
        from ..sequential import SequentialRunner as Runner
    else:
        from ..pipeline import SuiteRunner as Runner
    runner = Runner(suite, dbp, data_dir, log=log or (lambda m: None), progress_factory=progress_factory,
                    overrides=overrides, plan_only=plan_only)
    if plan_only:
        runner._store = read_only_store(dbp)
    return runner


def run_suite(runner) -> tuple[str, float]:
    """Run every step not cached yet; returns the run id and the wall-clock seconds it took."""
    t0 = time.perf_counter()
    run_id = runner.run()
    return run_id, time.perf_counter() - t0


def plan_suite(suite: Path, db: Optional[str] = None, data_dir: Optional[str] = None, *,
               model: Optional[str] = None, target_mde: Optional[float] = None):
    """`harness plan`: a plan-only runner of a single-task suite, whose comparisons
    `planning.plan_power(runner, target_mde)` sizes."""
    if target_mde is not None and not 0 < target_mde < 1:
        raise HarnessError(f"--target-mde must be a fraction in (0, 1), got {target_mde}")
    if is_sequential_suite(suite):
        raise HarnessError(f"{suite}: stages: `harness plan` sizes the comparisons of a single-task suite; "
                           f"`harness run {suite} --dry-run` shows a sequential suite's plan")
    return open_suite(suite, db, data_dir, model=model, plan_only=True)
