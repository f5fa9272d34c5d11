"""The prior suite through lm-eval's own `vllm` model against the HF path, on the same items.

    .venv-vllm/bin/python benchmarks/bench_vllm_prior.py --model qwen2.5-coder-0.5b-instruct \
        --suite suites/prior-cpu.yaml --limit 20 --dtype bfloat16

Runs `harness eval prior --backend vllm` and `--backend hf` in one process (vLLM first, its engine
start included in its wall-clock) into a scratch store, then prints per benchmark both headline
values, the largest per-choice |Δ log-likelihood|, how many multiple-choice items chose the same
answer and how many generated outputs are identical. In `.venv-vllm` the HF path is stock `HFLM`
whenever its transformers cannot keep logits by a boolean mask (the shared-context scorer then
steps aside; see `harness.prior.scorer`). Run nothing else beside it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

MC = "hellaswag,truthfulqa_mc1,mmlu,winogrande,arc_easy"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--suite", default="suites/prior-cpu.yaml")
    ap.add_argument("--benchmarks", default=MC + ",ifeval")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    from harness.commands import prepare_prior_eval
    from harness.store import Store

    db = Path(tempfile.mkdtemp()) / "h.db"
    store = Store(db)
    common = dict(model=a.model, suite=Path(a.suite), benchmarks=a.benchmarks, limit=a.limit, dtype=a.dtype, db=str(db))
    res, wall = {}, {}
    for backend in ("vllm", "hf"):
        t = time.perf_counter()
        res[backend] = prepare_prior_eval(backend=backend, **common).run(store=store)
        wall[backend] = time.perf_counter() - t
    report = {"model": a.model, "dtype": a.dtype, "limit": a.limit, "wall_s": wall, "benchmarks": {}}
    for name in res["vllm"].results:
        v, h = res["vllm"].results[name], res["hf"].results[name]
        rv = {r["item_id"]: r for r in store.examples(v["eval_key"])}
        rh = {r["item_id"]: r for r in store.examples(h["eval_key"])}
        worst, same, n = 0.0, 0, 0
        for item, x in rv.items():
            y = rh[item]
            lx, ly = x["diagnostics"].get("loglikelihoods"), y["diagnostics"].get("loglikelihoods")
            if lx is not None:
                worst = max(worst, max(abs(p - q) for p, q in zip(lx, ly)))
            same += x["output"] == y["output"]
            n += 1
        report["benchmarks"][name] = {"vllm": v["value"], "hf": h["value"], "n": n, "same_output": same,
                                      "max_abs_dloglik": worst if worst else None,
                                      "vllm_s": v["wall_s"], "hf_s": h["wall_s"]}
        print(f"{name:<15} vLLM {v['value']:.4f}  HF {h['value']:.4f}  same {same}/{n}  "
              f"max|Δll| {worst:.2e}  time vLLM {v['wall_s']:.1f}s HF {h['wall_s']:.1f}s", flush=True)
    print(f"wall (engine start / model load included): vLLM {wall['vllm']:.1f}s, HF {wall['hf']:.1f}s")
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
