"""SDFT optimizer steps with rollouts from the trainer's own sampler ('hf') against a colocated vLLM
engine ('vllm'), side by side in one process on the same records, seeds and settings.

    .venv-vllm/bin/python benchmarks/bench_vllm_rollouts.py --model qwen2.5-coder-0.5b-instruct --steps 2 \
        --new-tokens 128

Each backend gets a fresh run (same LoRA initialisation, same data order) and takes `--steps`
optimizer steps; per step it prints wall-clock, the rollout phase (`gen_s`), generated tokens and
rollout tokens/s. vLLM's engine start (tens of seconds, once per run) is timed apart from the steps.
The two backends sample different tokens from the same seeds (different kernels and random
streams), so rollout lengths differ; tokens/s is the comparable number. Runs in `.venv-vllm`; run
nothing else beside it: only ratios measured in one run mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--micro", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--bf16", default="auto", help="true, false or auto (the training loop's setting)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from harness.paths import data_dir
    from harness.tasks.tooluse import data as tu
    from harness.train.config import TrainConfig
    from harness.train.loop import Run

    bf16 = {"true": True, "false": False}.get(a.bf16, a.bf16)
    loaded = tu.load_tooluse(tu.resolve_split("eval_real", data_dir()), skip_invalid=True)
    report = {}
    for backend in ("hf", "vllm"):
        cfg = TrainConfig(method="sdft", model=a.model, batch_size=a.batch, micro_batch_size=a.micro,
                          max_steps=a.steps, max_prompt_tokens=2048, max_completion_tokens=max(224, a.new_tokens),
                          max_rollout_tokens=a.new_tokens, warmup_steps=1, lr=5e-4, bf16=bf16, drift_every=0,
                          gradient_checkpointing=True, save_every=10_000, rollout_backend=backend)
        run = Run(cfg, loaded.records, Path(tempfile.mkdtemp()) / f"bench-{backend}", loaded.data_hash)
        start_s = 0.0
        if backend == "vllm":
            t = time.perf_counter()
            run.vllm_rollouts()._engine()
            start_s = time.perf_counter() - t
            print(f"vllm engine start {start_s:.1f} s", flush=True)
        rows = []
        try:
            for _ in range(a.steps):
                r = run.train_step()
                rows.append({k: r[k] for k in ("step", "step_s", "gen_s", "tokens_generated", "loss")})
                print(f"{backend} step {r['step']}: {r['step_s']:.1f} s, rollouts {r['gen_s']:.1f} s, "
                      f"{r['tokens_generated']} tokens ({r['tokens_generated'] / r['gen_s']:.1f} tok/s), "
                      f"loss {r['loss']:.4f}", flush=True)
        finally:
            run.close_rollouts()
        report[backend] = {"bf16": cfg.bf16, "engine_start_s": start_s, "steps": rows,
                           "median_step_s": statistics.median(r["step_s"] for r in rows),
                           "median_gen_s": statistics.median(r["gen_s"] for r in rows),
                           "gen_tokens_per_s": sum(r["tokens_generated"] for r in rows) / sum(r["gen_s"] for r in rows)}
        del run
    hf, vl = report["hf"], report["vllm"]
    print(f"bf16 {hf['bf16']}; median step hf {hf['median_step_s']:.1f} s vs vllm {vl['median_step_s']:.1f} s "
          f"({hf['median_step_s'] / vl['median_step_s']:.2f}x); rollout tokens/s hf {hf['gen_tokens_per_s']:.1f} vs "
          f"vllm {vl['gen_tokens_per_s']:.1f} ({vl['gen_tokens_per_s'] / hf['gen_tokens_per_s']:.2f}x); "
          f"vllm engine start {vl['engine_start_s']:.1f} s (once per run)")
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
