"""Wall clock: the harness's prior-suite evaluation vs the standalone `lm_eval` CLI, same subset.

    .venv/bin/python benchmarks/bench_prior_vs_lmeval.py --limit 20 \
        --benchmarks hellaswag,arc_easy,winogrande,truthfulqa_mc1,mmlu

Both sides evaluate the same generated task configs on the same items with one torch thread.
The harness is timed cold (fresh results store, model already loaded: the in-process use after
training) and warm (the same call again: every benchmark a cache hit). The CLI is timed as one
process over all benchmarks (its normal use, including start-up, task indexing and model loading)
and, for an apples-to-apples count of start-up overhead, as one process per benchmark.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--benchmarks", default="hellaswag,arc_easy,winogrande,truthfulqa_mc1,mmlu")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--suite", default=None, help="suite file (default: suites/prior.yaml)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--skip-per-benchmark-cli", action="store_true")
    args = ap.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from harness.models import load_model, resolve
    from harness.prior import evaluate_prior
    from harness.prior.parity import compare, run_cli
    from harness.prior.suite import DEFAULT_SUITE
    from harness.store import Store

    names = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    folder = resolve(args.model).path
    t0 = time.perf_counter()
    model, tok = load_model(args.model)
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="bench-prior-") as tmp:
        store = Store(Path(tmp) / "bench.db")
        kw = dict(model_label="bench", store=store, suite_path=args.suite or DEFAULT_SUITE, benchmarks=names,
                  limit=args.limit, data_dir=args.data_dir, batch_size=args.batch_size)
        t0 = time.perf_counter()
        res = evaluate_prior(model, tok, **kw)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluate_prior(model, tok, **kw)
        warm = time.perf_counter() - t0
        cli, walls = run_cli(folder, res, Path(tmp) / "cli", limit=args.limit, batch_size=args.batch_size,
                             data_dir=args.data_dir, per_benchmark=False)
        joint = walls["all"]
        per = None
        if not args.skip_per_benchmark_cli:
            cli_per, walls_per = run_cli(folder, res, Path(tmp) / "cli-per", limit=args.limit,
                                         batch_size=args.batch_size, data_dir=args.data_dir)
            per = sum(walls_per.values())
            cli = cli_per  # per-benchmark CLI numbers are the exact comparison
        rows = compare(res, cli)

    print(f"model {args.model} ({folder}), limit {args.limit}, batch {args.batch_size}, "
          f"threads {args.threads}, benchmarks {', '.join(names)}")
    print(f"{'benchmark':16} {'n':>4} {'harness':>10} {'lm_eval':>10} {'equal':>6} {'harness s':>10}")
    for r in rows:
        print(f"{r['benchmark']:16} {r['n']:>4} {r['harness']:>10.4f} {r['cli']:>10.4f} "
              f"{str(r['harness'] == r['cli']):>6} {res[r['benchmark']]['wall_s']:>10.2f}")
    print(f"harness: model load {load_s:.1f} s, evaluate cold {cold:.1f} s, warm (all cached) {warm:.2f} s")
    print(f"lm_eval CLI, one process for all benchmarks: {joint:.1f} s")
    if per is not None:
        print(f"lm_eval CLI, one process per benchmark: {per:.1f} s")
    print(f"ratio harness cold / CLI joint = {cold / joint:.2f}  "
          f"(harness incl. model load: {(cold + load_s) / joint:.2f})")
    if per is not None:
        print(f"ratio harness cold / CLI per-benchmark = {cold / per:.2f}")


if __name__ == "__main__":
    main()
