"""Per-phase profile of SFT and SDFT optimizer steps on the same prompts, side by side.

    python benchmarks/profile_step.py --model smollm2-135m-instruct --steps 2

Both methods run through the one training loop (`harness.train.loop.Run`) with the same LoRA,
batch, precision and chunked LM head, so the table compares the methods, not the code. Each step
is split into exclusive phases (`harness.train.loop.Phases`): rollout sampling, teacher forward
(decoder and its chunked head), student forward, student backward (which recomputes the
checkpointed head chunks), optimizer (clipping, AdamW, EMA teacher update) and the drift probe,
plus `other` (bookkeeping outside any phase). The first step pays one-off warm-up costs; with
`--drift-every 1` every step after the first also runs a drift probe (the first step's drift is
0 by construction and is not probed). Timings on a shared machine are indicative only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROWS = [("gen_s", "rollout"), ("teacher_s", "teacher forward"), ("student_fwd_s", "student forward"),
        ("student_bwd_s", "student backward"), ("optim_s", "optimizer (+EMA)"), ("drift_s", "drift probe"),
        ("other_s", "other")]


def profile(method: str, a, records, data_hash: str) -> list[dict]:
    from harness.train.config import TrainConfig
    from harness.train.loop import Run

    bf16 = {"auto": "auto", "true": True, "false": False}[a.bf16]
    cfg = TrainConfig(method=method, model=a.model, batch_size=a.batch, micro_batch_size=a.micro, max_steps=a.steps,
                      max_prompt_tokens=a.prompt_tokens, max_completion_tokens=a.completion_tokens,
                      max_rollout_tokens=a.rollout_tokens, warmup_steps=1,
                      bf16=bf16, gradient_checkpointing=a.gradient_checkpointing, drift_every=a.drift_every,
                      save_every=10_000, lr=2e-4)
    run = Run(cfg, records, Path(tempfile.mkdtemp()) / method, data_hash)
    rows = []
    for _ in range(a.steps):
        r = run.train_step()
        rows.append(r | {"total_s": r["step_s"] + r["drift_s"], "bf16": cfg.bf16})
    return rows


def table(results: dict[str, list[dict]]) -> str:
    cols = [(m, i) for m, rows in results.items() for i in range(len(rows))]
    head = ["phase (s)"] + [f"{m} step {i + 1}" for m, i in cols]
    body = [[label] + [f"{results[m][i][k]:.2f}" for m, i in cols] for k, label in ROWS]
    body.append(["total"] + [f"{results[m][i]['total_s']:.2f}" for m, i in cols])
    body.append(["tokens forwarded"] + [str(results[m][i]["tokens_forwarded"]) for m, i in cols])
    body.append(["tokens generated"] + [str(results[m][i]["tokens_generated"]) for m, i in cols])
    body.append(["train tokens/s"] + [f"{results[m][i]['tokens_per_s']:.0f}" for m, i in cols])
    widths = [max(len(r[c]) for r in [head] + body) for c in range(len(head))]
    fmt = lambda r: "  ".join(v.ljust(w) if c == 0 else v.rjust(w) for c, (v, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--split", default="eval_real", help="tool-use split to draw the prompts from")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=4, help="prompts per optimizer step")
    p.add_argument("--micro", type=int, default=2, help="prompts per forward pass")
    p.add_argument("--prompt-tokens", type=int, default=2048, help="student/teacher prompt limit")
    p.add_argument("--completion-tokens", type=int, default=224, help="SFT demonstration limit")
    p.add_argument("--rollout-tokens", type=int, default=96, help="SDFT rollout and drift-probe length")
    p.add_argument("--drift-every", type=int, default=1)
    p.add_argument("--bf16", choices=["auto", "true", "false"], default="auto")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--methods", default="sft,sdft")
    p.add_argument("--json", type=Path, default=None, help="also write the per-step rows here")
    p.add_argument("--no-head-fix", action="store_true",
                   help="leave the output head's input strides as sliced (harness.models.contiguous_head_input "
                        "off), to measure what that hook saves")
    a = p.parse_args(argv)
    import torch

    if a.no_head_fix:
        import harness.models

        harness.models.contiguous_head_input = lambda model: None

    if a.threads:
        torch.set_num_threads(a.threads)
    from harness.paths import data_dir
    from harness.tasks import tooluse as tu

    loaded = tu.load_tooluse(tu.resolve_split(a.split, data_dir()), skip_invalid=True)
    records = loaded.records[: a.batch * a.steps]
    results = {m: profile(m, a, records, loaded.data_hash) for m in a.methods.split(",")}
    first = next(iter(results.values()))[0]
    print(f"model {a.model}, {a.steps} steps x {a.batch} prompts (micro-batch {a.micro}), bf16 autocast "
          f"{first['bf16']}, gradient checkpointing {a.gradient_checkpointing}, torch threads "
          f"{torch.get_num_threads()}")
    print(table(results))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
