"""Render a suite run as a self-contained HTML report plus a Markdown summary.

    harness report RUN [--out reports]        # -> reports/<run_id>/report.html, summary.md, figures/*.png
    from harness.report import render
    paths = render("quick", db="results/harness.db", out_dir="reports")

Built from the results store only (pandas, matplotlib with the Agg renderer; never torch), so a
report can be rebuilt on any machine that has the SQLite file. Everything is computed by
`harness.results` (statistics from `harness.metrics`) and `harness.claims`; this module only lays
out tables and figures. The report directory is written to a temporary sibling and renamed into
place, so a crash leaves either the previous report or none, never half of one. A run that does not
exist raises `StoreError` before anything is written.

Sections: summary; paper claims; new task (with the teacher ceiling); forgetting per benchmark
(benchmarks where the base model is at chance flagged); the paper's Table 5 beside the measured
numbers, labelled "paper, Qwen2.5-7B-Instruct"; figures (Pareto, per-benchmark change, training
curves, teacher ceiling, cost); flipped items; cost; every grid point; notes; conventions.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from . import claims as C
from .paper import BENCHMARK_TITLES, DISCREPANCIES, PAPER_LABEL, PAPER_MODEL, table5_row, table5_rows
from .precision import describe_run
from .results import BASE, TEACHER, Results, load

PALETTE = {"base": "#555555", "teacher": "#7b3294", "sft": "#e66101", "sdft": "#1f78b4"}
EXTRA_COLORS = ["#33a02c", "#b2182b", "#8c6d31", "#01665e", "#c51b7d", "#4d4d4d"]


# ----- small formatting helpers ----------------------------------------------------------------
def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def pct(v: Any, digits: int = 1) -> str:
    return "n/a" if _nan(v) else f"{100 * float(v):.{digits}f}"


def pp(v: Any) -> str:
    return "n/a" if _nan(v) else f"{100 * float(v):+.1f}"


def ci(lo: Any, hi: Any, signed: bool = False) -> str:
    if _nan(lo) or _nan(hi):
        return ""
    f = (lambda x: f"{100 * x:+.1f}") if signed else (lambda x: f"{100 * x:.1f}")
    return f"[{f(lo)}, {f(hi)}]"


def seed_ci_text(lo: Any, hi: Any, n_seeds: int, signed: bool = False) -> str:
    if n_seeds < 2:
        return f"n/a ({n_seeds} seed)"
    return ci(lo, hi, signed) or "n/a"


def pval(p: Any) -> str:
    return C.format_p(p) or "n/a"


def si(v: Any, unit: str = "") -> str:
    if _nan(v):
        return "n/a"
    v = float(v)
    for div, suf in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f} {suf}{unit}"
    return f"{v:.3g} {unit}".strip()


def secs(v: Any) -> str:
    if _nan(v):
        return "n/a"
    v = float(v)
    if v >= 3600:
        return f"{v / 3600:.2f} h"
    if v >= 60:
        return f"{v / 60:.1f} min"
    return f"{v:.1f} s"


def arm_color(arm: str, arms: list[str], method: str | None = None) -> str:
    if arm in PALETTE:
        return PALETTE[arm]
    others = [a for a in arms if a not in PALETTE]
    return EXTRA_COLORS[others.index(arm) % len(EXTRA_COLORS)] if arm in others else "#999999"


def bench_title(task: str) -> str:
    name = task.split("/", 1)[-1]
    return BENCHMARK_TITLES.get(name, name)


_NUMERIC = re.compile(r"^[-+<\[(]?\s*(\d|n/a)")


# ----- tables as data: (header, rows), rendered to HTML and Markdown -------------------------
class Tab:
    def __init__(self, header: list[str], rows: list[list[str]] | None = None, caption: str = "",
                 classes: list[str] | None = None):
        self.header, self.rows, self.caption = header, rows or [], caption
        self.classes = classes or []  # per-row CSS class

    def add(self, row: list[Any], cls: str = "") -> None:
        self.rows.append([str(c) for c in row])
        self.classes.append(cls)

    @staticmethod
    def _td(c: str) -> str:
        num = (bool(_NUMERIC.match(c)) and not re.search(r"[A-Za-z]{5,}", c.replace("FLOP", ""))) \
            or c in ("", "-", "yes")
        return f"<td>{html.escape(c)}</td>" if num else f"<td class='t'>{html.escape(c)}</td>"

    def html(self) -> str:
        h = "".join(f"<th>{html.escape(c)}</th>" for c in self.header)
        body = []
        for r, cls in zip(self.rows, self.classes + [""] * (len(self.rows) - len(self.classes))):
            cells = "".join(self._td(c) for c in r)
            body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
        cap = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        return (f'<div class="tw"><table>{cap}<thead><tr>{h}</tr></thead><tbody>{"".join(body)}</tbody>'
                f'</table></div>')

    def md(self) -> str:
        def esc(c: str) -> str:
            return c.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(map(esc, self.header)) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(map(esc, r)) + " |" for r in self.rows]
        return ("*" + self.caption + "*\n\n" if self.caption else "") + "\n".join(lines)


# ----- figures -----------------------------------------------------------------------------
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
    average, general-text drift) and the new-task accuracy difference, each with its 95% interval,
    0 and the equivalence band (±margin) drawn."""
    by = {c["id"]: c for c in claims}
    show = [(cid, t) for cid, t in (("c", "prior average, SDFT - SFT (pp)"),
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
        if a == TEACHER and r.task == "tooluse":
            py.append(100.0)
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


# ----- the report ----------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#222;line-height:1.4;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:0.86em}
th,td{border:1px solid #d6d6d6;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f3f3f3;text-align:left}td:first-child,td.t{text-align:left}
.tw{overflow-x:auto}
caption{caption-side:top;text-align:left;color:#555;font-size:0.92em;padding-bottom:3px}
tr.paper td{color:#666;font-style:italic;background:#fafafa}
tr.flag td{background:#fff6e0}
.supported{color:#1a7f37;font-weight:600}.contradicted{color:#cf222e;font-weight:600}
.inconclusive{color:#9a6700;font-weight:600}.notmeasured{color:#777}.equivalent{color:#0969da;font-weight:600}
.lead{font-size:1.05em;max-width:60em}
.meta{color:#555;font-size:0.9em}.note{color:#555;font-size:0.88em}
figure{margin:12px 0 22px}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:0.88em}
code{background:#f5f5f5;padding:0 3px}
"""

# Records script errors, failed resources and image load status into <body data-*> so a headless
# browser test (tests/test_report_browser.py) can read them from the DOM; harmless otherwise.
RECORDER = """
(function(){var errs=[];function rec(m){errs.push(String(m));if(document.body){
document.body.setAttribute('data-errors',JSON.stringify(errs));}}
window.addEventListener('error',function(e){var t=e.target;rec(e.message||('resource failed: '+
((t&&(t.src||t.href))||'?')).slice(0,200));},true);
window.addEventListener('unhandledrejection',function(e){rec('unhandled rejection: '+e.reason);});
var ce=console.error;console.error=function(){rec(Array.prototype.join.call(arguments,' '));
return ce.apply(console,arguments);};
window.addEventListener('load',function(){var im=document.images,ok=0,bad=[];
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0){ok++;}else{bad.push(im[i].alt);}}
var b=document.body;b.setAttribute('data-images-total',im.length);b.setAttribute('data-images-loaded',ok);
b.setAttribute('data-images-broken',JSON.stringify(bad));b.setAttribute('data-errors',JSON.stringify(errs));
b.setAttribute('data-height',Math.ceil(document.documentElement.scrollHeight));
b.setAttribute('data-ready','1');});})();
"""

VERDICT_COLOR = {C.SUPPORTED: "#1a7f37", C.CONTRADICTED: "#cf222e", C.EQUIVALENT: "#0969da",
                 C.INCONCLUSIVE: "#9a6700"}
VERDICT_CLASS = {C.SUPPORTED: "supported", C.CONTRADICTED: "contradicted", C.EQUIVALENT: "equivalent",
                 C.INCONCLUSIVE: "inconclusive", C.NOT_MEASURED: "notmeasured"}

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


def _build(r: Results) -> dict:
    """All tables, figures and claims of the report (nothing written)."""
    nt = r.new_task_table()
    bt = r.benchmark_table()
    prior = r.prior_table()
    ct = r.cost_table() if r.trained_arms else pd.DataFrame()
    cmp = r.compare(r.sft_arm, r.sdft_arm) if r.sft_arm and r.sdft_arm else pd.DataFrame()
    claims = C.check_claims(r)
    margins = C.DEFAULT_MARGINS | dict(((r.config or {}).get("claims") or {}).get("margins") or {})
    figs = {"answer": fig_answer(claims, margins), "pareto": fig_pareto(r), "bench_change": fig_bench_change(r, bt, prior), "curves": fig_curves(r),
            "ceiling": fig_ceiling(r, nt), "cost": fig_cost(r, ct)}
    return {"nt": nt, "bt": bt, "prior": prior, "ct": ct, "cmp": cmp, "claims": claims, "figs": figs}


def _summary_tab(r: Results, b: dict) -> Tab:
    nt, prior = b["nt"], b["prior"].set_index("arm") if not b["prior"].empty else None
    t = Tab(["arm", "seeds", f"{r.task} acc %", "95% CI", "across seeds", "vs base (pp)", "95% CI", "p",
             "prior avg %", "forgetting (pp)", "95% CI", "across seeds"],
            caption="Measured, this run. Forgetting = base prior average - arm prior average (positive = lost). "
                    "Arms use their best-by-validation points; several seeds are averaged.")
    for _, x in nt.iterrows():
        pa = prior.loc[x["arm"]] if prior is not None and x["arm"] in prior.index else None
        n_seeds = int(x["n_seeds"])
        t.add([x["arm"], n_seeds if x["arm"] not in (BASE, TEACHER) else "-", pct(x["acc"]), ci(x["lo"], x["hi"]),
               seed_ci_text(x["seed_lo"], x["seed_hi"], n_seeds) if x["arm"] not in (BASE, TEACHER) else "-",
               pp(x["diff_vs_base"]) if x["arm"] != BASE else "-", ci(x["diff_lo"], x["diff_hi"], True),
               pval(x["p_vs_base"]) if x["arm"] != BASE else "",
               pct(pa["prior_avg"]) if pa is not None else ("n/a (new task only)" if x["arm"] == TEACHER else "n/a"),
               (pp(pa["forgetting"]) if x["arm"] != BASE else "-") if pa is not None else "n/a",
               ci(pa["lo"], pa["hi"], True) if pa is not None else "",
               (seed_ci_text(pa["seed_lo"], pa["seed_hi"], n_seeds, True) if x["arm"] != BASE else "-")
               if pa is not None else ""])
    return t


def _paper_tab(r: Results) -> Tab | None:
    rows = table5_rows(r.task)
    if not rows:
        return None
    tasks = [t for t in r.prior_tasks] or [f"prior/{b}" for b in BENCHMARK_TITLES]
    names = [t.split("/", 1)[1] for t in tasks]
    t = Tab(["method", "source", f"{r.task} acc %", *[BENCHMARK_TITLES.get(n, n) for n in names], "prior avg %"],
            caption=f"Table 5 of the paper ({PAPER_LABEL}) beside this run ({r.meta.get('model', 'model ?')}). "
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
            t.add([m, f"measured, {r.meta.get('model', 'this run')}", *[pct(v) for v in measured[m]]])
        if m in rows:
            pr = rows[m]
            t.add([m, PAPER_LABEL, pct(pr["task_acc"]), *[pct(pr.get(n)) for n in names], pct(pr["prior_avg"])],
                  "paper")
    return t


def _bench_tab(r: Results, b: dict) -> Tab | None:
    bt = b["bt"]
    if bt.empty:
        return None
    t = Tab(["benchmark", "metric", "n", "chance %", "base %", "arm", "arm %", "Δ vs base (pp)", "95% CI", "p",
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
                     pct(x["chance"]) if not _nan(x["chance"]) else "n/a", pct(x["base_value"])]
                    if k == 0 else ["", "", "", "", ""])
            t.add([*head, x["arm"], pct(x["value"]), pp(x["diff"]), ci(x["lo"], x["hi"], True), pval(x["p"]),
                   pval(x["p_holm"]), seed_ci_text(x["seed_lo"], x["seed_hi"], int(x["n_seeds"]), True),
                   "; ".join(notes) if k == 0 else ""], "flag" if at else "")
    return t


def _compare_tab(r: Results, b: dict) -> Tab | None:
    cmp = b["cmp"]
    if cmp.empty:
        return None
    sft, sdft = r.sft_arm, r.sdft_arm
    t = Tab(["task", f"{sft} %", f"{sdft} %", f"{sdft} − {sft} (pp)", "95% CI", "test", "p", "p (Holm)",
             "across seeds"],
            caption=f"{sdft} vs {sft} on the same items (selected points, seeds averaged per item). Holm adjusts "
                    "over the prior benchmarks; the new task and the average are single pre-stated comparisons.")
    n_seeds = min(len(r.arm_points(sft)), len(r.arm_points(sdft)))
    for _, c in cmp.iterrows():
        name = bench_title(c["task"]) if str(c["task"]).startswith("prior/") else c["task"]
        t.add([name, pct(c["ref_value"]), pct(c["value"]), pp(c["diff"]), ci(c["lo"], c["hi"], True),
               c["test"] or "", pval(c["p"]), pval(c["p_holm"]) if c["kind"] == "prior" else "-",
               seed_ci_text(c["seed_lo"], c["seed_hi"], n_seeds, True) if c["kind"] != "average" else "-"])
    return t


def _claims_tab(rows: list[dict]) -> Tab:
    t = Tab(["claim", "paper", "measured", "95% CI", "p", "verdict", "power (MDE; items needed)", "test / basis",
             "note"],
            caption="Verdicts: supported = 95% CI on the claim's side; contradicted = CI entirely on the other "
                    f"side; inconclusive = CI straddles. Cost: ×/÷{C.COST_TOLERANCE:g} band around the paper's "
                    "ratio.")
    for x in rows:
        m, cis = C.format_measured(x)
        t.add([f"({x['id']}) {x['claim']}", x["paper"], m, cis, C.format_p(x["p"]), x["verdict"], C.format_power(x),
               x["test"], x["note"]], "")
    return t


def _flip_tabs(r: Results) -> list[Tab]:
    out = []
    arms = r.trained_arms
    if not arms or BASE not in r.arms:
        return out
    flips = {a: r.flips(a) for a in arms}
    t = Tab(["task", "n", *[f"{a}: right→wrong / wrong→right (net)" for a in arms]],
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
    for task, label in (("prior/mmlu", "MMLU subjects"), (r.task, f"{r.task} groups (API)")):
        per = []
        for a in arms:
            f = flips[a]
            g = f[(f["task"] == task) & (f["group"] != "(all)")]
            for _, x in g.iterrows():
                per.append((a, x))
        if not per:
            continue
        gt = Tab(["arm", "group", "n", "right→wrong", "wrong→right", "net"],
                 caption=f"{label} with any flip vs base: most right→wrong first (top 12 per arm)")
        for a in arms:
            rows = sorted([x for aa, x in per if aa == a and (x["right_to_wrong"] or x["wrong_to_right"])],
                          key=lambda x: (-x["right_to_wrong"], str(x["group"])))[:12]
            for x in rows:
                gt.add([a, str(x["group"]), int(x["n"]), int(x["right_to_wrong"]), int(x["wrong_to_right"]),
                        f"{int(x['net']):+d}"])
        out.append(gt)
    return out


def _cost_tab(r: Results, ct: pd.DataFrame) -> Tab | None:
    if ct.empty:
        return None
    t = Tab(["arm", "points", "train wall-clock", "tokens generated", "tokens forwarded", "FLOPs (est.)", "steps",
             "wall ratio vs SFT [95% CI]", "FLOPs (est.) ratio vs SFT [95% CI]", "basis",
             "new-task gain per hour (pp/h)"],
            caption="Selected points, mean over seeds. Ratios: matched grid points (same hyper-parameters and "
                    "seed) when both arms have them, else per optimizer step. Paper: SDFT ≈ 2.5× FLOPs, ≈ 4× "
                    f"wall-clock of SFT. {C.FLOPS_ESTIMATE}.")

    def ratio(v, lo, hi):
        if _nan(v):
            return "n/a"
        return f"{v:.2f}×" + (f" [{lo:.2f}, {hi:.2f}]" if not (_nan(lo) or _nan(hi)) else "")

    for _, x in ct.iterrows():
        t.add([x["arm"], int(x["n_points"]), secs(x["train_wall_s"]), si(x["tokens_generated"]),
               si(x["tokens_forwarded"]), si(x["flops"], "FLOP"), "n/a" if _nan(x["steps"]) else f"{x['steps']:.0f}",
               ratio(x["wall_ratio"], x["wall_ratio_lo"], x["wall_ratio_hi"]),
               ratio(x["flops_ratio"], x["flops_ratio_lo"], x["flops_ratio_hi"]),
               x["flops_basis"] or x["wall_basis"] or "-",
               "n/a" if _nan(x["gain_per_hour"]) else f"{x['gain_per_hour']:.1f}"])
    return t


def _points_tab(r: Results) -> Tab:
    P = r.points
    t = Tab(["point", "arm", "seed", "hyper-parameters", "selected", "val acc %", f"{r.task} acc %", "prior avg %",
             "forgetting pp", "wall-clock", "FLOPs (est.)"],
            caption="Every point of the run; 'selected' = best validation score of its arm and seed.")
    for _, x in P.iterrows():
        hp = ", ".join(f"{k}={v}" for k, v in sorted((x["hparams"] or {}).items()))
        t.add([x["point"], x["arm"], "-" if _nan(x["seed"]) else str(x["seed"]), hp or "-",
               "yes" if x["point"] in r.arm_points(x["arm"]) else "", pct(x["new_task_val"]), pct(x["new_task"]),
               pct(x["prior_avg"]), pp(x["forgetting"]) if x["arm"] not in (BASE, TEACHER) else "-",
               secs(x.get("train_wall_s")), si(x.get("flops"), "FLOP")],
              "flag" if x["point"] in r.arm_points(x["arm"]) and x["arm"] not in (BASE, TEACHER) else "")
    return t


CONVENTIONS = [
    "Scores are fractions stored per item; tables show percent (pp = percentage points).",
    "Arm-level numbers use the best-by-validation point of each seed (the paper's protocol); with several "
    "seeds, item scores are averaged over seeds and 'across seeds' gives a t interval over the per-seed values "
    "(n/a with 1 seed).",
    "Paired tests on the same items: exact McNemar with the Agresti-Min interval for 0/1 scores, paired "
    "bootstrap (10,000 resamples) otherwise; Holm correction across benchmarks.",
    "IFEval is its micro average, as in the paper: instructions followed / instructions given over all "
    "prompts (each prompt weighted by its instruction count); its intervals and paired tests resample whole "
    "prompts (ratio bootstrap).",
    "Claims (b) and (c) with several seeds use a bootstrap over seeds, then items, and need the across-seed "
    "interval to agree before 'supported' or 'contradicted'.",
    C.FLOPS_ESTIMATE + ".",
    "Prior average: unweighted mean of the benchmarks marked in_average; its change uses a paired bootstrap "
    "over items within each benchmark.",
    "A benchmark where the base model is at chance (value − chance ≤ 1.96 × stderr) cannot show forgetting "
    "and is flagged.",
    f"Rows and markers labelled '{PAPER_LABEL}' are the paper's Table 5 (arXiv 2601.19897) for that model; "
    "this run's model may differ, so compare directions and gaps rather than levels.",
]


def _html(r: Results, b: dict, tabs: dict) -> str:
    e = html.escape
    m = r.meta
    title = f"SFT vs SDFT forgetting report · {r.name or r.run_id}"
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<style>{CSS}</style><script>{RECORDER}</script></head><body data-report='harness'>",
             f"<h1>{e(title)}</h1>",
             f"<p class='meta'>run <code>{e(r.run_id)}</code> · status {e(r.status)} · suite "
             f"{e(str(m.get('suite', r.name)))} · model <b>{e(str(m.get('model', '?')))}</b> "
             f"(paper: {e(str(m.get('paper_model', PAPER_MODEL)))}) · task "
             f"{e(r.task)} · created {e(time.strftime('%Y-%m-%d %H:%M', time.localtime(r.created)))}"
             f" · suite wall-clock {e(secs(m.get('wall_s')))} · dtype {e(describe_run(r.config, m))}</p>"]

    def sec(id_, h, body):
        parts.append(f"<section id='{id_}'><h2>{e(h)}</h2>{body}</section>")

    lead = "".join(f"<p class='lead'>{e(t)}</p>" for t in C.lead_sentences(b["claims"]))
    if b["figs"].get("answer"):
        data = base64.b64encode(b["figs"]["answer"]).decode()
        lead += (f"<figure id='fig-answer'><img alt='SDFT vs SFT, 95% intervals' src='data:image/png;base64,{data}'>"
                 "<figcaption>SDFT vs SFT with 95% intervals; shaded: the claim's equivalence margin.</figcaption>"
                 "</figure>")
    sec("answer", "The answer", lead)
    sec("summary", "Summary", tabs["summary"].html())
    sec("claims", "Paper claims", tabs["claims"].html())
    sec("paper", f"Table 5 beside measured ({PAPER_LABEL})",
        tabs["paper"].html() if tabs["paper"] else f"<p class='note'>The paper has no Table 5 rows for task "
                                                   f"{e(r.task)}.</p>")
    sec("benchmarks", "Forgetting per benchmark",
        tabs["bench"].html() if tabs["bench"] else "<p class='note'>No prior-capability benchmarks in this run: "
                                                   "forgetting is not measured.</p>")
    if tabs["compare"]:
        sec("compare", f"{r.sdft_arm} vs {r.sft_arm}", tabs["compare"].html())
    figs = []
    for key, cap, desc in FIGURES:
        png = b["figs"].get(key)
        if png is None:
            figs.append(f"<p class='note'>{e(cap)}: not available for this run.</p>")
            continue
        data = base64.b64encode(png).decode()
        figs.append(f"<figure id='fig-{key}'><img alt='{e(cap)}' src='data:image/png;base64,{data}'>"
                    f"<figcaption><b>{e(cap)}.</b> {e(desc)}</figcaption></figure>")
    sec("figures", "Figures", "".join(figs))
    sec("flips", "Flipped items", "".join(t.html() for t in tabs["flips"]) or
        "<p class='note'>No paired items to compare.</p>")
    sec("cost", "Cost", tabs["cost"].html() if tabs["cost"] else "<p class='note'>No training cost recorded.</p>")
    sec("points", "All points", tabs["points"].html())
    notes = r.notes or ["none"]
    sec("notes", "Notes", "<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    sec("conventions", "Conventions", "<ul>" + "".join(f"<li>{e(c)}</li>" for c in CONVENTIONS) + "</ul>")
    html_doc = "".join(parts) + "</body></html>"
    # verdict colouring: cells holding exactly a verdict string
    for v, cls in VERDICT_CLASS.items():
        for td in (f"<td>{e(v)}</td>", f"<td class='t'>{e(v)}</td>"):
            html_doc = html_doc.replace(td, f"<td class='t {cls}'>{e(v)}</td>")
    return html_doc


def _markdown(r: Results, b: dict, tabs: dict, fig_files: dict[str, str]) -> str:
    m = r.meta
    out = [f"# SFT vs SDFT forgetting report · {r.name or r.run_id}", "",
           f"run `{r.run_id}` · status {r.status} · model **{m.get('model', '?')}** "
           f"(paper: {m.get('paper_model', PAPER_MODEL)}) · task {r.task} · suite wall-clock {secs(m.get('wall_s'))}"
           f" · dtype {describe_run(r.config, m)}",
           "", "## The answer", ""] + C.lead_sentences(b["claims"]) + (
              ["", f"![SDFT vs SFT, 95% intervals]({fig_files['answer']})"] if "answer" in fig_files else []) + [
           "", "## Summary", "", tabs["summary"].md(), "", "## Paper claims", "", tabs["claims"].md(), ""]
    out += [f"## Table 5 beside measured ({PAPER_LABEL})", "",
            tabs["paper"].md() if tabs["paper"] else f"The paper has no Table 5 rows for task {r.task}.", ""]
    out += ["## Forgetting per benchmark", "",
            tabs["bench"].md() if tabs["bench"] else "No prior-capability benchmarks in this run: forgetting is "
                                                     "not measured.", ""]
    if tabs["compare"]:
        out += [f"## {r.sdft_arm} vs {r.sft_arm}", "", tabs["compare"].md(), ""]
    out += ["## Figures", ""]
    for key, cap, _ in FIGURES:
        out.append(f"- [{cap}]({fig_files[key]})" if key in fig_files else f"- {cap}: not available for this run")
    out += ["", "## Flipped items", ""]
    for t in tabs["flips"]:
        out += [t.md(), ""]
    out += ["## Cost", "", tabs["cost"].md() if tabs["cost"] else "No training cost recorded.", ""]
    out += ["## Notes", ""] + [f"- {n}" for n in (r.notes or ["none"])] + [""]
    out += ["## Conventions", ""] + [f"- {c}" for c in CONVENTIONS] + [""]
    return "\n".join(out)


def render(run: str | Results, db: Any = None, out_dir: str | os.PathLike = "reports", *,
           n_boot: int = 10000) -> dict:
    """Render the report of a suite run into `<out_dir>/<run_id>/`.

    `run`: a run id, id prefix or suite name (looked up in `db`: a path, a `Store`, or None for
    --db / HARNESS_DB / results/harness.db), or an already loaded `Results`. Returns
    {"dir", "html", "markdown", "figures": {name: path}} (Paths). A missing store or run raises
    `StoreError` before anything is written; the directory appears complete or not at all.
    """
    r = run if isinstance(run, Results) else load(run, db, n_boot=n_boot)
    b = _build(r)
    tabs = {"summary": _summary_tab(r, b), "claims": _claims_tab(b["claims"]), "paper": _paper_tab(r),
            "bench": _bench_tab(r, b), "compare": _compare_tab(r, b), "flips": _flip_tabs(r),
            "cost": _cost_tab(r, b["ct"]),
            "points": _points_tab(r)}
    fig_files = {k: f"figures/{k}.png" for k, v in b["figs"].items() if v is not None}
    html_doc = _html(r, b, tabs)
    md = _markdown(r, b, tabs, fig_files)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / r.run_id
    tmp = out_dir / f".{r.run_id}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        (tmp / "figures").mkdir(parents=True)
        for k, rel in fig_files.items():
            (tmp / rel).write_bytes(b["figs"][k])
        (tmp / "report.html").write_text(html_doc, encoding="utf-8")
        (tmp / "summary.md").write_text(md, encoding="utf-8")
        old = None
        if final.exists():
            old = out_dir / f".{r.run_id}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
        os.rename(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"dir": final, "html": final / "report.html", "markdown": final / "summary.md",
            "figures": {k: final / rel for k, rel in fig_files.items()}}
