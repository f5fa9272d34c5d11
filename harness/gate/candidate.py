"""The candidate evaluator: measure a checkpoint exactly as its baseline was measured.

When the candidate of `harness gate` is a checkpoint (an alias, a model folder or an adapter
folder) rather than a baseline file or a stored run, `evaluate_candidate` evaluates it on exactly
the baseline's items, with the settings of the baseline's own evaluation (found by the `eval_key`
its outcome set carries, or carried in the baseline file) and, for prior benchmarks, in the
baseline's dtype. Any other choice would compare two measurements instead of two models.

This module imports the evaluation stack; `harness.gate.run` imports it only when a checkpoint
must be evaluated, so gating two stored results never loads torch.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, HarnessError
from ..evaluate import EvalRequest, evaluate, hf_backend_factory
from ..generation import GenerationSettings
from ..hashing import hash_obj
from ..metrics import mc_item_measures
from ..models import fingerprint
from ..paths import data_dir as resolve_data_dir
from ..precision import DTYPES
from ..store import Store
from ..tasks.registry import TASKS, get_task
from .outcomes import OutcomeSet


def _baseline_measurement(name: str, baseline: OutcomeSet, store: Store) -> tuple[dict, str | None]:
    """How the baseline measured metric `name`: (settings, arm), from its own evaluation in the
    store (its `eval_key`) or, failing that, the settings its baseline file carries. Never another
    stored evaluation: the newest one covering the same items may use another budget or dtype."""
    m = baseline.metrics[name]
    ref = store.get_eval(m["eval_key"]) if m.get("eval_key") else None
    if ref is not None:
        return dict(ref.get("settings") or {}), ref.get("arm")
    if isinstance(m.get("settings"), dict) and m["settings"]:
        return dict(m["settings"]), m.get("arm")
    raise ConfigError(f"{baseline.source}: metrics.{name}: no eval_key found in {store.path} and no settings, so "
                      "the gate cannot tell how the baseline was measured; write the baseline with "
                      "`harness results baseline RUN -o FILE`")


def _baseline_dtype(name: str, baseline: OutcomeSet, store: Store) -> str:
    """The dtype the baseline's prior benchmark ran in: recorded in the baseline, else recovered
    from its model hash (weights fingerprint + dtype + merge recipe) by trying each dtype."""
    m = baseline.metrics[name]
    if m.get("dtype") in DTYPES:
        return m["dtype"]
    ref = store.get_eval(m["eval_key"]) if m.get("eval_key") else None
    model_hash = (ref or {}).get("model_hash") or m.get("model_hash")
    for model in dict.fromkeys(x for x in ((ref or {}).get("model"), m.get("model")) if x):
        try:
            fp = fingerprint(str(model))
        except (HarnessError, OSError, ValueError):  # a run label or an unreachable hub id: cannot confirm
            continue
        for d in DTYPES:
            if hash_obj([fp, d, "merged-adapter"]) == model_hash:
                return d
    raise ConfigError(f"{baseline.source}: metrics.{name}: cannot tell which dtype the baseline was evaluated in "
                      "(not recorded, and its model hash matches no dtype of its model); add \"dtype\" to that "
                      "metric of the baseline file")


def _task_scores(spec: str, name: str, items: list[str], st: dict, arm: str | None, baseline: OutcomeSet,
                 store: Store) -> dict:
    """The checkpoint's scores on new task `name` (a registered task) on `items`, generated (or
    fetched from the cache) with the baseline's split, demonstrations, generation settings,
    template, dtype and, where CUDA exists, device."""
    task = get_task(name)
    if arm == "teacher":
        raise ConfigError(f"{baseline.source}: metrics.{name} is the teacher arm (demonstration in "
                          "context); a checkpoint is measured as a student, so gate against a base-arm "
                          "baseline")
    split = st.get("split", task.default_eval_split)
    loaded = task.load_split(split, resolve_data_dir(None), skip_invalid=True,
                             demonstrations=st.get("demonstrations"))
    path = loaded.path
    by_id = {r.item_id: r for r in loaded.records}
    missing = [i for i in items if i not in by_id]
    if missing:
        raise ConfigError(f"metric {name!r}: baseline item {missing[0]!r} is not in {path}")
    ids = [str(i) for i in st.get("items", items)]
    absent = sorted(set(items) - set(ids))
    if absent:
        raise ConfigError(f"{baseline.source}: metrics.{name}: item {absent[0]!r} is not among the items "
                          "its recorded settings list")
    recs = [by_id[i] for i in ids if i in by_id]
    gen = GenerationSettings(**st["generation"])
    if not str(st.get("decoder", "hf.")).startswith("hf."):
        raise ConfigError(f"metric {name!r}: the baseline was generated with {st['decoder']}; the gate "
                          "generates with transformers (hf), so re-measure the baseline with --backend hf")
    if "dtype" not in st:
        raise ConfigError(f"{baseline.source}: metrics.{name}: the baseline's settings record no dtype")
    import torch

    device = st.get("device", "cpu") if torch.cuda.is_available() else "cpu"
    req = EvalRequest(recs, task.records_hash(recs), "base", gen, st.get("teacher_template", "paper"),
                      split, st["dtype"], device=device, task=task, demonstrations=st.get("demonstrations"),
                      batch_size=int(st.get("batch_size", 8)))  # the baseline's decode width
    res = evaluate(req, store, fingerprint(spec), spec, hf_backend_factory(spec, req.dtype, req.device, req.batch_size))
    scores = {r["item_id"]: r["score"] for r in store.examples(res["eval_key"])}
    return {"task": name, "metric": "accuracy", "items": {i: scores[i] for i in items}}


def _prior_scores(spec: str, groups: dict[tuple, list[tuple[str, str, list[str]]]], store: Store) -> dict:
    """The checkpoint's prior-benchmark scores: one lm-eval call per (prior suite, limit, dtype)
    the baseline's benchmarks were run with; `groups` maps that triple to (metric, benchmark, items)."""
    from ..models import load_model
    from ..prior.evaluate import evaluate_prior

    out = {}
    for (suite_path, limit, dtype), group in groups.items():
        benches = list(dict.fromkeys(b for _, b, _ in group))
        # the key carries the dtype as configured; bf16-autocast loads float32 weights (as `harness run`)
        mh = hash_obj([fingerprint(spec), dtype, "merged-adapter"])
        load_dtype = "float32" if dtype == "bf16-autocast" else dtype
        res = evaluate_prior(lambda d=load_dtype: load_model(spec, dtype=d, merge_adapter=True), None,
                             model_label=spec, store=store, suite_path=suite_path, model_hash=mh,
                             benchmarks=benches, limit=limit)
        for name, bench, items in group:
            rows = store.examples(res[bench]["eval_key"])
            if name.startswith("mc/"):  # a continuous measure of the benchmark's items (nats)
                measure = name.rsplit("/", 1)[1]
                vals = mc_item_measures([r["item_id"] for r in rows],
                                        [r.get("diagnostics") or {} for r in rows]).get(measure, {})
                out[name] = {"task": f"prior/{bench}", "metric": measure,
                             "items": {i: vals[i] for i in items if i in vals}}
                continue
            scores = {r["item_id"]: r["score"] for r in rows}
            out[name] = {"task": name, "metric": res[bench]["metric"],
                         "items": {i: scores[i] for i in items if i in scores}}
    return out


def evaluate_candidate(spec: str, metrics: Any, store: Store | None, baseline: OutcomeSet) -> dict:
    """Evaluate a checkpoint on exactly the baseline's items, measured as the baseline was (module
    docstring); the evaluator `harness gate` uses for a candidate that is neither a baseline file
    nor a stored run. `metrics` maps each gated metric to the baseline's item ids.

    Returns {metric: {"task", "metric", "items": {item_id: score}}}. Cached by content like
    every evaluation, so a second gate run on the same checkpoint computes nothing."""
    if store is None:
        raise ConfigError(f"candidate {spec!r}: evaluating a checkpoint needs a results store (--db) that holds "
                          "the baseline's evaluations")
    out: dict = {}
    prior_by_ref: dict = {}
    for name in metrics:
        items = list(metrics[name])
        st, arm = _baseline_measurement(name, baseline, store)
        if name in TASKS:
            out[name] = _task_scores(spec, name, items, st, arm, baseline, store)
        elif name.startswith("prior/") or name.startswith("mc/"):
            key = (st.get("suite"), st.get("limit"), _baseline_dtype(name, baseline, store))
            prior_by_ref.setdefault(key, []).append((name, name.split("/")[1], items))
        else:
            raise ConfigError(f"metric {name!r}: the gate cannot evaluate task {name!r} on a checkpoint")
    if prior_by_ref:
        out |= _prior_scores(spec, prior_by_ref, store)
    return out
