"""`Results`: one stored suite run as tidy DataFrames, with its arms, the selected points that stand
for each arm, per-point and per-arm scores, and the paired comparisons (per task, the prior average,
seeds-then-items) that every table is built from. The table builders are mixins (`tables.py`,
`costs.py`) that `Results` inherits, so its methods are all on the one class."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import metrics as M
from ..manifest import SuiteManifest
from ..selection import choose
from .costs import CostTables
from .names import BASE, TEACHER, _seed_key
from .tables import ResultTables


@dataclass
class Results(ResultTables, CostTables):
    """One suite run, loaded. DataFrames (all scores are fractions in [0, 1]):

    points   one row per point: point, arm, method, seed, selected, label, hp_<name> per
             hyper-parameter, new_task (accuracy), new_task_val (validation accuracy), prior_avg,
             forgetting (base prior_avg - prior_avg), cost columns (train_wall_s, tokens_generated,
             tokens_forwarded, flops, steps), train_key, checkpoint.
    metrics  point x task: point, arm, method, seed, selected, task, kind ('new', 'val', 'prior',
             'other'), benchmark, metric, value (mean item score), lo, hi (95% `mean_ci`), stderr,
             n, reported (the stored summary's value), chance, in_average, eval_key.
    items    point x task x item: point, arm, seed, selected, task, item_id, score, group,
             gold_logp, margin (multiple-choice prior items: log p(gold choice) and its margin over
             the best other choice, `metrics.choice_measures`; NaN elsewhere).
    The MC measures are also pseudo-tasks 'mc/<benchmark>/<measure>' (`mc_task`, kind 'mc' in
    `metrics`), so every paired method (`paired`, `seed_change`, `change_variance`) applies.
    curves   point x step: point, arm, method, seed, selected, step, then every logged metric
             (loss, divergence, drift_kl, lr, tokens_per_s, step_s, ...).
    notes    human-readable remarks on missing or incomplete pieces, shown by the report.
    """

    run_id: str
    name: str | None
    status: str
    created: float
    manifest: SuiteManifest
    config: dict
    task: str
    benchmarks: dict[str, dict]
    points: pd.DataFrame
    metrics: pd.DataFrame
    items: pd.DataFrame
    curves: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    n_boot: int = 10000
    seed: int = 0
    _scores: dict = field(default_factory=dict, repr=False)
    _weights: dict = field(default_factory=dict, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    # ----- structure --------------------------------------------------------------------
    @property
    def arms(self) -> list[str]:
        """Every arm, in the run's order (base and teacher first when present)."""
        seen = list(dict.fromkeys(self.points["arm"])) if len(self.points) else []
        head = [a for a in (BASE, TEACHER) if a in seen]
        return head + [a for a in seen if a not in head]

    @property
    def trained_arms(self) -> list[str]:
        return [a for a in self.arms if a not in (BASE, TEACHER)]

    def method_of(self, arm: str) -> str:
        m = self.points.loc[self.points["arm"] == arm, "method"]
        return str(m.iloc[0]) if len(m) else arm

    def _arm_for(self, method: str) -> str | None:
        if method in self.trained_arms:
            return method
        return next((a for a in self.trained_arms if self.method_of(a) == method), None)

    @property
    def sft_arm(self) -> str | None:
        """The SFT arm: the arm named 'sft', else the first arm whose method is SFT."""
        return self._arm_for("sft")

    @property
    def sdft_arm(self) -> str | None:
        """The SDFT arm: the arm named 'sdft', else the first arm whose method is SDFT."""
        return self._arm_for("sdft")

    @property
    def prior_tasks(self) -> list[str]:
        """Prior benchmarks ('prior/<name>') the base model was evaluated on, in suite order."""
        have = set(self.metrics.loc[self.metrics["kind"] == "prior", "task"]) if len(self.metrics) else set()
        order = [b["task"] for b in self.benchmarks.values()]
        order += sorted(t for t in have if t not in order)
        base_has = set(self.metrics.loc[(self.metrics["arm"] == BASE) & (self.metrics["kind"] == "prior"), "task"]) \
            if len(self.metrics) else set()
        return [t for t in order if t in have and (t in base_has or BASE not in self.arms)]

    @property
    def average_tasks(self) -> list[str]:
        """The prior benchmarks that count toward the prior average (`in_average`, default true)."""
        return [t for t in self.prior_tasks if self.bench_info(t).get("in_average", True)]

    def bench_info(self, task: str) -> dict:
        name = task.split("/", 1)[-1]
        info = dict(self.benchmarks.get(name) or {})
        info.setdefault("task", task)
        info.setdefault("name", name)
        if info.get("chance") is None:
            info["chance"] = M.CHANCE.get(task)
        return info

    def seeds(self, arm: str) -> list:
        return [self.points.loc[self.points["point"] == p, "seed"].iloc[0] for p in self.arm_points(arm)]

    def arm_points(self, arm: str) -> list[str]:
        """The points that stand for `arm`: its selected points, one per seed. Where a seed has
        no point marked selected (a run that stopped before marking), the run's own rule chooses
        (`selection.choose`): its only point, else the best validation score (noted). Never the
        best test score: a seed with several points that cannot be chosen between by validation
        is left out (unselected, noted), so a number chosen on the test set is never reported."""
        key = ("arm_points", arm)
        if key in self._cache:
            return self._cache[key]
        df = self.points[self.points["arm"] == arm]
        out = []
        for _, g in df.groupby([_seed_key(v) for v in df["seed"]], sort=False, dropna=False):
            sel = g[g["selected"].astype(bool)]
            if len(sel):
                out.extend(sel["point"])
                continue
            i = choose([float(v) for v in g["new_task_val"]], self.manifest.selection == "validation")
            seed = g["seed"].iloc[0]
            if i is not None:
                out.append(g["point"].iloc[i])
                if len(g) > 1:
                    self.notes.append(f"arm {arm}: no point marked selected for seed {seed}; "
                                      f"using {out[-1]} (best validation score)")
            else:
                self.notes.append(f"arm {arm}: {len(g)} points for seed {seed}, none marked selected and no "
                                  "validation score for each to select on: left unselected (never selected on "
                                  "the test set), so this seed is missing from the arm's numbers")
        self._cache[key] = out
        return out

    # ----- scores -----------------------------------------------------------------------
    def point_scores(self, point: str, task: str) -> dict[str, float] | None:
        """{item_id: score} of one point on one task, or None if it was not evaluated."""
        return self._scores.get((point, task))

    def item_weights(self, task: str) -> dict[str, float] | None:
        """{item_id: weight} for a task whose headline is a micro average (IFEval: instructions
        per prompt, a property of the prompt, the same for every point), else None."""
        return self._weights.get(task)

    def _w(self, task: str, keys: list[str]) -> np.ndarray | None:
        """Weights of `keys` for a micro-averaged task; None where items weigh equally (no
        weights, or all equal: then the plain item statistics, McNemar included, are exact)."""
        w = self.item_weights(task)
        if not w or any(k not in w for k in keys):
            return None
        a = np.array([w[k] for k in keys], float)
        return None if a.size == 0 or np.all(a == a[0]) else a

    def _item_ci(self, task: str, scores: dict[str, float]) -> tuple[float, float, float]:
        """(value, lo, hi) of item scores: `mean_ci`, or the ratio bootstrap for a micro average."""
        keys = sorted(scores)
        x = [scores[k] for k in keys]
        w = self._w(task, keys)
        if w is None:
            return M.mean_ci(x)
        return M.ratio_ci(x, w, n_boot=self.n_boot, seed=self.seed)

    def _metric_index(self) -> dict:
        if "metric_index" not in self._cache:
            m = self.metrics
            self._cache["metric_index"] = {(p, t): (float(v), float(se)) for p, t, v, se in
                                           zip(m["point"], m["task"], m["value"], m["stderr"])}
        return self._cache["metric_index"]

    def value(self, point: str, task: str) -> float:
        """The point's value on a task (mean item score), NaN if not evaluated."""
        return self._metric_index().get((point, task), (math.nan, math.nan))[0]

    def arm_scores(self, arm: str, task: str) -> dict[str, float] | None:
        """{item_id: mean score over the arm's selected points (seeds)} on the items every seed
        scored; None when no selected point has the task."""
        key = ("arm_scores", arm, task)
        if key in self._cache:
            return self._cache[key]
        per = [s for s in (self.point_scores(p, task) for p in self.arm_points(arm)) if s]
        out = None
        if per:
            common = sorted(set(per[0]).intersection(*per[1:]))
            out = dict(zip(common, np.mean([[s[i] for i in common] for s in per], axis=0).tolist()))
        self._cache[key] = out
        return out

    def arm_value(self, arm: str, task: str) -> float:
        """The arm's value on a task: mean over its seeds (NaN if no seed has it)."""
        return self._seed_stats(self.arm_values(arm, task))[0]

    def arm_prior_avg(self, arm: str) -> float:
        """The arm's prior average: mean over seeds of each seed's unweighted average."""
        return self._seed_stats([self._point_avg(p) for p in self.arm_points(arm)])[0]

    def arm_values(self, arm: str, task: str) -> list[float]:
        """Per-seed values of the arm on a task (NaN where a seed lacks it)."""
        return [self.value(p, task) for p in self.arm_points(arm)]

    def paired(self, ref_arm: str, arm: str, task: str) -> dict | None:
        """Paired comparison arm vs ref_arm on one task (`metrics.paired_test`; for a micro
        average, test 'ratio bootstrap': `metrics.paired_ratio_bootstrap`), on common items:
        dict(test, diff, lo, hi, p, n, ref_value, value[, n01, n10]); None without items."""
        key = ("paired", ref_arm, arm, task)
        if key in self._cache:
            return self._cache[key]
        a, b = self.arm_scores(ref_arm, task), self.arm_scores(arm, task)
        out = None
        if a and b:
            keys = sorted(set(a) & set(b))
            x, y = np.array([a[k] for k in keys], float), np.array([b[k] for k in keys], float)
            w = self._w(task, keys)
            if x.size and w is None:
                r = M.paired_test(x, y, n_boot=self.n_boot, seed=self.seed)
                out = r | {"n": int(x.size), "ref_value": float(x.mean()), "value": float(y.mean())}
            elif x.size:
                r = M.paired_ratio_bootstrap(x, y, w, n_boot=self.n_boot, seed=self.seed)
                out = {"test": "ratio bootstrap", **r, "n": int(x.size), "ref_value": M.weighted_mean(x, w),
                       "value": M.weighted_mean(y, w)}
        self._cache[key] = out
        return out

    def change_variance(self, ref_arm: str, arm: str, task: str) -> tuple[float, int] | None:
        """(psi, n) for power analysis of arm - ref_arm on one task: psi bounds the per-item
        variance of the paired change, the Wilson upper 95% bound of the discordance rate for 0/1
        scores (a sample where nothing flipped is not read as a precise one) and the mean squared
        per-item difference otherwise (a micro average's items scaled by their weights, as the gate
        does); n = items both arms scored. None without items."""
        a, b = self.arm_scores(ref_arm, task), self.arm_scores(arm, task)
        if not a or not b:
            return None
        keys = sorted(set(a) & set(b))
        if not keys:
            return None
        x, y = np.array([a[k] for k in keys], float), np.array([b[k] for k in keys], float)
        w = self._w(task, keys)
        if w is not None:
            x, y = M.micro_scaled(x, w), M.micro_scaled(y, w)
        d = y - x
        if M.is_binary(x) and M.is_binary(y):
            return float(M.wilson_upper(float(np.mean(d != 0)), len(keys))), len(keys)
        return float(np.mean(d * d)), len(keys)

    def _seed_stats(self, values: list[float]) -> tuple[float, float, float, int]:
        v = [x for x in values if not math.isnan(x)]
        if not v:
            return (math.nan, math.nan, math.nan, 0)
        m, lo, hi = M.seed_ci(v)
        return (m, lo, hi, len(v))

    def _stderr(self, point: str, task: str) -> float:
        return self._metric_index().get((point, task), (math.nan, math.nan))[1]

    def _point_avg(self, point: str) -> float:
        if not self.average_tasks:
            return math.nan
        return M.prior_average({t: (None if math.isnan(v := self.value(point, t)) else v)
                                for t in self.average_tasks})

    # ----- paired comparisons over several tasks --------------------------------------
    def _prior_scores(self, arm: str) -> dict[str, dict[str, float]] | None:
        out = {}
        for t in self.average_tasks:
            s = self.arm_scores(arm, t)
            if not s:
                return None
            out[t] = s
        return out or None

    def prior_change(self, ref_arm: str, arm: str) -> dict | None:
        """Change of the prior average arm - ref_arm with the paired bootstrap interval over items
        within every benchmark (IFEval as a ratio; `metrics.hierarchical_change_ci` on
        seed-averaged items), on items both scored; dict(diff, lo, hi, p, forgetting,
        forgetting_lo, forgetting_hi, ...); None when either lacks a benchmark of the average."""
        key = ("prior_change", ref_arm, arm)
        if key not in self._cache:
            self._cache[key] = self._prior_change(ref_arm, arm)
        return self._cache[key]

    def _prior_change(self, ref_arm: str, arm: str) -> dict | None:
        a, b = self._prior_scores(ref_arm), self._prior_scores(arm)
        if not a or not b:
            return None
        ka, kb, kw = {}, {}, {}
        for t in a:
            keys = sorted(set(a[t]) & set(b[t]))
            if not keys:
                return None
            ka[t], kb[t], kw[t] = [a[t][k] for k in keys], [b[t][k] for k in keys], self._w(t, keys)
        # seed-averaged items, one "seed" per side: the paired item bootstrap (ratio for IFEval)
        r = M.hierarchical_change_ci(ka, kb, kw, n_boot=self.n_boot, seed=self.seed)
        return r | {"forgetting": -r["diff"], "forgetting_lo": -r["hi"], "forgetting_hi": -r["lo"]}

    def seed_change(self, ref_arm: str, arm: str, tasks: list[str]) -> dict | None:
        """Change arm - ref_arm of the unweighted mean over `tasks` (one task: that task; the
        average tasks: the prior average), with intervals that count training randomness:
        `lo`, `hi`, `p` from the seeds-then-items bootstrap (`metrics.hierarchical_change_ci`:
        each arm's selected points resampled as seeds, and one resample of items per benchmark
        shared by every seed of both arms, IFEval as a ratio), and `seed_lo`, `seed_hi` the across-seed t interval (`seed_ci`) of the per-seed
        differences, pairing seeds by number (NaN with fewer than 2 pairs). On items every seed
        of both arms scored; None when a selected point lacks a task."""
        key = ("seed_change", ref_arm, arm, tuple(tasks))
        if key in self._cache:
            return self._cache[key]
        pr, pa = self.arm_points(ref_arm), self.arm_points(arm)
        ref, new, wts, out = {}, {}, {}, None
        for t in tasks:
            sr = [self.point_scores(p, t) for p in pr]
            sa = [self.point_scores(p, t) for p in pa]
            if not sr or not sa or not all(sr) or not all(sa):
                break
            keys = sorted(set(sr[0]).intersection(*sr[1:], *sa))
            if not keys:
                break
            ref[t] = [[s[k] for k in keys] for s in sr]
            new[t] = [[s[k] for k in keys] for s in sa]
            wts[t] = self._w(t, keys)
        else:
            if tasks:
                out = M.hierarchical_change_ci(ref, new, wts, n_boot=self.n_boot, seed=self.seed)
                vr = {_seed_key(sd): float(np.mean([self.value(p, t) for t in tasks]))
                      for p, sd in zip(pr, self.seeds(ref_arm))}
                va = {_seed_key(sd): float(np.mean([self.value(p, t) for t in tasks]))
                      for p, sd in zip(pa, self.seeds(arm))}
                diffs = [va[k] - vr[k] for k in va if k in vr]
                _, slo, shi = M.seed_ci(diffs) if len(diffs) >= 2 else (0.0, math.nan, math.nan)
                out |= {"seed_lo": slo, "seed_hi": shi, "n_seed_pairs": len(diffs)}
        self._cache[key] = out
        return out
