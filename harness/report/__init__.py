"""Render a suite run as a self-contained HTML report plus a Markdown summary.

    harness report RUN [--out reports]        # -> reports/<run_id>/report.html, summary.md, figures/*.png
    from harness.report import render
    paths = render("quick", db="results/harness.db", out_dir="reports")

Built from the results store only (pandas, matplotlib with the Agg renderer; never torch), so a
report can be rebuilt on any machine that has the SQLite file. Everything is computed by
`harness.results` (statistics from `harness.metrics`) and `harness.claims`; this package only lays
out tables and figures:

    tables.py    the tables as rows of display strings (numbers formatted by `harness.formatting`)
    figures.py   the matplotlib figures as PNG bytes
    here         the section list, the context dict and the atomic write
    harness/templates/report/   report.html, summary.md (jinja2; both loop over the same sections)

Sections, in page order (`sections`): the answer (lead sentences and the SDFT-vs-SFT figure);
summary; paper claims; the paper's Table 5 beside the measured numbers, labelled "paper,
Qwen2.5-7B-Instruct"; forgetting per benchmark (benchmarks where the base model is at chance
flagged); the multiple-choice gold-answer log-probability and margin changes; SDFT vs SFT; figures (Pareto, per-benchmark change, training curves, teacher ceiling,
cost); flipped items; cost; every grid point (HTML only); notes; conventions.

The report directory is written to a temporary sibling and renamed into place, so a crash leaves
either the previous report or none, never half of one. A run that does not exist raises
`StoreError` before anything is written.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import jinja2
import pandas as pd

from .. import claims as C
from ..formatting import secs
from ..paper import PAPER_LABEL
from ..precision import describe_run
from ..results import Results, load
from . import figures, tables
from .figures import FIGURES
from .tables import Table

__all__ = ["render", "build_context", "sections", "Section", "Table"]


# ----- blocks: what a section holds; the templates switch on `kind` ---------------------------
@dataclass
class Lead:
    """The answer's sentences, one paragraph each."""

    kind: ClassVar[str] = "lead"
    lines: list[str]


@dataclass
class Note:
    """Said in place of a table or figure the run has no data for, so a missing piece is visible."""

    kind: ClassVar[str] = "note"
    text: str


@dataclass
class Bullets:
    """Notes and conventions: independent statements, so a list rather than prose."""

    kind: ClassVar[str] = "bullets"
    items: list[str]


@dataclass
class Figure:
    """A PNG inlined in the HTML (data URI: the page stays one file) and linked from the Markdown."""

    kind: ClassVar[str] = "figure"
    key: str
    title: str  # bold caption lead; "" for none
    desc: str
    alt: str
    png: bytes | None

    @property
    def path(self) -> str:
        return f"figures/{self.key}.png"

    @property
    def data(self) -> str:
        return base64.b64encode(self.png or b"").decode()


@dataclass
class Gallery:
    """Figures in a fixed order; one the run cannot draw is named as not available."""

    kind: ClassVar[str] = "gallery"
    figures: list[Figure]


@dataclass
class Section:
    """One heading of the report. `markdown=False` keeps long detail out of the summary."""

    id: str
    title: str
    blocks: list
    markdown: bool = True


# ----- data, sections and context ----------------------------------------------------------------
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
    "Multiple-choice benchmarks also get two continuous paired measures per item: the change in log p(gold "
    "choice) and in its margin over the best other choice (nats, paired bootstrap); they detect changes "
    "that accuracy on a few hundred items cannot, and are reported beside it.",
    "A benchmark where the base model is at chance (value − chance ≤ 1.96 × stderr) cannot show forgetting "
    "and is flagged.",
    f"Rows and markers labelled '{PAPER_LABEL}' are the paper's Table 5 (arXiv 2601.19897) for that model; "
    "this run's model may differ, so compare directions and gaps rather than levels.",
]

# CSS class per verdict word (colours in report.css); a table cell holding exactly a verdict gets it
VERDICT_CLASS = {C.SUPPORTED: "supported", C.CONTRADICTED: "contradicted", C.EQUIVALENT: "equivalent",
                 C.INCONCLUSIVE: "inconclusive", C.NOT_MEASURED: "notmeasured"}


def _data(r: Results) -> dict:
    """The results tables, claims and figures the sections are built from (computed once)."""
    nt = r.new_task_table()
    bt = r.benchmark_table()
    prior = r.prior_table()
    ct = r.cost_table() if r.trained_arms else pd.DataFrame()
    cmp = r.compare(r.sft_arm, r.sdft_arm) if r.sft_arm and r.sdft_arm else pd.DataFrame()
    mc = r.mc_table()
    claims = C.check_claims(r)
    margins = C.DEFAULT_MARGINS | dict(((r.config or {}).get("claims") or {}).get("margins") or {})
    figs = {"answer": figures.fig_answer(claims, margins), "pareto": figures.fig_pareto(r),
            "bench_change": figures.fig_bench_change(r, bt, prior), "curves": figures.fig_curves(r),
            "ceiling": figures.fig_ceiling(r, nt), "cost": figures.fig_cost(r, ct)}
    return {"nt": nt, "bt": bt, "prior": prior, "ct": ct, "cmp": cmp, "mc": mc, "claims": claims, "figs": figs}


def _or_note(table: Table | None, text: str) -> Table | Note:
    """The table, or a sentence saying why the run has none (a section is never silently empty)."""
    return table if table is not None else Note(text)


def sections(r: Results, data: dict) -> list[Section]:
    """The report's sections in page order; both templates render exactly this list."""
    figs = data["figs"]
    answer: list = [Lead(C.lead_sentences(data["claims"]))]
    if figs["answer"] is not None:
        answer.append(Figure("answer", "", "SDFT vs SFT with 95% intervals; shaded: the claim's equivalence margin.",
                             "SDFT vs SFT, 95% intervals", figs["answer"]))
    out = [Section("answer", "The answer", answer),
           Section("summary", "Summary", [tables.summary_table(r, data)]),
           Section("claims", "Paper claims", [tables.claims_table(data["claims"])]),
           Section("paper", f"Table 5 beside measured ({PAPER_LABEL})",
                   [_or_note(tables.paper_table(r), f"The paper has no Table 5 rows for task {r.task}.")]),
           Section("benchmarks", "Forgetting per benchmark",
                   [_or_note(tables.benchmark_table(r, data),
                             "No prior-capability benchmarks in this run: forgetting is not measured.")]),
           Section("mc", "Gold-answer log-probability and margin (multiple choice)",
                   [_or_note(tables.mc_table(r, data), "No multiple-choice prior benchmark with per-choice "
                                                       "loglikelihoods in this run.")])]
    compare = tables.compare_table(r, data)
    if compare is not None:
        out.append(Section("compare", f"{r.sdft_arm} vs {r.sft_arm}", [compare]))
    gallery = Gallery([Figure(key, cap, desc, cap, figs.get(key)) for key, cap, desc in FIGURES])
    out += [Section("figures", "Figures", [gallery]),
            Section("flips", "Flipped items", tables.flip_tables(r) or [Note("No paired items to compare.")]),
            Section("cost", "Cost", [_or_note(tables.cost_table(r, data["ct"]), "No training cost recorded.")]),
            Section("points", "All points", [tables.points_table(r)], markdown=False),
            Section("notes", "Notes", [Bullets(r.notes or ["none"])]),
            Section("conventions", "Conventions", [Bullets(CONVENTIONS)])]
    return out


def demo_policies(pol: Mapping[str, str]) -> str:
    """Where the run's demonstrations came from (a manifest's `demonstrations`), per split (science's
    offline default is 'answer-only': its teacher is shown the gold letter, which measures copying,
    not reasoning)."""
    if len(set(pol.values())) == 1:
        return next(iter(pol.values()))
    return ", ".join(f"{split} {p}" for split, p in pol.items())


def build_context(r: Results) -> dict:
    """Everything the templates need: the title, the run's header fields, the sections, the verdict
    classes, and the figures' PNG bytes by key (the ones the run could draw, in page order)."""
    m = r.manifest
    data = _data(r)
    run = {"run_id": r.run_id, "status": r.status, "suite": str(m.suite or r.name),
           "model": str(m.model or "?"), "paper_model": m.paper_model,
           "task": r.task, "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
           "wall": secs(m.wall_s), "dtype": describe_run(r.config, {"precision": m.precision}),
           "demonstrations": demo_policies(m.demonstrations)}
    return {"title": f"SFT vs SDFT forgetting report · {r.name or r.run_id}", "run": run,
            "sections": sections(r, data), "verdict_class": VERDICT_CLASS,
            "figures": {k: v for k, v in data["figs"].items() if v is not None}}


# ----- templates -------------------------------------------------------------------------------
_NUMERIC = re.compile(r"^[-+<\[(]?\s*(\d|n/a)")


def numeric_cell(c: str) -> bool:
    """Whether a cell reads as a number (right-aligned in HTML) rather than text (left-aligned)."""
    return (bool(_NUMERIC.match(c)) and not re.search(r"[A-Za-z]{5,}", c.replace("FLOP", ""))) \
        or c in ("", "-", "yes")


def md_cell(c: str) -> str:
    """A table cell that cannot break the Markdown table: pipes escaped, newlines joined."""
    return c.replace("|", "\\|").replace("\n", " ")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness", "templates/report"),
                             autoescape=jinja2.select_autoescape(["html"], default=False),
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    env.tests["numeric_cell"] = numeric_cell
    env.filters["md_cell"] = md_cell
    return env


TEMPLATES = _environment()


def render(run: str | Results, db: Any = None, out_dir: str | os.PathLike = "reports", *,
           n_boot: int = 10000) -> dict:
    """Render the report of a suite run into `<out_dir>/<run_id>/`.

    `run`: a run id, id prefix or suite name (looked up in `db`: a path, a `Store`, or None for
    --db / HARNESS_DB / results/harness.db), or an already loaded `Results`. Returns
    {"dir", "html", "markdown", "figures": {name: path}} (Paths). A missing store or run raises
    `StoreError` before anything is written; the directory appears complete or not at all.
    """
    if not isinstance(run, Results):
        seq = _sequential_context(run, db)
        if seq is not None:
            return write_report(*seq, out_dir)
    r = run if isinstance(run, Results) else load(run, db, n_boot=n_boot)
    return write_report(build_context(r), r.run_id, out_dir)


def _sequential_context(run: str, db: Any) -> tuple[dict, str] | None:
    """The context of a sequential (continual-learning) run, or None for a single-task run."""
    from ..results import _open_store as open_store
    from ..continual import outcomes_from_run as outcomes
    from ..manifest import SequentialManifest, read_manifest
    from .sequential import build_context as sequential_context

    store = open_store(db)
    info = store.get_run(run)
    if info["kind"] != "suite":
        return None
    manifest = read_manifest(info)
    if not isinstance(manifest, SequentialManifest):
        return None
    return (sequential_context(info, manifest, outcomes(info["run_id"], store), demo_policies(manifest.demonstrations)),
            info["run_id"])


def write_report(ctx: dict, run_id: str, out_dir: str | os.PathLike) -> dict:
    """Render `ctx` through the templates into `<out_dir>/<run_id>/`, atomically: the folder is
    built beside the target and renamed into place, so it is complete or absent."""
    html_doc = TEMPLATES.get_template("report.html").render(ctx)
    md = TEMPLATES.get_template("summary.md").render(ctx)
    fig_files = {k: f"figures/{k}.png" for k in ctx["figures"]}

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / run_id
    tmp = out_dir / f".{run_id}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        (tmp / "figures").mkdir(parents=True)
        for k, rel in fig_files.items():
            (tmp / rel).write_bytes(ctx["figures"][k])
        (tmp / "report.html").write_text(html_doc, encoding="utf-8")
        (tmp / "summary.md").write_text(md, encoding="utf-8")
        old = None
        if final.exists():
            old = out_dir / f".{run_id}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
        os.rename(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"dir": final, "html": final / "report.html", "markdown": final / "summary.md",
            "figures": {k: final / rel for k, rel in fig_files.items()}}
