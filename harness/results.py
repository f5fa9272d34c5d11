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

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import metrics as M
from .errors import StoreError
from .manifest import SuiteManifest, read_manifest, val_name
from .selection import choose
from .store import Store

BASE, TEACHER = "base", "teacher"
COST_KEYS = ("train_wall_s", "tokens_generated", "tokens_forwarded", "flops", "steps")


def _open_store(db: Any) -> Store:
    if isinstance(db, Store):
        return db
    from .paths import results_db

    return Store.open_existing(results_db(db))


def _num(v: Any) -> float:
    try:
        return float("nan") if v is None else float(v)
    except (TypeError, ValueError):
        return float("nan")


def _group(task: str, item_id: str, diag: dict) -> str | None:
    """An item's group for flip tables: MMLU subject, tool-use API, or a stored 'group'."""
    for k in ("subject", "group", "api"):
        if isinstance(diag, dict) and diag.get(k):
            return str(diag[k])
    if "/" in item_id:  # MMLU ids are 'subject/row', tool-use ids 'API/k'
        return item_id.rsplit("/", 1)[0]
    return None


mc_task = M.mc_task  # 'prior/mmlu', 'margin' -> 'mc/mmlu/margin'


def _seed_key(v: Any) -> str:
    """A seed as a stable string ('-' for none), whatever pandas made of it (None, NaN, 0.0)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _hp_label(hp: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(hp.items())) if hp else ""


@dataclass
class Results:
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

    # ----- tables -----------------------------------------------------------------------
    def new_task_table(self) -> pd.DataFrame:
        """Per arm: new-task accuracy (mean over seeds) with the item-level 95% interval
        (`mean_ci`, Wilson for 0/1 scores), the across-seed interval (`seed_ci`, NaN with one
        seed), validation accuracy, and the paired change vs base (`paired_test`)."""
        rows = []
        for arm in self.arms:
            s = self.arm_scores(arm, self.task)
            vals = self.arm_values(arm, self.task)
            m, slo, shi, ns = self._seed_stats(vals)
            lo = hi = math.nan
            n = 0
            if s:
                _, lo, hi = self._item_ci(self.task, s)
                n = len(s)
            elif ns:
                mt = self.metrics[self.metrics["point"].isin(self.arm_points(arm))
                                  & (self.metrics["task"] == self.task)]
                n = int(mt["n"].iloc[0]) if len(mt) and not pd.isna(mt["n"].iloc[0]) else 0
                if ns == 1 and len(mt):
                    lo, hi = float(mt["lo"].iloc[0]), float(mt["hi"].iloc[0])
            val = self._seed_stats(self.arm_values(arm, f"{self.task}-val"))[0]
            row = {"arm": arm, "method": self.method_of(arm), "n_seeds": len(self.arm_points(arm)),
                   "n": n, "acc": m, "lo": lo, "hi": hi, "seed_lo": slo, "seed_hi": shi, "val_acc": val,
                   "diff_vs_base": math.nan, "diff_lo": math.nan, "diff_hi": math.nan,
                   "p_vs_base": math.nan, "test": ""}
            if arm != BASE and BASE in self.arms:
                r = self.paired(BASE, arm, self.task)
                if r:
                    row.update(diff_vs_base=r["diff"], diff_lo=r["lo"], diff_hi=r["hi"], p_vs_base=r["p"],
                               test=r["test"])
            rows.append(row)
        return pd.DataFrame(rows)

    def benchmark_table(self) -> pd.DataFrame:
        """Per (trained arm, prior benchmark): base and arm values on common items, the paired
        change arm - base with its 95% interval and p (McNemar + Agresti-Min for 0/1 scores,
        ratio bootstrap for a micro average such as IFEval, paired bootstrap otherwise),
        Holm-adjusted p over the arm's benchmarks, the across-seed
        interval of the change, and whether the base model is at chance there (`is_at_chance`)."""
        rows = []
        for arm in self.trained_arms:
            arm_rows = []
            for t in self.prior_tasks:
                info = self.bench_info(t)
                base_v = self.value(self.arm_points(BASE)[0], t) if BASE in self.arms else math.nan
                base_se = self._stderr(self.arm_points(BASE)[0], t) if BASE in self.arms else math.nan
                chance = info.get("chance")
                at_chance = (bool(M.is_at_chance(base_v, base_se, chance))
                             if chance is not None and not math.isnan(base_v) else False)
                vals = self.arm_values(arm, t)
                _, slo, shi, ns = self._seed_stats([v - base_v for v in vals])
                row = {"arm": arm, "task": t, "benchmark": info["name"], "metric": info.get("metric"),
                       "base_value": base_v, "value": self._seed_stats(vals)[0], "diff": math.nan,
                       "lo": math.nan, "hi": math.nan, "p": math.nan, "p_holm": math.nan, "test": "",
                       "n": 0, "seed_lo": slo, "seed_hi": shi, "n_seeds": ns, "chance": chance,
                       "at_chance": at_chance, "in_average": bool(info.get("in_average", True))}
                r = self.paired(BASE, arm, t) if BASE in self.arms else None
                if r:
                    row.update(base_value=r["ref_value"], value=r["value"], diff=r["diff"], lo=r["lo"],
                               hi=r["hi"], p=r["p"], test=r["test"], n=r["n"])
                elif not math.isnan(row["value"]) and not math.isnan(base_v):
                    row["diff"] = row["value"] - base_v
                arm_rows.append(row)
            adj = M.holm([r["p"] for r in arm_rows]) if arm_rows else []
            for r, p in zip(arm_rows, adj):
                r["p_holm"] = p
            rows.extend(arm_rows)
        cols = ["arm", "task", "benchmark", "metric", "base_value", "value", "diff", "lo", "hi", "p", "p_holm",
                "test", "n", "seed_lo", "seed_hi", "n_seeds", "chance", "at_chance", "in_average"]
        return pd.DataFrame(rows, columns=cols)

    def mc_tasks(self, measure: str = "gold_logp") -> list[str]:
        """The 'mc/<benchmark>/<measure>' pseudo-tasks of the prior benchmarks whose items carry
        per-choice loglikelihoods (multiple choice), in prior-suite order."""
        have = set(self.metrics.loc[self.metrics["kind"] == "mc", "task"]) if len(self.metrics) else set()
        return [mc_task(t, measure) for t in self.prior_tasks if mc_task(t, measure) in have]

    def mc_change(self, ref_arm: str, arm: str, measure: str = "gold_logp") -> dict | None:
        """Change arm - ref_arm of the unweighted mean over the MC benchmarks of one continuous
        measure (nats), paired by item within each benchmark (`metrics.hierarchical_change_ci`
        with one "seed" per side on seed-averaged items; several seeds: `seed_change`):
        dict(diff, lo, hi, p, n_tasks, n_items); None when either arm lacks a benchmark."""
        tasks = self.mc_tasks(measure)
        if not tasks:
            return None
        if max(len(self.arm_points(ref_arm)), len(self.arm_points(arm))) >= 2:
            c = self.seed_change(ref_arm, arm, tasks)
            return None if c is None else c | {"n_tasks": len(tasks), "n_items": int(c.get("n_items", 0))}
        ka, kb = {}, {}
        for t in tasks:
            a, b = self.arm_scores(ref_arm, t), self.arm_scores(arm, t)
            keys = sorted(set(a or {}) & set(b or {}))
            if not keys:
                return None
            ka[t], kb[t] = [a[k] for k in keys], [b[k] for k in keys]
        r = M.hierarchical_change_ci(ka, kb, {t: None for t in tasks}, n_boot=self.n_boot, seed=self.seed)
        return r | {"n_tasks": len(tasks), "n_items": sum(len(v) for v in ka.values())}

    def mc_table(self) -> pd.DataFrame:
        """Per (comparison, MC benchmark, measure): the paired change in log p(gold) and in the
        margin, in nats, with the paired bootstrap 95% interval over items, p, n, and the MDE at
        this n from the observed per-item variance of the change. Comparisons: every trained arm
        against base, then SDFT - SFT. Beside, never instead of, the benchmarks' accuracy."""
        cols = ["ref", "arm", "task", "benchmark", "measure", "ref_value", "value", "diff", "lo", "hi", "p",
                "n", "mde"]
        pairs = [(BASE, a) for a in self.trained_arms if BASE in self.arms]
        if self.sft_arm and self.sdft_arm:
            pairs.append((self.sft_arm, self.sdft_arm))
        rows = []
        for ref, arm in pairs:
            for m in M.MC_MEASURES:
                for t in self.mc_tasks(m):
                    r = self.paired(ref, arm, t)
                    if not r:
                        continue
                    cv = self.change_variance(ref, arm, t)
                    rows.append({"ref": ref, "arm": arm, "task": t, "benchmark": t.split("/")[1], "measure": m,
                                 "ref_value": r["ref_value"], "value": r["value"], "diff": r["diff"],
                                 "lo": r["lo"], "hi": r["hi"], "p": r["p"], "n": r["n"],
                                 "mde": float(M.mde(cv[1], 0.5, discordance=cv[0], two_sided=True)) if cv else math.nan})
        return pd.DataFrame(rows, columns=cols)

    def _stderr(self, point: str, task: str) -> float:
        return self._metric_index().get((point, task), (math.nan, math.nan))[1]

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

    def prior_table(self) -> pd.DataFrame:
        """Per arm (base and trained arms): prior average (unweighted mean over the `in_average`
        benchmarks, mean over seeds), forgetting = base average - arm average with the paired
        bootstrap interval over items, its p, and the across-seed interval of the forgetting."""
        cols = ["arm", "method", "n_seeds", "prior_avg", "forgetting", "lo", "hi", "p", "seed_lo", "seed_hi",
                "n_benchmarks"]
        if not self.average_tasks:
            return pd.DataFrame(columns=cols)
        rows = []
        base_avg = self._point_avg(self.arm_points(BASE)[0]) if BASE in self.arms else math.nan
        for arm in [a for a in self.arms if a != TEACHER]:
            avgs = [self._point_avg(p) for p in self.arm_points(arm)]
            m = self._seed_stats(avgs)[0]
            _, slo, shi, ns = self._seed_stats([base_avg - v for v in avgs])
            row = {"arm": arm, "method": self.method_of(arm), "n_seeds": len(avgs), "prior_avg": m,
                   "forgetting": base_avg - m, "lo": math.nan, "hi": math.nan, "p": math.nan,
                   "seed_lo": slo, "seed_hi": shi, "n_benchmarks": len(self.average_tasks)}
            if arm == BASE:
                row.update(forgetting=0.0, seed_lo=math.nan, seed_hi=math.nan)
            elif BASE in self.arms:
                r = self.prior_change(BASE, arm)
                if r:
                    row.update(forgetting=r["forgetting"], lo=r["forgetting_lo"], hi=r["forgetting_hi"], p=r["p"])
            rows.append(row)
        return pd.DataFrame(rows, columns=cols)

    def _point_avg(self, point: str) -> float:
        if not self.average_tasks:
            return math.nan
        return M.prior_average({t: (None if math.isnan(v := self.value(point, t)) else v)
                                for t in self.average_tasks})

    def compare(self, ref_arm: str, arm: str) -> pd.DataFrame:
        """arm vs ref_arm (e.g. SDFT vs SFT) on the new task, every prior benchmark and the prior
        average: diff = arm - ref, 95% interval, p (McNemar for 0/1 scores, else paired
        bootstrap; the average: paired bootstrap over items). `p_holm` is Holm-adjusted over the
        prior benchmarks (the family a reader scans for 'which benchmark differs'); the new task
        and the average are single pre-stated comparisons and keep their own p. `seed_lo/hi`:
        interval over seeds of the per-seed difference, pairing seeds by number (NaN < 2 pairs)."""
        rows = []
        for t in [self.task, *self.prior_tasks]:
            r = self.paired(ref_arm, arm, t)
            kind = "new" if t == self.task else "prior"
            sa = dict(zip(map(_seed_key, self.seeds(ref_arm)), self.arm_values(ref_arm, t)))
            sb = dict(zip(map(_seed_key, self.seeds(arm)), self.arm_values(arm, t)))
            _, slo, shi, _ = self._seed_stats([sb[k] - sa[k] for k in sb if k in sa]) \
                if len(set(sa) & set(sb)) >= 2 else (0, math.nan, math.nan, 0)
            row = {"task": t, "kind": kind, "ref": ref_arm, "arm": arm, "ref_value": math.nan, "value": math.nan,
                   "diff": math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan, "p_holm": math.nan,
                   "test": "", "n": 0, "seed_lo": slo, "seed_hi": shi}
            if r:
                row.update(ref_value=r["ref_value"], value=r["value"], diff=r["diff"], lo=r["lo"], hi=r["hi"],
                           p=r["p"], test=r["test"], n=r["n"])
            rows.append(row)
        prior_idx = [i for i, r in enumerate(rows) if r["kind"] == "prior"]
        for i, p in zip(prior_idx, M.holm([rows[i]["p"] for i in prior_idx])):
            rows[i]["p_holm"] = p
        if self.average_tasks:
            r = self.prior_change(ref_arm, arm)
            ra = [self._point_avg(p) for p in self.arm_points(ref_arm)]
            rb = [self._point_avg(p) for p in self.arm_points(arm)]
            row = {"task": "prior average", "kind": "average", "ref": ref_arm, "arm": arm,
                   "ref_value": self._seed_stats(ra)[0], "value": self._seed_stats(rb)[0], "diff": math.nan,
                   "lo": math.nan, "hi": math.nan, "p": math.nan, "p_holm": math.nan, "test": "bootstrap",
                   "n": 0, "seed_lo": math.nan, "seed_hi": math.nan}
            if r:
                row.update(diff=r["diff"], lo=r["lo"], hi=r["hi"], p=r["p"])
            rows.append(row)
        return pd.DataFrame(rows)

    def flips(self, arm: str, ref_arm: str = BASE) -> pd.DataFrame:
        """Items that flipped between ref_arm and arm (`metrics.flip_table`), per task: one row
        per task with group '(all)', then one per group (MMLU subject, tool-use API). An item is
        right when its score (mean over seeds) is >= 0.5. net = wrong_to_right - right_to_wrong."""
        rows = []
        for t in [self.task, *self.prior_tasks]:
            a, b = self.arm_scores(ref_arm, t), self.arm_scores(arm, t)
            if not a or not b:
                continue
            groups = self._groups(t)
            ft = M.flip_table(a, b, groups=groups)
            for g, row in [("(all)", ft["total"]), *sorted(((k, v) for k, v in ft["groups"].items() if k is not None),
                                                           key=lambda kv: str(kv[0]))]:
                if g != "(all)" and len(ft["groups"]) < 2:
                    continue
                rows.append({"task": t, "group": g, "n": row["n"], "right_to_wrong": row["right_to_wrong"],
                             "wrong_to_right": row["wrong_to_right"], "both_right": row["both_right"],
                             "both_wrong": row["both_wrong"], "net": row["wrong_to_right"] - row["right_to_wrong"]})
        cols = ["task", "group", "n", "right_to_wrong", "wrong_to_right", "both_right", "both_wrong", "net"]
        return pd.DataFrame(rows, columns=cols)

    def _groups(self, task: str) -> dict[str, Any]:
        key = ("groups", task)
        if key not in self._cache:
            df = self.items[(self.items["task"] == task) & self.items["group"].notna()]
            self._cache[key] = dict(zip(df["item_id"], df["group"]))
        return self._cache[key]

    def cost_table(self) -> pd.DataFrame:
        """Per trained arm, over its selected points (mean over seeds): training wall-clock,
        tokens generated and forwarded, FLOPs, steps; the ratio to SFT of wall-clock and FLOPs
        (`cost_ratio`, see `cost_ratio` below for the basis); and the cost-normalised new-task gain
        over base per GPU/CPU-hour of training (gain_per_hour, percentage points per hour)."""
        rows = []
        nt = self.new_task_table().set_index("arm") if len(self.points) else None
        ref = self.sft_arm
        for arm in self.trained_arms:
            pts = self.points[self.points["point"].isin(self.arm_points(arm))]
            row: dict[str, Any] = {"arm": arm, "method": self.method_of(arm), "n_points": len(pts)}
            for k in COST_KEYS:
                row[k] = float(pts[k].mean()) if k in pts and pts[k].notna().any() else math.nan
            for measure, col in (("train_wall_s", "wall"), ("flops", "flops")):
                r = self.cost_ratio(arm, ref, measure) if ref and arm != ref else None
                row[f"{col}_ratio"] = r["ratio"] if r else (1.0 if arm == ref else math.nan)
                row[f"{col}_ratio_lo"] = r["lo"] if r else math.nan
                row[f"{col}_ratio_hi"] = r["hi"] if r else math.nan
                row[f"{col}_basis"] = r["basis"] if r else ""
            gain = nt.loc[arm, "diff_vs_base"] if nt is not None and arm in nt.index else math.nan
            wall = row["train_wall_s"]
            ok = wall and wall > 0 and not math.isnan(gain)
            row["gain_per_hour"] = 100 * gain / (wall / 3600) if ok else math.nan
            rows.append(row)
        return pd.DataFrame(rows)

    def cost_ratio(self, arm: str, ref_arm: str, measure: str) -> dict | None:
        """Cost of `arm` relative to `ref_arm` for one measure ('train_wall_s', 'flops', ...):
        dict(ratio, lo, hi, n, basis, note), or None without positive costs on both sides.

        Basis, first that applies: (1) grid points trained with the same hyper-parameters and seed
        in both arms: geometric mean of the per-pair ratios with a t interval on the log scale
        (`seed_ci` on log ratios; NaN with one pair), because pairs share data order and budget;
        (2) otherwise per optimizer step over all grid points, via `metrics.cost_ratio` (ratio of
        mean costs, delta-method interval), so different epoch counts do not bias the ratio;
        (3) otherwise the selected points' totals, via `metrics.cost_ratio`."""
        if measure not in self.points:
            return None
        P = self.points
        a = P[(P["arm"] == arm) & (P[measure] > 0)]
        r = P[(P["arm"] == ref_arm) & (P[measure] > 0)]
        if a.empty or r.empty:
            return None

        def key(row):
            return (json.dumps(row["hparams"], sort_keys=True, default=str), _seed_key(row["seed"]))

        ra = {key(x): float(x[measure]) for _, x in a.iterrows()}
        rr = {key(x): float(x[measure]) for _, x in r.iterrows()}
        matched = sorted(set(ra) & set(rr))
        if matched:
            logs = [math.log(ra[k] / rr[k]) for k in matched]
            m, lo, hi = M.seed_ci(logs)
            return {"ratio": math.exp(m), "lo": math.exp(lo) if not math.isnan(lo) else math.nan,
                    "hi": math.exp(hi) if not math.isnan(hi) else math.nan, "n": len(matched),
                    "basis": f"{len(matched)} matched grid point(s) (same hyper-parameters and seed)",
                    "note": "" if len(matched) > 1 else "single pair: no interval"}
        if "steps" in P and (a["steps"] > 0).all() and (r["steps"] > 0).all():
            c = M.cost_ratio(list(a[measure] / a["steps"]), list(r[measure] / r["steps"]), what=measure)
            basis = "per optimizer step, all grid points (no matched pairs)"
        else:
            sa = a[a["point"].isin(self.arm_points(arm))]
            sr = r[r["point"].isin(self.arm_points(ref_arm))]
            if sa.empty or sr.empty:
                return None
            c = M.cost_ratio(list(sa[measure]), list(sr[measure]), what=measure)
            basis = "selected points' totals"
        return {"ratio": c["ratio"], "lo": c["lo"], "hi": c["hi"], "n": min(c["n_arm"], c["n_ref"]),
                "basis": basis, "note": c["note"]}


# ----- loading ---------------------------------------------------------------------------------
def _kind(task: str, new_task: str) -> str:
    if task == new_task:
        return "new"
    if task == val_name(new_task) or task.endswith(val_name("")):
        return "val"
    if task.startswith("prior/"):
        return "prior"
    if task.startswith("probe/"):
        return "probe"
    if task.startswith("mc/"):
        return "mc"
    return "other"


def examples_frame(run: str, db: Any = None):
    """Every per-example outcome of any run (a suite run or a single `harness eval`) as one pandas
    DataFrame: label, task, arm, model, eval_key, item_id, score, tokens, output, plus one column
    per diagnostic (`diag.<name>`)."""
    import pandas as pd

    store = _open_store(db)
    rid = store.get_run(run)["run_id"]
    rows = []
    for e in store.run_evals(rid):
        for x in store.examples(e["eval_key"]):
            rows.append({"label": e["label"], "task": e["task"], "arm": e["arm"], "model": e["model"],
                         "eval_key": e["eval_key"], "item_id": x["item_id"], "score": x["score"],
                         "tokens": x["tokens"], "output": x["output"]}
                        | {f"diag.{k}": v for k, v in (x["diagnostics"] or {}).items()})
    return pd.DataFrame(rows)


def load(run: str, db: Any = None, *, n_boot: int = 10000, seed: int = 0) -> Results:
    """Load a suite run (id, id prefix or suite name) from the store `db` (a path, a `Store`, or
    None for `--db` / HARNESS_DB / results/harness.db). Raises `StoreError` (one line) when the
    store or the run does not exist, or the run is not a suite run. `n_boot` and `seed` set the
    bootstrap used by the comparisons."""
    store = _open_store(db)
    info = store.get_run(run)
    rid = info["run_id"]
    if info["kind"] != "suite":
        raise StoreError(f"{store.path}: run '{rid}' is a '{info['kind']}' run, not a suite run "
                         "(reports are built from `harness run SUITE` runs)")
    manifest = read_manifest(info)
    if not isinstance(manifest, SuiteManifest):
        raise StoreError(f"{store.path}: run '{rid}' is a {manifest.kind} suite run; `harness report` shows it "
                         "(its measures are in `harness.continual`)")
    pts = manifest.points
    if not pts:
        raise StoreError(f"{store.path}: suite run '{rid}' has no points in its metadata "
                         f"(status {info['status']}); nothing to report")
    new_task = manifest.task
    notes: list[str] = []
    if info["status"] != "complete":
        notes.append(f"run status is '{info['status']}': results may be partial")

    benchmarks: dict[str, dict] = {name: b.model_dump() | {"task": f"prior/{name}", "name": name}
                                   for name, b in manifest.benchmarks.items()}

    point_rows, metric_rows, item_frames, curve_rows = [], [], [], []
    scores: dict[tuple[str, str], dict[str, float]] = {}
    weights: dict[str, dict[str, float]] = {}
    hp_names = list(dict.fromkeys(k for p in pts for k in p.hparams))
    for p in pts:
        name, arm, method, seed_v, selected = p.point, p.arm, p.method, p.seed, p.selected
        hp = dict(p.hparams)
        cost = p.cost.model_dump(exclude_none=True)
        label = arm + (f" {_hp_label(hp)}" if hp else "") + (f" seed={seed_v}" if seed_v is not None else "")
        prow = {"point": name, "arm": arm, "method": method, "seed": seed_v, "selected": selected, "label": label,
                "hparams": hp, **{f"hp_{k}": hp.get(k) for k in hp_names},
                "train_key": p.train_key, "checkpoint": p.checkpoint}
        for k in COST_KEYS:
            prow[k] = _num(cost.get(k))
        for k, v in cost.items():
            if k not in COST_KEYS:
                prow[k] = float(v)
        point_rows.append(prow)
        base_cols = {"point": name, "arm": arm, "method": method, "seed": seed_v, "selected": selected}
        for task, key in p.evals.items():
            ev = store.get_eval(key, complete_only=False)
            if ev is None:
                notes.append(f"{name}: evaluation {task} ({key[:12]}) is missing from the store")
                continue
            if ev["status"] != "complete":
                notes.append(f"{name}: evaluation {task} ({key[:12]}) is incomplete; left out")
                continue
            summ = ev.get("summary") or {}
            rows = store.conn.execute("SELECT item_id, score, diagnostics FROM examples WHERE eval_key=? ORDER BY idx",
                                      (key,)).fetchall()
            kind = _kind(task, new_task)
            bname = task.split("/", 1)[1] if kind == "prior" else task
            if kind == "prior" and bname not in benchmarks:
                benchmarks[bname] = {"task": task, "name": bname, "metric": summ.get("metric"),
                                     "chance": summ.get("chance", M.CHANCE.get(task))}
            reported = _num(summ.get("accuracy", summ.get("value")))
            if rows:
                ids = [str(r[0]) for r in rows]
                sc = [float(r[1]) for r in rows]
                diags = [json.loads(r[2]) if r[2] else {} for r in rows]
                grp = [_group(task, i, d) for i, d in zip(ids, diags)]
                scores[(name, task)] = dict(zip(ids, sc))
                mc = M.mc_item_measures(ids, diags) if kind == "prior" else {}
                item_frames.append(pd.DataFrame({"point": name, "arm": arm, "seed": seed_v, "selected": selected,
                                                 "task": task, "item_id": ids, "score": sc, "group": grp,
                                                 **{m: [mc[m].get(i, math.nan) if mc else math.nan for i in ids]
                                                    for m in M.MC_MEASURES}}))
                for m, vals in mc.items():
                    mt = mc_task(task, m)
                    scores[(name, mt)] = vals
                    mv = list(vals.values())
                    mean = float(np.mean(mv))
                    sd = float(np.std(mv, ddof=1)) if len(mv) > 1 else math.nan
                    h = 1.96 * sd / math.sqrt(len(mv)) if len(mv) > 1 else math.nan
                    metric_rows.append({**base_cols, "task": mt, "kind": "mc", "benchmark": task.split("/", 1)[1],
                                        "metric": m, "value": mean, "lo": mean - h, "hi": mean + h,
                                        "stderr": sd / math.sqrt(len(mv)) if len(mv) > 1 else math.nan,
                                        "n": len(mv), "reported": math.nan, "chance": math.nan,
                                        "in_average": False, "eval_key": key})
                n = len(sc)
                se = _num(summ.get("stderr"))
                w = M.instruction_counts(diags, summ.get("metric"))
                if w is not None:  # micro average: weighted mean, ratio bootstrap, clustered stderr
                    tw = weights.setdefault(task, {})
                    for i, wi in zip(ids, w):
                        tw.setdefault(i, wi)
                    value, lo, hi = M.ratio_ci(sc, w, n_boot=n_boot, seed=seed)
                    if math.isnan(se):
                        se = M.ratio_stderr(sc, w)
                else:
                    value, lo, hi = M.mean_ci(sc)
                    if math.isnan(se):
                        se = float(np.std(sc, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
            else:
                notes.append(f"{name}: evaluation {task} has no per-item outcomes; paired statistics skipped")
                value, n, se = reported, int(summ.get("n") or 0), _num(summ.get("stderr"))
                ci = summ.get("ci95") or [math.nan, math.nan]
                lo, hi = _num(ci[0]), _num(ci[1])
            binfo = benchmarks.get(bname, {}) if kind == "prior" else {}
            chance = binfo.get("chance", M.CHANCE.get(task)) if kind == "prior" else None
            prior = kind == "prior"
            metric_rows.append({**base_cols, "task": task, "kind": kind, "benchmark": bname,
                                "metric": ((binfo.get("metric") or summ.get("metric")) if prior else
                                           summ.get("metric", "kl_per_token") if kind == "probe" else "accuracy"),
                                "value": value, "lo": lo, "hi": hi, "stderr": se, "n": n, "reported": reported,
                                "chance": _num(chance), "in_average": bool(binfo.get("in_average", True)) and prior,
                                "eval_key": key})
        tk = p.train_key
        if tk:
            steps = store.train_steps(tk)
            if not steps:
                notes.append(f"{name}: no training curve stored for train key {str(tk)[:12]}")
            for s in steps:
                curve_rows.append({**base_cols, **{k: (_num(v) if k != "step" else int(v)) for k, v in s.items()
                                                   if k == "step" or isinstance(v, (int, float, str, type(None)))}})

    points = pd.DataFrame(point_rows)
    points["seed"] = pd.Series([p["seed"] for p in point_rows], dtype=object)  # keep None and ints
    metric_cols = ["point", "arm", "method", "seed", "selected", "task", "kind", "benchmark", "metric", "value",
                   "lo", "hi", "stderr", "n", "reported", "chance", "in_average", "eval_key"]
    metrics_df = pd.DataFrame(metric_rows, columns=metric_cols)
    metrics_df["seed"] = pd.Series([r["seed"] for r in metric_rows], dtype=object)
    items = (pd.concat(item_frames, ignore_index=True) if item_frames else
             pd.DataFrame(columns=["point", "arm", "seed", "selected", "task", "item_id", "score", "group",
                                   *M.MC_MEASURES]))
    curves = pd.DataFrame(curve_rows) if curve_rows else pd.DataFrame(
        columns=["point", "arm", "method", "seed", "selected", "step", "loss", "divergence", "drift_kl", "lr"])

    res = Results(run_id=rid, name=info.get("name"), status=info["status"], created=info["created"], manifest=manifest,
                  config=info.get("config") or {}, task=new_task, benchmarks=benchmarks, points=points,
                  metrics=metrics_df, items=items, curves=curves, notes=notes, n_boot=n_boot, seed=seed,
                  _scores=scores, _weights=weights)
    # per-point summary columns
    val = {(r["point"], r["task"]): r["value"] for r in metric_rows}
    points["new_task"] = [val.get((p, new_task), math.nan) for p in points["point"]]
    points["new_task_val"] = [val.get((p, val_name(new_task)), math.nan) for p in points["point"]]
    points["prior_avg"] = [res._point_avg(p) if any((p, t) in val for t in res.average_tasks) else math.nan
                           for p in points["point"]]
    base_avg = res._point_avg(res.arm_points(BASE)[0]) if BASE in res.arms else math.nan
    points["forgetting"] = base_avg - points["prior_avg"]
    for arm in res.arms:  # selection notes (e.g. an arm left unselected) are known before any table
        res.arm_points(arm)
    if BASE not in res.arms:
        notes.append("no base point: changes versus base and forgetting are not available")
    if not res.prior_tasks:
        notes.append("no prior-capability benchmarks in this run: forgetting is not measured")
    return res
