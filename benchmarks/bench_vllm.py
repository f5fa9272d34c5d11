"""Tool-use greedy evaluation, HF backend against vLLM, side by side in one process run.

    .venv-vllm/bin/python benchmarks/bench_vllm.py --model qwen2.5-coder-0.5b-instruct --items 68 \
        --new-tokens 1024 --arms base,teacher --out reports/bench_vllm.json

Both backends get the same prompts (the evaluation's `arm_prompt`, rendered with the chat
template) through their `generate(prompts, settings)` contract, as `evaluate()` calls them: HF in
chunks of `COMMIT_BATCHES x --batch` prompts, vLLM all prompts at once. HF runs first, then vLLM. Wall-clock includes loading
(HF: the model; vLLM: the engine start, tens of seconds), and is also given without it; tokens/s is
generated tokens over generation time. Per arm it prints accuracy under the paper's scorer for both,
how many outputs are identical (exact match is not expected: other kernels, other summation order)
and, for those that differ, the first differing character. Runs in `.venv-vllm` (vLLM installed);
run nothing else beside it: only ratios measured in one run mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--items", type=int, default=68)
    ap.add_argument("--new-tokens", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8, help="HF backend rows decoded together")
    ap.add_argument("--arms", default="base,teacher")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the report as JSON here")
    a = ap.parse_args()

    import torch

    from harness.evaluate import COMMIT_BATCHES, arm_prompt, check_arms
    from harness.generation import GenerationSettings, HFBackend
    from harness.models import load_model
    from harness.paths import data_dir
    from harness.tasks.tooluse import data as tu
    from harness.tasks.tooluse.scorer import score
    from harness.vllm_backend import VLLMBackend

    torch.set_num_threads(a.threads)
    arms = check_arms(a.arms.split(","))
    recs = tu.load_tooluse(tu.resolve_split("paper68", data_dir())).records[: a.items]
    settings = GenerationSettings(max_new_tokens=a.new_tokens)
    prompts = {arm: [arm_prompt(r, arm, "paper") for r in recs] for arm in arms}

    # HF first, then vLLM: the engine binds the OpenMP threads of this process on CPU, which must not
    # change the HF numbers.
    chunk = COMMIT_BATCHES * a.batch
    t = time.perf_counter()
    model, tok = load_model(a.model, dtype="float32" if a.dtype == "bf16-autocast" else a.dtype)
    hf = HFBackend(model, tok, batch_size=a.batch, autocast_bf16=a.dtype == "bf16-autocast")
    hf_load = time.perf_counter() - t
    hf_out, hf_s = {}, {}
    for arm in arms:
        t = time.perf_counter()
        hf_out[arm] = []
        for c in range(0, len(recs), chunk):
            hf_out[arm] += hf.generate(prompts[arm][c:c + chunk], settings)
        hf_s[arm] = time.perf_counter() - t
    del hf, model
    t = time.perf_counter()
    vl = VLLMBackend.from_spec(a.model, dtype=a.dtype)
    vl_load = time.perf_counter() - t

    report = {"model": a.model, "dtype": a.dtype, "items": len(recs), "new_tokens": a.new_tokens,
              "batch": a.batch, "threads": a.threads, "hf_load_s": hf_load, "vllm_engine_start_s": vl_load,
              "arms": {}}
    for arm in arms:
        t = time.perf_counter()
        vl_out = vl.generate(prompts[arm], settings)
        vl_s = time.perf_counter() - t
        same = [h.text == v.text for h, v in zip(hf_out[arm], vl_out)]
        diffs = []
        for r, h, v, s in zip(recs, hf_out[arm], vl_out, same):
            if not s:
                k = next((i for i, (x, y) in enumerate(zip(h.text, v.text)) if x != y), min(len(h.text), len(v.text)))
                diffs.append({"item": r.item_id, "first_diff_char": k, "hf_tokens": h.n_new_tokens,
                              "vllm_tokens": v.n_new_tokens})
        hf_tok, vl_tok = sum(g.n_new_tokens for g in hf_out[arm]), sum(g.n_new_tokens for g in vl_out)
        row = {"hf": {"gen_s": hf_s[arm], "tokens": hf_tok, "tokens_per_s": hf_tok / hf_s[arm],
                      "correct": sum(score(g.text, r.gold_calls).correct for g, r in zip(hf_out[arm], recs))},
               "vllm": {"gen_s": vl_s, "tokens": vl_tok, "tokens_per_s": vl_tok / vl_s,
                        "correct": sum(score(g.text, r.gold_calls).correct for g, r in zip(vl_out, recs))},
               "identical_outputs": sum(same), "differing": diffs}
        row["speedup_tokens_per_s"] = row["vllm"]["tokens_per_s"] / row["hf"]["tokens_per_s"]
        report["arms"][arm] = row
    hf_total = hf_load + sum(r["hf"]["gen_s"] for r in report["arms"].values())
    vl_total = vl_load + sum(r["vllm"]["gen_s"] for r in report["arms"].values())
    report |= {"hf_wall_s": hf_total, "vllm_wall_s": vl_total, "wall_ratio_hf_over_vllm": hf_total / vl_total}

    for arm, r in report["arms"].items():
        print(f"{arm:8s} HF {r['hf']['gen_s']:7.1f}s {r['hf']['tokens_per_s']:7.1f} tok/s {r['hf']['correct']:3d} correct"
              f" | vLLM {r['vllm']['gen_s']:7.1f}s {r['vllm']['tokens_per_s']:7.1f} tok/s "
              f"{r['vllm']['correct']:3d} correct | x{r['speedup_tokens_per_s']:.2f} tok/s | identical "
              f"{r['identical_outputs']}/{len(recs)}")
    print(f"wall incl. load: HF {hf_total:.1f}s (load {hf_load:.1f}s), vLLM {vl_total:.1f}s "
          f"(engine start {vl_load:.1f}s); HF/vLLM = {report['wall_ratio_hf_over_vllm']:.2f}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=1))
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
