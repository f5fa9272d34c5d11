"""Forward cost of a frozen output head fed a sliced hidden state, with and without
`harness.models.contiguous_head_input`, side by side in one process.

    python benchmarks/bench_frozen_head.py --checkpoint runs/.../checkpoints/<key>/final

Loads the base model and a merged LoRA checkpoint (whose head weight does not require grad), then
times `model(input_ids, logits_to_keep=1)` on the same 4 x 256 random tokens for each model with the
hook on and off, alternating, best of `--reps`. Without the hook, torch's matmul takes its batched
path for the merged model and copies the whole head weight per call. Prints the CPU flags that
matter for the dtype. Run nothing else beside it.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--checkpoint", required=True, help="a trained LoRA output folder (merged on load)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()

    import torch

    from harness.models import load_model
    from harness.precision import BF16_FLAGS, cpu_info

    torch.set_num_threads(a.threads)
    models = {"base": load_model(a.base, dtype=a.dtype)[0],
              "merged": load_model(a.checkpoint, dtype=a.dtype, merge_adapter=True)[0]}
    x = torch.randint(100, 5000, (4, 256))
    best: dict[tuple[str, bool], float] = {}
    for _ in range(a.reps):
        for name, m in models.items():
            head = m.get_output_embeddings()
            hooks = dict(head._forward_pre_hooks)
            for on in (True, False):
                head._forward_pre_hooks.clear()
                if on:
                    head._forward_pre_hooks.update(hooks)
                with torch.no_grad():
                    t = time.perf_counter()
                    m(input_ids=x, logits_to_keep=1)
                    dt = time.perf_counter() - t
                best[(name, on)] = min(best.get((name, on), float("inf")), dt)
            head._forward_pre_hooks.clear()
            head._forward_pre_hooks.update(hooks)
    cpu = cpu_info()
    print(f"{a.dtype}, {a.threads} threads, CPU {cpu['model']}, flags {[f for f in cpu['flags'] if f in BF16_FLAGS]}")
    print(f"{'model':<8}{'hook on s':>11}{'hook off s':>12}{'off/on':>8}")
    for name in models:
        on, off = best[(name, True)], best[(name, False)]
        print(f"{name:<8}{on:>11.3f}{off:>12.3f}{off / on:>7.2f}x")
    print(f"merged/base with the hook: {best[('merged', True)] / best[('base', True)]:.2f}x")


if __name__ == "__main__":
    main()
