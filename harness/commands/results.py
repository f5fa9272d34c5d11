"""Reading the results store as the `results`, `report`, `claims` and `data` commands do: what a
stored run holds, its export, a gate baseline drawn from it, its claims, its report, and a data
file's check. A missing
store or run is a one-line error; nothing here creates a store.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import HarnessError
from .checks import check_writable_dir, open_existing_store


def list_runs(db: Optional[str] = None) -> tuple[str, list[dict]]:
    """The store's path and its runs (run_id, kind, status, created, config), oldest first."""
    store = open_existing_store(db)
    return str(store.path), store.list_runs()


def run_evaluations(run: str, db: Optional[str] = None) -> tuple[dict, list[dict]]:
    """A run (id prefix or name) and the evaluations linked to it (label, task, model, summary, eval_key)."""
    store = open_existing_store(db)
    info = store.get_run(run)
    return info, store.run_evals(info["run_id"])


def export_run(run: str, out: Path, db: Optional[str] = None) -> int:
    """Write a run with every evaluation and its per-example records to the JSON file `out`
    (through a temporary file, so a failed write leaves neither a partial file nor the temporary);
    returns the number of evaluations."""
    store = open_existing_store(db)
    info = store.get_run(run)
    evals = []
    for e in store.run_evals(info["run_id"]):
        e["examples"] = store.examples(e["eval_key"])
        evals.append(e)
    out = Path(out)
    if out.is_dir():
        raise HarnessError(f"{out}: is a folder; --out takes the JSON file to write")
    tmp = out.with_suffix(out.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps({"run": info, "evaluations": evals}, indent=1, default=str))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(evals)


def write_baseline(spec: str, out: Path, note: Optional[str] = None,
                   db: Optional[str] = None) -> tuple[Path, dict[str, int]]:
    """Write the per-item outcomes of a stored run (RUN or RUN#ARM) as a baseline file for `harness
    gate`; returns the file and the item count of each metric."""
    from ..gate import load_baseline, save_baseline

    outcomes = load_baseline(spec, open_existing_store(db))
    path = save_baseline(outcomes, out, note=note)
    return path, {k: len(v["items"]) for k, v in outcomes.metrics.items()}


def check_run_claims(run: str, db: Optional[str] = None):
    """A stored run (`results.Results`) and its claim rows (`claims.check_claims`)."""
    from ..claims import check_claims
    from ..results import load

    res = load(run, db)
    return res, check_claims(res)


def render_report(run: str, out: Path = Path("reports"), db: Optional[str] = None) -> dict:
    """Render a stored run's HTML and Markdown report under `out`; returns their paths."""
    from ..report import render
    from ..store import check_safe_name

    store = open_existing_store(db)
    run_id = check_safe_name(store.get_run(run)["run_id"])  # the report folder is named after it
    check_writable_dir(out, "--out")
    return render(run_id, db=store, out_dir=str(out))


@dataclass
class DataCheck:
    """A tool-use file loaded strictly: its path, records, skipped records (with the problem) and hash."""

    path: Any
    records: list
    skipped: list
    data_hash: str

    @property
    def multi_call(self) -> int:
        return sum(len(r.gold_calls) > 1 for r in self.records)


def check_tooluse_data(split: str = "paper68", data_dir: Optional[str] = None,
                       skip_invalid: bool = False) -> DataCheck:
    """Load a tool-use split or file as evaluation and training do (a bad record fails in one line
    unless `skip_invalid`)."""
    from ..paths import data_dir as resolve_data_dir
    from ..tasks.tooluse import data as tu

    path = tu.resolve_split(split, resolve_data_dir(data_dir))
    loaded = tu.load_tooluse(path, skip_invalid=skip_invalid)
    return DataCheck(path=path, records=loaded.records, skipped=loaded.skipped, data_hash=loaded.data_hash)
