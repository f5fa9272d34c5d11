"""Per-phase profile of SFT and SDFT optimizer steps on the same prompts, side by side.

    python benchmarks/profile_step.py --model smollm2-135m-instruct --steps 2

Both methods run through the one training loop (`harness.train.loop.Run`) with the same LoRA,
batch, precision and chunked LM head, so the table compares the methods, not the code. Each step
is split into exclusive phases (`harness.train.accounting.Phases`): rollout sampling, teacher forward
(decoder and its chunked head), student forward, student backward (which recomputes the
checkpointed head chunks), optimizer (clipping, AdamW, EMA teacher update) and the drift probe,
plus `other` (bookkeeping outside any phase). The first step pays one-off warm-up costs; with
`--drift-every 1` every step after the first also runs a drift probe (the first step's drift is
0 by construction and is not probed). Timings on a shared machine are indicative only.

`--rss` adds the peak resident set size per phase, two ways: a thread samples RSS every few
milliseconds and charges each sample to the innermost phase running then (`setup` is model load
and LoRA/teacher set-up, `other` is step code outside any phase), and the kernel's process-wide
high-water mark (`ru_maxrss`) is read at every phase boundary, so the phase that raised it is
named even when a spike falls between samples. RSS rather than tracemalloc: tensors are allocated
by torch's C++ allocator, which tracemalloc does not see.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROWS = [("gen_s", "rollout"), ("teacher_s", "teacher forward"), ("student_fwd_s", "student forward"),
        ("student_bwd_s", "student backward"), ("optim_s", "optimizer (+EMA)"), ("drift_s", "drift probe"),
        ("other_s", "other")]


class RssByPhase:
    """Peak RSS (bytes) per training phase of this process; see the module docstring."""

    def __init__(self, interval_s: float = 0.002, trim: bool = False):
        import ctypes

        import psutil

        self._trim = ctypes.CDLL("libc.so.6").malloc_trim if trim else None
        self._proc = psutil.Process()
        self.phase, self.method = "setup", ""
        self.sampled: dict[str, int] = {}
        self.high_water: dict[str, int] = {}  # phase -> ru_maxrss when that phase last raised it
        self._last_max = 0
        self._stop = threading.Event()
        self._interval = interval_s
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss, ph = self._proc.memory_info().rss, self.key()
            self.sampled[ph] = max(self.sampled.get(ph, 0), rss)
            time.sleep(self._interval)

    def boundary(self) -> None:
        """Charge a rise of the process high-water mark to the phase that ran until now."""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        if peak > self._last_max:
            self.high_water[self.key()] = peak
            self._last_max = peak

    def peak(self) -> int:
        self.boundary()
        return self._last_max

    def key(self) -> str:
        return f"{self.method} {self.phase}".strip()

    def set(self, phase: str) -> None:
        self.boundary()
        if self._trim:
            self._trim(0)
        self.phase = phase

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.boundary()
        self._stop.set()
        self._thread.join()

    def install(self) -> None:
        """Follow `Phases` of the training loop: the innermost running phase is the current one."""
        from harness.train import accounting

        original = accounting.Phases.__call__
        mon = self

        @contextmanager
        def tracked(phases, name):
            outer = mon.phase
            with original(phases, name):
                mon.set(name)
                try:
                    yield
                finally:
                    mon.set(outer)

        accounting.Phases.__call__ = tracked

    def table(self) -> str:
        gb = lambda b: f"{b / 2**30:.2f}"
        names = list(dict.fromkeys(list(self.sampled) + list(self.high_water)))
        w = max(len(n) for n in names + ["phase"])
        lines = [f"{'phase':<{w}}  peak RSS sampled (GiB)  raised the process peak to (GiB)"]
        for n in names:
            hw = gb(self.high_water[n]) if n in self.high_water else "-"
            lines.append(f"{n:<{w}}  {gb(self.sampled.get(n, 0)):>22}  {hw:>33}")
        lines.append(f"process peak (ru_maxrss): {gb(self._last_max)} GiB")
        return "\n".join(lines)


def profile(method: str, a, records, data_hash: str, mon: RssByPhase | None = None) -> list[dict]:
    from harness.train.config import TrainConfig
    from harness.train.loop import Run

    bf16 = {"auto": "auto", "true": True, "false": False}[a.bf16]
    if mon:
        mon.method = method
    cfg = TrainConfig(method=method, model=a.model, batch_size=a.batch, micro_batch_size=a.micro, max_steps=a.steps,
                      max_prompt_tokens=a.prompt_tokens, max_completion_tokens=a.completion_tokens,
                      max_rollout_tokens=a.rollout_tokens, warmup_steps=1,
                      bf16=bf16, gradient_checkpointing=a.gradient_checkpointing, drift_every=a.drift_every,
                      save_every=10_000, lr=2e-4)
    run = Run(cfg, records, Path(tempfile.mkdtemp()) / method, data_hash)
    rows = []
    for _ in range(a.steps):
        if mon:
            mon.set("other")
        r = run.train_step()
        rows.append(r | {"total_s": r["step_s"] + r["drift_s"], "bf16": cfg.bf16})
        print(f"{method} step {len(rows)}: " + ", ".join(f"{k} {r[k]:.1f}" for k, _ in ROWS)
              + (f"; peak RSS so far {mon.peak() / 2**30:.2f} GiB" if mon else ""), flush=True)
    if mon:
        mon.set("after")
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
    p.add_argument("--rss", action="store_true", help="also print the peak resident memory per phase")
    p.add_argument("--malloc-trim", action="store_true",
                   help="with --rss: call glibc malloc_trim(0) at every phase boundary, to measure how much of "
                        "the RSS is freed heap that glibc keeps (compare MALLOC_ARENA_MAX=2 in the environment)")
    a = p.parse_args(argv)
    import torch

    if a.no_head_fix:
        import harness.models

        harness.models.contiguous_head_input = lambda model: None

    if a.threads:
        torch.set_num_threads(a.threads)
    from harness.paths import data_dir
    from harness.tasks.tooluse import data as tu

    loaded = tu.load_tooluse(tu.resolve_split(a.split, data_dir()), skip_invalid=True)
    records = loaded.records[: a.batch * a.steps]
    mon = RssByPhase(trim=a.malloc_trim) if a.rss else None
    if mon:
        mon.install()
        with mon:
            results = {m: profile(m, a, records, loaded.data_hash, mon) for m in a.methods.split(",")}
    else:
        results = {m: profile(m, a, records, loaded.data_hash) for m in a.methods.split(",")}
    first = next(iter(results.values()))[0]
    print(f"model {a.model}, {a.steps} steps x {a.batch} prompts (micro-batch {a.micro}), bf16 autocast "
          f"{first['bf16']}, gradient checkpointing {a.gradient_checkpointing}, torch threads "
          f"{torch.get_num_threads()}")
    print(table(results))
    if mon:
        print(mon.table())
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
