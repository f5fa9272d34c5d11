"""Tool-use evaluation speed at different generation batch sizes, side by side, on one model.

    python benchmarks/bench_eval_batch_size.py --model qwen2.5-coder-0.5b-instruct --arm teacher \
        --items 24 --new-tokens 192 --batches 8,12

The evaluation path itself (`HFBackend.generate`: chat template, length-sorted left-padded
batches, greedy row pruning), the same prompts for every batch size, one model load. Prints each
batch size's wall-clock, its ratio to the first, and how many outputs equal the first batch
size's (padding changes the arithmetic slightly, so greedy outputs can differ in rare rows). Run
nothing else beside it: only ratios measured in one run mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--arm", choices=["base", "teacher"], default="teacher")
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--new-tokens", type=int, default=192)
    ap.add_argument("--batches", default="8,12", help="Comma-separated batch sizes, run in this order.")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    from harness.evaluate import arm_prompt
    from harness.generation import GenerationSettings, HFBackend
    from harness.models import load_model
    from harness.paths import data_dir
    from harness.tasks.tooluse import data as tu

    torch.set_num_threads(a.threads)
    recs = tu.load_tooluse(tu.resolve_split("paper68", data_dir())).records[: a.items]
    prompts = [arm_prompt(r, a.arm, "paper") for r in recs]
    model, tok = load_model(a.model)
    settings = GenerationSettings(max_new_tokens=a.new_tokens)
    sizes = [int(b) for b in a.batches.split(",")]
    runs, texts = [], []
    for b in sizes:
        t = time.perf_counter()
        outs = HFBackend(model, tok, batch_size=b).generate(prompts, settings)
        runs.append({"batch": b, "wall_s": round(time.perf_counter() - t, 1),
                     "new_tokens": sum(o.n_new_tokens for o in outs)})
        texts.append([o.text for o in outs])
    for r, tx in zip(runs, texts):
        r["ratio_to_first"] = round(r["wall_s"] / runs[0]["wall_s"], 3)
        r["outputs_equal_to_first"] = sum(x == y for x, y in zip(tx, texts[0]))
    print(json.dumps({"model": a.model, "arm": a.arm, "items": len(recs), "new_tokens": a.new_tokens,
                      "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
