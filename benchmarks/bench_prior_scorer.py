"""Prior scoring: stock lm-eval `HFLM` vs the harness's shared-context scorer, side by side.

    python benchmarks/bench_prior_scorer.py --items 32 --dtype float32 --threads 2
    python benchmarks/bench_prior_scorer.py --benchmarks truthfulqa_mc1 --items 4   # a quick look

One process, one loaded model, the same lm-eval requests (the harness's own task bundles, the
default suite's seeded subsets) scored by both classes in turn for each benchmark, after one
warm-up call. Prints per benchmark: items/s of each, their ratio, the largest |Δ log-likelihood|
and whether every is_greedy agrees; then the overall ratio (total time over all benchmarks).

The machine's limit: the FLOPs the shared-context scorer cannot avoid — every *unique* token
(each distinct context prefix once, so a primer shared by many contexts counts once; each
continuation's tokens once per context) through the transformer body (2 × body
parameters + causal attention), plus the LM head at the positions that are read — divided by a
measured matmul peak for the dtype at the same thread count. "at limit" is how many items/s that
would allow, "ours/limit" how close the scorer comes. Run nothing else beside it: the machine is
shared, and only numbers measured in one quiet run mean anything.
"""

from __future__ import annotations

import argparse
import json
import time

MC = ["hellaswag", "truthfulqa_mc1", "mmlu", "winogrande", "arc_easy"]


def matmul_peak(dtype, n: int = 2048, min_s: float = 0.5) -> float:
    """Best FLOP/s of an n×n matmul in `dtype` at the current torch thread count."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.matmul(a, b)  # warm-up (oneDNN kernel selection)
    best, spent = 0.0, 0.0
    while spent < min_s:
        t = time.perf_counter()
        torch.matmul(a, b)
        dt = time.perf_counter() - t
        spent += dt
        best = max(best, 2 * n ** 3 / dt)
    return best


def model_shape(model) -> dict:
    cfg = model.config.get_text_config(decoder=True)
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    body = total - emb.numel() - (0 if head is emb or head.data_ptr() == emb.data_ptr() else head.numel())
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return {"body": body, "head": head.numel(), "layers": cfg.num_hidden_layers, "attn_dim": heads * head_dim}


def unique_flops(requests, window: int, shape: dict) -> float:
    """FLOPs of the unique work in lm-eval's token-level requests: every distinct context prefix
    once (the contexts as a trie: a primer shared by many contexts counts once), each distinct
    continuation's tokens once per context, the LM head only at read positions (each context's
    last position and the continuation tokens)."""
    groups: dict[tuple, set[tuple]] = {}
    for _, c_enc, k_enc in requests:
        seq = (c_enc + k_enc)[-(window + 1):]
        groups.setdefault(tuple(seq[: len(seq) - len(k_enc)]), set()).add(tuple(k_enc))

    def tokens_at(start: int, n: int) -> float:  # body + causal attention for positions start..start+n-1
        attn = 4 * shape["layers"] * shape["attn_dim"] * (n * start + n * (n + 1) / 2)
        return 2 * shape["body"] * n + attn

    trie: dict = {}
    flops = 0.0
    for prefix, conts in groups.items():
        node = trie
        for t, tok in enumerate(prefix):
            if tok not in node:
                node[tok] = {}
                flops += tokens_at(t, 1)
            node = node[tok]
        p = len(prefix)
        flops += 2 * shape["head"]  # head at the context's last position
        for k in conts:
            if len(k) > 1:
                flops += tokens_at(p, len(k) - 1) + 2 * shape["head"] * (len(k) - 1)
    return flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--benchmarks", default=",".join(MC), help="comma-separated (default: the five MC ones)")
    ap.add_argument("--items", type=int, default=16, help="items per benchmark (seeded subset)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", help="also write the rows to this file")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from harness.models import load_model
    from harness.prior.evaluate import offline_env
    from harness.paths import data_dir
    from harness.prior.scorer import benchmark_requests, make_lm

    offline_env(data_dir())
    from lm_eval.models.huggingface import HFLM

    model, tok = load_model(a.model, dtype=a.dtype)
    stock = HFLM(pretrained=model, tokenizer=tok, batch_size=a.batch_size)
    ours = make_lm(model, tok, batch_size=a.batch_size)
    shape = model_shape(model)
    peak = matmul_peak(getattr(torch, a.dtype))
    names = [b.strip() for b in a.benchmarks.split(",") if b.strip()]
    requests = {b: [inst for _, inst in benchmark_requests(b, None, a.items, lm=stock)] for b in names}
    warm = requests[names[0]][:2]
    stock.loglikelihood(warm, disable_tqdm=True)
    ours.loglikelihood(warm, disable_tqdm=True)

    rows = []
    for b in names:
        inst = requests[b]
        items = len({(i.task_name, i.doc_id) for i in inst})
        t = time.perf_counter()
        want = stock.loglikelihood(inst, disable_tqdm=True)
        t_stock = time.perf_counter() - t
        seen: list = []  # the token-level requests lm-eval hands the scorer
        score = ours._loglikelihood_tokens
        ours._loglikelihood_tokens = lambda reqs, **kw: (seen.extend(reqs), score(reqs, **kw))[1]
        t = time.perf_counter()
        got = ours.loglikelihood(inst, disable_tqdm=True)
        t_ours = time.perf_counter() - t
        del ours._loglikelihood_tokens
        limit_s = unique_flops(seen, ours.max_length, shape) / peak
        rows.append({"benchmark": b, "items": items, "requests": len(inst), "stock_s": t_stock, "ours_s": t_ours,
                     "stock_items_s": items / t_stock, "ours_items_s": items / t_ours,
                     "ratio": t_stock / t_ours, "limit_items_s": items / limit_s,
                     "ours_of_limit": limit_s / t_ours,
                     "max_abs_dll": max(abs(w[0] - g[0]) for w, g in zip(want, got)),
                     "greedy_same": all(w[1] == g[1] for w, g in zip(want, got))})

    print(f"\nmodel {a.model}, {a.dtype}, {a.threads} thread(s), batch {a.batch_size}; "
          f"matmul peak {peak / 1e9:.0f} GFLOP/s ({a.dtype}, 2048², {a.threads} thread(s))")
    head = (f"{'benchmark':<15}{'items':>6}{'reqs':>6}{'stock it/s':>12}{'ours it/s':>11}{'ratio':>7}"
            f"{'limit it/s':>12}{'ours/limit':>11}{'max|Δll|':>10}{'greedy=':>8}")
    print(head)
    for r in rows:
        print(f"{r['benchmark']:<15}{r['items']:>6}{r['requests']:>6}{r['stock_items_s']:>12.2f}"
              f"{r['ours_items_s']:>11.2f}{r['ratio']:>6.2f}x{r['limit_items_s']:>12.2f}"
              f"{r['ours_of_limit']:>10.0%} {r['max_abs_dll']:>9.1e}{str(r['greedy_same']):>8}")
    ts, to = sum(r["stock_s"] for r in rows), sum(r["ours_s"] for r in rows)
    print(f"{'overall':<15}{sum(r['items'] for r in rows):>6}{sum(r['requests'] for r in rows):>6}"
          f"{'':>12}{'':>11}{ts / to:>6.2f}x   (stock {ts:.1f} s, ours {to:.1f} s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "dtype": a.dtype, "threads": a.threads, "batch_size": a.batch_size,
                       "peak_flops": peak, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
