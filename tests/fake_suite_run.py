"""Fabricate complete suite runs in a results store, exactly as the pipeline stores them, with no
model and no torch: for tests of `harness.results`, `harness.report` and `harness.claims`.

    from fake_suite_run import make_suite_run, build_run   # tests/ is on sys.path under pytest
    run_id = make_suite_run(store, seeds=(0, 1), acc={"sdft": 0.7, ...})   # planted effects
    run_id = build_run(store, [{"point": "base", "arm": "base", "scores": {"tooluse": [1, 0]}}, ...])

`build_run` takes points with explicit per-item scores (hand-computable tests); `make_suite_run`
plants accuracies, prior drops and costs on a realistic grid (base, teacher, SFT and SDFT x 2
learning rates x seeds, six prior benchmarks, training curves). Item outcomes share one latent
difficulty per item across arms (the same hard items stay hard), so paired tests behave as on real
runs; every planted accuracy is met exactly.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from harness.manifest import Benchmark, Cost, PointRecord, SuiteManifest, link_label, val_name
from harness.store import Store

#: benchmark -> (metric, chance) as the prior suite stores them.
BENCHMARKS = {"hellaswag": ("acc", 0.25), "truthfulqa_mc1": ("mc1", 0.22), "mmlu": ("acc", 0.25),
              "ifeval": ("inst_level_loose_acc", 0.0), "winogrande": ("acc", 0.5), "humaneval": ("pass@1", 0.0)}
BASE_PRIOR = {"hellaswag": 0.45, "truthfulqa_mc1": 0.32, "mmlu": 0.26, "ifeval": 0.40, "winogrande": 0.56,
              "humaneval": 0.30}
MMLU_SUBJECTS = ("abstract_algebra", "anatomy", "astronomy", "college_physics")
APIS = tuple(f"Api{k}" for k in range(10))


def item_ids(task: str, n: int) -> list[str]:
    if task in ("tooluse", "tooluse-val"):
        return [f"{APIS[i % len(APIS)]}{'-val' if task.endswith('val') else ''}/{i}" for i in range(n)]
    if task == "prior/mmlu":
        return [f"{MMLU_SUBJECTS[i % len(MMLU_SUBJECTS)]}/{i}" for i in range(n)]
    return [str(i) for i in range(n)]


def add_eval(store: Store, task: str, arm: str, scores: Sequence[float] | Mapping[str, float],
             *, key: str | None = None, metric: str | None = None, status: str = "complete",
             weights: Sequence[float] | None = None, diags: Sequence[dict] | None = None) -> str:
    """Store one evaluation with its per-item rows and a summary like the real evaluators'.
    `weights`: instructions per item of a micro-averaged metric (IFEval), stored as the prior
    evaluator stores them (`n_instructions`, `n_followed` = score x instructions); the summary
    value is then the micro average, as lm-eval reports it. `diags`: extra per-item diagnostics
    (e.g. multiple choice `loglikelihoods` and `gold`, as the prior evaluator stores them)."""
    if isinstance(scores, Mapping):
        ids, vals = [str(k) for k in scores], [float(v) for v in scores.values()]
    else:
        vals = [float(v) for v in scores]
        ids = item_ids(task, len(vals))
    key = key or Store.eval_key(task=task, arm=arm, scores=vals, ids=ids,
                                **({"weights": list(weights)} if weights is not None else {}))
    store.begin_eval(key, task=task, arm=arm, model="fake", model_hash="fake", data_hash="fake",
                     settings={"metric": metric} if metric else {})
    rows = []
    for i, (item, s) in enumerate(zip(ids, vals)):
        diag = {"subject": item.split("/")[0]} if task == "prior/mmlu" and i % 2 == 0 else {}
        if weights is not None:
            diag |= {"n_instructions": weights[i], "n_followed": s * weights[i]}
        if diags is not None:
            diag |= dict(diags[i])
        rows.append({"item_id": item, "idx": i, "prompt_hash": f"h{i}", "output": "", "score": s,
                     "diagnostics": diag})
    store.add_examples(key, rows)
    n = len(vals)
    mean = sum(vals) / n if n else 0.0
    if weights is not None and n:
        mean = sum(v * w for v, w in zip(vals, weights)) / sum(weights)
    if task.startswith("prior/"):
        summary = {"metric": metric or BENCHMARKS.get(task.split("/", 1)[1], ("acc",))[0], "value": mean,
                   "stderr": math.sqrt(max(mean * (1 - mean), 0) / max(n - 1, 1)), "n": n}
    else:
        summary = {"accuracy": mean, "n": n, "correct": int(sum(vals)), "ci95": [0.0, 1.0]}
    if status == "complete":
        store.finish_eval(key, summary)
    return key


def add_curve(store: Store, train_key: str, method: str, steps: int, scale: float = 1.0) -> None:
    for s in range(1, steps + 1):
        if method == "sft":
            m = {"loss": 1.5 * math.exp(-s / 8) + 0.3, "divergence": float("nan"), "drift_kl": 0.04 * s * scale}
        else:
            d = 0.5 * math.exp(-s / 8) + 0.05
            m = {"loss": d, "divergence": d, "drift_kl": 0.012 * s * scale}
        m.update(lr=5e-5 * min(1.0, s / 3), tokens_per_s=900.0, step_s=1.5, grad_norm=0.8)
        store.add_train_step(train_key, s, m)


def build_run(store: Store, points: list[dict], *, task: str = "tooluse",
              benchmarks: Mapping[str, tuple[str, float]] | None = None, name: str = "fake",
              status: str = "complete", model: str = "qwen2.5-coder-0.5b-instruct", wall_s: float = 1234.5,
              run_id: str | None = None) -> str:
    """Store a suite run. Each point holds `manifest.PointRecord` fields (point, arm, method, seed,
    hparams, selected, cost) plus `scores`: {task: per-item scores (list or {item_id: score})} instead of eval keys,
    optionally `weights`: {task: instructions per item} (micro-averaged tasks, IFEval),
    optionally `diags`: {task: per-item diagnostics dicts}, and
    optionally `curve`: number of training steps to fabricate."""
    benchmarks = BENCHMARKS if benchmarks is None else benchmarks
    records = []
    for p in points:
        arm = p.get("arm", p["point"])
        evals = {t: add_eval(store, t, arm, s, weights=(p.get("weights") or {}).get(t),
                             diags=(p.get("diags") or {}).get(t))
                 for t, s in (p.get("scores") or {}).items()}
        train_key = p.get("train_key")
        if p.get("curve"):
            train_key = train_key or Store.eval_key(train=p["point"])
            add_curve(store, train_key, p.get("method", arm), int(p["curve"]), p.get("curve_scale", 1.0))
        records.append(PointRecord(point=p["point"], arm=arm, method=p.get("method", arm), seed=p.get("seed"),
                                   hparams=p.get("hparams", {}), selected=p.get("selected", True),
                                   train_key=train_key, checkpoint=f"/ckpt/{p['point']}" if train_key else None,
                                   cost=Cost(**p.get("cost", {})), evals=evals))
    manifest = SuiteManifest(suite=name, model=model, task=task, wall_s=wall_s, points=records,
                             benchmarks={b: Benchmark(metric=m, chance=c) for b, (m, c) in benchmarks.items()})
    rid = store.new_run("suite", name=name, config={"name": name, "model": model},
                        meta=manifest.model_dump(mode="json"), run_id=run_id)
    for r in records:
        for ev, k in r.evals.items():
            store.link(rid, k, link_label(r.point, ev if ev == val_name(task) else None))
    store.finish_run(rid, status=status)
    return rid


def planted(latent: np.ndarray, p: float, rng: np.random.Generator, jitter: int = 0) -> list[float]:
    """Binary scores with exactly round(p * n) correct: the easiest items (lowest latent), then
    `jitter` correct items swapped with as many wrong ones (same accuracy, some flips)."""
    n = latent.size
    k = int(round(p * n))
    order = np.argsort(latent, kind="stable")
    s = np.zeros(n)
    s[order[:k]] = 1.0
    j = min(jitter, k, n - k)
    if j > 0:
        right, wrong = np.flatnonzero(s == 1), np.flatnonzero(s == 0)
        s[rng.choice(right, j, replace=False)] = 0.0
        s[rng.choice(wrong, j, replace=False)] = 1.0
    return s.tolist()


def make_suite_run(store: Store, *, seeds: Sequence[int] = (0,), n_tool: int = 68, n_val: int = 20,
                   n_prior: int = 120, acc: Mapping[str, float] | None = None,
                   prior_drop: Mapping[str, float] | None = None, base_prior: Mapping[str, float] | None = None,
                   cost: Mapping[str, Mapping[str, float]] | None = None,
                   benchmarks: Sequence[str] | None = tuple(BENCHMARKS), with_teacher: bool = True,
                   lrs: Sequence[float] = (1e-5, 5e-5), jitter: int = 2, curve_steps: int = 12,
                   extra_arms: Mapping[str, str] | None = None, seed_spread: float = 0.0, name: str = "fake",
                   rng_seed: int = 0) -> str:
    """A realistic suite run with planted effects.

    acc: new-task accuracy of base, teacher and each trained arm's selected points (exact).
    prior_drop: per trained arm, drop of every prior benchmark below base (fractions, exact for
    binary benchmarks). cost: per trained arm, {train_wall_s, flops, tokens_generated,
    tokens_forwarded} of a 1-epoch point (the non-selected learning rate costs the same).
    extra_arms: {arm: method} variants (e.g. {"sdft-reverse": "sdft"}), planted like their method.
    seed_spread: seed s gets accuracy acc + seed_spread * ((s % 3) - 1) (0: identical seeds).
    The second learning rate of every arm is a worse, non-selected point.
    """
    acc = {"base": 0.40, "teacher": 0.85, "sft": 0.60, "sdft": 0.68, **(acc or {})}
    prior_drop = {"sft": 0.08, "sdft": 0.01, **(prior_drop or {})}
    base_prior = {**BASE_PRIOR, **(base_prior or {})}
    cost = {"sft": {"train_wall_s": 100.0, "flops": 1.0e14, "tokens_generated": 0, "tokens_forwarded": 50_000},
            "sdft": {"train_wall_s": 400.0, "flops": 2.5e14, "tokens_generated": 30_000,
                     "tokens_forwarded": 110_000}, **(cost or {})}
    benches = list(benchmarks or [])
    arms = {"sft": "sft", "sdft": "sdft", **(extra_arms or {})}
    rng = np.random.default_rng(rng_seed)
    lat = {"tooluse": rng.random(n_tool), "tooluse-val": rng.random(n_val)}
    for b in benches:
        lat[f"prior/{b}"] = rng.random(n_prior)
        lat[f"prior/{b}#2"] = rng.random(n_prior)
        lat[f"prior/{b}#3"] = rng.random(n_prior)

    def prior_scores(p: float, r: np.random.Generator, jit: int) -> dict[str, list[float]]:
        out = {}
        for b in benches:
            t = f"prior/{b}"
            q = min(1.0, max(0.0, base_prior[b] - p))
            if b == "ifeval":  # fractional credit: three instructions per prompt
                parts = [np.array(planted(lat[k], q, r, jit)) for k in (t, t + "#2", t + "#3")]
                out[t] = (sum(parts) / 3).tolist()
            else:
                out[t] = planted(lat[t], q, r, jit)
        return out

    # IFEval prompts carry three instructions each (stored counts, as the prior evaluator does)
    ifeval_w = {"prior/ifeval": [3] * n_prior} if "ifeval" in benches else {}
    points = [{"point": "base", "arm": "base", "method": "base", "selected": True, "weights": ifeval_w,
               "scores": {"tooluse": planted(lat["tooluse"], acc["base"], rng),
                          "tooluse-val": planted(lat["tooluse-val"], acc["base"], rng), **prior_scores(0.0, rng, 0)}}]
    if with_teacher:
        points.append({"point": "teacher", "arm": "teacher", "method": "teacher", "selected": True,
                       "scores": {"tooluse": planted(lat["tooluse"], acc["teacher"], rng)}})
    for arm, method in arms.items():
        a = acc.get(arm, acc.get(method))
        drop = prior_drop.get(arm, prior_drop.get(method, 0.0))
        c = cost.get(arm, cost.get(method, {}))
        for seed in seeds:
            r = np.random.default_rng([rng_seed, seed, len(arm)])
            for j, lr in enumerate(lrs):
                sel = j == 0
                noise = 1.0 + 0.05 * ((seed + len(arm)) % 3) + 0.02 * j
                a_seed = a + seed_spread * ((seed % 3) - 1)
                pt_acc = a_seed if sel else max(0.0, a_seed - 0.08)
                points.append({
                    "point": f"{arm}/lr={lr},epochs=1/seed={seed}", "arm": arm, "method": method, "seed": seed,
                    "hparams": {"lr": lr, "epochs": 1}, "selected": sel, "curve": curve_steps, "weights": ifeval_w,
                    "curve_scale": 1.0 + j,
                    "cost": {k: (v * noise if k in ("train_wall_s", "flops") else v) for k, v in c.items()}
                    | {"steps": curve_steps},
                    "scores": {"tooluse": planted(lat["tooluse"], pt_acc, r, jitter),
                               "tooluse-val": planted(lat["tooluse-val"], pt_acc, r, 1),
                               **prior_scores(drop + (0.0 if sel else 0.03), r, jitter)}})
    bm = {b: BENCHMARKS[b] for b in benches}
    return build_run(store, points, benchmarks=bm, name=name)


def fake_db(path, **kwargs: Any) -> tuple[Store, str]:
    """A store at `path` holding one `make_suite_run(**kwargs)`; returns (store, run_id)."""
    store = Store(path)
    return store, make_suite_run(store, **kwargs)
