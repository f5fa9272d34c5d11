"""Training cost of `Results`' arms (a mixin it inherits): the per-arm cost table and the cost
ratio of one arm to another with its basis (matched grid points, per step, or selected totals)."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from .. import metrics as M
from .names import COST_KEYS, _seed_key


class CostTables:
    """Cost tables of a loaded run; mixed into `Results` (see `harness.results.core`)."""

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
