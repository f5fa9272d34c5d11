"""Report pieces of a sequential run: the accuracy matrix per method, the BWT / FWT / retention
table with the SDFT-vs-SFT comparison, and the paper's normalised curves as a figure.

Built from `harness.continual.SequenceOutcomes`; every number comes from `harness.continual`
(formulas) and is printed with `harness.formatting`, as in `report/tables.py`.
"""

from __future__ import annotations

import math
import textwrap

from .. import continual as CL
from ..formatting import NA, ci, missing, pct, pp, pval
from .figures import _fig, _png, arm_color
from .tables import Table

FIGURE = ("normalised", "Normalised accuracy over the sequence",
          "Per task: 0 = the base model, 1 = the best mean accuracy either method reached on that task after "
          "any stage (the paper's normalisation). Shaded: the stage that trains the task.")


def _cell(c: CL.Cell) -> str:
    if missing(c.acc):
        return NA
    return f"{pct(c.acc)} {ci(c.lo, c.hi)}".strip()


def matrix_tables(data: CL.SequenceOutcomes) -> list[Table]:
    """One accuracy-matrix table per method: rows = tasks, columns = base then after each stage."""
    out = []
    for m in data.methods:
        cells = CL.accuracy_matrix(data, m)
        n_seeds = len(data.seeds(m))
        how = ("Wilson interval over items (one seed)" if n_seeds == 1
               else f"across-seed t interval ({n_seeds} seeds)")
        t = Table(["task (stage it is trained)", "base %",
                   *[f"after {j + 1}: {data.stage_label(j)} %" for j in range(data.T)]],
                  caption=f"{m}: accuracy on each task's test items after each stage, mean over seeds with the "
                          f"95% {how}. The diagonal (bold in the paper) is a task right after its own stage; "
                          "the cells to its right show what later stages kept.")
        for i, task in enumerate(data.tasks):
            t.add([f"{task} ({i + 1})", *[_cell(cells[(task, j)]) for j in range(CL.BASE_STAGE, data.T)]])
        out.append(t)
    return out


def _ret(v: float | None) -> str:
    return "undefined (0% after its stage)" if v is None else f"{100 * v:.1f}"


def transfer_table(data: CL.SequenceOutcomes, ref: str = "sft", arm: str = "sdft") -> Table:
    """Per method: BWT, FWT (pp, with intervals) and retention % per earlier task; then, when both
    `ref` and `arm` ran, the row BWT(arm) - BWT(ref) with its paired test."""
    earlier = list(data.tasks[:-1])
    t = Table(["method", "seeds", "BWT (pp)", "95% CI", "FWT (pp)", "95% CI",
               *[f"retention of {e} %" for e in earlier], "note"],
              caption="BWT = mean over earlier tasks of (accuracy at the end - accuracy right after its own stage); "
                      "negative = forgotten. FWT = mean over later tasks of (accuracy before its stage - base). "
                      "Retention = end / own-stage accuracy. Intervals: paired bootstrap over items (one seed) or "
                      "across-seed t (several). Last row: paired difference of per-item drops (bootstrap; "
                      "seeds then items with several seeds).")
    for m in data.methods:
        tr = CL.transfer(data, m)
        notes = [n for n in (tr.bwt.note and f"BWT: {tr.bwt.note}", tr.fwt.note and f"FWT: {tr.fwt.note}") if n]
        t.add([m, tr.n_seeds, pp(tr.bwt.value), ci(tr.bwt.lo, tr.bwt.hi, True), pp(tr.fwt.value),
               ci(tr.fwt.lo, tr.fwt.hi, True), *[_ret(tr.retention[e]) for e in earlier],
               "; ".join(notes + tr.notes)])
    c = CL.compare_bwt(data, ref, arm) if ref in data.methods and arm in data.methods else None
    if c is not None:
        note = c["test"]
        if c["mcnemar"] is not None:
            mc = c["mcnemar"]
            note += f"; forgot under {arm} only {mc['n01']}, under {ref} only {mc['n10']} (McNemar p {pval(mc['p'])})"
        elif not math.isnan(c["seed_lo"]):
            note += f"; across seeds {ci(c['seed_lo'], c['seed_hi'], True)}"
        t.add([f"{arm} - {ref}", f"{c['n_seeds_arm']} / {c['n_seeds_ref']}", pp(c["diff"]),
               ci(c["lo"], c["hi"], True), "", "", *["" for _ in earlier], f"p {pval(c['p'])}; {note}"], "flag")
    return t


def fig_normalised(data: CL.SequenceOutcomes) -> bytes | None:
    """One panel per task: normalised accuracy after each stage, one line per method. A task whose
    scale is undefined (no method beat the base) shows why instead of a line. None without any
    trained stage."""
    norm = CL.normalised_curves(data)
    if all(v is None for m in norm.values.values() for vals in m.values() for v in vals[1:]):
        return None
    fig = _fig(3.6 * data.T, 3.2)
    axes = fig.subplots(1, data.T, squeeze=False)[0]
    x = list(range(data.T + 1))
    labels = ["base", *[f"{j + 1}: {data.stage_label(j)}" for j in range(data.T)]]
    for i, (ax, task) in enumerate(zip(axes, data.tasks)):
        ax.axvspan(i, i + 1, color="#dddddd", alpha=0.6)
        if task in norm.undefined:
            ax.text(0.5, 0.5, "undefined:\n" + textwrap.fill(norm.undefined[task], 40), ha="center", va="center",
                    fontsize=7, color="#777", transform=ax.transAxes)
        else:
            for m, per in norm.values.items():
                pts = [(k, v) for k, v in zip(x, per[task]) if v is not None]
                if pts:
                    ax.plot(*zip(*pts), "-o", color=arm_color(m, data.methods), label=m, markersize=4)
            ax.axhline(0, color="#555", linewidth=0.8)
            ax.axhline(1, color="#555", linewidth=0.8, linestyle=":")
            ax.legend(fontsize=7)
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_title(f"{task}: base {pct(norm.base[task])}%, best {pct(norm.best[task])}%", fontsize=8)
        ax.set_ylabel("normalised accuracy" if i == 0 else "")
        ax.grid(alpha=0.3)
    return _png(fig)
