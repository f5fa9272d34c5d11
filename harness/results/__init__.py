"""A stored suite run as tidy tables, and the comparisons that reports and claims are made of.

    from harness.results import load
    r = load("quick")                  # run id, id prefix or suite name; db: path, Store or default
    r.points, r.metrics, r.items, r.curves          # tidy pandas DataFrames (see `Results`)
    r.new_task_table()                 # accuracy per arm with CIs, change vs base
    r.benchmark_table()                # per prior benchmark: change vs base, paired CI, Holm
    r.prior_table()                    # prior average and forgetting per arm, paired bootstrap CI
    r.compare("sft", "sdft")           # SDFT vs SFT per task, McNemar / bootstrap, Holm
    r.flips("sft")                     # items right -> wrong per benchmark and group (MMLU subject)
    r.mc_table(); r.mc_change("sft", "sdft")   # Δ log p(gold) and Δ margin (nats) on MC benchmarks
    r.cost_table(); r.cost_ratio("sdft", "sft", "flops")

Modules:
- `loading`: the store read into the tidy frames (`load`, `examples_frame`) and the loaders' helpers.
- `core`: `Results`: data, arms, point selection, per-point and per-arm scores, paired comparisons.
- `tables`: new-task, benchmark, MC, prior-average, compare and flip tables (a mixin of `Results`).
- `costs`: `cost_table` and `cost_ratio` (a mixin of `Results`).
- `names`: BASE, TEACHER, COST_KEYS, `mc_task` and seed keys, shared by the modules above.

Reads the results store only (pandas, numpy, scipy; never torch), so it runs anywhere the SQLite
file is. All statistics come from `harness.metrics`, computed on the stored per-item outcomes.

Conventions (also stated in the report):
- Arm-level numbers use each arm's *selected* points (best validation score on the new task among
  the arm's grid points, one per seed: the paper's protocol). With several seeds an arm's item score
  is the mean over its seeds, so item-level intervals and paired tests cover item sampling, and
  `seed_ci` over the per-seed values covers training randomness (NaN with one seed: "n/a (1 seed)").
- Values are means of stored per-item scores (fractions), except where the headline is a micro
  average: IFEval's `inst_level_loose_acc` is sum(instructions followed) / sum(instructions) over
  prompts (the paper's number, lm-eval's `reported`). Its per-item score is the prompt's fraction
  followed and its weight the prompt's instruction count (stored with each row), so values are
  weighted means, intervals a cluster (ratio) bootstrap over prompts, and paired comparisons a
  paired ratio bootstrap (`metrics.ratio_ci`, `metrics.paired_ratio_bootstrap`).
- Paired comparisons use the items both sides scored (the same seeded subsets in a suite run).
- Differences are always arm - reference (negative = a drop); forgetting = base average - arm
  average (positive = capability lost).
"""

from __future__ import annotations

from .core import Results
from .loading import _group, _hp_label, _kind, _num, _open_store, examples_frame, load
from .names import BASE, COST_KEYS, TEACHER, _seed_key, mc_task

__all__ = ["BASE", "COST_KEYS", "TEACHER", "Results", "examples_frame", "load", "mc_task",
           "_group", "_hp_label", "_kind", "_num", "_open_store", "_seed_key"]
