"""Peak resident memory of one SFT and one SDFT optimizer step in a suite's training shape.

    python benchmarks/bench_step_memory.py                       # suites/quick.yaml, both methods
    python benchmarks/bench_step_memory.py --methods sdft --at-step 4   # the step with a drift probe

Each method runs in its own subprocess (the model load, the `Run` set-up and one `train_step`),
so each peak is its own: the child's `ru_maxrss` as the kernel reports it to the parent through
`wait4`, the same number `/usr/bin/time -v` prints as "Maximum resident set size". The training
configuration is the suite's own (its first SFT and SDFT arms, in the first stage of a suite with
`stages:`: LoRA, batch, micro-batch, prompt and rollout limits, gradient checkpointing, bf16,
teacher), on that training split, so the number follows the suite file. The child also prints the
peak per phase of the step (benchmarks/profile_step.py's `RssByPhase`). `--at-step N` runs the step with index N
(its data batch, and the drift probe when N is a positive multiple of drift_every); step 0 never
probes drift. Exit status 1 when a peak exceeds --target-gb (decimal GB, 10^9 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def child(method: str, suite_path: str, at_step: int) -> dict:
    """One step of `method` in the suite's shape, in this process; returns its row and RSS per phase."""
    from profile_step import RssByPhase

    from harness.errors import ConfigError
    from harness.pipeline import SuiteRunner
    from harness.sequential import SequentialRunner, is_sequential

    tmp = Path(tempfile.mkdtemp())
    mon = RssByPhase()
    mon.method = method
    mon.install()
    with mon:
        if is_sequential(suite_path):  # the first stage's shape, from the base model
            runner = SequentialRunner(suite_path, tmp / "harness.sqlite", log=lambda *_: None)
            points = [p for p in runner.points if p.method == method and p.stage == 0]
            train = runner.stages[0].train
        else:
            runner = SuiteRunner(suite_path, tmp / "harness.sqlite", log=lambda *_: None)
            points = [p for p in runner.points if p.method == method and p.cfg is not None]
            train = runner.data.train
        if not points:
            raise ConfigError(f"{suite_path}: arms: no {method} arm to measure")
        from harness.train.loop import Run

        cfg = points[0].cfg
        run = Run(cfg, train.records, tmp / "out", train.data_hash)
        run.step = at_step
        mon.set("other")
        row = run.train_step()
        mon.set("after")
    return {"row": row, "phases": mon.sampled, "raised": mon.high_water, "bf16": cfg.bf16,
            "shape": {k: getattr(cfg, k) for k in ("lora", "lora_r", "batch_size", "micro_batch_size",
                                                    "max_prompt_tokens", "max_rollout_tokens",
                                                    "gradient_checkpointing", "teacher", "drift_every")}}


def measure(method: str, a) -> dict:
    """Run `child` in a subprocess; its JSON report plus the kernel's peak RSS of that process."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, __file__, "--child", method, "--suite", a.suite, "--at-step", str(a.at_step),
               "--json", f.name]
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{method}: the measuring process failed (exit {proc.returncode})")
        rep = json.loads(Path(f.name).read_text())
    return rep | {"max_rss": usage.ru_maxrss * 1024, "wall_s": time.perf_counter() - t}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default=str(ROOT / "suites" / "quick.yaml"))
    p.add_argument("--methods", default="sft,sdft")
    p.add_argument("--at-step", type=int, default=0, help="index of the measured step (4: the quick suite's "
                                                          "first step with a drift probe)")
    p.add_argument("--target-gb", type=float, default=6.0, help="the peak each step must stay under (10^9 bytes)")
    p.add_argument("--json", type=Path, default=None, help="write the measurements here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        rep = child(a.child, a.suite, a.at_step)
        a.json.write_text(json.dumps(rep, default=str))
        return 0
    results = {m: measure(m, a) for m in a.methods.split(",")}
    first = next(iter(results.values()))
    print(f"{Path(a.suite).name}: one optimizer step (index {a.at_step}) per method, {first['shape']}, "
          f"bf16 autocast {first['bf16']}")
    ok = True
    for m, r in results.items():
        peak = r["max_rss"]
        ok &= peak <= a.target_gb * 1e9
        row = r["row"]
        phases = ", ".join(f"{k.removeprefix(m + ' ')} {v / 1e9:.2f}" for k, v in r["phases"].items())
        print(f"{m:5s} peak RSS {peak / 1e9:.2f} GB ({peak / 2**30:.2f} GiB), target <= {a.target_gb:g} GB: "
              f"{'met' if peak <= a.target_gb * 1e9 else 'MISSED'}; step {row['step_s'] + row['drift_s']:.0f} s "
              f"(drift probe {row['drift_s']:.0f} s), process {r['wall_s']:.0f} s")
        print(f"      peak RSS sampled per phase (GB): {phases}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
