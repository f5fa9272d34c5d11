"""Reading a suite run from the results store into `Results`' tidy DataFrames (`load`), and any
run's per-example outcomes as one DataFrame (`examples_frame`), with the small helpers they use."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from .. import metrics as M
from ..errors import StoreError
from ..manifest import SuiteManifest, read_manifest, val_name
from ..store import Store
from .core import Results
from .names import BASE, COST_KEYS, mc_task


def _open_store(db: Any) -> Store:
    if isinstance(db, Store):
        return db
    from ..paths import results_db

    return Store.open_existing(results_db(db))


def _num(v: Any) -> float:
    try:
        return float("nan") if v is None else float(v)
    except (TypeError, ValueError):
        return float("nan")


def _group(task: str, item_id: str, diag: dict) -> str | None:
    """An item's group for flip tables: MMLU subject, tool-use API, or a stored 'group'."""
    for k in ("subject", "group", "api"):
        if isinstance(diag, dict) and diag.get(k):
            return str(diag[k])
    if "/" in item_id:  # MMLU ids are 'subject/row', tool-use ids 'API/k'
        return item_id.rsplit("/", 1)[0]
    return None


def _hp_label(hp: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(hp.items())) if hp else ""


def _kind(task: str, new_task: str) -> str:
    if task == new_task:
        return "new"
    if task == val_name(new_task) or task.endswith(val_name("")):
        return "val"
    if task.startswith("prior/"):
        return "prior"
    if task.startswith("probe/"):
        return "probe"
    if task.startswith("mc/"):
        return "mc"
    return "other"


def examples_frame(run: str, db: Any = None):
    """Every per-example outcome of any run (a suite run or a single `harness eval`) as one pandas
    DataFrame: label, task, arm, model, eval_key, item_id, score, tokens, output, plus one column
    per diagnostic (`diag.<name>`)."""
    import pandas as pd

    store = _open_store(db)
    rid = store.get_run(run)["run_id"]
    rows = []
    for e in store.run_evals(rid):
        for x in store.examples(e["eval_key"]):
            rows.append({"label": e["label"], "task": e["task"], "arm": e["arm"], "model": e["model"],
                         "eval_key": e["eval_key"], "item_id": x["item_id"], "score": x["score"],
                         "tokens": x["tokens"], "output": x["output"]}
                        | {f"diag.{k}": v for k, v in (x["diagnostics"] or {}).items()})
    return pd.DataFrame(rows)


def load(run: str, db: Any = None, *, n_boot: int = 10000, seed: int = 0) -> Results:
    """Load a suite run (id, id prefix or suite name) from the store `db` (a path, a `Store`, or
    None for `--db` / HARNESS_DB / results/harness.db). Raises `StoreError` (one line) when the
    store or the run does not exist, or the run is not a suite run. `n_boot` and `seed` set the
    bootstrap used by the comparisons."""
    store = _open_store(db)
    info = store.get_run(run)
    rid = info["run_id"]
    if info["kind"] != "suite":
        raise StoreError(f"{store.path}: run '{rid}' is a '{info['kind']}' run, not a suite run "
                         "(reports are built from `harness run SUITE` runs)")
    manifest = read_manifest(info)
    if not isinstance(manifest, SuiteManifest):
        raise StoreError(f"{store.path}: run '{rid}' is a {manifest.kind} suite run; `harness report` shows it "
                         "(its measures are in `harness.continual`)")
    pts = manifest.points
    if not pts:
        raise StoreError(f"{store.path}: suite run '{rid}' has no points in its metadata "
                         f"(status {info['status']}); nothing to report")
    new_task = manifest.task
    notes: list[str] = []
    if info["status"] != "complete":
        notes.append(f"run status is '{info['status']}': results may be partial")

    benchmarks: dict[str, dict] = {name: b.model_dump() | {"task": f"prior/{name}", "name": name}
                                   for name, b in manifest.benchmarks.items()}

    point_rows, metric_rows, item_frames, curve_rows = [], [], [], []
    scores: dict[tuple[str, str], dict[str, float]] = {}
    weights: dict[str, dict[str, float]] = {}
    hp_names = list(dict.fromkeys(k for p in pts for k in p.hparams))
    for p in pts:
        name, arm, method, seed_v, selected = p.point, p.arm, p.method, p.seed, p.selected
        hp = dict(p.hparams)
        cost = p.cost.model_dump(exclude_none=True)
        label = arm + (f" {_hp_label(hp)}" if hp else "") + (f" seed={seed_v}" if seed_v is not None else "")
        prow = {"point": name, "arm": arm, "method": method, "seed": seed_v, "selected": selected, "label": label,
                "hparams": hp, **{f"hp_{k}": hp.get(k) for k in hp_names},
                "train_key": p.train_key, "checkpoint": p.checkpoint}
        for k in COST_KEYS:
            prow[k] = _num(cost.get(k))
        for k, v in cost.items():
            if k not in COST_KEYS:
                prow[k] = float(v)
        point_rows.append(prow)
        base_cols = {"point": name, "arm": arm, "method": method, "seed": seed_v, "selected": selected}
        for task, key in p.evals.items():
            ev = store.get_eval(key, complete_only=False)
            if ev is None:
                notes.append(f"{name}: evaluation {task} ({key[:12]}) is missing from the store")
                continue
            if ev["status"] != "complete":
                notes.append(f"{name}: evaluation {task} ({key[:12]}) is incomplete; left out")
                continue
            summ = ev.get("summary") or {}
            rows = store.conn.execute("SELECT item_id, score, diagnostics FROM examples WHERE eval_key=? ORDER BY idx",
                                      (key,)).fetchall()
            kind = _kind(task, new_task)
            bname = task.split("/", 1)[1] if kind == "prior" else task
            if kind == "prior" and bname not in benchmarks:
                benchmarks[bname] = {"task": task, "name": bname, "metric": summ.get("metric"),
                                     "chance": summ.get("chance", M.CHANCE.get(task))}
            reported = _num(summ.get("accuracy", summ.get("value")))
            if rows:
                ids = [str(r[0]) for r in rows]
                sc = [float(r[1]) for r in rows]
                diags = [json.loads(r[2]) if r[2] else {} for r in rows]
                grp = [_group(task, i, d) for i, d in zip(ids, diags)]
                scores[(name, task)] = dict(zip(ids, sc))
                mc = M.mc_item_measures(ids, diags) if kind == "prior" else {}
                item_frames.append(pd.DataFrame({"point": name, "arm": arm, "seed": seed_v, "selected": selected,
                                                 "task": task, "item_id": ids, "score": sc, "group": grp,
                                                 **{m: [mc[m].get(i, math.nan) if mc else math.nan for i in ids]
                                                    for m in M.MC_MEASURES}}))
                for m, vals in mc.items():
                    mt = mc_task(task, m)
                    scores[(name, mt)] = vals
                    mv = list(vals.values())
                    mean = float(np.mean(mv))
                    sd = float(np.std(mv, ddof=1)) if len(mv) > 1 else math.nan
                    h = 1.96 * sd / math.sqrt(len(mv)) if len(mv) > 1 else math.nan
                    metric_rows.append({**base_cols, "task": mt, "kind": "mc", "benchmark": task.split("/", 1)[1],
                                        "metric": m, "value": mean, "lo": mean - h, "hi": mean + h,
                                        "stderr": sd / math.sqrt(len(mv)) if len(mv) > 1 else math.nan,
                                        "n": len(mv), "reported": math.nan, "chance": math.nan,
                                        "in_average": False, "eval_key": key})
                n = len(sc)
                se = _num(summ.get("stderr"))
                w = M.instruction_counts(diags, summ.get("metric"))
                if w is not None:  # micro average: weighted mean, ratio bootstrap, clustered stderr
                    tw = weights.setdefault(task, {})
                    for i, wi in zip(ids, w):
                        tw.setdefault(i, wi)
                    value, lo, hi = M.ratio_ci(sc, w, n_boot=n_boot, seed=seed)
                    if math.isnan(se):
                        se = M.ratio_stderr(sc, w)
                else:
                    value, lo, hi = M.mean_ci(sc)
                    if math.isnan(se):
                        se = float(np.std(sc, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
            else:
                notes.append(f"{name}: evaluation {task} has no per-item outcomes; paired statistics skipped")
                value, n, se = reported, int(summ.get("n") or 0), _num(summ.get("stderr"))
                ci = summ.get("ci95") or [math.nan, math.nan]
                lo, hi = _num(ci[0]), _num(ci[1])
            binfo = benchmarks.get(bname, {}) if kind == "prior" else {}
            chance = binfo.get("chance", M.CHANCE.get(task)) if kind == "prior" else None
            prior = kind == "prior"
            metric_rows.append({**base_cols, "task": task, "kind": kind, "benchmark": bname,
                                "metric": ((binfo.get("metric") or summ.get("metric")) if prior else
                                           summ.get("metric", "kl_per_token") if kind == "probe" else "accuracy"),
                                "value": value, "lo": lo, "hi": hi, "stderr": se, "n": n, "reported": reported,
                                "chance": _num(chance), "in_average": bool(binfo.get("in_average", True)) and prior,
                                "eval_key": key})
        tk = p.train_key
        if tk:
            steps = store.train_steps(tk)
            if not steps:
                notes.append(f"{name}: no training curve stored for train key {str(tk)[:12]}")
            for s in steps:
                curve_rows.append({**base_cols, **{k: (_num(v) if k != "step" else int(v)) for k, v in s.items()
                                                   if k == "step" or isinstance(v, (int, float, str, type(None)))}})

    points = pd.DataFrame(point_rows)
    points["seed"] = pd.Series([p["seed"] for p in point_rows], dtype=object)  # keep None and ints
    metric_cols = ["point", "arm", "method", "seed", "selected", "task", "kind", "benchmark", "metric", "value",
                   "lo", "hi", "stderr", "n", "reported", "chance", "in_average", "eval_key"]
    metrics_df = pd.DataFrame(metric_rows, columns=metric_cols)
    metrics_df["seed"] = pd.Series([r["seed"] for r in metric_rows], dtype=object)
    items = (pd.concat(item_frames, ignore_index=True) if item_frames else
             pd.DataFrame(columns=["point", "arm", "seed", "selected", "task", "item_id", "score", "group",
                                   *M.MC_MEASURES]))
    curves = pd.DataFrame(curve_rows) if curve_rows else pd.DataFrame(
        columns=["point", "arm", "method", "seed", "selected", "step", "loss", "divergence", "drift_kl", "lr"])

    res = Results(run_id=rid, name=info.get("name"), status=info["status"], created=info["created"], manifest=manifest,
                  config=info.get("config") or {}, task=new_task, benchmarks=benchmarks, points=points,
                  metrics=metrics_df, items=items, curves=curves, notes=notes, n_boot=n_boot, seed=seed,
                  _scores=scores, _weights=weights)
    # per-point summary columns
    val = {(r["point"], r["task"]): r["value"] for r in metric_rows}
    points["new_task"] = [val.get((p, new_task), math.nan) for p in points["point"]]
    points["new_task_val"] = [val.get((p, val_name(new_task)), math.nan) for p in points["point"]]
    points["prior_avg"] = [res._point_avg(p) if any((p, t) in val for t in res.average_tasks) else math.nan
                           for p in points["point"]]
    base_avg = res._point_avg(res.arm_points(BASE)[0]) if BASE in res.arms else math.nan
    points["forgetting"] = base_avg - points["prior_avg"]
    for arm in res.arms:  # selection notes (e.g. an arm left unselected) are known before any table
        res.arm_points(arm)
    if BASE not in res.arms:
        notes.append("no base point: changes versus base and forgetting are not available")
    if not res.prior_tasks:
        notes.append("no prior-capability benchmarks in this run: forgetting is not measured")
    return res
