"""Outcome sets: the per-item scores of one model on each gated metric, and where they come from.

An outcome set is read from a committed baseline file (`results/baselines/*.json`, written by
`save_baseline`), from a run in the results store (`RUN` or `RUN#ARM`), or built by an evaluator
for a checkpoint (`harness.gate.candidate`). Every metric of a stored run also carries how it was
measured (`_how_measured`), so a committed baseline still tells the candidate evaluator which
settings and dtype to reproduce.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ConfigError, StoreError
from ..hashing import hash_obj
from ..metrics import instruction_counts, mc_item_measures, mc_task
from ..precision import DTYPES

BASELINE_FORMAT = "harness-baseline/1"


def item_set_hash(items: Mapping[str, Any] | Sequence[str]) -> str:
    """Hash of the sorted item ids: two outcome sets are comparable iff their hashes match."""
    return hash_obj(sorted(str(i) for i in items), n=16)


@dataclass
class OutcomeSet:
    """Per-item scores of one model on each metric, plus what identifies them.

    metrics: {name: {"task": str, "metric": str, "items": {item_id: score}, ...}}; the name is the
    evaluation's task ('tooluse', 'prior/hellaswag'). suite: the suite that produced it, if known.
    source: a human-readable origin (file path, run id, checkpoint).
    """

    metrics: dict[str, dict]
    suite: str | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def item_set(self, name: str) -> str:
        return item_set_hash(self.metrics[name]["items"])


def as_outcome_set(obj: Any, source: str = "") -> OutcomeSet:
    """Coerce and validate an outcome set: an `OutcomeSet`, a baseline-file dict, or a plain
    {metric: {"items": {...}, ...}} dict (what an evaluator may return)."""
    if isinstance(obj, OutcomeSet):
        out = obj
    elif isinstance(obj, Mapping) and "metrics" in obj and isinstance(obj.get("metrics"), Mapping):
        out = OutcomeSet(metrics=dict(obj["metrics"]), suite=obj.get("suite"),
                         source=str(obj.get("source") or source), meta=dict(obj.get("meta") or {}))
    elif isinstance(obj, Mapping):
        out = OutcomeSet(metrics=dict(obj), source=source)
    else:
        raise ConfigError(f"{source or 'outcome set'}: expected a mapping of metrics, got {type(obj).__name__}")
    src = out.source or source or "outcome set"
    clean: dict[str, dict] = {}
    for name, m in out.metrics.items():
        if not isinstance(m, Mapping) or not isinstance(m.get("items"), Mapping):
            raise ConfigError(f"{src}: metrics.{name}: expected a mapping with 'items' {{item_id: score}}")
        items = {}
        for k, v in m["items"].items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{src}: metrics.{name}.items.{k}: expected a finite number, got {v!r}")
            items[str(k)] = float(v)
        entry = {**m, "task": m.get("task", name), "metric": m.get("metric", "score"), "items": items}
        if m.get("weights") is not None:
            w = m["weights"]
            if not isinstance(w, Mapping) or set(map(str, w)) != set(items):
                raise ConfigError(f"{src}: metrics.{name}.weights: expected one weight per item")
            for k, v in w.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                    raise ConfigError(f"{src}: metrics.{name}.weights.{k}: expected a positive number, got {v!r}")
            entry["weights"] = {str(k): float(v) for k, v in w.items()}
        clean[str(name)] = entry
    out.metrics, out.source = clean, src
    return out


def save_baseline(outcomes: OutcomeSet | Mapping, path: str | Path, note: str | None = None) -> Path:
    """Write a committed baseline: human-readable JSON, one item per line, keys sorted, so that a
    change shows up as a small diff in review. Versioned by its `format` field."""
    o = as_outcome_set(outcomes, source=str(path))
    doc = {"format": BASELINE_FORMAT,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "suite": o.suite, "source": o.source, "note": note, "meta": o.meta,
           "metrics": {}}
    for name, m in sorted(o.metrics.items()):
        items = dict(sorted(m["items"].items()))
        extra = {k: v for k, v in m.items() if k not in ("items", "task", "metric", "weights")}
        w = m.get("weights")
        mean = ((sum(items[k] * w[k] for k in items) / sum(w.values())) if w else
                (sum(items.values()) / len(items))) if items else None
        doc["metrics"][name] = {**extra, "task": m["task"], "metric": m["metric"], "n": len(items),
                                "mean": mean, "item_set": item_set_hash(items), "items": items}
        if w:
            doc["metrics"][name]["weights"] = dict(sorted(w.items()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def _read_baseline_file(path: Path) -> OutcomeSet:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a JSON object with 'format' and 'metrics'")
    fmt = doc.get("format")
    if fmt != BASELINE_FORMAT:
        raise ConfigError(f"{path}: format {fmt!r} is not supported (expected {BASELINE_FORMAT!r})")
    if not isinstance(doc.get("metrics"), dict) or not doc["metrics"]:
        raise ConfigError(f"{path}: 'metrics' must be a non-empty object")
    o = as_outcome_set(doc, source=str(path))
    o.source = str(path)
    for name, m in doc["metrics"].items():
        h = m.get("item_set")
        if h is not None and h != item_set_hash(m["items"]):
            raise ConfigError(f"{path}: metrics.{name}.item_set does not match its items "
                              "(edited by hand? regenerate the baseline with save_baseline)")
    return o


def _run_suite_name(run: dict) -> str | None:
    for src in (run.get("meta") or {}, run.get("config") or {}):
        s = src.get("suite")
        if isinstance(s, str):
            return s
        if isinstance(s, dict) and isinstance(s.get("name"), str):
            return s["name"]
    return None


def _metric_key(ev: dict) -> str:
    summary = ev.get("summary") or {}
    settings = ev.get("settings") or {}
    return str(summary.get("metric") or settings.get("metric") or ("accuracy" if "accuracy" in summary else "score"))


def outcomes_from_store(store: Any, spec: str) -> OutcomeSet | None:
    """Build an outcome set from a stored run: `RUN` (prefix or name) or `RUN#SEL`, where SEL
    picks evaluations by arm or link label when a run holds several of the same task.
    Returns None when no such run exists."""
    run_id, _, sel = spec.partition("#")
    try:
        run = store.get_run(run_id)
    except StoreError:
        return None
    evals = store.run_evals(run["run_id"])
    if sel:
        # a link label (a suite point such as 'base' or 'sft/default/seed=0') wins over an arm name:
        # trained checkpoints are evaluated as arm 'base' of their own weights
        by_label = [e for e in evals if e.get("label") == sel]
        evals = by_label or [e for e in evals if e.get("arm") == sel]
        if not evals:
            raise ConfigError(f"run {run['run_id']}: no evaluation with arm or label {sel!r}")
    by_task: dict[str, list[dict]] = {}
    incomplete = []
    for e in evals:
        if e["status"] != "complete":
            incomplete.append(e["task"])
            continue
        by_task.setdefault(e["task"], []).append(e)
    metrics = {}
    for task, es in by_task.items():
        if len({e["eval_key"] for e in es}) > 1:
            arms = sorted({f"{e.get('arm')}" + (f"/{e['label']}" if e.get("label") else "") for e in es})
            raise ConfigError(f"run {run['run_id']} holds {len(es)} evaluations of task {task!r} "
                              f"({', '.join(arms)}); pick one with {run['run_id']}#ARM")
        e = es[0]
        rows = store.examples(e["eval_key"])
        items = {str(r["item_id"]): float(r["score"]) for r in rows}
        metrics[task] = {"task": task, "metric": _metric_key(e), "items": items, **_how_measured(e, run)}
        diags = [r.get("diagnostics") or {} for r in rows]
        weights = instruction_counts(diags)  # IFEval: Σ followed / Σ given
        if weights:
            metrics[task]["weights"] = dict(zip(items, weights))
        if task.startswith("prior/"):  # multiple choice: log p(gold) and margin per item, gateable in nats
            for measure, vals in mc_item_measures(list(items), diags).items():
                metrics[mc_task(task, measure)] = {"task": task, "metric": measure, "items": vals,
                                                   **_how_measured(e, run)}
    return OutcomeSet(metrics=metrics, suite=_run_suite_name(run), source=f"run {spec}",
                      meta={"run_id": run["run_id"], "incomplete": sorted(set(incomplete) - set(metrics))})


def _how_measured(e: dict, run: dict) -> dict:
    """What a checkpoint candidate must be measured with to be comparable: the evaluation's key,
    arm, model, hashes and settings (its item-id list left out: the baseline lists the items), and
    the dtype when recorded (tool-use settings; else the run's configured dtype). Written into
    baseline files, so a committed baseline still says how it was measured."""
    settings = {k: v for k, v in (e.get("settings") or {}).items() if k != "item_ids"}
    out = {"eval_key": e["eval_key"], "arm": e.get("arm"), "model": e.get("model"),
           "model_hash": e.get("model_hash"), "data_hash": e.get("data_hash"), "settings": settings}
    dtype = settings.get("dtype") or (run.get("config") or {}).get("dtype")
    if dtype in DTYPES:
        out["dtype"] = dtype
    return out


def resolve_outcomes(spec: Any, store: Any, role: str = "baseline") -> OutcomeSet | None:
    """An outcome set from an object, a `*.json` outcome file or a stored run; None if neither."""
    if isinstance(spec, (OutcomeSet, Mapping)):
        return as_outcome_set(spec, source=f"{role} outcome set")
    s = str(spec)
    p = Path(s)
    if p.suffix == ".json":
        if not p.is_file():
            raise ConfigError(f"{s}: {role} file not found")
        return _read_baseline_file(p)
    if store is not None:
        return outcomes_from_store(store, s)
    return None


def load_baseline(path_or_run: Any, store: Any = None) -> OutcomeSet:
    """Load a baseline: a committed baseline file (`*.json`) or a stored run id (`RUN[#ARM]`)."""
    o = resolve_outcomes(path_or_run, store, role="baseline")
    if o is None:
        why = "no results store to look it up in" if store is None else f"no run of that name in {store.path}"
        raise ConfigError(f"baseline {path_or_run!r}: not a baseline file and {why}")
    return o
