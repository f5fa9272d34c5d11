"""The report's figures as PNG bytes (matplotlib's object API with the Agg renderer; never pyplot,
so nothing global is touched and no display is needed). Each `fig_*` returns None when the run has
nothing to draw, and the report then says "not available" instead of showing an empty chart.

Also here: the arm colours and benchmark titles, shared by figures and tables so an arm keeps one
colour and a benchmark one name across the page.
"""

from __future__ import annotations

import io

import pandas as pd

from .. import claims as C
from ..formatting import missing as _nan
from ..paper import BENCHMARK_TITLES, PAPER_LABEL, table5_row, teacher_acc
from ..results import BASE, TEACHER, Results

PALETTE = {"base": "#555555", "teacher": "#7b3294", "sft": "#e66101", "sdft": "#1f78b4"}
EXTRA_COLORS = ["#33a02c", "#b2182b", "#8c6d31", "#01665e", "#c51b7d", "#4d4d4d"]


def arm_color(arm: str, arms: list[str]) -> str:
    """The paper's arms keep fixed colours; extra arms (variants) take the next free one in run order."""
    if arm in PALETTE:
        return PALETTE[arm]
    others = [a for a in arms if a not in PALETTE]
    return EXTRA_COLORS[others.index(arm) % len(EXTRA_COLORS)] if arm in others else "#999999"


def bench_title(task: str) -> str:
    """'prior/truthfulqa_mc1' -> the benchmark's printed name (as in the paper's Table 5)."""
    name = task.split("/", 1)[-1]
    return BENCHMARK_TITLES.get(name, name)


VERDICT_COLOR = {C.SUPPORTED: "#1a7f37", C.CONTRADICTED: "#cf222e", C.EQUIVALENT: "#0969da",
                 C.INCONCLUSIVE: "#9a6700"}

# (key, caption, description) in page order; the key names the PNG file and the HTML anchor
FIGURES = [("pareto", "Pareto: new-task accuracy vs prior average",
            "Every trained grid point (small), the best-by-validation point of each seed (outlined), the "
            "base model (square) and the teacher's new-task accuracy (dotted line; the teacher is the base "
            "model with a demonstration in context, so it has no prior-suite score)."),
           ("bench_change", "Per-benchmark change vs base",
            "Paired 95% CIs (McNemar/Agresti-Min for 0/1 scores, paired bootstrap otherwise); hatched bars: "
            f"the base model is at chance there, so no forgetting can show. Crosses: {PAPER_LABEL}, change vs "
            "the paper's base (a different, larger model)."),
           ("curves", "Training curves", "Selected points, one line per seed (line style); divergence is logged for "
                                          "SDFT only (NaN for SFT)."),
           ("ceiling", "Teacher ceiling on the new task",
            f"Item-level 95% CIs (Wilson for 0/1 scores). Diamonds: {PAPER_LABEL}."),
           ("cost", "Training cost", "Selected points, mean over seeds; ratio to SFT on the bars.")]


def _fig(w: float, h: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _yerr(vals, lo, hi):
    """Error-bar lengths; clipped at 0 because an interval bound can sit a rounding error on the
    wrong side of its estimate (e.g. Wilson at 0/n)."""
    import numpy as np

    return [np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)]


def fig_pareto(r: Results) -> bytes | None:
    """New-task accuracy vs prior average: every trained point, selected ones highlighted,
    base (square) and teacher (vertical line: it is evaluated on the new task only)."""
    P = r.points
    trained = P[P["arm"].isin(r.trained_arms)]
    if (trained["prior_avg"].notna() & trained["new_task"].notna()).sum() == 0:
        return None
    fig = _fig(7.2, 4.8)
    ax = fig.add_subplot()
    arms = r.arms
    for arm in r.trained_arms:
        d = P[(P["arm"] == arm) & P["prior_avg"].notna() & P["new_task"].notna()]
        if d.empty:
            continue
        col = arm_color(arm, arms)
        sel = d["point"].isin(r.arm_points(arm))
        ax.scatter(100 * d.loc[~sel, "new_task"], 100 * d.loc[~sel, "prior_avg"], s=28, color=col, alpha=0.45,
                   label=f"{arm} (grid points)")
        ax.scatter(100 * d.loc[sel, "new_task"], 100 * d.loc[sel, "prior_avg"], s=90, color=col,
                   edgecolor="black", linewidth=1.2, label=f"{arm} (best by validation)", zorder=3)
    b = P[P["arm"] == BASE]
    if len(b) and not _nan(b["prior_avg"].iloc[0]):
        ax.scatter(100 * b["new_task"], 100 * b["prior_avg"], marker="s", s=90, color=PALETTE["base"],
                   edgecolor="black", label="base", zorder=4)
    t = P[P["arm"] == TEACHER]
    if len(t) and not _nan(t["new_task"].iloc[0]):
        x = 100 * float(t["new_task"].iloc[0])
        ax.axvline(x, color=PALETTE["teacher"], linestyle=":", linewidth=1.6,
                   label=f"teacher (new task only): {x:.1f}%")
    ax.set_xlabel(f"new task ({r.task}) accuracy, %  (right is better)")
    ax.set_ylabel("prior-capability average, %  (up is better)")
    ax.set_title("Learning vs forgetting: every trained point")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.85)
    return _png(fig)


def fig_bench_change(r: Results, bt: pd.DataFrame, prior: pd.DataFrame) -> bytes | None:
    """Per-benchmark change vs base (pp) with paired 95% CIs, per trained arm; paper deltas as x."""
    if bt.empty:
        return None
    import numpy as np

    tasks = r.prior_tasks
    arms = r.trained_arms
    groups = tasks + (["prior avg"] if not prior.empty else [])
    fig = _fig(max(7.2, 1.15 * len(groups) + 2.5), 4.6)
    ax = fig.add_subplot()
    width = 0.8 / max(len(arms), 1)
    x = np.arange(len(groups))
    paper_done = False
    for k, arm in enumerate(arms):
        d = bt[bt["arm"] == arm].set_index("task")
        vals, los, his, hatch = [], [], [], []
        for t in tasks:
            row = d.loc[t] if t in d.index else None
            vals.append(100 * row["diff"] if row is not None and not _nan(row["diff"]) else np.nan)
            los.append(100 * row["lo"] if row is not None and not _nan(row["lo"]) else np.nan)
            his.append(100 * row["hi"] if row is not None and not _nan(row["hi"]) else np.nan)
            hatch.append(bool(row["at_chance"]) if row is not None else False)
        if not prior.empty:
            pr = prior.set_index("arm")
            if arm in pr.index:
                pa = pr.loc[arm]
                vals.append(-100 * pa["forgetting"])
                los.append(-100 * pa["hi"] if not _nan(pa["hi"]) else np.nan)
                his.append(-100 * pa["lo"] if not _nan(pa["lo"]) else np.nan)
            else:
                vals.append(np.nan), los.append(np.nan), his.append(np.nan)
            hatch.append(False)
        vals, los, his = map(np.asarray, (vals, los, his))
        pos = x - 0.4 + width * (k + 0.5)
        col = arm_color(arm, r.arms)
        bars = ax.bar(pos, np.nan_to_num(vals), width * 0.92, color=col, label=f"{arm} (measured)")
        for b_, h in zip(bars, hatch):
            if h:
                b_.set_hatch("//")
                b_.set_alpha(0.55)
        ok = ~np.isnan(los) & ~np.isnan(his)
        ax.errorbar(pos[ok], vals[ok], yerr=_yerr(vals[ok], los[ok], his[ok]), fmt="none",
                    ecolor="black", capsize=3, linewidth=1)
        prow, pbase = table5_row(r.task, arm), table5_row(r.task, BASE)
        if prow and pbase:
            py = []
            for t in tasks:
                name = t.split("/", 1)[1]
                a, b = prow.get(name), pbase.get(name)
                py.append(100 * (a - b) if a is not None and b is not None else np.nan)
            if not prior.empty:
                py.append(100 * (prow["prior_avg"] - pbase["prior_avg"]))
            ax.scatter(pos, py, marker="x", s=40, color="black", zorder=4,
                       label=None if paper_done else f"{PAPER_LABEL} (change vs its base)")
            paper_done = True
    ax.axhline(0, color="black", linewidth=0.8)
    labels = [bench_title(t) + ("\n(base at chance)" if bt[(bt["task"] == t)]["at_chance"].any() else "")
              for t in tasks] + (["prior avg"] if not prior.empty else [])
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("change vs base, percentage points")
    ax.set_title("Prior capabilities: change vs base (95% paired CI; hatched = base at chance)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def fig_curves(r: Results) -> bytes | None:
    """Training curves of the selected points: loss, divergence (SDFT), drift KL to the initial model."""
    cv = r.curves
    if cv.empty:
        return None
    metrics = [("loss", "training loss"), ("divergence", "divergence (SDFT objective)"),
               ("drift_kl", "drift KL to the initial model, nats")]
    fig = _fig(11, 3.6)
    axes = fig.subplots(1, 3)
    styles = ["-", "--", ":", "-."]
    selected = {p for a in r.trained_arms for p in r.arm_points(a)}
    for ax, (m, title) in zip(axes, metrics):
        drawn = False
        if m in cv:
            for arm in r.trained_arms:
                for k, p in enumerate(r.arm_points(arm)):
                    d = cv[(cv["point"] == p) & (cv["point"].isin(selected))]
                    # a metric measured every few steps (drift) is NaN in between: plot the measured
                    # points only, with markers, or a sparse series draws nothing
                    d = d[d[m].notna()] if m in d else d.iloc[:0]
                    if d.empty:
                        continue
                    ax.plot(d["step"], d[m], styles[k % len(styles)], marker="o", markersize=3.5,
                            color=arm_color(arm, r.arms), label=arm if k == 0 else None, linewidth=1.4)
                    drawn = True
        if not drawn:
            ax.text(0.5, 0.5, f"{m}: not logged", ha="center", va="center", transform=ax.transAxes, color="#777")
        else:
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    return _png(fig)


def fig_answer(claims: list[dict], margins: dict[str, float]) -> bytes | None:
    """The report's lead figure: SDFT-vs-SFT differences that answer "did SDFT forget less" (prior
    average, multiple-choice gold-answer margin, general-text drift) and the new-task accuracy difference, each with its 95% interval,
    0 and the equivalence band (±margin) drawn."""
    by = {c["id"]: c for c in claims}
    show = [(cid, t) for cid, t in (("c", "prior average, SDFT - SFT (pp)"),
                                    ("c-mc", "MC gold-answer margin, SDFT - SFT (nats)"),
                                    ("c-drift", "drift KL to base, SFT - SDFT (nats/token)"),
                                    ("b", "new-task accuracy, SDFT - SFT (pp)"))
            if cid in by and by[cid]["verdict"] != C.NOT_MEASURED]
    if not show:
        return None
    fig = _fig(3.6 * len(show), 2.6)
    for k, (cid, title) in enumerate(show):
        ax = fig.add_subplot(1, len(show), k + 1)
        c = by[cid]
        f = 100.0 if c["unit"] == "pp" else 1.0
        m, lo, hi = f * c["measured"], f * c["lo"], f * c["hi"]
        band = f * margins.get(cid, 0.0)
        if band:
            ax.axvspan(-band, band, color="#0969da", alpha=0.12, label=f"equivalence ±{band:g}")
        ax.axvline(0, color="#555", linewidth=1)
        if not (_nan(lo) or _nan(hi)):
            ax.plot([lo, hi], [0, 0], color="black", linewidth=2)
        ax.plot([m], [0], "o", color=VERDICT_COLOR.get(c["verdict"], "black"), markersize=8)
        width = max(abs(v) for v in (m, lo, hi, band, 1e-9) if not _nan(v)) * 1.3
        ax.set_xlim(-width, width)
        ax.set_yticks([])
        ax.set_title(f"{title}\n{c['verdict']}", fontsize=8)
        if band:
            ax.legend(fontsize=6, loc="lower right")
    return _png(fig)


def fig_ceiling(r: Results, nt: pd.DataFrame) -> bytes | None:
    """New-task accuracy: base, teacher, trained arms with 95% CIs; paper values beside."""
    if nt.empty or nt["acc"].isna().all():
        return None
    import numpy as np

    fig = _fig(max(5.5, 1.1 * len(nt) + 2), 4.2)
    ax = fig.add_subplot()
    x = np.arange(len(nt))
    vals = 100 * nt["acc"].to_numpy(float)
    lo, hi = 100 * nt["lo"].to_numpy(float), 100 * nt["hi"].to_numpy(float)
    cols = [arm_color(a, r.arms) for a in nt["arm"]]
    ax.bar(x, np.nan_to_num(vals), 0.6, color=cols, label="measured (95% CI)")
    ok = ~np.isnan(lo) & ~np.isnan(hi)
    ax.errorbar(x[ok], vals[ok], yerr=_yerr(vals[ok], lo[ok], hi[ok]), fmt="none", ecolor="black", capsize=4)
    for xi, v in zip(x, vals):
        if not np.isnan(v):
            ax.text(xi, 2, f"{v:.1f}%", ha="center", va="bottom", fontsize=8, color="white", fontweight="bold")
    py = []
    for a in nt["arm"]:
        if a == TEACHER and teacher_acc(r.task) is not None:
            py.append(100 * teacher_acc(r.task))
        else:
            row = table5_row(r.task, a)
            py.append(100 * row["task_acc"] if row and row.get("task_acc") is not None else np.nan)
    if not np.all(np.isnan(py)):
        ax.scatter(x, py, marker="D", s=45, facecolor="none", edgecolor="black", zorder=4, label=PAPER_LABEL)
    ax.set_xticks(x, list(nt["arm"]))
    ax.set_ylim(0, 108)
    ax.set_ylabel(f"{r.task} accuracy, %")
    ax.set_title("New task: base, teacher ceiling, SFT, SDFT")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def fig_cost(r: Results, ct: pd.DataFrame) -> bytes | None:
    """Training cost per arm (selected points, mean over seeds): wall-clock and FLOPs."""
    if ct.empty or (ct["train_wall_s"].isna().all() and ct["flops"].isna().all()):
        return None
    import numpy as np

    fig = _fig(8.5, 3.6)
    axes = fig.subplots(1, 2)
    x = np.arange(len(ct))
    cols = [arm_color(a, r.arms) for a in ct["arm"]]
    for ax, col, ratio, title, scale, unit in (
            (axes[0], "train_wall_s", "wall_ratio", "training wall-clock", 1.0, "s"),
            (axes[1], "flops", "flops_ratio", "training FLOPs (estimated)", 1e15, "PFLOP")):
        v = ct[col].to_numpy(float) / scale
        ax.bar(x, np.nan_to_num(v), 0.6, color=cols)
        for xi, vi, rt in zip(x, v, ct[ratio]):
            if not np.isnan(vi):
                ax.text(xi, vi, f"{rt:.2f}x SFT" if not _nan(rt) else "", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, list(ct["arm"]))
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Cost (paper: SDFT ~2.5x FLOPs, ~4x wall-clock of SFT)", fontsize=9)
    return _png(fig)
