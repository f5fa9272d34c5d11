"""New-task evaluation (tool use): base and teacher arms, cached and resumable in the store.

    harness eval tooluse --model qwen2.5-coder-0.5b-instruct --arms base,teacher --limit 20

Arms:
- `base`: the model answers the student prompt (no demonstration);
- `teacher`: the same model with the demonstration in context (the paper's teacher prompt) —
  the in-context ceiling that SDFT distils from.
A trained checkpoint is evaluated as arm `base` of that checkpoint (the caller labels it).

Each (model weights, data subset, arm, generation settings, decoder version, template, scorer
version) is one evaluation keyed by content. Per-item outcomes are committed batch by batch, so a killed run
loses at most one batch and a re-run generates only the missing items.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

from .errors import ConfigError
from .generation import Backend, GenerationSettings, HFBackend, decoder_id
from .hashing import hash_obj, hash_text
from .metrics import wilson_interval as wilson
from .store import Store
from .tasks import tooluse as tu
from .tasks.tooluse_scorer import SCORER_VERSION, score

ARMS = ("base", "teacher")


@dataclass
class EvalRequest:
    records: list[tu.ToolUseRecord]
    data_hash: str
    arm: str = "base"
    settings: GenerationSettings = GenerationSettings()
    teacher_template: str = "paper"
    split: str = "paper68"
    dtype: str = "float32"


def check_arms(arms: Sequence[str]) -> list[str]:
    arms = [a.strip() for a in arms if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise ConfigError(f"unknown arm '{bad[0] if bad else ''}' (choose from {', '.join(ARMS)})")
    return arms


def arm_prompt(rec: tu.ToolUseRecord, arm: str, template: str) -> str:
    return rec.prompt if arm == "base" else tu.teacher_prompt(rec.prompt, rec.demonstration, template)


def eval_key(req: EvalRequest, model_hash: str) -> str:
    ids_hash = hash_obj([r.item_id for r in req.records])
    return Store.eval_key(task="tooluse", arm=req.arm, model_hash=model_hash, data_hash=req.data_hash,
                          items=ids_hash, settings=req.settings.key(), decoder=decoder_id(req.settings),
                          dtype=req.dtype,
                          template=req.teacher_template if req.arm == "teacher" else None,
                          scorer=SCORER_VERSION)


def summarise(rows: list[dict], wall_s: float, gen_tokens: int, gen_s: float) -> dict:
    n = len(rows)
    k = sum(int(r["score"]) for r in rows)
    lo, hi = wilson(k, n)
    diag = [r["diagnostics"] for r in rows]

    def mean(key):
        return sum(float(d[key]) for d in diag) / n if n else 0.0

    return {"n": n, "correct": k, "accuracy": k / n if n else 0.0, "ci95": [lo, hi],
            "format_valid": mean("format_valid"), "action_match": mean("action_match"),
            "arg_f1": mean("arg_f1"), "wall_s": wall_s, "gen_tokens": gen_tokens,
            "tokens_per_s": gen_tokens / gen_s if gen_s > 0 else None,
            "mean_new_tokens": (sum(r["tokens"] for r in rows) / n) if n else 0.0}


def evaluate(req: EvalRequest, store: Store, model_hash: str, model_label: str,
             backend_factory: Callable[[], Backend] | Backend,
             progress: Callable[[int, int], None] | None = None, chunk: int | None = None) -> dict:
    """Run (or fetch from the cache) one arm's evaluation; return its summary with `eval_key`.

    `backend_factory` is only called when something must be generated, so a cache hit never
    needs the model in memory. `chunk` items are generated and committed together; it defaults to
    the backend's batch size, so every generation batch is full and a kill loses at most one batch.
    """
    chunk = chunk or getattr(backend_factory, "batch_size", None) or 8
    key = eval_key(req, model_hash)
    hit = store.get_eval(key)
    if hit:
        return hit["summary"] | {"eval_key": key, "cached": True}
    store.begin_eval(key, task="tooluse", arm=req.arm, model=model_label, model_hash=model_hash,
                     data_hash=req.data_hash,
                     settings={"generation": req.settings.key(), "decoder": decoder_id(req.settings),
                               "split": req.split, "dtype": req.dtype,
                               "teacher_template": req.teacher_template, "scorer": SCORER_VERSION,
                               "items": [r.item_id for r in req.records]})
    done = store.done_items(key)
    todo = [(i, r) for i, r in enumerate(req.records) if r.item_id not in done]
    t0 = time.perf_counter()
    gen_tokens, gen_s = 0, 0.0
    if progress:
        progress(len(done), len(req.records))
    if todo:
        backend = backend_factory() if callable(backend_factory) and not hasattr(backend_factory, "generate") \
            else backend_factory
        for c in range(0, len(todo), chunk):
            part = todo[c:c + chunk]
            prompts = [arm_prompt(r, req.arm, req.teacher_template) for _, r in part]
            ts = time.perf_counter()
            outs = backend.generate(prompts, req.settings)
            gen_s += time.perf_counter() - ts
            rows = []
            for (i, r), p, g in zip(part, prompts, outs):
                s = score(g.text, r.gold_calls)
                gen_tokens += g.n_new_tokens
                rows.append({"item_id": r.item_id, "idx": i, "prompt_hash": hash_text(p), "output": g.text,
                             "parsed": {"actions": s.pred_actions, "inputs": s.pred_inputs},
                             "score": float(s.correct), "diagnostics": s.diagnostics(),
                             "tokens": g.n_new_tokens})
            store.add_examples(key, rows)  # committed: a kill after this loses nothing
            if progress:
                progress(len(done) + c + len(part), len(req.records))
    rows = store.examples(key)
    summary = summarise(rows, time.perf_counter() - t0, gen_tokens, gen_s)
    summary.update(arm=req.arm, model=model_label, split=req.split)
    store.finish_eval(key, summary)
    return summary | {"eval_key": key, "cached": False}


def hf_backend_factory(model_spec: str, dtype: str, device: str, batch_size: int,
                       trust_remote_code: bool = False) -> Callable[[], HFBackend]:
    """Load the model lazily (only when generation is needed) and memoise it."""
    holder: dict = {}

    def make() -> HFBackend:
        if "b" not in holder:
            from .models import load_model

            load_dtype = "float32" if dtype == "bf16-autocast" else dtype
            model, tok = load_model(model_spec, dtype=load_dtype, device=device,
                                    trust_remote_code=trust_remote_code)
            holder["b"] = HFBackend(model, tok, batch_size=batch_size,
                                    autocast_bf16=dtype == "bf16-autocast")
        return holder["b"]

    make.batch_size = batch_size  # type: ignore[attr-defined]  # evaluate() commits one batch at a time
    return make


def _reference_eval(store: Store, task: str, items: list[str]) -> dict | None:
    """The newest complete evaluation of `task` whose item set covers `items`: it tells how the
    baseline was measured (split, generation budget, dtype, suite file)."""
    want = set(items)
    for e in reversed(store.find_evals(task=task, status="complete")):
        if e["arm"] == "teacher":  # a checkpoint is measured as a student, never with the demonstration
            continue
        ids = e["settings"].get("items") or e["settings"].get("item_ids") or []
        if want <= {str(i) for i in ids}:
            return e
    return None


def evaluate_candidate(spec: str, metrics, store: Store) -> dict:
    """Evaluate a checkpoint (alias, folder or adapter folder) on exactly the baseline's items,
    with the settings the baseline was measured with; used by `harness gate`.

    Returns {metric: {"task", "metric", "items": {item_id: score}}}. Cached by content like
    every evaluation, so a second gate run on the same checkpoint computes nothing."""
    from .errors import ConfigError
    from .models import fingerprint
    from .paths import data_dir as resolve_data_dir

    if store is None:
        raise ConfigError(f"candidate {spec!r}: evaluating a checkpoint needs a results store (--db) that holds "
                          "the baseline's evaluations")
    out: dict = {}
    prior_by_ref: dict = {}
    for name in metrics:
        items = list(metrics[name]) if not isinstance(metrics, (list, tuple)) else []
        task = name
        ref = _reference_eval(store, task, items)
        if ref is None:
            raise ConfigError(f"metric {name!r}: no stored evaluation in {store.path} covers the baseline's "
                              "items, so the gate cannot tell how to measure the candidate; evaluate the "
                              "baseline with harness first")
        st = ref["settings"]
        if task == "tooluse":
            split = st.get("split", "paper68")
            path = tu.resolve_split(split, resolve_data_dir(None))
            loaded = tu.load_tooluse(path, skip_invalid=True)
            by_id = {r.item_id: r for r in loaded.records}
            missing = [i for i in items if i not in by_id]
            if missing:
                raise ConfigError(f"metric 'tooluse': baseline item {missing[0]!r} is not in {path}")
            ids = [str(i) for i in st.get("items", items)]
            recs = [by_id[i] for i in ids if i in by_id]
            gen = GenerationSettings(**st["generation"])
            req = EvalRequest(recs, tu.records_hash(recs),
                              ref["arm"] if ref["arm"] in ARMS else "base", gen, st.get("teacher_template", "paper"),
                              split, st.get("dtype", "bfloat16"))
            res = evaluate(req, store, fingerprint(spec), spec,
                           hf_backend_factory(spec, req.dtype, "cpu", 8))
            scores = {r["item_id"]: r["score"] for r in store.examples(res["eval_key"])}
            out[name] = {"task": task, "metric": "accuracy", "items": {i: scores[i] for i in items}}
        elif task.startswith("prior/"):
            bench = task.split("/", 1)[1]
            prior_by_ref.setdefault((st.get("suite"), st.get("limit")), []).append((name, bench, items))
        else:
            raise ConfigError(f"metric {name!r}: the gate cannot evaluate task {task!r} on a checkpoint")
    if prior_by_ref:
        from .hashing import hash_obj as _h
        from .models import load_model
        from .prior.evaluate import evaluate_prior

        from .prior.evaluate import plan_keys

        for (suite_path, limit), group in prior_by_ref.items():
            benches = [b for _, b, _ in group]
            # the dtype the checkpoint was already measured in, if any (a cache hit); else float32
            dtype = "float32"
            for d in ("float32", "bfloat16"):
                keys = plan_keys(_h([fingerprint(spec), d, "merged-adapter"]), suite_path=suite_path,
                                 benchmarks=benches, limit=limit)
                if all(store.get_eval(k) is not None for k in keys.values()):
                    dtype = d
                    break
            mh = _h([fingerprint(spec), dtype, "merged-adapter"])
            res = evaluate_prior(lambda: load_model(spec, dtype=dtype, merge_adapter=True), None,
                                 model_label=spec, store=store, suite_path=suite_path, model_hash=mh,
                                 benchmarks=benches, limit=limit)
            for name, bench, items in group:
                scores = {r["item_id"]: r["score"] for r in store.examples(res[bench]["eval_key"])}
                out[name] = {"task": name, "metric": res[bench]["metric"],
                             "items": {i: scores[i] for i in items if i in scores}}
    return out
