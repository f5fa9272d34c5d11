"""The report's tables as data: a header, rows of display strings and a caption, built from
`harness.results` and the claims rows. The templates lay them out as HTML or Markdown, so each
number is formatted once (with `harness.formatting`) and both formats show the same string.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from .. import claims as C
from .. import formatting as F
from ..formatting import ci, count, missing, nats, p_value, pct, per_hour, pp, pval, ratio, secs, seed_ci, si
from ..paper import BENCHMARK_TITLES, DISCREPANCIES, PAPER_LABEL, table5_rows
from ..drift_probe import TASK as DRIFT_TASK
from ..results import BASE, TEACHER, Results
from .figures import bench_title


@dataclass
class Table:
    """Rows of strings plus one CSS class per row ('flag': highlighted, 'paper': the paper's numbers)."""

    kind: ClassVar[str] = "table"
    header: list[str]
    caption: str = ""
    rows: list[list[str]] = field(default_factory=list)
    row_classes: list[str] = field(default_factory=list)

    def add(self, row: list[Any], cls: str = "") -> None:
        self.rows.append([str(c) for c in row])
        self.row_classes.append(cls)

    @property
    def body(self) -> list[tuple[list[str], str]]:
        """(cells, row class) pairs: the HTML template needs both per row."""
        return list(zip(self.rows, self.row_classes))


def summary_table(r: Results, data: dict) -> Table:
    """One row per arm: new-task accuracy and forgetting, each with item-level and across-seed intervals."""
    nt, prior = data["nt"], data["prior"].set_index("arm") if not data["prior"].empty else None
    t = Table(["arm", "seeds", f"{r.task} acc %", "95% CI", "across seeds", "vs base (pp)", "95% CI", "p",
               "prior avg %", "forgetting (pp)", "95% CI", "across seeds", "MC margin vs base (nats)", "95% CI",
               "drift KL (nats/token)"],
              caption="Measured, this run. Forgetting = base prior average - arm prior average (positive = lost). "
                      "MC margin: mean over the multiple-choice benchmarks of the change in log p(gold) - max "
                      "log p(other), paired by item. Drift KL: KL(base ‖ arm) per token on the general-text "
                      "probe. Arms use their best-by-validation points; several seeds are averaged.")
    for _, x in nt.iterrows():
        pa = prior.loc[x["arm"]] if prior is not None and x["arm"] in prior.index else None
        n_seeds = int(x["n_seeds"])
        t.add([x["arm"], n_seeds if x["arm"] not in (BASE, TEACHER) else "-", pct(x["acc"]), ci(x["lo"], x["hi"]),
               seed_ci(x["seed_lo"], x["seed_hi"], n_seeds) if x["arm"] not in (BASE, TEACHER) else "-",
               pp(x["diff_vs_base"]) if x["arm"] != BASE else "-", ci(x["diff_lo"], x["diff_hi"], True),
               pval(x["p_vs_base"]) if x["arm"] != BASE else "",
               pct(pa["prior_avg"]) if pa is not None else ("n/a (new task only)" if x["arm"] == TEACHER else "n/a"),
               (pp(pa["forgetting"]) if x["arm"] != BASE else "-") if pa is not None else "n/a",
               ci(pa["lo"], pa["hi"], True) if pa is not None else "",
               (seed_ci(pa["seed_lo"], pa["seed_hi"], n_seeds, True) if x["arm"] != BASE else "-")
               if pa is not None else "", *_continuous_cells(r, x["arm"])])
    return t


def _continuous_cells(r: Results, arm: str) -> list[str]:
    """An arm's MC-margin change vs base (with its interval) and its drift KL, or '-' / 'n/a'."""
    if arm in (BASE, TEACHER):
        return ["-", "", "-"]
    c = r.mc_change(BASE, arm, "margin") if BASE in r.arms and r.mc_tasks("margin") else None
    kl = r.arm_value(arm, DRIFT_TASK)
    return [nats(c["diff"], 3, signed=True) if c else "n/a",
            f"[{nats(c['lo'], 3, signed=True)}, {nats(c['hi'], 3, signed=True)}]" if c else "",
            nats(kl) if not missing(kl) else "n/a"]


def paper_table(r: Results) -> Table | None:
    """The paper's Table 5 rows interleaved with this run's, so directions and gaps read side by side."""
    rows = table5_rows(r.task)
    if not rows:
        return None
    tasks = [t for t in r.prior_tasks] or [f"prior/{b}" for b in BENCHMARK_TITLES]
    names = [t.split("/", 1)[1] for t in tasks]
    t = Table(["method", "source", f"{r.task} acc %", *[BENCHMARK_TITLES.get(n, n) for n in names], "prior avg %"],
              caption=f"Table 5 of the paper ({PAPER_LABEL}) beside this run ({r.manifest.model or 'model ?'}). "
                      "Absolute levels differ by model size; compare directions and gaps."
                      + "".join(f" Paper {m}: {why}." for (tk, m), why in DISCREPANCIES.items() if tk == r.task))
    measured = {}
    for arm in r.arms:
        if arm == TEACHER:
            continue
        measured[arm] = [r.arm_value(arm, r.task), *[r.arm_value(arm, tk) for tk in tasks], r.arm_prior_avg(arm)]
    order = list(dict.fromkeys([*[m for m in rows], *measured]))
    for m in order:
        if m in measured:
            t.add([m, f"measured, {r.manifest.model or 'this run'}", *[pct(v) for v in measured[m]]])
        if m in rows:
            pr = rows[m]
            t.add([m, PAPER_LABEL, pct(pr["task_acc"]), *[pct(pr.get(n)) for n in names], pct(pr["prior_avg"])],
                  "paper")
    return t


def benchmark_table(r: Results, data: dict) -> Table | None:
    """One row per benchmark and arm; the benchmark columns are printed once per benchmark block."""
    bt = data["bt"]
    if bt.empty:
        return None
    t = Table(["benchmark", "metric", "n", "chance %", "base %", "arm", "arm %", "Δ vs base (pp)", "95% CI", "p",
               "p (Holm)", "Δ across seeds", "note"],
              caption="Change vs base on the same items. p: exact McNemar (0/1 scores) or paired bootstrap; Holm "
                      "adjusts over one arm's benchmarks. Highlighted rows: the base model is at chance there.")
    for task in r.prior_tasks:
        d = bt[bt["task"] == task]
        at = bool(d["at_chance"].any())
        notes = []
        if at:
            notes.append("base at chance: cannot show forgetting")
        if not bool(d["in_average"].iloc[0]):
            notes.append("not in the prior average")
        for k, (_, x) in enumerate(d.iterrows()):
            head = ([bench_title(task), str(x["metric"] or ""), str(int(x["n"])) if x["n"] else "n/a",
                     pct(x["chance"]) if not missing(x["chance"]) else "n/a", pct(x["base_value"])]
                    if k == 0 else ["", "", "", "", ""])
            t.add([*head, x["arm"], pct(x["value"]), pp(x["diff"]), ci(x["lo"], x["hi"], True), pval(x["p"]),
                   pval(x["p_holm"]), seed_ci(x["seed_lo"], x["seed_hi"], int(x["n_seeds"]), True),
                   "; ".join(notes) if k == 0 else ""], "flag" if at else "")
    return t


def mc_table(r: Results, data: dict) -> Table | None:
    """The continuous, paired companions of multiple-choice accuracy: per benchmark, the change in
    log p(gold) and in the margin over the best other choice, for each arm against base and for
    SDFT against SFT."""
    mt = data["mc"]
    if mt.empty:
        return None
    t = Table(["benchmark", "comparison", "measure", "reference (nats)", "arm (nats)", "Δ (nats)", "95% CI", "p",
               "n", "MDE (nats)"],
              caption="Per item, from lm-eval's per-choice loglikelihoods (raw sums, not length-normalised): "
                      "log p(gold) and margin = log p(gold) - max log p(other). Δ = arm - reference, paired "
                      "bootstrap over items; MDE: two-sided 5%, power 0.8, from the observed variance. Reported "
                      "beside accuracy, never instead of it; claim (c-mc) averages the margins.")
    for task in r.prior_tasks:
        name = task.split("/", 1)[1]
        d = mt[mt["benchmark"] == name]
        for k, (_, x) in enumerate(d.iterrows()):
            t.add([bench_title(task) if k == 0 else "", f"{x['arm']} - {x['ref']}",
                   "log p(gold)" if x["measure"] == "gold_logp" else "margin", nats(x["ref_value"], 3),
                   nats(x["value"], 3), nats(x["diff"], 3, signed=True),
                   f"[{nats(x['lo'], 3, signed=True)}, {nats(x['hi'], 3, signed=True)}]", pval(x["p"]),
                   str(int(x["n"])), nats(x["mde"], 3)])
    return t


def compare_table(r: Results, data: dict) -> Table | None:
    """SDFT against SFT directly on the same items (the question the report answers)."""
    cmp = data["cmp"]
    if cmp.empty:
        return None
    sft, sdft = r.sft_arm, r.sdft_arm
    t = Table(["task", f"{sft} %", f"{sdft} %", f"{sdft} − {sft} (pp)", "95% CI", "test", "p", "p (Holm)",
               "across seeds"],
              caption=f"{sdft} vs {sft} on the same items (selected points, seeds averaged per item). Holm adjusts "
                      "over the prior benchmarks; the new task and the average are single pre-stated comparisons.")
    n_seeds = min(len(r.arm_points(sft)), len(r.arm_points(sdft)))
    for _, c in cmp.iterrows():
        name = bench_title(c["task"]) if str(c["task"]).startswith("prior/") else c["task"]
        t.add([name, pct(c["ref_value"]), pct(c["value"]), pp(c["diff"]), ci(c["lo"], c["hi"], True),
               c["test"] or "", pval(c["p"]), pval(c["p_holm"]) if c["kind"] == "prior" else "-",
               seed_ci(c["seed_lo"], c["seed_hi"], n_seeds, True) if c["kind"] != "average" else "-"])
    return t


def claims_table(rows: list[dict]) -> Table:
    """The `check_claims` rows, formatted as the terminal's `harness claims` shows them."""
    t = Table(["claim", "paper", "measured", "95% CI", "p", "verdict", "power (MDE; items needed)", "test / basis",
               "note"],
              caption="Verdicts: supported = 95% CI on the claim's side; contradicted = CI entirely on the other "
                      f"side; inconclusive = CI straddles. Cost: ×/÷{C.COST_TOLERANCE:g} band around the paper's "
                      "ratio.")
    for x in rows:
        m, cis = F.claim_value(x)
        t.add([f"({x['id']}) {x['claim']}", x["paper"], m, cis, p_value(x["p"]), x["verdict"], F.claim_power(x),
               x["test"], x["note"]], "")
    return t


def flip_tables(r: Results) -> list[Table]:
    """Items that changed from right to wrong (and back) vs base: totals, then the groups with most losses."""
    out = []
    arms = r.trained_arms
    if not arms or BASE not in r.arms:
        return out
    flips = {a: r.flips(a) for a in arms}
    t = Table(["task", "n", *[f"{a}: right→wrong / wrong→right (net)" for a in arms]],
              caption="Items that flipped vs base (an item is right when its score, averaged over seeds, is ≥ 0.5). "
                      "A net change of 0 can hide many flips both ways.")
    for task in [r.task, *r.prior_tasks]:
        cells, n = [], ""
        for a in arms:
            f = flips[a]
            row = f[(f["task"] == task) & (f["group"] == "(all)")]
            if row.empty:
                cells.append("n/a")
                continue
            row = row.iloc[0]
            n = str(int(row["n"]))
            cells.append(f"{int(row['right_to_wrong'])} / {int(row['wrong_to_right'])} ({int(row['net']):+d})")
        t.add([bench_title(task) if task.startswith("prior/") else task, n, *cells])
    out.append(t)
    for task, label in (("prior/mmlu", "MMLU subjects"), (r.task, f"{r.task} groups")):
        per = []
        for a in arms:
            f = flips[a]
            g = f[(f["task"] == task) & (f["group"] != "(all)")]
            for _, x in g.iterrows():
                per.append((a, x))
        if not per:
            continue
        gt = Table(["arm", "group", "n", "right→wrong", "wrong→right", "net"],
                   caption=f"{label} with any flip vs base: most right→wrong first (top 12 per arm)")
        for a in arms:
            rows = sorted([x for aa, x in per if aa == a and (x["right_to_wrong"] or x["wrong_to_right"])],
                          key=lambda x: (-x["right_to_wrong"], str(x["group"])))[:12]
            for x in rows:
                gt.add([a, str(x["group"]), int(x["n"]), int(x["right_to_wrong"]), int(x["wrong_to_right"]),
                        f"{int(x['net']):+d}"])
        out.append(gt)
    return out


def cost_table(r: Results, ct: pd.DataFrame) -> Table | None:
    """Training cost per arm and its ratio to SFT (the paper's cost claim)."""
    if ct.empty:
        return None
    t = Table(["arm", "points", "train wall-clock", "tokens generated", "tokens forwarded", "FLOPs (est.)", "steps",
               "wall ratio vs SFT [95% CI]", "FLOPs (est.) ratio vs SFT [95% CI]", "basis",
               "new-task gain per hour (pp/h)"],
              caption="Selected points, mean over seeds. Ratios: matched grid points (same hyper-parameters and "
                      "seed) when both arms have them, else per optimizer step. Paper: SDFT ≈ 2.5× FLOPs, ≈ 4× "
                      f"wall-clock of SFT. {C.FLOPS_ESTIMATE}.")

    for _, x in ct.iterrows():
        t.add([x["arm"], int(x["n_points"]), secs(x["train_wall_s"]), si(x["tokens_generated"]),
               si(x["tokens_forwarded"]), si(x["flops"], "FLOP"), count(x["steps"]),
               ratio(x["wall_ratio"], x["wall_ratio_lo"], x["wall_ratio_hi"]),
               ratio(x["flops_ratio"], x["flops_ratio_lo"], x["flops_ratio_hi"]),
               x["flops_basis"] or x["wall_basis"] or "-",
               per_hour(x["gain_per_hour"])])
    return t


def points_table(r: Results) -> Table:
    """Every grid point, selected ones highlighted (HTML only: the Markdown summary stays short)."""
    P = r.points
    t = Table(["point", "arm", "seed", "hyper-parameters", "selected", "val acc %", f"{r.task} acc %", "prior avg %",
               "forgetting pp", "wall-clock", "FLOPs (est.)"],
              caption="Every point of the run; 'selected' = best validation score of its arm and seed.")
    for _, x in P.iterrows():
        hp = ", ".join(f"{k}={v}" for k, v in sorted((x["hparams"] or {}).items()))
        t.add([x["point"], x["arm"], "-" if missing(x["seed"]) else str(x["seed"]), hp or "-",
               "yes" if x["point"] in r.arm_points(x["arm"]) else "", pct(x["new_task_val"]), pct(x["new_task"]),
               pct(x["prior_avg"]), pp(x["forgetting"]) if x["arm"] not in (BASE, TEACHER) else "-",
               secs(x.get("train_wall_s")), si(x.get("flops"), "FLOP")],
              "flag" if x["point"] in r.arm_points(x["arm"]) and x["arm"] not in (BASE, TEACHER) else "")
    return t
