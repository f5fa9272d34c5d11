"""N SDFT steps of the harness and of TRL's `trl.experimental.sdft.SDFTTrainer`, side by side.

    python benchmarks/bench_sdft_vs_trl.py --model smollm2-135m-instruct --steps 2 --batch 4

Both run the paper's configuration (LoRA r16 on q/k/v/o, full-vocabulary forward KL, EMA teacher
α=0.01 every step, one rollout per prompt at temperature 1, 3 skipped tokens, the paper's teacher
template) on the same prompts (offline tool-use training set), in separate processes so each
peak RSS is its own. Prints tokens/s and peak RSS of each and the harness/TRL ratios.
Gradient checkpointing is the same in both (off unless --gradient-checkpointing). The harness
samples its rollouts from its student's own prompt forward (`share_rollout_prefill`, its default);
`--also-separate-prefill` adds a third process, the harness with the rollouts' own prefill, so that
saving is measured in the same run. Pin threads (--threads) and run nothing else: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_harness(a) -> dict:
    from harness.paths import data_dir
    from harness.tasks.tooluse import data as tu
    from harness.train.config import TrainConfig
    from harness.train.loop import Run

    loaded = tu.load_tooluse(tu.resolve_split("eval_real", data_dir()), skip_invalid=True)
    cfg = TrainConfig(method="sdft", model=a.model, batch_size=a.batch, micro_batch_size=a.batch, max_steps=a.steps,
                      max_completion_tokens=a.new_tokens, warmup_steps=1, bf16=a.bf16, drift_every=0,
                      save_every=10_000, lr=1e-4, gradient_checkpointing=a.gradient_checkpointing,
                      share_rollout_prefill=a.which == "harness")
    import tempfile

    run = Run(cfg, loaded.records[: a.batch * a.steps], Path(tempfile.mkdtemp()) / "h", loaded.data_hash)
    t = time.perf_counter()
    rows = [run.train_step() for _ in range(a.steps)]
    wall = time.perf_counter() - t
    gen = sum(r["tokens_generated"] for r in rows)
    return {"wall_s": wall, "tokens_generated": gen, "gen_tokens_per_s_overall": gen / wall,
            "step_s": [r["step_s"] for r in rows], "flops_estimate": run.totals["flops"],
            "share_rollout_prefill": cfg.shares_rollout_prefill()}


def run_trl(a) -> dict:
    import tempfile

    from datasets import Dataset
    from peft import LoraConfig
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    from harness.models import load_model
    from harness.paths import data_dir
    from harness.tasks.tooluse import data as tu
    from harness.tasks.base import TEACHER_TEMPLATES

    loaded = tu.load_tooluse(tu.resolve_split("eval_real", data_dir()), skip_invalid=True)
    recs = loaded.records[: a.batch * a.steps]
    model, tok = load_model(a.model)
    template = TEACHER_TEMPLATES["paper"].replace("{demonstration}", "{privileged_context}")
    args = SDFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=a.batch, num_generations=1,
                      max_steps=a.steps, learning_rate=1e-4, warmup_steps=1, use_cpu=True, report_to="none",
                      distillation_mode="full_logits", distillation_alpha=0.0, teacher_model_kind="ema",
                      teacher_update_rate=0.01, teacher_sync_steps=1, num_loss_tokens_to_skip=3,
                      max_completion_length=a.new_tokens, max_prompt_length=None, teacher_prompt_template=template,
                      bf16=a.bf16, temperature=1.0, gradient_checkpointing=a.gradient_checkpointing, logging_steps=1, save_strategy="no",
                      shuffle_dataset=False)
    ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": r.prompt}] for r in recs],
                            "privileged_context": [r.demonstration for r in recs]})
    lcfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")
    tr = SDFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lcfg)
    t = time.perf_counter()
    tr.train()
    wall = time.perf_counter() - t
    logs = [l for l in tr.state.log_history if "loss" in l]
    gen = sum(float(l.get("completions/mean_length", 0)) * a.batch for l in logs)
    return {"wall_s": wall, "tokens_generated": gen, "gen_tokens_per_s_overall": gen / wall if gen else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="on in both (default: off in both)")
    ap.add_argument("--also-separate-prefill", action="store_true",
                    help="also run the harness with share_rollout_prefill off (a third process; "
                         "gradient checkpointing turns the shared prefill off anyway)")
    ap.add_argument("--which", choices=["harness", "harness-separate-prefill", "trl", "both"], default="both")
    a = ap.parse_args()
    if a.also_separate_prefill and a.gradient_checkpointing:
        sys.exit("--also-separate-prefill compares nothing with --gradient-checkpointing (which turns the shared "
                 "prefill off)")
    if a.which == "both":
        import torch

        from bench_prior_scorer import matmul_peak

        torch.set_num_threads(a.threads)
        dtype = torch.bfloat16 if a.bf16 else torch.float32
        res = {"matmul_peak_gflops_before": matmul_peak(dtype) / 1e9}
        for w in ("harness", "trl") + (("harness-separate-prefill",) if a.also_separate_prefill else ()):
            cmd = [sys.executable, __file__, "--which", w, "--model", a.model, "--steps", str(a.steps), "--batch",
                   str(a.batch), "--new-tokens", str(a.new_tokens), "--threads", str(a.threads)] + (["--bf16"] if a.bf16 else []) + (["--gradient-checkpointing"] if a.gradient_checkpointing else [])
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                sys.exit(f"{w} failed:\n{out.stderr[-3000:]}")
            res[w] = json.loads(out.stdout.strip().splitlines()[-1])
        res["matmul_peak_gflops_after"] = matmul_peak(dtype) / 1e9
        h, t = res["harness"], res["trl"]
        # the machine's limit: the harness's FLOPs estimate (accounting.flops_estimate) at the faster
        # of the two peak readings taken around the runs (this shared machine's speed drifts)
        peak = max(res["matmul_peak_gflops_before"], res["matmul_peak_gflops_after"]) * 1e9
        res["harness_limit_s"] = h["flops_estimate"] / peak
        res["harness_fraction_of_limit"] = res["harness_limit_s"] / h["wall_s"]
        res["trl_fraction_of_harness_limit"] = res["harness_limit_s"] / t["wall_s"]  # the same prompts' work
        res["ratio_wall_harness_over_trl"] = h["wall_s"] / t["wall_s"]
        res["ratio_peak_rss_harness_over_trl"] = h["peak_rss_mb"] / t["peak_rss_mb"]
        if h.get("gen_tokens_per_s_overall") and t.get("gen_tokens_per_s_overall"):
            res["ratio_tokens_per_s_harness_over_trl"] = h["gen_tokens_per_s_overall"] / t["gen_tokens_per_s_overall"]
        if "harness-separate-prefill" in res:
            res["ratio_wall_separate_over_shared_prefill"] = res["harness-separate-prefill"]["wall_s"] / h["wall_s"]
            res["ratio_wall_trl_over_separate_prefill"] = t["wall_s"] / res["harness-separate-prefill"]["wall_s"]
        res["speedup_trl_over_harness"] = t["wall_s"] / h["wall_s"]
        print(json.dumps(res, indent=1))
        return
    import torch

    torch.set_num_threads(a.threads)
    r = run_trl(a) if a.which == "trl" else run_harness(a)
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(r))


if __name__ == "__main__":
    main()
