"""The gate's verdicts for people and CI: a console table, a Markdown PR comment, JUnit XML.

Every output shows the same rows (`Verdict`) and the same one-line reasons (`Verdict.message`);
the numbers are percentage points (`pts`), as in the gate file's comments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence
from xml.etree import ElementTree as ET

from .verdict import EXIT_PASS, EXIT_REGRESSION, EXIT_UNDECIDED, Verdict, exit_code, pts, spts

MARKER = "<!-- harness-gate -->"
_STYLE = {"pass": "green", "improved": "bold green", "inconclusive": "yellow", "fail": "bold red"}
_ICON = {"pass": "✅", "improved": "🟢", "inconclusive": "⚠️", "fail": "❌"}


def _verdict_text(r: Verdict) -> str:
    if r.verdict == "inconclusive":
        return f"inconclusive ({'pass' if r.counts_as == 'pass' else 'fail'})"
    return r.verdict


def render_table(rows: Sequence[Verdict], title: str | None = None):
    """A rich Table of the verdicts (print it with a rich Console)."""
    from rich.table import Table

    conf = {r.confidence for r in rows}
    band = f"{100 * (2 * next(iter(conf)) - 1):g}% CI" if len(conf) == 1 else "CI (2c-1)"
    t = Table(title=title or "harness gate", title_justify="left")
    for col, j in (("metric", "left"), ("n", "right"), ("base", "right"), ("cand", "right"), ("Δ pts", "right"),
                   (band, "right"), ("p", "right"), ("allowed", "right"), ("MDE", "right"),
                   ("needed n", "right"), ("verdict", "left")):
        t.add_column(col, justify=j)
    for r in rows:
        t.add_row(r.metric, str(r.n), pts(r.base), pts(r.cand), spts(r.diff), f"{spts(r.lo)} … {spts(r.hi)}",
                  f"{r.p:.3g}", r.allowance, pts(r.mde),
                  f"{r.needed_n:,}" if r.verdict == "inconclusive" and r.needed_n else "",
                  f"[{_STYLE[r.verdict]}]{_verdict_text(r)}[/]")
    return t


def render_markdown(rows: Sequence[Verdict], baseline: str = "", candidate: str = "", gate: str = "",
                    code: int | None = None) -> str:
    """A Markdown report for a pull-request comment (starts with a hidden marker so a workflow can
    update its previous comment instead of adding a new one)."""
    code = exit_code(rows) if code is None else code
    head = {EXIT_PASS: "✅ **Gate passed**", EXIT_REGRESSION: "❌ **Gate failed: regression**",
            EXIT_UNDECIDED: "⚠️ **Gate cannot decide** (inconclusive metrics count as failing)"}[code]
    lines = [MARKER, f"### harness gate: {head}", ""]
    if baseline or candidate:
        lines += [f"Baseline `{baseline}` → candidate `{candidate}`" + (f", rules `{gate}`" if gate else ""), ""]
    lines += ["| metric | n | baseline | candidate | Δ (pts) | CI (pts) | p | allowed drop | MDE (pts) | needed n "
              "| verdict |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        band = f"{100 * (2 * r.confidence - 1):g}%: {spts(r.lo)} … {spts(r.hi)}"
        need = f"{r.needed_n:,}" if r.verdict == "inconclusive" and r.needed_n else ""
        lines.append(f"| `{r.metric}` | {r.n} | {pts(r.base)} | {pts(r.cand)} | {spts(r.diff)} | {band} | "
                     f"{r.p:.3g} | {r.allowance} | {pts(r.mde)} | {need} | {_ICON[r.verdict]} {_verdict_text(r)} |")
    notable = [r for r in rows if r.verdict != "pass"]
    if notable:
        lines += [""] + [f"- {r.message}" for r in notable]
    lines += ["", "<details><summary>How to read this</summary>", "",
              "Δ = candidate − baseline on the same items, in percentage points. A metric **passes** only when "
              "the lower one-sided confidence bound of Δ is at or above −(allowed drop): the data show the drop "
              "is within the allowance. It **fails** when the upper bound is below −(allowed drop), i.e. the "
              "drop significantly exceeds the allowance (p is that one-sided test's p-value). **Improved**: the "
              "lower bound is above 0. **Inconclusive**: neither; MDE is the smallest drop beyond the allowance "
              "detected with the stated power and *needed n* the sample size at which MDE equals the allowed "
              "drop. An inconclusive metric blocks the gate (exit 3) unless the gate file says "
              "`inconclusive: pass` and n ≥ needed n. The CI column is the two-sided interval whose ends are the "
              "one-sided bounds.", "", "</details>", ""]
    return "\n".join(lines)


def render_junit(rows: Sequence[Verdict], path: str | Path, name: str = "harness-gate") -> Path:
    """JUnit XML, one test case per gated metric: fail -> <failure>, inconclusive counted as failing
    -> <failure type="inconclusive">, inconclusive allowed (n >= needed n) -> <skipped>."""
    failures = sum(r.failed for r in rows)
    skipped = sum(r.verdict == "inconclusive" and not r.failed for r in rows)
    suites = ET.Element("testsuites", name=name, tests=str(len(rows)), failures=str(failures), errors="0")
    suite = ET.SubElement(suites, "testsuite", name=name, tests=str(len(rows)), failures=str(failures),
                          errors="0", skipped=str(skipped))
    for r in rows:
        tc = ET.SubElement(suite, "testcase", classname=f"{name}.{r.task.split(' ')[0]}", name=r.metric, time="0")
        if r.failed:
            el = ET.SubElement(tc, "failure", message=r.message, type=r.verdict)
            el.text = json.dumps(r.as_dict(), indent=2, default=str)
        elif r.verdict == "inconclusive":
            ET.SubElement(tc, "skipped", message=r.message)
        out = ET.SubElement(tc, "system-out")
        out.text = r.message
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
    return path



def print_verdicts(rows: Sequence[Verdict], code: int, title: str, console) -> None:
    """What `harness gate` prints on a rich Console: the table, the reason for every metric that did
    not simply pass, and the outcome in words."""
    console.print(render_table(rows, title=title))
    for r in rows:
        if r.verdict != "pass":
            console.print(f"[{_STYLE[r.verdict]}]{r.message}[/]", highlight=False)
    console.print({EXIT_PASS: "[green]gate passed[/]", EXIT_REGRESSION: "[bold red]gate failed: regression[/]",
                   EXIT_UNDECIDED: "[yellow]gate cannot decide (exit 3)[/]"}[code])
