"""The table builders of `Results` (a mixin it inherits): the new-task table, per-benchmark changes,
the MC log-probability measures, the prior average and forgetting, arm-vs-arm comparisons and item
flips. Each reads the run only through `Results`' data, score accessors and paired comparisons."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .. import metrics as M
from .names import BASE, TEACHER, _seed_key, mc_task


class ResultTables:
    """Tables of a loaded run; mixed into `Results` (see `harness.results.core`)."""

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
