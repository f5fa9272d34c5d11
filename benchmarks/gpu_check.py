"""GPU check: bf16 SFT and SDFT steps and generation throughput on the default model's architecture,
and, where vLLM is installed, vLLM generation and SDFT steps with vLLM rollouts.

    python benchmarks/gpu_check.py --arch .gpu/qwen-arch --out $OUT/gpu_check.json

The GPU machine cannot install packages or reach a model hub, so the model is the default's exact
architecture (Qwen2.5-Coder-0.5B config and tokenizer) with random weights: speed and memory
depend on shapes, not on weight values. Prompts are ~750 tokens like ToolAlpaca's; generation is
forced to the full budget (min_new_tokens) so tokens/s compare across runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def records(n: int, prompt_words: int):
    from harness.tasks.tooluse.data import ToolUseRecord

    out = []
    for i in range(n):
        prompt = " ".join(f"tool{i}_{j} documentation" for j in range(prompt_words // 2)) + f"\nQuestion {i}?"
        demo = f"Thought: I need to call getWeather.\nAction: getWeather\nAction Input: {{\"city\": \"C{i}\"}}"
        out.append(ToolUseRecord(f"g/{i}", prompt, [{"Action": "getWeather", "Action_Input": "{}"}], demo, "g", prompt))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True, help="folder with config.json + tokenizer files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-words", type=int, default=300)
    args = ap.parse_args()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from harness.generation import GenerationSettings, HFBackend
    from harness.train.config import TrainConfig
    from harness.train.loop import Run

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(args.arch)
    tok.padding_side = "left"
    cfg = AutoConfig.from_pretrained(args.arch)
    torch.manual_seed(0)
    report: dict = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
                    "torch": torch.__version__, "arch": cfg.architectures, "batch": args.batch,
                    "new_tokens": args.new_tokens}
    recs = records(args.batch * args.steps, args.prompt_words)
    # generation throughput (bf16 weights)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).to(dev).eval()
    model.generation_config.min_new_tokens = args.new_tokens
    be = HFBackend(model, tok, batch_size=args.batch)
    prompts = [r.prompt for r in recs[: args.batch]]
    be.generate(prompts[:2], GenerationSettings(max_new_tokens=8))  # warm-up
    if dev == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    outs = be.generate(prompts, GenerationSettings(max_new_tokens=args.new_tokens))
    if dev == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    n = sum(o.n_new_tokens for o in outs)
    report["generate"] = {"seqs": len(prompts), "prompt_tokens": outs[0].n_prompt_tokens, "new_tokens": n,
                          "seconds": dt, "tokens_per_s": n / dt}
    del model, be
    # training steps: fp32 master weights + bf16 autocast, LoRA, same loop for both methods
    for method in ("sft", "sdft"):
        m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        tc = TrainConfig(method=method, model="random-qwen-arch", batch_size=args.batch, micro_batch_size=args.batch,
                         max_steps=args.steps, max_completion_tokens=args.new_tokens, warmup_steps=1, bf16=True,
                         drift_every=1, save_every=1000)
        run = Run(tc, recs, Path(tempfile.mkdtemp()) / method, "bench", model=m, tokenizer=tok)
        rows = [run.train_step() for _ in range(args.steps)]
        steady = rows[1:] or rows
        report[method] = {
            "step_s": [r["step_s"] for r in rows], "mean_step_s_after_first": sum(r["step_s"] for r in steady) / len(steady),
            "tokens_per_s": sum(r["tokens_per_s"] for r in steady) / len(steady),
            "gen_tokens_per_s": [r["gen_tokens_per_s"] for r in rows], "rollout_len": [r["rollout_len"] for r in rows],
            "loss": [r["loss"] for r in rows], "drift_kl": [r["drift_kl"] for r in rows],
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else None}
        del run, m
        if dev == "cuda":
            torch.cuda.empty_cache()
    report["sdft_over_sft_step_time"] = report["sdft"]["mean_step_s_after_first"] / report["sft"]["mean_step_s_after_first"]
    report["vllm"] = vllm_check(args, cfg, tok, recs)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


def vllm_check(args, cfg, tok, recs) -> dict:
    """vLLM generation (the evaluation backend) and SDFT steps with `rollout_backend: vllm`, on the
    same architecture with random weights saved to a scratch folder (vLLM loads from a folder).
    Reported as skipped, with the reason, where vLLM is not installed."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return {"skipped": "vllm is not installed in this environment (scripts/install_vllm_venv.sh)"}
    from transformers import AutoModelForCausalLM

    from harness.generation import GenerationSettings
    from harness.train.config import TrainConfig
    from harness.train.loop import Run
    from harness.vllm_backend import VLLMBackend

    folder = Path(tempfile.mkdtemp()) / "random-arch"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    out: dict = {}
    t = time.perf_counter()
    be = VLLMBackend(str(folder), tok, dtype="bfloat16")
    out["engine_start_s"] = time.perf_counter() - t
    prompts = [r.prompt for r in recs[: args.batch]]
    t = time.perf_counter()
    outs = be.generate(prompts, GenerationSettings(max_new_tokens=args.new_tokens))
    dt = time.perf_counter() - t
    n = sum(o.n_new_tokens for o in outs)
    out["generate"] = {"seqs": len(prompts), "new_tokens": n, "seconds": dt, "tokens_per_s": n / dt}
    del be
    tc = TrainConfig(method="sdft", model=str(folder), batch_size=args.batch, micro_batch_size=args.batch,
                     max_steps=args.steps, max_completion_tokens=args.new_tokens, warmup_steps=1, bf16=True,
                     drift_every=0, save_every=1000, rollout_backend="vllm")
    run = Run(tc, recs, Path(tempfile.mkdtemp()) / "sdft-vllm", "bench")
    try:
        rows = [run.train_step() for _ in range(args.steps)]
    finally:
        run.close_rollouts()
    steady = rows[1:] or rows
    out["sdft_vllm_rollouts"] = {
        "step_s": [r["step_s"] for r in rows], "gen_s": [r["gen_s"] for r in rows],
        "mean_step_s_after_first": sum(r["step_s"] for r in steady) / len(steady),
        "tokens_generated": [r["tokens_generated"] for r in rows], "loss": [r["loss"] for r in rows]}
    return out


if __name__ == "__main__":
    main()
