"""harness.claims: verdict rules, and verdicts on fabricated runs whose answer is planted."""

from __future__ import annotations

import io
import math

import pytest
from fake_suite_run import make_suite_run
from rich.console import Console

from harness.claims import (CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, SUPPORTED, band_verdict, check_claims,
                            claims_command, claims_table, sign_verdict)
from harness.errors import StoreError
from harness.results import load
from harness.store import Store

NAN = math.nan


@pytest.mark.parametrize("lo,hi,verdict", [
    (0.01, 0.2, SUPPORTED), (-0.2, -0.01, CONTRADICTED), (-0.1, 0.1, INCONCLUSIVE),
    (0.0, 0.1, INCONCLUSIVE), (-0.1, 0.0, INCONCLUSIVE), (NAN, NAN, NOT_MEASURED)])
def test_sign_verdict(lo, hi, verdict):
    assert sign_verdict(lo, hi) == verdict


@pytest.mark.parametrize("ratio,lo,hi,claim,verdict", [
    (2.5, 2.2, 2.8, 2.5, SUPPORTED),          # inside [1.67, 3.75]
    (2.5, NAN, NAN, 2.5, SUPPORTED),          # no interval: the point decides
    (1.2, 1.0, 1.5, 2.5, CONTRADICTED),       # entirely below the band
    (9.0, 7.0, 11.0, 4.0, CONTRADICTED),      # entirely above [2.67, 6]
    (2.7, 2.2, 3.2, 4.0, INCONCLUSIVE),       # straddles the lower edge 2.67
    (1.5, NAN, NAN, 2.5, CONTRADICTED),
    (NAN, NAN, NAN, 2.5, NOT_MEASURED)])
def test_band_verdict(ratio, lo, hi, claim, verdict):
    assert band_verdict(ratio, lo, hi, claim) == verdict


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "h.db")
    yield s
    s.close()


def verdicts(store, **kw) -> dict[str, dict]:
    rid = make_suite_run(store, **kw)
    return {r["id"]: r for r in check_claims(load(rid, store, n_boot=2000))}


def test_planted_supported(store):
    v = verdicts(store, n_tool=300, n_prior=200, acc={"base": 0.4, "teacher": 0.9, "sft": 0.55, "sdft": 0.75},
                 prior_drop={"sft": 0.10, "sdft": 0.0})
    assert {k: r["verdict"] for k, r in v.items()} == {
        "a": SUPPORTED, "b": SUPPORTED, "c": SUPPORTED, "d-flops": SUPPORTED, "d-wall": SUPPORTED}
    assert v["a"]["measured"] == pytest.approx(0.5) and v["a"]["test"].startswith("exact McNemar")
    assert v["b"]["measured"] == pytest.approx(0.20) and v["b"]["lo"] > 0
    assert v["c"]["measured"] == pytest.approx(0.10, abs=0.01)
    assert v["d-flops"]["measured"] == pytest.approx(2.5, rel=0.05)
    assert "paper, Qwen2.5-7B-Instruct" in v["b"]["paper"]


def test_planted_contradicted(store):
    v = verdicts(store, n_tool=300, n_prior=200, acc={"base": 0.6, "teacher": 0.2, "sft": 0.7, "sdft": 0.4},
                 prior_drop={"sft": 0.0, "sdft": 0.15},
                 cost={"sft": {"train_wall_s": 100.0, "flops": 1e14},
                       "sdft": {"train_wall_s": 100.0, "flops": 1e15}})
    assert {k: r["verdict"] for k, r in v.items()} == {
        "a": CONTRADICTED, "b": CONTRADICTED, "c": CONTRADICTED, "d-flops": CONTRADICTED, "d-wall": CONTRADICTED}
    assert v["b"]["hi"] < 0 and v["c"]["hi"] < 0


def test_planted_inconclusive(store):
    # 20 items, 5-point differences; SDFT wall-clock ~2.67x with seed noise straddles the band edge
    v = verdicts(store, n_tool=20, n_prior=20, seeds=(0, 1, 2), jitter=1,
                 acc={"base": 0.40, "teacher": 0.45, "sft": 0.50, "sdft": 0.55},
                 prior_drop={"sft": 0.05, "sdft": 0.0}, benchmarks=("hellaswag", "winogrande"),
                 cost={"sft": {"train_wall_s": 100.0, "flops": 1e14},
                       "sdft": {"train_wall_s": 267.0, "flops": 2.5e14}})
    for k in ("a", "b", "c", "d-wall"):
        assert v[k]["verdict"] == INCONCLUSIVE, (k, v[k])
    assert v["d-wall"]["lo"] < 4.0 / 1.5 < v["d-wall"]["hi"]


def test_not_measured_when_pieces_missing(store):
    v = verdicts(store, benchmarks=(), with_teacher=False, n_tool=20, n_val=6,
                 cost={"sft": {}, "sdft": {}})
    assert v["a"]["verdict"] == NOT_MEASURED and "teacher" in v["a"]["note"]
    assert v["c"]["verdict"] == NOT_MEASURED and "no prior benchmarks" in v["c"]["note"]
    assert v["d-flops"]["verdict"] == NOT_MEASURED
    assert v["b"]["verdict"] in (SUPPORTED, INCONCLUSIVE, CONTRADICTED)


def test_claims_table_and_command(store):
    rid = make_suite_run(store, n_tool=30, n_prior=30)
    rows = check_claims(load(rid, store, n_boot=500))
    buf = io.StringIO()
    Console(file=buf, width=220).print(claims_table(rows))
    out = buf.getvalue()
    assert "(a) teacher" in out and "(d-wall)" in out and "paper, Qwen2.5-7B-Instruct" in out
    buf = io.StringIO()
    assert claims_command(rid, store, Console(file=buf, width=220)) == 0
    assert "verdict rules" in buf.getvalue()
    with pytest.raises(StoreError):
        claims_command("nope", store, Console(file=io.StringIO()))
