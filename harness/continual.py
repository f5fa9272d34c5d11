"""Continual-learning measures of a sequential run: the accuracy matrix, backward and forward
transfer, retention, the paper's normalised curves, the paired SDFT-vs-SFT test on BWT and its
claim row.

    data = SequenceOutcomes(tasks=("tooluse", "science"), outcomes=...)   # per-item 0/1 outcomes
    accuracy_matrix(data, "sft")[("tooluse", 1)].acc      # tool use after the science stage
    transfer(data, "sdft").bwt.value
    retention_claim(data)                                  # a row like harness.claims.check_claims'

Definitions, with T tasks learnt at stages 0..T-1 (task i at stage i) and A[i][j] the accuracy on
task i after stage j (b_i = before any training):
- BWT = mean over i < T-1 of A[i][T-1] - A[i][i]   (Lopez-Paz & Ranzato 2017; negative = forgetting)
- FWT = mean over i > 0  of A[i][i-1] - b_i        (what earlier stages did for a task not yet trained)
- retention_i = A[i][T-1] / A[i][i], for i < T-1   (share of the accuracy reached at its own stage kept
  at the end; undefined when A[i][i] = 0)
- normalised curve of task i: (A[i][j] - b_i) / (best_i - b_i), best_i = the best seed-mean accuracy
  either method reached on task i after any stage (the paper's figure: 0 = base, 1 = best); undefined
  when no method beat the base, and then the output says so instead of dividing.

Intervals. One seed: items are the sampling unit (Wilson for a cell, paired bootstrap over items
for BWT/FWT, whose per-item form is a paired change between two stages on the same items). Several
seeds: the across-seed t interval (`metrics.seed_ci`) of per-seed values, which covers training
randomness.

SDFT vs SFT on BWT (`compare_bwt`). Per item of an earlier task, a method's drop is
y[i][T-1] - y[i][i] in {-1, 0, +1}; its mean over items is that task's BWT term, so BWT_SDFT -
BWT_SFT is the mean of the per-item difference of drops, paired by item (both methods answered the
same items). Those differences take five values, not two, so the interval and p come from the
paired bootstrap over items (`metrics.hierarchical_change_ci`, which with one seed per method is
exactly that; several earlier tasks are averaged unweighted, as BWT averages them). With several
seeds the same function resamples each method's seeds, then items shared by all of them (a seed is
one independently trained model), and the verdict also needs the across-seed interval of the
per-seed BWT differences to agree (`claims.seed_agreement`), as claims (b) and (c) do. Within one
seed, exact McNemar (`metrics.mcnemar`) is reported beside it on the binary per-item "forgot"
indicator (right after its own stage, wrong at the end): it counts the items one method forgot and
the other kept, which is the discordance behind the BWT difference, but it ignores items gained
back, so it is a companion, not the verdict's test.

Why one module of ~470 lines: every measure here reads the same `SequenceOutcomes` under the same
stage and seed conventions (base column, per-seed then per-item), and the claim row combines them;
apart, each piece would have to restate those conventions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import metrics as M
from .claims import (CONTRADICTED, DEFAULT_MARGINS, HIERARCHICAL, INCONCLUSIVE, SUPPORTED, _row, power_terms,
                     seed_agreement, sign_verdict)
from .manifest import SEQUENTIAL, SequentialManifest, read_manifest
from .paper import PAPER_LABEL

__all__ = ["BASE_STAGE", "SequenceOutcomes", "Cell", "Estimate", "Transfer", "Normalised", "bwt", "fwt",
           "retention", "accuracy_matrix", "transfer", "normalised_curves", "compare_bwt", "retention_claim",
           "RETAIN_ID", "RETAIN_MARGIN", "RUN_KIND", "outcomes_from_run"]

#: The stage index of the base model (before any training).
BASE_STAGE = -1
RETAIN_ID = "c-retain"
#: Equivalence margin of the retention claim (a BWT difference in accuracy fractions).
RETAIN_MARGIN = DEFAULT_MARGINS[RETAIN_ID]


# ----- input ----------------------------------------------------------------------------------
@dataclass
class SequenceOutcomes:
    """Per-item 0/1 outcomes of a sequential run.

    `tasks[j]` is the task trained at stage j (each task once: `stages.check_stages`).
    `outcomes[method][seed][(task, stage)]` = {item_id: 0 or 1}: the task's test items scored
    after `stage` (0..T-1), or before any training at stage -1 (`BASE_STAGE`; the base model,
    which every method and seed shares, may be given under any of them). A cell may be missing
    (a partial run): whatever needs it is NaN. Every cell of one task must cover the same items,
    because every comparison here is paired by item. `stage_names` label the stages in reports.
    """

    tasks: tuple[str, ...]
    outcomes: Mapping[str, Mapping[int, Mapping[tuple[str, int], Mapping[str, float]]]]
    stage_names: tuple[str, ...] | None = None
    _items: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.tasks = tuple(self.tasks)
        if not self.tasks:
            raise ValueError("SequenceOutcomes: no tasks")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"SequenceOutcomes: a task appears twice in {list(self.tasks)}")
        if self.stage_names is not None and len(self.stage_names) != len(self.tasks):
            raise ValueError(f"SequenceOutcomes: {len(self.stage_names)} stage names for {len(self.tasks)} stages")
        for m, seeds in self.outcomes.items():
            for s, cells in seeds.items():
                for key, scores in cells.items():
                    where = f"method {m!r}, seed {s}, cell {key!r}"
                    if not (isinstance(key, tuple) and len(key) == 2 and key[0] in self.tasks
                            and isinstance(key[1], int) and BASE_STAGE <= key[1] < self.T):
                        raise ValueError(f"{where}: expected (task, stage) with a task of {list(self.tasks)} and "
                                         f"a stage in {BASE_STAGE}..{self.T - 1}")
                    if not M.is_binary(list(scores.values())):
                        raise ValueError(f"{where}: scores must be 0/1 per item (and at least one item)")
                    items = sorted(map(str, scores))
                    known = self._items.setdefault(key[0], items)
                    if items != known:
                        raise ValueError(f"{where}: scored {len(items)} items, other cells of {key[0]!r} scored "
                                         f"{len(known)} different ones (comparisons are paired by item)")

    @classmethod
    def from_records(cls, tasks: Sequence[str], records: Iterable[tuple[str, int, str, int, str, float]],
                     stage_names: Sequence[str] | None = None) -> "SequenceOutcomes":
        """From flat rows (method, seed, task, stage, item_id, score), e.g. read from the store."""
        out: dict = {}
        for m, s, t, j, item, score in records:
            out.setdefault(m, {}).setdefault(s, {}).setdefault((t, j), {})[str(item)] = score
        return cls(tuple(tasks), out, tuple(stage_names) if stage_names is not None else None)

    @property
    def T(self) -> int:
        return len(self.tasks)

    @property
    def methods(self) -> list[str]:
        return list(self.outcomes)

    def seeds(self, method: str) -> list[int]:
        return sorted(self.outcomes.get(method, {}))

    def stage_label(self, stage: int) -> str:
        if stage == BASE_STAGE:
            return "base"
        return (self.stage_names or self.tasks)[stage]

    def items(self, task: str) -> list[str]:
        return self._items.get(task, [])

    def scores(self, method: str, seed: int, task: str, stage: int) -> np.ndarray | None:
        """One cell's outcomes in `items(task)` order, or None when the cell is missing."""
        cell = self.outcomes.get(method, {}).get(seed, {}).get((task, stage))
        if cell is None:
            return None
        c = {str(k): v for k, v in cell.items()}
        return np.asarray([c[i] for i in self.items(task)], float)

    def base_scores(self, task: str, method: str | None = None) -> np.ndarray | None:
        """Base-model outcomes on a task: the mean over the stage -1 cells given (of `method`, or
        of every method), identical in a deterministic evaluation."""
        cells = [x for m in ([method] if method else self.methods) for s in self.seeds(m)
                 if (x := self.scores(m, s, task, BASE_STAGE)) is not None]
        return np.mean(cells, axis=0) if cells else None


# ----- the formulas on a matrix ------------------------------------------------------------
def bwt(A: Any) -> float:
    """Backward transfer of a T x T accuracy matrix (rows = tasks, columns = stages):
    mean over i < T-1 of A[i][T-1] - A[i][i]; NaN for one task (nothing learnt earlier)."""
    A = np.asarray(A, float)
    T = A.shape[0]
    if T < 2:
        return math.nan
    return float(np.mean([A[i, T - 1] - A[i, i] for i in range(T - 1)]))


def fwt(A: Any, b: Any) -> float:
    """Forward transfer: mean over i > 0 of A[i][i-1] - b[i] (b = base accuracy per task); NaN
    for one task."""
    A, b = np.asarray(A, float), np.asarray(b, float)
    T = A.shape[0]
    if T < 2:
        return math.nan
    return float(np.mean([A[i, i - 1] - b[i] for i in range(1, T)]))


def retention(A: Any) -> list[float | None]:
    """A[i][T-1] / A[i][i] for i < T-1; None where A[i][i] is 0 (nothing was learnt to keep)."""
    A = np.asarray(A, float)
    T = A.shape[0]
    return [None if not A[i, i] > 0 or math.isnan(A[i, T - 1]) else float(A[i, T - 1] / A[i, i])
            for i in range(T - 1)]


# ----- per-method tables --------------------------------------------------------------------
@dataclass
class Cell:
    """One accuracy-matrix entry: the mean over seeds with its 95% interval; `interval` names it
    ('Wilson, items' for one seed, 'across seeds, t' for several, '' when there is none)."""

    acc: float
    lo: float
    hi: float
    n_items: int
    n_seeds: int
    interval: str


@dataclass
class Estimate:
    """BWT or FWT of one method: the mean over seeds, a 95% interval and the per-seed values."""

    value: float
    lo: float
    hi: float
    per_seed: dict[int, float]
    interval: str
    note: str = ""


@dataclass
class Transfer:
    method: str
    n_seeds: int
    bwt: Estimate
    fwt: Estimate
    retention: dict[str, float | None]      # earlier tasks only
    notes: list[str]


_NAN_CELL = Cell(math.nan, math.nan, math.nan, 0, 0, "")


def accuracy_matrix(data: SequenceOutcomes, method: str, conf: float = 0.95) -> dict[tuple[str, int], Cell]:
    """{(task, stage): Cell} for stages -1..T-1 (the base row may be missing: NaN cell)."""
    out = {}
    for task in data.tasks:
        for j in range(BASE_STAGE, data.T):
            vals = [x for s in data.seeds(method) if (x := data.scores(method, s, task, j)) is not None]
            if not vals:
                out[(task, j)] = _NAN_CELL
            elif len(vals) == 1:
                acc, lo, hi = M.mean_ci(vals[0], conf)
                out[(task, j)] = Cell(acc, lo, hi, vals[0].size, 1, "Wilson, items")
            else:
                acc, lo, hi = M.seed_ci([float(v.mean()) for v in vals], conf)
                out[(task, j)] = Cell(acc, lo, hi, vals[0].size, len(vals), "across seeds, t")
    return out


def _seed_matrix(data: SequenceOutcomes, method: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) of one seed: A[i][j] for stages 0..T-1 and the base accuracy b[i] (NaN where missing)."""
    A = np.full((data.T, data.T), math.nan)
    b = np.full(data.T, math.nan)
    for i, t in enumerate(data.tasks):
        for j in range(data.T):
            if (x := data.scores(method, seed, t, j)) is not None:
                A[i, j] = x.mean()
        if (x := data.base_scores(t, method)) is not None:
            b[i] = x.mean()
    return A, b


def _paired_terms(data: SequenceOutcomes, method: str, seed: int, pairs: list[tuple[str, int, int]]):
    """({task: scores at the first stage}, {task: scores at the second}) for (task, from, to) pairs;
    stage -1 reads the base outcomes. None when a cell is missing."""
    ref, arm = {}, {}
    for t, j0, j1 in pairs:
        x = data.base_scores(t, method) if j0 == BASE_STAGE else data.scores(method, seed, t, j0)
        y = data.scores(method, seed, t, j1)
        if x is None or y is None:
            return None
        ref[t], arm[t] = x, y
    return ref, arm


def _estimate(data: SequenceOutcomes, method: str, per_seed: dict[int, float], pairs, conf: float,
              n_boot: int, boot_seed: int) -> Estimate:
    vals = [v for v in per_seed.values() if not math.isnan(v)]
    if not pairs:
        return Estimate(math.nan, math.nan, math.nan, per_seed, "", "undefined with one stage")
    if not vals:
        return Estimate(math.nan, math.nan, math.nan, per_seed, "", "missing cells")
    if len(vals) >= 2:
        m, lo, hi = M.seed_ci(vals, conf)
        return Estimate(m, lo, hi, per_seed, "across seeds, t")
    seed = next(s for s, v in per_seed.items() if not math.isnan(v))
    ref, arm = _paired_terms(data, method, seed, pairs)
    c = M.prior_average_change_ci(ref, arm, n_boot=n_boot, seed=boot_seed, conf=conf)
    return Estimate(c["diff"], c["lo"], c["hi"], per_seed, "paired bootstrap, items")


def transfer(data: SequenceOutcomes, method: str, conf: float = 0.95, n_boot: int = 10000,
             seed: int = 0) -> Transfer:
    """BWT, FWT (mean over seeds, with intervals, see the module docstring) and retention (of the
    seed-mean accuracies) of one method."""
    T = data.T
    per_b, per_f = {}, {}
    for s in data.seeds(method):
        A, b = _seed_matrix(data, method, s)
        per_b[s], per_f[s] = bwt(A), fwt(A, b)
    notes = []
    bwt_pairs = [(data.tasks[i], i, T - 1) for i in range(T - 1)]
    fwt_pairs = [(data.tasks[i], BASE_STAGE, i - 1) for i in range(1, T)]
    e_b = _estimate(data, method, per_b, bwt_pairs, conf, n_boot, seed)
    e_f = _estimate(data, method, per_f, fwt_pairs, conf, n_boot, seed)
    if fwt_pairs and math.isnan(e_f.value):
        e_f.note = "needs the base model's outcomes (stage -1)"
    cells = accuracy_matrix(data, method, conf)
    A = np.array([[cells[(t, j)].acc for j in range(T)] for t in data.tasks])
    ret = dict(zip(data.tasks[:-1], retention(A)))
    for t, r in ret.items():
        i = data.tasks.index(t)
        if r is None and not math.isnan(A[i, T - 1]):
            notes.append(f"retention of {t} undefined: 0% after its own stage")
    return Transfer(method, len(data.seeds(method)), e_b, e_f, ret, notes)


# ----- normalised curves --------------------------------------------------------------------
@dataclass
class Normalised:
    """`values[method][task]` = normalised accuracy per stage -1..T-1 (None where undefined or
    missing); `base` and `best` the scale's ends per task; `undefined` = {task: why}."""

    values: dict[str, dict[str, list[float | None]]]
    base: dict[str, float]
    best: dict[str, float]
    undefined: dict[str, str]


def normalised_curves(data: SequenceOutcomes, methods: Sequence[str] | None = None) -> Normalised:
    """The paper's normalised accuracy per task: 0 = the base model, 1 = the best seed-mean
    accuracy any of `methods` reached on that task after any stage (see the module docstring)."""
    methods = list(methods or data.methods)
    mats = {m: accuracy_matrix(data, m) for m in methods}
    values: dict = {m: {} for m in methods}
    base, best, undefined = {}, {}, {}
    for t in data.tasks:
        b = data.base_scores(t)
        reached = [c.acc for m in methods for j in range(data.T) if not math.isnan((c := mats[m][(t, j)]).acc)]
        base[t] = float(b.mean()) if b is not None else math.nan
        best[t] = max(reached) if reached else math.nan
        if b is None:
            undefined[t] = "no base-model outcomes (stage -1)"
        elif not reached:
            undefined[t] = "no trained stage evaluated"
        elif not best[t] > base[t]:
            undefined[t] = (f"no method exceeded the base accuracy ({100 * base[t]:.1f}%; best "
                            f"{100 * best[t]:.1f}%), so there is no scale from base to best")
        for m in methods:
            accs = [base[t]] + [mats[m][(t, j)].acc for j in range(data.T)]
            values[m][t] = [None if t in undefined or math.isnan(a) else (a - base[t]) / (best[t] - base[t])
                            for a in accs]
    return Normalised(values, base, best, undefined)


# ----- SDFT vs SFT on BWT --------------------------------------------------------------------
def _drops(data: SequenceOutcomes, method: str) -> dict[str, np.ndarray] | None:
    """{earlier task: (seeds, items) per-item drops y[i][T-1] - y[i][i]}; None when a seed lacks a cell."""
    T = data.T
    out = {}
    for i, t in enumerate(data.tasks[:-1]):
        rows = []
        for s in data.seeds(method):
            x, y = data.scores(method, s, t, i), data.scores(method, s, t, T - 1)
            if x is None or y is None:
                return None
            rows.append(y - x)
        out[t] = np.asarray(rows)
    return out if out and all(v.shape[0] for v in out.values()) else None


def compare_bwt(data: SequenceOutcomes, ref: str = "sft", arm: str = "sdft", conf: float = 0.95,
                n_boot: int = 10000, seed: int = 0) -> dict | None:
    """BWT(arm) - BWT(ref), paired by item (and seeds-then-items with several seeds): dict(diff,
    lo, hi, p, test, n_items, n_seeds_ref, n_seeds_arm, bwt_ref, bwt_arm, seed_lo, seed_hi,
    n_seed_pairs, mcnemar, power_parts). None without two stages or with a missing cell.

    `mcnemar` (one seed per method; else None): exact McNemar on the per-item "forgot" indicator
    over the earlier tasks' items, n01 = forgot under `arm` only, n10 = under `ref` only.
    `power_parts` = [(psi, n)] per earlier task for `claims.power_terms`: psi = the mean squared
    per-item difference of seed-mean drops, floored at `metrics.variance_floor` (a sample in
    which nothing changed is not read as a precise one)."""
    if data.T < 2 or not data.seeds(ref) or not data.seeds(arm):
        return None
    dr, da = _drops(data, ref), _drops(data, arm)
    if dr is None or da is None:
        return None
    h = M.hierarchical_change_ci(dr, da, n_boot=n_boot, seed=seed, conf=conf)
    per_r = {s: bwt(_seed_matrix(data, ref, s)[0]) for s in data.seeds(ref)}
    per_a = {s: bwt(_seed_matrix(data, arm, s)[0]) for s in data.seeds(arm)}
    pairs = [per_a[s] - per_r[s] for s in per_a if s in per_r]
    slo = shi = math.nan
    if len(pairs) >= 2:
        _, slo, shi = M.seed_ci(pairs, conf)
    multi = max(len(per_r), len(per_a)) >= 2
    mc = None
    if not multi:
        T = data.T
        (sr,), (sa,) = data.seeds(ref), data.seeds(arm)

        def forgot(m, s):
            return np.concatenate([data.scores(m, s, t, i) * (1 - data.scores(m, s, t, T - 1))
                                   for i, t in enumerate(data.tasks[:-1])])
        mc = M.mcnemar(forgot(ref, sr), forgot(arm, sa))
    parts = []
    for t in dr:
        d = da[t].mean(axis=0) - dr[t].mean(axis=0)
        parts.append((max(float(np.mean(d * d)), float(M.variance_floor(d.size))), int(d.size)))
    return {"diff": h["diff"], "lo": h["lo"], "hi": h["hi"], "p": h["p"],
            "test": HIERARCHICAL if multi else "paired bootstrap over items of the per-item drop",
            "n_items": h["n_items"], "n_seeds_ref": len(per_r), "n_seeds_arm": len(per_a),
            "bwt_ref": float(np.mean(list(per_r.values()))), "bwt_arm": float(np.mean(list(per_a.values()))),
            "seed_lo": slo, "seed_hi": shi, "n_seed_pairs": len(pairs), "mcnemar": mc, "power_parts": parts}


def retention_claim(data: SequenceOutcomes, ref: str = "sft", arm: str = "sdft", margin: float | None = None,
                    conf: float = 0.95, n_boot: int = 10000, seed: int = 0) -> dict:
    """The claim row 'SDFT retains earlier skills better than SFT' (id 'c-retain'), with the keys
    of `claims.check_claims` rows. Measured: BWT(SDFT) - BWT(SFT) (positive = SDFT kept more of
    the earlier tasks); verdict by `claims.sign_verdict` with the equivalence `margin` (default
    `RETAIN_MARGIN`), and with several seeds the across-seed agreement of `claims.seed_agreement`.
    Power: MDE at this n and the items needed for an MDE equal to the margin (no paper number)."""
    margin = RETAIN_MARGIN if margin is None else margin
    row = _row(RETAIN_ID, "SDFT retains earlier skills better than SFT (BWT, SDFT - SFT)",
               f"SDFT accumulates skills over the sequence while SFT forgets earlier ones ({PAPER_LABEL}, "
               "sequential figure; no number in the text)", "pp",
               f"supported if 95% CI > 0, contradicted if < 0, equivalent if inside ±{100 * margin:.1f} pp, "
               "else inconclusive")
    c = compare_bwt(data, ref, arm, conf=conf, n_boot=n_boot, seed=seed)
    if c is None:
        row["note"] = (f"needs {ref} and {arm} trained on at least two stages, every earlier task evaluated after "
                       "its own stage and after the last")
        return row
    verdict = sign_verdict(c["lo"], c["hi"], margin)
    seeds = f"seeds: {ref} {c['n_seeds_ref']}, {arm} {c['n_seeds_arm']}"
    extra = ""
    if c["mcnemar"] is None:
        verdict, agree = seed_agreement(verdict, c)
        extra = f"; {agree}"
    else:
        mc = c["mcnemar"]
        extra = (f"; items forgotten (right after their stage, wrong at the end) under {arm} only {mc['n01']}, "
                 f"under {ref} only {mc['n10']}, exact McNemar p {mc['p']:.3g}")
        # With few discordant items a percentile bootstrap interval can exclude 0 while the exact
        # test cannot reject: a direction is claimed only when both agree.
        if verdict in (SUPPORTED, CONTRADICTED) and not mc["p"] < 1 - conf:
            verdict = INCONCLUSIVE
            extra += (f"; the bootstrap interval excludes 0 but the exact McNemar test does not reject at "
                      f"{100 * (1 - conf):.0f}%, so no direction is claimed")
    earlier = ", ".join(data.tasks[:-1])
    mde, need = power_terms(c["power_parts"], margin)
    row.update(measured=c["diff"], lo=c["lo"], hi=c["hi"], p=c["p"], n=c["n_items"], test=c["test"],
               verdict=verdict,
               note=f"BWT {arm} {100 * c['bwt_arm']:+.1f} pp vs {ref} {100 * c['bwt_ref']:+.1f} pp on {earlier}; "
                    f"{seeds}{extra}",
               mde=mde, n_needed=need, n_needed_for=f"the {100 * margin:.1f} pp margin" if need is not None else "")
    return row


# ----- reading a stored run ---------------------------------------------------------------------
#: `kind` of a sequential suite run's manifest (`harness.manifest.SequentialManifest`).
RUN_KIND = SEQUENTIAL


def outcomes_from_run(run_id: str, store: Any) -> SequenceOutcomes:
    """A stored sequential run's per-item outcomes (the base column shared by every method and
    seed). Reads only the store, so reports need no torch."""
    from .errors import ConfigError

    m = read_manifest(store.get_run(run_id))
    if not isinstance(m, SequentialManifest):
        raise ConfigError(f"run {run_id}: not a sequential run")

    def scores(key: str) -> dict[str, float]:
        return {r["item_id"]: float(r["score"]) for r in store.examples(key)}

    base = {t: scores(k) for t, k in m.fixed.get("base", {}).items() if t in m.tasks}
    rows = []
    for p in m.points:
        for t, k in p.evals.items():
            if t in m.tasks:
                rows += [(p.method, p.seed, t, p.stage, i, s) for i, s in scores(k).items()]
    for method, seed in {(p.method, p.seed) for p in m.points}:
        for t, cell in base.items():
            rows += [(method, seed, t, BASE_STAGE, i, v) for i, v in cell.items()]
    return SequenceOutcomes.from_records(m.tasks, rows, m.stage_names)
