"""harness.report: files, sections, paper labels, missing pieces, atomic writes, no torch."""

from __future__ import annotations

import html as htmllib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fake_suite_run import make_suite_run

from harness import formatting, report
from harness.errors import StoreError
from harness.paper import DISCREPANCIES, PAPER_LABEL, TABLE5, table5_row
from harness.store import Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One full report (2 seeds, a variant arm) shared by the content checks."""
    tmp = tmp_path_factory.mktemp("report")
    store = Store(tmp / "h.db")
    rid = make_suite_run(store, seeds=(0, 1), seed_spread=0.02, extra_arms={"sdft-reverse": "sdft"},
                         acc={"sdft-reverse": 0.64}, prior_drop={"sdft-reverse": 0.03})
    paths = report.render(rid, store, tmp / "reports", n_boot=1000)
    yield rid, paths, store
    store.close()


def test_paper_table5_data():
    assert table5_row("tooluse", "sdft") == pytest.approx(
        {"task_acc": 0.706, "hellaswag": 0.616, "humaneval": 0.683, "ifeval": 0.719, "mmlu": 0.715,
         "truthfulqa_mc1": 0.473, "winogrande": 0.717, "prior_avg": 0.654})
    assert table5_row("tooluse", "sdft-reverse") is None
    assert table5_row("science", "base")["hellaswag"] is None
    # the printed prior averages are the means of the printed benchmarks (to rounding), except the
    # one known discrepancy, which is kept as printed and listed
    for (task, method), row in TABLE5.items():
        vals = [row[k] for k in ("hellaswag", "humaneval", "ifeval", "mmlu", "truthfulqa_mc1", "winogrande")]
        if None not in vals:
            ok = sum(vals) / 6 == pytest.approx(row["prior_avg"], abs=0.06)
            assert ok != ((task, method) in DISCREPANCIES), (task, method)


def test_files_and_sections(rendered):
    rid, paths, _ = rendered
    d = paths["dir"]
    assert d.name == rid and paths["html"].is_file() and paths["markdown"].is_file()
    assert set(paths["figures"]) == {"answer", "pareto", "bench_change", "curves", "ceiling", "cost"}
    for p in paths["figures"].values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = paths["html"].read_text()
    for sec in ("answer", "summary", "claims", "paper", "benchmarks", "compare", "figures", "flips", "cost", "points",
                "notes", "conventions"):
        assert f"<section id='{sec}'>" in html, sec
    assert html.count("src='data:image/png;base64,") == 6
    # the report leads with the answer: sentences before the first table, and the answer figure
    assert html.index("<section id='answer'>") < html.index("<section id='summary'>")
    assert "SDFT forgot less than SFT here" in html and "fig-answer" in html
    # self-contained: no external resources
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", html)
    assert PAPER_LABEL in html and "paper, Qwen2.5-7B-Instruct" in html
    assert "Table 5 beside measured" in html and "63.2" in html and "70.6" in html  # paper SFT / SDFT rows
    assert "base at chance" in html  # MMLU base 0.26 vs chance 0.25
    assert re.search(r"<td class='t (supported|inconclusive)'>", html)
    assert "sdft-reverse" in html
    md = paths["markdown"].read_text()
    assert md.index("## The answer") < md.index("## Summary") and "(figures/answer.png)" in md
    for h in ("## Summary", "## Paper claims", "## Table 5 beside measured (paper, Qwen2.5-7B-Instruct)",
              "## Forgetting per benchmark", "## Figures", "## Flipped items", "## Cost"):
        assert h in md, h
    assert "(figures/pareto.png)" in md
    assert not [p for p in paths["dir"].parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


SECTIONS = ["answer", "summary", "claims", "paper", "benchmarks", "mc", "compare", "figures", "flips", "cost", "points",
            "notes", "conventions"]


def test_html_and_markdown_render_one_section_list(rendered):
    """Same sections, same order, same titles in both formats; only 'All points' is HTML-only."""
    _, paths, _ = rendered
    html = paths["html"].read_text()
    found = re.findall(r"<section id='([\w-]+)'><h2>(.*?)</h2>", html)
    assert [i for i, _ in found] == SECTIONS
    md_titles = re.findall(r"^## (.+)$", paths["markdown"].read_text(), re.M)
    assert md_titles == [htmllib.unescape(t) for i, t in found if i != "points"]
    assert "sdft vs sft" in md_titles


def test_verdicts_are_coloured_by_class(rendered):
    """Every claims row's verdict cell carries the CSS class of its verdict (colours live in report.css)."""
    _, paths, _ = rendered
    html = paths["html"].read_text()
    claims = re.search(r"<section id='claims'>.*?</section>", html, re.S).group(0)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", claims.split("<tbody>")[1], re.S)
    assert len(rows) >= 5
    for row in rows:
        cells = re.findall(r"<td( class='[^']*')?>(.*?)</td>", row)
        attr, verdict = cells[5]
        assert attr == f" class='t {report.VERDICT_CLASS[htmllib.unescape(verdict)]}'", row
    for cls in set(report.VERDICT_CLASS.values()):
        assert re.search(rf"\.{cls}\{{", (ROOT / "harness/templates/report/report.css").read_text()), cls


def test_html_is_escaped_and_carries_no_script(tmp_path):
    """Text from the run (here a model name) is escaped in the HTML and kept verbatim in the Markdown."""
    from fake_suite_run import build_run

    store = Store(tmp_path / "h.db")
    hostile = "<script>alert('x')</script> & co"
    rid = build_run(store, [{"point": "base", "arm": "base", "scores": {"tooluse": [1, 0, 0, 1]}}], benchmarks={},
                    model=hostile)
    paths = report.render(rid, store, tmp_path / "out", n_boot=100)
    html = paths["html"].read_text()
    assert "<script" not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in html
    assert f"**{hostile}**" in paths["markdown"].read_text()
    store.close()


def test_multi_seed_intervals_shown(rendered):
    """Each trained arm's across-seed interval (two seeds here) is in its summary row."""
    from harness.results import load

    rid, paths, store = rendered
    html = paths["html"].read_text()
    nt = load(rid, store, n_boot=1000).new_task_table().set_index("arm")
    for arm in ("sft", "sdft"):
        want = formatting.seed_ci(nt.loc[arm, "seed_lo"], nt.loc[arm, "seed_hi"], 2)
        assert want.startswith("[") and "n/a" not in want
        row = re.search(rf"<tr><td[^>]*>{arm}</td>.*?</tr>", html, re.S)
        assert row and f">{want}<" in row.group(0), (arm, want)


def test_one_seed_and_no_prior_suite(tmp_path):
    store = Store(tmp_path / "h.db")
    rid = make_suite_run(store, benchmarks=(), n_tool=20, n_val=6)
    paths = report.render(rid, store, tmp_path / "out", n_boot=500)
    html = paths["html"].read_text()
    assert "n/a (1 seed)" in html
    assert "forgetting is not measured" in html
    assert "Pareto: new-task accuracy vs prior average: not available" in html
    assert "pareto" not in paths["figures"] and "ceiling" in paths["figures"]
    # re-rendering replaces the directory atomically
    again = report.render(rid, store, tmp_path / "out", n_boot=500)
    assert again["dir"] == paths["dir"] and again["html"].is_file()
    assert [p.name for p in (tmp_path / "out").iterdir()] == [rid]
    store.close()


def test_degenerate_runs_render(tmp_path):
    """Base and teacher only; trained arms without base, costs or curves: still a report."""
    from fake_suite_run import build_run

    store = Store(tmp_path / "h.db")
    only_eval = build_run(store, [
        {"point": "base", "arm": "base", "scores": {"tooluse": [1, 0, 0, 1], "prior/hellaswag": [1, 0, 1, 1]}},
        {"point": "teacher", "arm": "teacher", "scores": {"tooluse": [1, 1, 0, 1]}}],
        benchmarks={"hellaswag": ("acc", 0.25)})
    p = report.render(only_eval, store, tmp_path / "out", n_boot=200)
    assert set(p["figures"]) == {"ceiling"}
    html = p["html"].read_text()
    assert "not measured" in html and "No training cost recorded" in html
    no_base = build_run(store, [
        {"point": "sft", "arm": "sft", "seed": 0, "scores": {"tooluse": [1, 0, 0, 1]}},
        {"point": "sdft", "arm": "sdft", "seed": 0, "scores": {"tooluse": [1, 1, 0, 1]}}], benchmarks={})
    p = report.render(no_base, store, tmp_path / "out", n_boot=200)
    assert "no base point" in p["html"].read_text()
    store.close()


def test_missing_run_writes_nothing(tmp_path):
    store = Store(tmp_path / "h.db")
    out = tmp_path / "reports"
    with pytest.raises(StoreError) as e:
        report.render("does-not-exist", store, out)
    assert "\n" not in str(e.value) and "does-not-exist" in str(e.value)
    assert not out.exists()
    with pytest.raises(StoreError):
        report.render("x", tmp_path / "nope.db", out)
    assert not out.exists() and not (tmp_path / "nope.db").exists()
    store.close()


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    store = Store(tmp_path / "h.db")
    rid = make_suite_run(store, benchmarks=("hellaswag",), n_tool=12, n_val=4, n_prior=12)
    out = tmp_path / "reports"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "rename", boom)
    with pytest.raises(OSError, match="disk full"):
        report.render(rid, store, out, n_boot=200)
    assert list(out.iterdir()) == []
    store.close()


def test_report_imports_no_torch(rendered, tmp_path):
    rid, _, store = rendered
    code = ("import sys; from harness.report import render; import harness.claims, harness.results; "
            f"render({rid!r}, {str(store.path)!r}, {str(tmp_path / 'r')!r}, n_boot=200); "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_training_curves_draw_sparse_drift_points(tmp_path, monkeypatch):
    """Drift is measured every few steps (NaN between): the panel must still draw the measured points."""
    import math

    from fake_suite_run import build_run

    from harness.results import load

    store = Store(tmp_path / "h.db")
    rid = build_run(store, [{"point": "base", "scores": {"tooluse": [1, 0, 1]}},
                            {"point": "sft/default/seed=0", "arm": "sft", "method": "sft", "seed": 0,
                             "scores": {"tooluse": [1, 1, 0]}, "train_key": "k-sft"}], benchmarks={})
    for s in range(1, 4):
        store.add_train_step("k-sft", s, {"loss": 1.0 / s, "divergence": math.nan,
                                          "drift_kl": 0.01 * s if s in (1, 3) else math.nan, "lr": 1e-4})
    figs = []
    monkeypatch.setattr(report.figures, "_png", lambda fig: figs.append(fig) or b"png")
    assert report.figures.fig_curves(load(rid, store)) == b"png"
    drift_ax = figs[0].axes[2]
    lines = drift_ax.get_lines()
    assert len(lines) == 1 and list(lines[0].get_xdata()) == [1, 3]
    assert lines[0].get_marker() == "o"
