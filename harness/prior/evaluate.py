"""Entry point: evaluate a model on the prior-capability suite, cached in the results store.

    from harness.prior import evaluate_prior, prior_average
    res = evaluate_prior(model, tok, model_label="sft", store=store, limit=50)
    prior_average(res)

Each benchmark is one lm-eval call on a generated task folder (see `tasks.py`) and one evaluation
row in the store, keyed by a content hash of the weights, the task config, the data subset, n-shot,
chat template, metric, lm-eval version and scorer (`scorer.scorer_id()`). A complete row is a cache
hit: re-running the same model recomputes nothing, a different model never reuses answers, and an
interrupted run re-does only the benchmarks that had not finished. lm-eval's own `use_cache` is
never used: it keys on request text only, so two checkpoints would share answers.

The key leaves out the caller's label (the same weights under another label reuse the row, which
keeps the first label) and the batch size and device (they move log-likelihoods only in the last
float digits).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..hashing import forget_model_hash, hash_model, hash_obj
from ..paths import data_dir as resolve_data_dir
from ..store import Store
from . import scorer as scorer_mod
from . import tasks as task_mod
from .data import Prepared, prepare
from .suite import DEFAULT_SUITE, load_suite
from .tasks import BENCHMARKS, TaskBundle

PRIOR_VERSION = 1  # bump when the way results are computed or stored changes
Progress = Callable[[str, str, dict], None]  # (event 'start'|'done'|'cached', benchmark, info)


def offline_env(data_dir: Path) -> None:
    """Hub access off (must precede importing lm_eval/datasets) and NLTK pointed at local data."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
        os.environ[var] = "1"
    # these libraries read the variables once, at import; a caller may have imported them already
    # (loading the model imports huggingface_hub), so set their module constants too
    for module, names in (("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
                          ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")),
                          ("evaluate.config", ("HF_EVALUATE_OFFLINE",))):
        mod = sys.modules.get(module)
        for name in names:
            if mod is not None and hasattr(mod, name):
                setattr(mod, name, True)
    nltk_dir = Path(data_dir) / "nltk_data"
    if nltk_dir.is_dir():
        parts = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
        if str(nltk_dir) not in parts:
            os.environ["NLTK_DATA"] = os.pathsep.join([str(nltk_dir), *parts])
        if "nltk" in sys.modules:  # nltk reads NLTK_DATA once, at import
            import nltk

            if str(nltk_dir) not in nltk.data.path:
                nltk.data.path.insert(0, str(nltk_dir))


def lm_eval_version() -> str:
    try:
        return version("lm_eval")
    except PackageNotFoundError:
        raise ConfigError("lm-eval is not installed (pip install 'lm-eval>=0.4,<0.5')") from None


def lm_metric_key(benchmark: str, metric: str) -> str:
    """Headline metric name -> lm-eval's results key '<metric>,<filter>'."""
    spec = BENCHMARKS[benchmark]
    if metric == spec.metric:
        return spec.lm_metric
    return metric if "," in metric else f"{metric},none"


def chance_level(benchmark: str, prepared: Prepared) -> float:
    spec = BENCHMARKS[benchmark]
    if spec.chance is not None:
        return spec.chance
    # truthfulqa_mc1: one correct answer among a varying number of choices
    return sum(1 / len(r["mc1_targets"]["choices"]) for r in prepared.records) / len(prepared.records)


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _per_doc(value: Any) -> float:
    """Per-document metric value as a float (IFEval's instruction-level lists -> their mean)."""
    if isinstance(value, (list, tuple)):
        return sum(map(float, value)) / len(value) if value else 0.0
    return float(value)


def _cluster_stderr(samples: list[dict], metric: str) -> float | None:
    """Stderr of a micro-averaged list metric (IFEval instruction level), clustered by prompt:
    lm-eval reports none for it (`metrics.ratio_stderr`; prompts without instructions carry no
    weight and are left out)."""
    from ..metrics import ratio_stderr

    pairs = [(_per_doc(s[metric]), len(s[metric])) for s in samples if len(s[metric])]
    if len(pairs) < 2:
        return None
    return ratio_stderr([p for p, _ in pairs], [m for _, m in pairs])


def _fallback_stderr(bundle: TaskBundle, samples: dict, rows: list[dict], lm_key: str):
    """Standard error where lm-eval reports 'N/A': IFEval's instruction-level metrics (custom
    aggregation), and MMLU subsets where some subject has a single item (pooling needs two)."""
    metric, filt = lm_key.split(",", 1)
    heads = [s for k in bundle.sample_keys for s in samples.get(k, []) if s["filter"] == filt]
    if heads and isinstance(heads[0].get(metric), (list, tuple)):
        return _cluster_stderr(heads, metric), "harness: clustered by prompt"
    scores = [r["score"] for r in rows]
    n = len(scores)
    if n < 2:
        return None, "none (n < 2)"
    mean = sum(scores) / n
    var = sum((x - mean) ** 2 for x in scores) / (n - 1)
    return math.sqrt(var / n), "harness: item-level sample stderr"


def _example_rows(bundle: TaskBundle, prepared: Prepared, samples: dict, lm_key: str) -> list[dict]:
    """lm-eval log_samples records -> store rows (one per evaluated item)."""
    metric, filt = lm_key.split(",", 1)
    position = {item: i for i, item in enumerate(prepared.ids)}
    rows = []
    for sample_key, part in bundle.sample_keys.items():
        by_doc: dict[int, dict[str, dict]] = {}
        for s in samples.get(sample_key, []):
            by_doc.setdefault(int(s["doc_id"]), {})[s["filter"]] = s
        ids = prepared.part_ids[part]
        for doc_id, per_filter in by_doc.items():
            head = per_filter.get(filt) or next(iter(per_filter.values()))
            diagnostics: dict[str, Any] = {"target": head.get("target"), "filter": head["filter"],
                                           "doc_hash": head.get("doc_hash")}
            for f, s in per_filter.items():
                for m in s.get("metrics", []):
                    if (m, f) != (metric, filt):
                        diagnostics[m if f == filt else f"{m},{f}"] = s.get(m)
            if metric in head and isinstance(head[metric], (list, tuple)):
                # a list metric (IFEval's instruction level) is micro-averaged: keep the counts so
                # results can weight each prompt by its instructions (sum followed / sum given)
                diagnostics[metric] = list(head[metric])
                diagnostics["n_followed"] = float(sum(map(float, head[metric])))
                diagnostics["n_instructions"] = len(head[metric])
            resp = head.get("filtered_resps")
            if isinstance(resp, list) and resp and isinstance(resp[0], (list, tuple)):
                lls = [float(r[0]) for r in resp]  # multiple choice: (loglikelihood, is_greedy)
                diagnostics["loglikelihoods"] = lls
                gold = head.get("target")
                if not isinstance(gold, int) and "answer" in head.get("doc", {}):  # winogrande
                    gold = int(head["doc"]["answer"]) - 1
                if isinstance(gold, int) and 0 <= gold < len(lls):
                    diagnostics["gold"] = gold  # for the paired Δ log p(gold) and margin in results
                output = f"choice {max(range(len(lls)), key=lls.__getitem__)} (gold {gold})"
            else:
                output = resp[0] if isinstance(resp, list) and resp else str(resp)
                raw = head.get("resps")
                if raw and raw[0] and raw[0][0] != output:
                    diagnostics["raw_response"] = raw[0][0]
            item = ids[doc_id]
            rows.append({"item_id": item, "idx": position[item], "prompt_hash": head.get("prompt_hash", ""),
                         "output": output, "score": _per_doc(head.get(metric, 0.0)),
                         "diagnostics": diagnostics})
    rows.sort(key=lambda r: r["idx"])
    return rows


def _run_lm_eval(lm, bundle: TaskBundle, settings: dict) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=[str(p) for p in bundle.include_paths], include_defaults=False)
    # global seeds left alone (None): greedy decoding and log-likelihoods need none, and the caller's
    # RNG state (e.g. mid-training) must not be reset; the few-shot sampler keeps lm-eval's default.
    out = simple_evaluate(model=lm, tasks=[bundle.task_name], task_manager=tm, log_samples=True,
                          apply_chat_template=bool(settings.get("chat_template", False)),
                          random_seed=None, numpy_random_seed=None, torch_random_seed=None)
    if out is None:  # pragma: no cover - only on non-zero ranks
        raise RuntimeError("lm-eval returned no results")
    return out


def _model_name(model) -> str:
    cfg = getattr(model, "config", None)
    return str(getattr(cfg, "_name_or_path", "") or type(model).__name__)


def evaluate_prior(model, tokenizer=None, *, model_label: str, store: Store,
                   suite_path: str | os.PathLike | None = DEFAULT_SUITE,
                   benchmarks: list[str] | None = None, limit: int | None = None,
                   data_dir: str | os.PathLike | None = None, batch_size: int = 8,
                   progress: Progress | None = None, run_id: str | None = None,
                   model_hash: str | None = None, lm_factory: Callable[[], Any] | None = None,
                   scorer: str | None = None) -> dict[str, dict]:
    """Evaluate `model` (an in-memory model, plain or PeftModel, with `tokenizer`; or a model spec
    string for `harness.models.load_model`) on the prior suite.

    Returns {benchmark: {"metric", "value", "stderr", "n", "eval_key", "wall_s", "cached",
    "chance", "in_average", "task_dir", "stderr_source"}}. `task_dir` holds the generated lm-eval
    config (`tasks.export` copies it for the standalone CLI). `wall_s` of a cached benchmark is the
    time it took when it was computed. With `run_id`, each evaluation is linked to that run under
    `model_label`. The weights are re-hashed on every call (a memoised hash could be stale after
    training steps), and the model's train/eval mode is restored on return.
    `lm_factory` (with `model_hash` and `scorer`) replaces the harness's HF scorer by another lm-eval
    model built only if something must run, e.g. lm-eval's `vllm` model (`vllm_lm.make_vllm_lm`,
    keyed by `vllm_lm.scorer_id()`); `model` and `tokenizer` are then unused.
    """
    if lm_factory is not None and model_hash is None:
        raise ConfigError("evaluate_prior: lm_factory needs the model_hash its keys use")
    suite = load_suite(suite_path)
    names = list(benchmarks) if benchmarks else suite.default_benchmarks
    settings_of = {n: suite.settings(n) for n in names}  # unknown names -> ConfigError
    ddir = resolve_data_dir(data_dir)
    offline_env(ddir)
    lm_version = lm_eval_version()
    model_desc = None
    loader = None
    if lm_factory is not None:
        model = tokenizer = None
    elif callable(model) and not hasattr(model, "parameters"):
        # a zero-argument loader returning (model, tokenizer): called only if something must run,
        # so a fully cached suite never loads weights (needs `model_hash` from the caller)
        loader, model = model, None
        if model_hash is None:
            model, tokenizer = loader()
            loader = None
    if isinstance(model, str):
        from ..models import load_model

        model_desc = model
        model, tokenizer = load_model(model)
    if model is not None and tokenizer is None:
        raise ConfigError("evaluate_prior: a tokenizer is required with an in-memory model")
    model_desc = model_desc or (_model_name(model) if model is not None else model_label)
    if model_hash is None:
        forget_model_hash(model)
        model_hash = hash_model(model)
    if logging.getLogger("lm_eval").level == logging.NOTSET:
        logging.getLogger("lm_eval").setLevel(logging.WARNING)

    # prepare every benchmark first: bad data or config fails before any compute
    plans = _plans(model_hash, suite, names, settings_of, ddir, limit, lm_version, scorer)

    was_training = bool(getattr(model, "training", False))
    try:
        return _evaluate_plans(plans, model, tokenizer, loader=loader, model_label=model_label, model_desc=model_desc,
                               model_hash=model_hash, store=store, suite=suite, lm_version=lm_version,
                               batch_size=batch_size, progress=progress, run_id=run_id, lm_factory=lm_factory,
                               scorer=scorer)
    finally:
        if was_training:
            model.train()


def _plans(model_hash, suite, names, settings_of, ddir, limit, lm_version, scorer=None) -> list[tuple]:
    """(name, settings, limit, prepared, bundle, lm-eval metric key, store key) per benchmark; `scorer`
    None is the harness's HF scorer (`scorer.scorer_id()`)."""
    scorer = scorer or scorer_mod.scorer_id()
    plans = []
    for name in names:
        settings = settings_of[name]
        lim = limit if limit is not None else settings.get("limit", suite.limit)
        prepared = prepare(name, ddir, lim, suite.seed)
        bundle = task_mod.build(BENCHMARKS[name], prepared, settings)
        lm_key = lm_metric_key(name, settings["metric"])
        n_shot = int(settings.get("n_shot", 0))
        key = Store.eval_key(kind="prior", version=PRIOR_VERSION, model_hash=model_hash, benchmark=name,
                             task_config=bundle.config_hash, data_hash=prepared.data_hash,
                             item_ids=hash_obj(prepared.ids, n=32), n_shot=n_shot,
                             chat_template=bool(settings.get("chat_template", False)),
                             metric=lm_key, lm_eval=lm_version, seed=suite.seed, scorer=scorer)
        plans.append((name, settings, lim, prepared, bundle, lm_key, key))
    return plans


def plan_keys(model_hash: str, *, suite_path=DEFAULT_SUITE, benchmarks: list[str] | None = None,
              limit: int | None = None, data_dir=None, scorer: str | None = None) -> dict[str, str]:
    """The store keys `evaluate_prior` would use for this model hash, without loading a model
    (for `harness run --dry-run` and fast cache checks)."""
    suite = load_suite(suite_path)
    names = list(benchmarks) if benchmarks else suite.default_benchmarks
    settings_of = {n: suite.settings(n) for n in names}
    ddir = resolve_data_dir(data_dir)
    offline_env(ddir)
    return {p[0]: p[-1] for p in _plans(model_hash, suite, names, settings_of, ddir, limit, lm_eval_version(), scorer)}


def _evaluate_plans(plans, model, tokenizer, *, loader=None, model_label, model_desc, model_hash, store, suite,
                    lm_version, batch_size, progress, run_id, lm_factory=None,
                    scorer=None) -> dict[str, dict]:
    scorer = scorer or scorer_mod.scorer_id()
    lm = None
    results: dict[str, dict] = {}
    for name, settings, lim, prepared, bundle, lm_key, key in plans:
        base = {"metric": settings["metric"], "eval_key": key, "chance": chance_level(name, prepared),
                "in_average": bool(settings.get("in_average", True)), "task_dir": str(bundle.folder)}
        hit = store.get_eval(key)
        if hit is not None:
            s = hit["summary"]
            results[name] = base | {"value": s["value"], "stderr": s["stderr"], "n": s["n"],
                                    "wall_s": s["wall_s"], "cached": True,
                                    "stderr_source": s.get("stderr_source")}
            if run_id:
                store.link(run_id, key, model_label)
            if progress:
                progress("cached", name, results[name])
            continue
        if progress:
            progress("start", name, {"n": len(prepared.ids)})
        if lm is None and lm_factory is not None:
            lm = lm_factory()
        if lm is None:
            if model is None:
                model, tokenizer = loader()
            lm = scorer_mod.make_lm(model, tokenizer, batch_size=batch_size)  # one forward per shared context
        gen = task_mod.generation_kwargs(BENCHMARKS[name], settings)
        record = {"benchmark": name, "lm_eval_task": bundle.task_name, "task_config_hash": bundle.config_hash,
                  "n_shot": int(settings.get("n_shot", 0)), "chat_template": bool(settings.get("chat_template", False)),
                  "metric": settings["metric"], "lm_eval_metric": lm_key, "lm_eval_version": lm_version,
                  "limit": lim, "seed": suite.seed, "n_total": prepared.total, "item_ids": prepared.ids,
                  "data_files": sorted(p.name for files in prepared.files.values() for p in files.values()),
                  "sources": [str(p) for p in prepared.sources], "generation_kwargs": gen,
                  "batch_size": batch_size, "suite": str(suite.path), "prior_version": PRIOR_VERSION,
                  "scorer": scorer}
        if name == "humaneval":
            record["sandbox"] = {"timeout_s": settings.get("timeout_s", 10.0),
                                 "memory_mb": settings.get("memory_mb", 1024)}
        store.begin_eval(key, task=f"prior/{name}", arm=model_label, model=model_desc,
                         model_hash=model_hash, data_hash=prepared.data_hash, settings=record)
        t0 = time.perf_counter()
        out = _run_lm_eval(lm, bundle, settings)
        wall = time.perf_counter() - t0
        res = out["results"].get(bundle.result_key, {})
        if lm_key not in res:
            known = sorted(k for k in res if "_stderr" not in k and k != "alias")
            raise ConfigError(f"{suite.path}: benchmarks.{name}.metric: lm-eval reported no "
                              f"'{lm_key}' (available: {', '.join(known)})")
        rows = _example_rows(bundle, prepared, out.get("samples", {}), lm_key)
        if len(rows) != len(prepared.ids):  # lm-eval must score every document it was given
            raise RuntimeError(f"prior/{name}: lm-eval logged {len(rows)} of {len(prepared.ids)} items")
        metric, filt = lm_key.split(",", 1)
        stderr = _num(res.get(f"{metric}_stderr,{filt}"))
        stderr_source = "lm-eval"
        if stderr is None:
            stderr, stderr_source = _fallback_stderr(bundle, out.get("samples", {}), rows, lm_key)
        versions = out.get("versions", {})
        task_version = {k: versions.get(k) for k in bundle.sample_keys} | (
            {bundle.result_key: versions.get(bundle.result_key)} if bundle.result_key in versions else {})
        store.add_examples(key, rows)
        summary = {"metric": settings["metric"], "value": float(res[lm_key]), "stderr": stderr,
                   "stderr_source": stderr_source, "n": len(rows), "wall_s": round(wall, 3),
                   "chance": base["chance"], "task_version": task_version,
                   "n_shot_reported": out.get("n-shot", {}),
                   "lm_eval_metrics": {k: v for k, v in res.items() if k != "alias"}}
        store.finish_eval(key, summary)
        if run_id:
            store.link(run_id, key, model_label)
        results[name] = base | {"value": summary["value"], "stderr": stderr, "n": len(rows),
                                "wall_s": summary["wall_s"], "cached": False, "stderr_source": stderr_source}
        if progress:
            progress("done", name, results[name])
    return results


def prior_average(results: dict[str, dict]) -> float:
    """Unweighted mean of the headline values of benchmarks counted in the average (by default the
    paper's six); benchmarks marked `in_average: false` (arc, gsm8k) are left out."""
    vals = [r["value"] for r in results.values() if r.get("in_average", True) and r.get("value") is not None]
    if not vals:
        raise ConfigError("prior_average: no benchmark in the results counts toward the average")
    return sum(vals) / len(vals)
