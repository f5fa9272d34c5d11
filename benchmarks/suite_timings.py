"""Wall-clock of each stage of suite runs, side by side, read from their results stores.

    python benchmarks/suite_timings.py before=/tmp/before/harness.db after=/tmp/after/harness.db

For a before/after comparison of a whole suite (e.g. the quick suite under two revisions of the
code on one machine, each with a fresh store): each store's complete evaluations (tool use per
arm, the prior suite per arm), training steps and drift probes, and the suite as a whole, with
their wall-clock,
and the before/after ratio per stage. A stage that ran in one store only (or was reused from a
cache) shows as missing on the other side. Reads nothing but the stores.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections import defaultdict
from pathlib import Path


def stages(db: Path, detail: bool = False) -> dict[str, float]:
    """Seconds per stage: each complete evaluation under its role in the run (tool use per arm,
    the prior suite per arm summed over its benchmarks unless `detail`), each training run's
    steps and drift probes (its `train_steps` rows), and the suite run as a whole."""
    if not db.is_file():
        raise SystemExit(f"{db}: results store not found")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out: dict[str, float] = defaultdict(float)
    trained: dict[str, str] = {}  # train key -> the arm whose checkpoint it is
    for task, label, model, created, finished in con.execute(
            "SELECT e.task, COALESCE(MIN(r.label), e.arm), e.model, e.created, e.finished FROM evaluations e "
            "LEFT JOIN run_evals r ON r.eval_key = e.eval_key "
            "WHERE e.status = 'complete' AND e.finished IS NOT NULL GROUP BY e.eval_key"):
        if task.startswith("prior/") and not detail:
            task = "prior"
        out[f"eval {task} {label}"] += finished - created
        if Path(model).name == "final":  # a trained checkpoint: <checkpoints>/<train key>/final
            trained.setdefault(Path(model).parent.name, label)
    for key, metrics in con.execute("SELECT train_key, metrics FROM train_steps"):
        m = json.loads(metrics)
        for part in ("step_s", "drift_s"):
            value = m.get(part)
            if isinstance(value, (int, float)) and value > 0:  # NaN and 0: not measured at this step
                out[f"train {trained.get(key, key)} {part[:-2]}"] += value
    for created, finished in con.execute(
            "SELECT created, finished FROM runs WHERE kind = 'suite' AND status = 'complete' AND finished IS NOT NULL"):
        out["suite (whole run)"] += finished - created
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stores", nargs=2, metavar="LABEL=DB", help="two results stores, first the baseline")
    ap.add_argument("--detail", action="store_true", help="one line per prior benchmark")
    a = ap.parse_args()
    (la, da), (lb, db) = (s.split("=", 1) if "=" in s else (s, s) for s in a.stores)
    ta, tb = stages(Path(da), a.detail), stages(Path(db), a.detail)
    print(f"{'stage':<34}{la:>12}{lb:>12}{'ratio':>9}")
    for stage in sorted(set(ta) | set(tb), key=lambda s: (s.startswith("suite"), s)):
        x, y = ta.get(stage), tb.get(stage)
        fx = f"{x:>11.1f}s" if x is not None else f"{'-':>12}"
        fy = f"{y:>11.1f}s" if y is not None else f"{'-':>12}"
        ratio = f"{x / y:>8.2f}x" if x and y else f"{'':>9}"
        print(f"{stage:<34}{fx}{fy}{ratio}")
    print(f"(ratio: {la} / {lb}, so > 1 means {lb} is faster)")


if __name__ == "__main__":
    main()
