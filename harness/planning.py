"""Power planning before a suite runs: the minimum detectable effect of each planned comparison.

    harness run suites/quick.yaml --dry-run            # prints this table after the plan
    harness plan suites/quick.yaml --target-mde 0.05   # ... and the items each comparison needs

For the SDFT-vs-SFT comparisons a suite reports (new-task accuracy, prior-suite average, general-
text drift), the MDE at the suite's sizes: two-sided 5%, power 0.8, by `claims.power_terms`, the
same formula the claim check prints after the run. Each comparison's per-item variance of the
paired change comes from the newest complete run of the same suite in the store when there is one
(what that run observed: `Results.change_variance`), else from a stated prior (`PRIOR_PSI`):

- new task (0/1 per item): discordance 0.25, a quarter of the items answered differently by the
  two fine-tuned arms;
- prior benchmarks: discordance 0.10 for multiple choice, 0.20 for generation benchmarks
  (IFEval, HumanEval), per item;
- drift probe: mean squared per-prompt difference of the two arms' KL, (0.03 nats)^2;
- gold-answer margin on multiple-choice benchmarks (log p(gold) - max log p(other)): mean squared
  per-item difference of the two arms' margins, (0.3 nats)^2.

The priors are guesses, stated so a reader can judge them; a run's own numbers replace them.
Nothing here loads a model or writes a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PRIOR_PSI = {"new_task": 0.25, "mc": 0.10, "generation": 0.20, "drift": 0.03 ** 2, "mc_margin": 0.3 ** 2}
GENERATION_BENCHMARKS = {"ifeval", "humaneval", "gsm8k"}


@dataclass
class PlannedComparison:
    claim: str                  # claim id of harness.claims ('b', 'c', 'c-mc', 'c-drift')
    what: str
    unit: str                   # 'pp' (fractions) or 'nats'
    parts: list[tuple[float, int]]   # (psi, n) per component (benchmarks of an average)
    source: str                 # where psi came from
    mde: float = math.nan
    target: float | None = None
    n_needed: int | None = None

    def n_text(self) -> str:
        ns = sorted({n for _, n in self.parts})
        return str(ns[0]) if len(ns) == 1 else f"{sum(n for _, n in self.parts)} ({len(self.parts)} benchmarks)"


def _previous_run(runner):
    """The newest complete run of this suite in the store, loaded; None when there is none."""
    from .errors import HarnessError
    from .results import load

    try:
        runs = [r for r in runner.store.list_runs(kind="suite")
                if r.get("name") == runner.suite.name and r.get("status") == "complete"]
    except HarnessError:
        return None
    for r in reversed(runs):
        try:
            return load(r["run_id"], runner.store, n_boot=200)
        except HarnessError:
            continue
    return None


def _prior_sizes(runner, average_only: bool = True) -> dict[str, int]:
    """Items per benchmark of the suite's prior suite (only those of the prior average unless
    `average_only` is false), as the prior suite will select them."""
    from .paths import data_dir as resolve_data_dir
    from .prior.data import ADAPTERS, select
    from .prior.suite import load_suite as load_prior_suite

    pr = runner.suite.prior
    ps = load_prior_suite(pr.suite)
    names = list(pr.benchmarks) if pr.benchmarks else ps.default_benchmarks
    ddir = resolve_data_dir(runner.data_dir)
    out = {}
    for name in names:
        settings = ps.settings(name)
        if average_only and not settings.get("in_average", True):
            continue
        lim = pr.limit if pr.limit is not None else settings.get("limit", ps.limit)
        out[name] = len(select(ADAPTERS[name](ddir), lim, ps.seed))
    return out


def plan_power(runner, target_mde: float | None = None) -> list[PlannedComparison]:
    """The planned SDFT-vs-SFT comparisons of a `SuiteRunner` with their MDE (and, with
    `target_mde` as a fraction, e.g. 0.05 for 5 pp, the items each accuracy comparison needs;
    the drift comparison is sized for its equivalence margin instead)."""
    from .claims import DEFAULT_MARGINS, power_terms
    from .drift_probe import TASK as DRIFT_TASK
    from .results import mc_task

    s = runner.suite
    methods = {a.method for a in s.arms.values()}
    if not {"sft", "sdft"} <= methods:
        return []
    prev = _previous_run(runner)
    sft, sdft = (prev.sft_arm, prev.sdft_arm) if prev else (None, None)

    def observed(ref, arm, task):
        return prev.change_variance(ref, arm, task) if prev and ref and arm else None

    margins = DEFAULT_MARGINS | dict(s.claims.margins)
    out: list[PlannedComparison] = []
    n_test = len(runner.data.test.records)
    obs = observed(sft, sdft, s.task.name)
    out.append(PlannedComparison("b", f"new-task accuracy, SDFT - SFT ({s.task.name})", "pp",
                                 [(obs[0] if obs else PRIOR_PSI["new_task"], n_test)],
                                 "previous run" if obs else "prior 0.25", target=target_mde))
    if s.prior is not None:
        sizes = _prior_sizes(runner)
        parts, from_run = [], True
        for name, n in sizes.items():
            o = observed(sft, sdft, f"prior/{name}")
            from_run &= o is not None
            parts.append((o[0] if o else PRIOR_PSI["generation" if name in GENERATION_BENCHMARKS else "mc"], n))
        if parts:
            out.append(PlannedComparison("c", "prior average, SDFT - SFT", "pp", parts,
                                         "previous run" if from_run else "prior 0.10 (MC) / 0.20 (generation)",
                                         target=target_mde))
        mc_parts, from_run = [], True
        for name, n in _prior_sizes(runner, average_only=False).items():
            if name in GENERATION_BENCHMARKS:
                continue
            o = observed(sft, sdft, mc_task(f"prior/{name}", "margin"))
            from_run &= o is not None
            mc_parts.append((o[0] if o else PRIOR_PSI["mc_margin"], n))
        if mc_parts:
            out.append(PlannedComparison("c-mc", "gold-answer margin on MC benchmarks, SDFT - SFT", "nats",
                                         mc_parts, "previous run" if from_run else "prior (0.3 nats)^2",
                                         target=margins["c-mc"]))
    if s.drift_probe is not None:
        obs = observed(sdft, sft, DRIFT_TASK)
        out.append(PlannedComparison("c-drift", "general-text drift, SFT - SDFT", "nats",
                                     [(obs[0] if obs else PRIOR_PSI["drift"], 2 * s.drift_probe.n_per_source)],
                                     "previous run" if obs else "prior (0.03 nats)^2",
                                     target=margins["c-drift"]))
    for c in out:
        c.mde, c.n_needed = power_terms(c.parts, c.target)
    return out


def format_amount(v: float | None, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.1f} pp" if unit == "pp" else f"{v:.4f} {unit}"
