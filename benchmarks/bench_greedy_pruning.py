"""Greedy evaluation: transformers `generate` vs the harness's row-pruning loop, side by side.

    python benchmarks/bench_greedy_pruning.py --model smollm2-135m-instruct --items 8 --new-tokens 192

Same model, same prompts (the paper's 68 tool-use items, student or teacher prompts), same batches
(sorted by length, left padded), pure greedy. Prints each wall-clock, the pruned/generate ratio, the
tokens each row produced, and whether the two produced identical token ids. Run nothing else beside
it: the machine is shared, and only the ratio measured in one run means anything.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=192)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--arm", choices=["base", "teacher"], default="base")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    from harness.decoding import greedy_pruned
    from harness.generation import render_chat
    from harness.models import load_model
    from harness.paths import data_dir
    from harness.tasks.base import teacher_turn
    from harness.tasks.tooluse import data as tu

    torch.set_num_threads(a.threads)
    recs = tu.load_tooluse(tu.resolve_split("paper68", data_dir())).records[: a.items]
    prompts = [r.prompt if a.arm == "base" else teacher_turn(r.prompt, r.demonstration) for r in recs]
    model, tok = load_model(a.model)
    tok.padding_side = "left"
    eos = model.generation_config.eos_token_id
    enc = [tok(render_chat(tok, p), add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    batches = [order[b:b + a.batch] for b in range(0, len(order), a.batch)]

    def run(pruned: bool) -> tuple[float, list[list[int]]]:
        rows: list[list[int]] = []
        t = time.perf_counter()
        for idx in batches:
            batch = tok.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt")
            with torch.no_grad():
                if pruned:
                    rows += greedy_pruned(model, batch["input_ids"], batch["attention_mask"], a.new_tokens, eos)
                else:
                    gen = model.generate(**batch, max_new_tokens=a.new_tokens, do_sample=False, temperature=None,
                                         top_p=None, top_k=None, repetition_penalty=1.0,
                                         pad_token_id=tok.pad_token_id, eos_token_id=eos)
                    for r in gen[:, batch["input_ids"].shape[1]:].tolist():
                        ends = [k for k, t_ in enumerate(r) if t_ in ([eos] if isinstance(eos, int) else eos)]
                        rows.append(r[: ends[0] + 1] if ends else r)
        return time.perf_counter() - t, rows

    t_gen, rows_gen = run(False)
    t_pru, rows_pru = run(True)
    print(json.dumps({"model": a.model, "arm": a.arm, "items": len(recs), "new_tokens": a.new_tokens,
                      "batch": a.batch, "generate_s": round(t_gen, 1), "pruned_s": round(t_pru, 1),
                      "pruned_over_generate": round(t_pru / t_gen, 3),
                      "row_lengths": [len(r) for r in rows_pru], "identical": rows_gen == rows_pru}, indent=1))


if __name__ == "__main__":
    main()
