"""Run the standalone `lm_eval` CLI on the harness's generated task configs, for parity checks.

Why: the harness drives lm-eval in-process on an in-memory model; this module runs the very same
task YAMLs through lm-eval's own command line on the model's folder, so a test can assert the
numbers agree to the last digit and a benchmark can compare wall-clock time. Both sides use one
torch thread (OMP_NUM_THREADS=1 in the subprocess), since CPU matmul results can depend on the
thread count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..paths import data_dir as resolve_data_dir
from .evaluate import offline_env
from .tasks import export

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def _cli_once(model_folder, include: Path, benchmarks: list[str], out: Path, env: dict, limit, batch_size,
              chat_template: bool, timeout) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "hf",
           "--model_args", f"pretrained={model_folder},dtype=float32",
           "--include_path", str(include), "--tasks", ",".join(f"harness_{b}" for b in benchmarks),
           "--batch_size", str(batch_size), "--device", "cpu", "--output_path", str(out),
           "--log_samples"]
    if limit is not None:
        cmd += ["--limit", str(limit)]  # the task data already is the subset: a no-op cap
    if chat_template:
        cmd += ["--apply_chat_template"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"lm_eval CLI failed ({proc.returncode}): {proc.stderr[-3000:]}")
    files = sorted(out.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise RuntimeError(f"lm_eval CLI wrote no results under {out}")
    return json.loads(files[-1].read_text()), wall


def run_cli(model_folder: str | os.PathLike, results: dict[str, dict], out_dir: str | os.PathLike, *,
            limit: int | None = None, batch_size: int = 8, data_dir=None, chat_template: bool = False,
            per_benchmark: bool = True, timeout: float | None = None) -> tuple[dict, dict[str, float]]:
    """Evaluate `model_folder` with `lm_eval run` on the task folders named in `results` (the
    return value of `evaluate_prior`). Returns (lm-eval's results, merged over calls; wall seconds
    per call).

    `per_benchmark` (default) runs one CLI process per benchmark, as the harness runs one lm-eval
    call per benchmark: lm-eval pools all tasks' requests and sorts them by length, so a joint
    call batches (and pads) documents differently, which moves log-likelihoods in the 6th digit.
    Per-benchmark samples are written under `out_dir/out/<benchmark>/`.
    """
    out = Path(out_dir)
    include = export([r["task_dir"] for r in results.values()], out / "tasks")
    offline_env(resolve_data_dir(data_dir))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    groups = [[b] for b in results] if per_benchmark else [list(results)]
    merged: dict = {"results": {}, "n-samples": {}, "versions": {}}
    walls: dict[str, float] = {}
    for names in groups:
        tag = names[0] if per_benchmark else "all"
        res, wall = _cli_once(model_folder, include, names, out / "out" / tag, env, limit, batch_size,
                              chat_template, timeout)
        walls[tag] = wall
        for k in merged:
            merged[k].update(res.get(k, {}))
    return merged, walls


def compare(results: dict[str, dict], cli: dict) -> list[dict]:
    """Per benchmark: the harness's headline value/stderr next to the CLI's for the same key.
    Stderrs are compared only where the harness took lm-eval's (not a harness fallback)."""
    from .evaluate import lm_metric_key
    from .tasks import BENCHMARKS

    rows = []
    for name, r in results.items():
        key = lm_metric_key(name, r["metric"])
        metric, filt = key.split(",", 1)
        theirs = cli["results"].get(BENCHMARKS[name].result_key, {})
        se = theirs.get(f"{metric}_stderr,{filt}")
        rows.append({"benchmark": name, "metric": key, "harness": r["value"], "cli": theirs.get(key),
                     "harness_stderr": r["stderr"], "cli_stderr": se,
                     "stderr_compared": r.get("stderr_source") == "lm-eval",
                     "n": r["n"], "cli_n": (cli.get("n-samples", {}).get(BENCHMARKS[name].result_key) or {}).get("effective")})
    return rows
