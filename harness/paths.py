"""Where things live: model cache, shared data, results store.

Precedence everywhere: CLI flag > `HARNESS_*` environment variable > default.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError


def cache_dir() -> Path:
    """Materialised models and other caches: `HARNESS_CACHE`, else the platform's user cache dir
    (`$XDG_CACHE_HOME/harness`, else `~/.cache/harness` on Linux; `~/Library/Caches/harness` on macOS)."""
    env = os.environ.get("HARNESS_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("harness", appauthor=False))


def default_data_dir() -> Path:
    """The shared offline datasets: `../shared/datasets` beside the checkout (CI layout)."""
    return Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


def data_dir(flag: str | os.PathLike | None = None) -> Path:
    """Resolve the data directory: `--data-dir`, else `HARNESS_DATA_DIR`, else the default."""
    raw = flag or os.environ.get("HARNESS_DATA_DIR")
    path = Path(raw).expanduser() if raw else default_data_dir()
    if not path.is_dir():
        source = "--data-dir" if flag else ("HARNESS_DATA_DIR" if raw else "default data dir")
        raise DataError(f"{path}: data directory not found (from {source}); "
                        "pass --data-dir or set HARNESS_DATA_DIR")
    return path


def results_db(flag: str | os.PathLike | None = None) -> Path:
    """The SQLite store: `--db`, else `HARNESS_DB`, else `results/harness.db`."""
    raw = flag or os.environ.get("HARNESS_DB")
    return Path(raw).expanduser() if raw else Path("results") / "harness.db"
