"""Tool-use greedy decoding: the prefix-sharing, slot-refilling decoder against the one before it.

    python benchmarks/bench_decoder.py --model qwen2.5-coder-0.5b-instruct --items 68 --new-tokens 192 \
        --arms base,teacher

Old: `greedy_pruned` over length-sorted, left-padded batches of `--batch` (the backend until
`greedy_shared`). New: `greedy_shared` (each API's documentation prefilled once, finished rows
replaced by waiting prompts). Both get the same token ids (chat template applied), in chunks of
`--chunk` prompts per call as `evaluate()` hands them to the backend (default: its chunk,
`evaluate.COMMIT_BATCHES` x the batch size; `--chunk 0` passes all items in one call, the most prefix
sharing and slot refill can give). `--new-batch` gives the new decoder another number of rows than
the old one's `--batch` (each decoder's own chunk follows its batch): slot refill keeps a wide batch
full, where the old decoder pads every prompt to its batch's longest and waits for its longest row.
Prints, per arm, each wall-clock, tokens/s, new/old speed ratio, prompt tokens prefilled by each
(unique prefill), and how many items got identical token ids, listing any item that differs with the
first step where it does. Greedy outputs of the two can differ only where floating-point reordering
(batch shapes, a prefix computed at batch 1) flips a near-tie between the two best tokens; the
differing rows are reported with their logit margin at that step under the old decoder's prompt.
The n×n matmul peak in the model's dtype is read before and after the runs (`matmul_peak_gflops_*`),
for the limit the unique tokens' FLOPs set. Run nothing else beside it: only the ratio measured in
one run means anything on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--items", type=int, default=68)
    ap.add_argument("--new-tokens", type=int, default=192)
    ap.add_argument("--batch", type=int, default=8, help="rows decoded together by the old decoder")
    ap.add_argument("--new-batch", type=int, default=None, help="rows decoded together by the new one (default --batch)")
    ap.add_argument("--chunk", type=int, default=None, help="prompts per decoder call (default: evaluate's, COMMIT_BATCHES x --batch; 0: all)")
    ap.add_argument("--arms", default="base,teacher")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    from harness.evaluate import arm_prompt, check_arms
    from harness.decoding import _greedy_batches, prefix_groups, greedy_shared
    from harness.generation import render_chat
    from harness.models import load_model
    from harness.paths import data_dir
    from harness.tasks.tooluse import data as tu

    torch.set_num_threads(a.threads)
    arms = check_arms(a.arms.split(","))
    recs = tu.load_tooluse(tu.resolve_split("paper68", data_dir())).records[: a.items]
    model, tok = load_model(a.model, dtype=a.dtype)
    eos = model.generation_config.eos_token_id
    from harness.evaluate import COMMIT_BATCHES

    new_batch = a.new_batch or a.batch

    def chunk_of(batch: int) -> int:
        return COMMIT_BATCHES * batch if a.chunk is None else (a.chunk or len(recs))

    report = {"model": a.model, "dtype": a.dtype, "items": len(recs), "new_tokens": a.new_tokens,
              "batch": a.batch, "new_batch": new_batch, "chunk": chunk_of(a.batch), "new_chunk": chunk_of(new_batch),
              "threads": a.threads, "arms": {}}
    from bench_prior_scorer import matmul_peak

    # the machine's limit drifts with the shared host: read the matmul peak around the runs
    report["matmul_peak_gflops_before"] = round(matmul_peak(model.dtype) / 1e9, 1)
    for arm in arms:
        enc = [tok(render_chat(tok, arm_prompt(r, arm, "paper")), add_special_tokens=False)["input_ids"]
               for r in recs]
        def parts_of(chunk: int) -> list[list[int]]:
            return [list(range(c, min(c + chunk, len(enc)))) for c in range(0, len(enc), chunk)]

        def run(decode, batch: int) -> tuple[float, list[list[int]]]:
            rows: list[list[int]] = []
            t = time.perf_counter()
            with torch.no_grad():
                for idx in parts_of(chunk_of(batch)):
                    rows += decode(model, [enc[i] for i in idx], a.new_tokens, eos, batch)
            return time.perf_counter() - t, rows

        t_old, old = run(_greedy_batches, a.batch)
        t_new, new = run(lambda m, p, n, e, b: greedy_shared(m, p, n, e, batch_size=b), new_batch)
        n_tok = sum(map(len, new))
        prefilled = sum(p + sum(len(enc[idx[i]]) - p for i in m)
                        for idx in parts_of(chunk_of(new_batch)) for p, m in prefix_groups([enc[i] for i in idx], 32))
        diffs = []
        for i, (o, n) in enumerate(zip(old, new)):
            if o != n:
                k = next((j for j, (x, y) in enumerate(zip(o, n)) if x != y), min(len(o), len(n)))
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([enc[i] + o[:k]])).logits[0, -1].float()
                top2 = logits.topk(2).values
                diffs.append({"item": recs[i].item_id, "first_diff_step": k, "old_len": len(o), "new_len": len(n),
                              "top2_margin": round(float(top2[0] - top2[1]), 6)})
        report["arms"][arm] = {
            "old_s": round(t_old, 1), "new_s": round(t_new, 1), "old_over_new": round(t_old / t_new, 3),
            "old_tok_per_s": round(sum(map(len, old)) / t_old, 2), "new_tok_per_s": round(n_tok / t_new, 2),
            "prompt_tokens": sum(map(len, enc)), "prompt_tokens_prefilled_new": prefilled,
            "new_tokens_total": n_tok, "identical": len(recs) - len(diffs), "differing": diffs}
        print(json.dumps({arm: report["arms"][arm]}), file=sys.stderr, flush=True)  # each arm as it ends
    report["matmul_peak_gflops_after"] = round(matmul_peak(model.dtype) / 1e9, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
