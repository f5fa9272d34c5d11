"""Open a rendered report in headless Chromium: no console or script errors, every <img> loaded,
and a full-page screenshot saved as a test artefact (test-artifacts/report-screenshot.png).

Needs the Debian `chromium` package (apt-get install -y chromium chromium-driver); the test FAILS,
not skips, without it. No browser download and no extra Python package: the test writes a copy of
the report with a tiny recorder script at the top of <head> (reports themselves carry no script);
it records errors and image load status into <body data-*> attributes once the page has loaded,
Chromium's --dump-dom prints that DOM, and --enable-logging=stderr echoes console messages (checked
too). A deliberately broken page proves the checks can fail.
"""

from __future__ import annotations

import html as htmllib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fake_suite_run import make_suite_run

from harness import report
from harness.store import Store

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("HARNESS_TEST_ARTIFACTS", ROOT / "test-artifacts"))
WIDTH = 1280

# Records script errors, failed resources and image load status into <body data-*>, where
# --dump-dom can read them.
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


def with_recorder(page: Path, tmp: Path) -> Path:
    """A copy of `page` with the recorder first in <head>, so it listens before anything loads.
    The report is self-contained (figures are data URIs), so the copy renders like the original."""
    text = page.read_text(encoding="utf-8")
    head = re.search(r"<head[^>]*>", text)
    assert head, f"{page}: no <head>"
    out = tmp / f"recorded-{page.name}"
    out.write_text(f"{text[:head.end()]}<script>{RECORDER}</script>{text[head.end():]}", encoding="utf-8")
    return out


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless browser not found: install Debian's Chromium with "
                "`apt-get update && apt-get install -y chromium chromium-driver` (needed by this test)")


def run_chromium(url: str, tmp: Path, *extra: str, timeout: int = 120) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium-profile'}",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]
    return subprocess.run([chromium(), *flags, *extra, url], capture_output=True, text=True, timeout=timeout)


def page_state(path: Path, tmp: Path) -> tuple[dict, list[str]]:
    """Load the page with the recorder; return its <body> attributes and console lines from stderr."""
    out = run_chromium(with_recorder(path, tmp).resolve().as_uri(), tmp, f"--window-size={WIDTH},1000", "--dump-dom")
    m = re.search(r"<body([^>]*)>", out.stdout)
    assert m, f"chromium printed no DOM (rc {out.returncode}): {out.stderr[-1500:]}"
    attrs = {k: htmllib.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', m.group(1))}
    console = [ln for ln in out.stderr.splitlines() if ":CONSOLE" in ln]
    return attrs, console


def problems(attrs: dict, console: list[str]) -> list[str]:
    found = []
    if attrs.get("data-ready") != "1":
        found.append("page never fired its load event (recorder did not run)")
        return found
    found += [f"script/console error: {e}" for e in json.loads(attrs.get("data-errors", "[]"))]
    total, loaded = int(attrs.get("data-images-total", 0)), int(attrs.get("data-images-loaded", 0))
    if loaded != total:
        found.append(f"{total - loaded} of {total} images did not load: {attrs.get('data-images-broken')}")
    found += [f"console: {ln}" for ln in console if re.search(r"error|uncaught|failed", ln, re.I)]
    return found


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    store = Store(tmp / "h.db")
    rid = make_suite_run(store, seeds=(0, 1), seed_spread=0.02)
    paths = report.render(rid, store, tmp / "reports", n_boot=1000)
    store.close()
    return paths["html"]


def test_report_renders_in_chromium(report_html, tmp_path):
    assert "<script" not in report_html.read_text(encoding="utf-8")  # the recorder is the test's, not the report's
    attrs, console = page_state(report_html, tmp_path)
    assert problems(attrs, console) == []
    assert int(attrs["data-images-total"]) == 6  # the answer figure and the five of the Figures section

    height = min(int(attrs.get("data-height", 4000)) + 40, 20000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    if shot.exists():
        shot.unlink()
    out = run_chromium(report_html.resolve().as_uri(), tmp_path, f"--window-size={WIDTH},{height}",
                       f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot (rc {out.returncode}): {out.stderr[-1500:]}"
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (w, h) == (WIDTH, height)
    print(f"\nreport screenshot: {shot}")


def test_checks_catch_a_broken_page(tmp_path):
    """Negative control: a page with a broken image, a console.error and an exception fails."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><html><head></head><body>"
                   "<img alt='broken' src='data:image/png;base64,AAAA'>"
                   "<script>console.error('boom'); undefinedFunction();</script></body></html>")
    attrs, console = page_state(bad, tmp_path)
    found = problems(attrs, console)
    text = "\n".join(found)
    assert "boom" in text and "undefinedFunction" in text and "1 of 1 images did not load" in text
