"""Input checks and store access shared by the commands.

Every check here fails with a one-line `HarnessError` before anything is written, so a command
that is given a bad option, an unwritable folder or a broken model folder leaves no store file, run
row or output folder behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from ..errors import HarnessError


def open_store(db: Optional[str]):
    """The results store at `db` (default: $HARNESS_DB or results/harness.db), created if absent."""
    from ..paths import results_db
    from ..store import Store

    return Store(results_db(db))


def open_existing_store(db):
    """The results store at `db`; a missing store is a one-line error, never a new empty file."""
    from ..paths import results_db
    from ..store import Store

    return Store.open_existing(results_db(db))


def read_only_store(db_path):
    """For a plan: the store if there is one (read, never altered), else an empty in-memory one, so a
    dry run creates no file."""
    from ..store import Store

    return Store.open_existing(db_path) if Path(db_path).exists() else Store(":memory:")


class LazyStore:
    """The results store, created on first use: a command whose checks fail leaves no file."""

    def __init__(self, db: Optional[str]):
        self._db, self._store = db, None

    def __getattr__(self, name):
        if self._store is None:
            self._store = open_store(self._db)
        return getattr(self._store, name)


def check_positive(value: Optional[int], option: str) -> None:
    if value is not None and value <= 0:
        raise HarnessError(f"{option} must be positive, got {value}")


def check_writable_dir(path: Path, option: str) -> None:
    """Fail now, in one line, if `path` cannot become a writable folder, rather than after hours of
    work; nothing is created here."""
    p = Path(path).absolute()
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise HarnessError(f"{option} {path}: {probe} is a file, expected a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise HarnessError(f"{option} {path}: {probe} is not writable")


def check_threads(threads: Optional[int]) -> None:
    if threads is not None and threads <= 0:
        raise HarnessError(f"--threads must be positive, got {threads}")


def apply_threads(threads: Optional[int]) -> None:
    """Check `--threads` and, when given, set torch's CPU thread count (torch is imported only then)."""
    check_threads(threads)
    if threads:
        import torch

        torch.set_num_threads(threads)


def check_model_loads(model: str, trust_remote_code: bool = False) -> None:
    """Before a run row is written: the model's config and tokenizer load and its safetensors
    headers are readable (the weights themselves stay on disk), so a broken model folder fails in
    one line and leaves nothing behind."""
    from ..errors import ModelError
    from ..models import load_tokenizer, resolve, weights_dir

    try:
        ms = resolve(model)
    except json.JSONDecodeError as e:
        raise ModelError(f"{Path(model) / 'adapter_config.json'}: not valid JSON ({e.msg} at line {e.lineno})") from None
    folder = Path(weights_dir(ms.path))
    from safetensors import safe_open
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"{folder / 'config.json'}: cannot load the model config "
                         f"({(str(e).strip().splitlines() or [type(e).__name__])[0]})") from None
    for f in sorted(folder.glob("*.safetensors")) + sorted(Path(ms.adapter).glob("*.safetensors") if ms.adapter else []):
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except Exception as e:  # safetensors raises its own SafetensorError for every corruption
            raise ModelError(f"{f}: not a readable safetensors file ({e})") from None
    load_tokenizer(model, trust_remote_code=trust_remote_code)
