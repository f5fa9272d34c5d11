"""SDFT rollout sampling of one optimizer step: one batch per step through the bf16 head (what the
training loop does) against one call per micro-batch with autocast casting the fp32 head at every
decode step, side by side in one process on the same prompts and seeds.

    python benchmarks/bench_rollouts.py --model qwen2.5-coder-0.5b-instruct --new-tokens 48 --repeats 2

Rows are forced to run the whole budget (no EOS), so both variants decode the same number of
tokens; the sampled tokens are compared too (the per-row random streams make them equal up to
floating-point ties between batch shapes). Alternates the variants `--repeats` times and prints the
median of each and their ratio. Run nothing else beside it: the machine is shared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--micro", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from harness.paths import data_dir
    from harness.tasks.tooluse import data as tu
    from harness.train.config import TrainConfig
    from harness.train.loop import Run

    loaded = tu.load_tooluse(tu.resolve_split("eval_real", data_dir()), skip_invalid=True)
    cfg = TrainConfig(method="sdft", model=a.model, batch_size=a.batch, micro_batch_size=a.micro, max_steps=1,
                      max_prompt_tokens=2048, max_completion_tokens=max(224, a.new_tokens),
                      max_rollout_tokens=a.new_tokens, warmup_steps=1, bf16="auto", drift_every=0,
                      save_every=10_000)
    run = Run(cfg, loaded.records, Path(tempfile.mkdtemp()) / "bench", loaded.data_hash)
    run.eos_ids = set()  # every row decodes the whole budget in both variants
    micro = run.my_micro_batches(0)
    seeds = run.row_seeds(0, micro)
    fast_head = Run._bf16_head

    def per_micro_batch():
        Run._bf16_head = lambda self, model: nullcontext()
        try:
            return [run.rollouts(exs, s) for (_, exs), s in zip(micro, seeds)]
        finally:
            Run._bf16_head = fast_head

    def one_batch():
        return run.step_rollouts(micro, seeds)

    print(f"bf16 {cfg.bf16}; prompts {[len(e.student_ids) for _, exs in micro for e in exs]} tokens; "
          f"{a.new_tokens} new tokens each", flush=True)
    times: dict[str, list[float]] = {"per micro-batch, autocast head": [], "one batch, bf16 head": []}
    outs = {}
    for _ in range(a.repeats):
        for name, fn in (("per micro-batch, autocast head", per_micro_batch), ("one batch, bf16 head", one_batch)):
            t = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t)
            print(f"{name}: {times[name][-1]:.1f} s", flush=True)
    old, new = (statistics.median(v) for v in times.values())
    rows = lambda parts: [r for c, *_ in parts for r in c.tolist()]
    same = sum(x == y for x, y in zip(*(rows(v) for v in outs.values())))
    print(f"median: per micro-batch {old:.1f} s, one batch {new:.1f} s, speed-up {old / new:.2f}x; "
          f"identical rows {same}/{a.batch}")


if __name__ == "__main__":
    main()
