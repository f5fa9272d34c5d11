"""`dtype: auto`: the measured bf16-vs-fp32 probe, its per-machine cache, and that every key,
run record and printed summary carries the concrete dtype it resolved to (never "auto").

The probe's timing is monkeypatched everywhere except one test that only checks the real probe
returns a valid choice (timings on a shared machine are not assertable)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness import precision
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FAST = {"n": 1024, "threads": 1, "fp32_gflops": 77.0, "bf16_gflops": 352.0}   # native bf16 (AVX512-BF16)
SLOW = {"n": 1024, "threads": 1, "fp32_gflops": 60.0, "bf16_gflops": 10.0}    # AVX2 only: emulated bf16


@pytest.fixture()
def probe(tmp_path, monkeypatch):
    """A machine whose measured matmul speeds the test chooses; counts real measurements."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(precision.ENV, raising=False)
    monkeypatch.setattr(precision, "_memo", {})
    state = {"speeds": FAST, "calls": 0}

    def fake_measure(**kw):
        state["calls"] += 1
        return dict(state["speeds"])

    monkeypatch.setattr(precision, "measure", fake_measure)
    return state


def _no_probe(**kw):
    raise AssertionError("the probe must not run here")


def test_auto_is_bfloat16_on_a_fast_bf16_cpu_and_float32_on_a_slow_one(probe, tmp_path, monkeypatch):
    d = precision.resolve_dtype("auto", "cpu")
    assert d.dtype == "bfloat16" and d.requested == "auto" and d.probe["bf16_gflops"] == 352.0
    assert "352 vs fp32 77 GFLOP/s" in d.describe() and d.describe().startswith("bfloat16 (auto: ")
    monkeypatch.setattr(precision, "_memo", {})
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "other"))
    probe["speeds"] = SLOW
    d = precision.resolve_dtype("auto", "cpu")
    assert d.dtype == "float32" and "< 1.5x" in d.reason


def test_a_small_bf16_gain_is_not_enough(probe):
    probe["speeds"] = {"n": 1024, "threads": 1, "fp32_gflops": 100.0, "bf16_gflops": 140.0}
    assert precision.resolve_dtype("auto", "cpu").dtype == "float32"  # 1.4x < MARGIN


def test_cuda_means_bf16_without_a_probe_and_explicit_dtypes_are_honoured(probe, monkeypatch):
    monkeypatch.setattr(precision, "measure", _no_probe)
    assert precision.resolve_dtype("auto", "cuda:1").dtype == "bfloat16"
    assert precision.resolve_dtype("auto", "mps").dtype == "float32"
    for explicit in ("float32", "bfloat16", "bf16-autocast", "float16"):
        d = precision.resolve_dtype(explicit, "cpu")  # no probe even on a fast-bf16 machine
        assert d.dtype == explicit and d.describe() == f"{explicit} (as requested)"
    with pytest.raises(ConfigError, match=r"^--dtype: unknown 'fp8'"):
        precision.check_choice("fp8", "--dtype")


def test_env_override_decides_auto_only(probe, monkeypatch):
    monkeypatch.setattr(precision, "measure", _no_probe)
    monkeypatch.setenv(precision.ENV, "float32")
    assert precision.resolve_dtype("auto", "cpu").reason == "HARNESS_DTYPE=float32"
    assert precision.resolve_dtype("bfloat16", "cpu").dtype == "bfloat16"
    monkeypatch.setenv(precision.ENV, "fast")
    with pytest.raises(ConfigError, match=r"^HARNESS_DTYPE: unknown 'fast'"):
        precision.resolve_dtype("auto", "cpu")


def test_the_probe_is_cached_per_machine_and_a_corrupt_cache_is_measured_again(probe, tmp_path, monkeypatch):
    first = precision.probe_cpu()
    assert probe["calls"] == 1 and first["cached"] is False
    files = list((tmp_path / "cache" / "precision").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["bf16_gflops"] == 352.0
    monkeypatch.setattr(precision, "_memo", {})  # a new process: read from the file
    again = precision.probe_cpu()
    assert probe["calls"] == 1 and again["cached"] is True and again["fp32_gflops"] == 77.0
    for bad in ("{not json", json.dumps({"probe_version": precision.PROBE_VERSION, "fp32_gflops": "x"}), ""):
        files[0].write_text(bad)
        monkeypatch.setattr(precision, "_memo", {})
        calls = probe["calls"]
        rec = precision.probe_cpu()  # never an error: measured again and rewritten
        assert probe["calls"] == calls + 1 and rec["cached"] is False
        assert json.loads(files[0].read_text())["bf16_gflops"] == 352.0
    assert not list(files[0].parent.glob(".probe-*"))  # the atomic write left no temporary file
    # another CPU (different flags) is another machine: its own probe and file
    monkeypatch.setattr(precision, "_memo", {})
    monkeypatch.setattr(precision, "cpu_info", lambda: {"model": "Some CPU", "flags": ["avx2"]})
    precision.probe_cpu()
    assert probe["calls"] == 5 and len(list(files[0].parent.glob("*.json"))) == 2


def test_the_real_probe_returns_a_valid_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    monkeypatch.delenv(precision.ENV, raising=False)
    monkeypatch.setattr(precision, "_memo", {})
    m = precision.measure(n=128)
    assert m["fp32_gflops"] > 0 and m["bf16_gflops"] > 0
    d = precision.resolve_dtype("auto", "cpu")
    assert d.dtype in ("float32", "bfloat16") and set(d.probe["flags"]) <= set(precision.BF16_FLAGS)


def test_training_autocast_auto_resolves_before_the_checkpoint_key(probe, tmp_path, monkeypatch):
    from harness.train.config import TrainConfig

    cfg = TrainConfig(method="sft")
    assert cfg.bf16 is True and cfg.to_dict()["bf16"] is True and "auto" in cfg.precision.describe()
    assert cfg.key("d", "m") == TrainConfig(method="sft", bf16=True).key("d", "m")  # the concrete choice is keyed
    monkeypatch.setattr(precision, "_memo", {})
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "slow"))
    probe["speeds"] = SLOW
    slow = TrainConfig.from_dict({"method": "sft", "bf16": "auto"})
    assert slow.bf16 is False and slow.key("d", "m") != cfg.key("d", "m")
    assert TrainConfig(method="sft", bf16=True).bf16 is True  # explicit wins over the slow probe
    import torch

    monkeypatch.setattr(precision, "measure", _no_probe)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert TrainConfig(method="sft").bf16 is True  # training runs on the GPU: bf16
    with pytest.raises(ConfigError, match=r"^train.bf16: expected true, false or auto, got .yes."):
        TrainConfig(method="sft", bf16="yes")


def test_weights_loaders_refuse_an_unresolved_dtype(tiny_model_dir):
    from harness.evaluate import backend_factory, hf_backend_factory

    with pytest.raises(ValueError, match="not concrete"):
        hf_backend_factory(str(tiny_model_dir), "auto", "cpu", 2)
    with pytest.raises(ValueError, match="not concrete"):
        backend_factory("hf", str(tiny_model_dir), "auto", "cpu", 2)


def test_suites_default_to_auto_and_shipped_cpu_suites_use_it():
    from harness.suite import Suite, load_suite

    s = Suite.model_validate({"name": "x", "model": "m", "arms": {"base": {}},
                              "task": {"train": {"split": "a"}, "test": {"split": "b"}}})
    assert s.dtype == "auto"
    for name in ("quick", "smoke", "ci-tiny"):
        raw = yaml.safe_load((ROOT / "suites" / f"{name}.yaml").read_text())
        assert raw.get("dtype", "auto") == "auto" and raw["train"].get("bf16", "auto") == "auto"
    assert load_suite(ROOT / "suites" / "paper-tooluse.yaml").dtype == "bfloat16"


# --------------------------------------------------------------------------- suite runs and the CLI
def _suite(tmp_path, **top):
    d = yaml.safe_load((ROOT / "suites" / "ci-tiny.yaml").read_text()) | top
    (tmp_path / "suites").mkdir(exist_ok=True)
    shutil.copy(ROOT / "suites" / "prior-quick.yaml", tmp_path / "suites" / "prior-quick.yaml")
    p = tmp_path / "suites" / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


@pytest.fixture()
def env(tmp_path, tiny_model_dir, data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    return {"db": tmp_path / "results" / "h.db", "model": str(tiny_model_dir)}


def test_a_suite_run_keys_everything_by_the_resolved_dtype(probe, tmp_path, env, monkeypatch):
    from harness.evaluate import eval_key
    from harness.hashing import hash_obj
    from harness.models import fingerprint
    from harness.pipeline import SuiteRunner

    runner = SuiteRunner(_suite(tmp_path), env["db"], overrides={"model": env["model"]})
    assert runner.suite.dtype == "bfloat16" and runner.precision.requested == "auto"
    base = next(p for p in runner.points if p.method == "base")
    req = runner.task_request(base, "test")
    assert req.dtype == "bfloat16"
    assert runner.prior_model_hash(env["model"]) == hash_obj([fingerprint(env["model"]), "bfloat16", "merged-adapter"])
    assert all(p.cfg.bf16 is True for p in runner.points if p.cfg is not None)
    meta = runner.precision_meta()
    assert meta["precision"]["dtype"] == "bfloat16" and "352 vs fp32 77" in meta["precision"]["summary"]
    # the same suite on a machine without native bf16: float32, and therefore other keys
    monkeypatch.setattr(precision, "_memo", {})
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "slow-cache"))
    probe["speeds"] = SLOW
    slow = SuiteRunner(_suite(tmp_path), env["db"], overrides={"model": env["model"]})
    slow_req = slow.task_request(next(p for p in slow.points if p.method == "base"), "test")
    assert slow.suite.dtype == "float32" and eval_key(slow_req, "mh") != eval_key(req, "mh")
    assert {p.train_key for p in slow.points if p.cfg}.isdisjoint({p.train_key for p in runner.points if p.cfg})
    # an explicit float32 is honoured on the fast machine
    monkeypatch.setattr(precision, "_memo", {})
    probe["speeds"] = FAST
    explicit = SuiteRunner(_suite(tmp_path, dtype="float32"), env["db"], overrides={"model": env["model"]})
    assert explicit.suite.dtype == "float32" and explicit.precision.describe() == "float32 (as requested)"


def test_dry_run_plan_shows_the_resolved_dtype_and_why(probe, tmp_path, env):
    from harness.cli import app

    r = CliRunner().invoke(app, ["run", str(_suite(tmp_path)), "--dry-run", "--model", env["model"],
                                 "--db", str(env["db"])], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert re.search(r"dtype bfloat16 \(auto: bf16 352 vs fp32 77 GFLOP/s", r.output)
    assert "training bf16 autocast: on, bfloat16 (auto: " in r.output
    assert not env["db"].exists()  # planning writes nothing


def test_eval_tooluse_default_auto_stores_and_prints_the_concrete_dtype(probe, tmp_path, env):
    from harness.cli import app
    from harness.store import Store

    probe["speeds"] = SLOW
    r = CliRunner().invoke(app, ["eval", "tooluse", "--model", env["model"], "--arms", "base", "--limit", "1",
                                 "--max-new-tokens", "2", "--db", str(env["db"])], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "dtype float32 (auto: bf16 10 vs fp32 60 GFLOP/s" in r.output
    store = Store(env["db"])
    (ev,) = store.find_evals()
    assert ev["settings"]["dtype"] == "float32"
    run = store.list_runs(kind="eval-tooluse")[0]
    assert run["config"]["dtype"] == "float32" and run["meta"]["precision"]["requested"] == "auto"


def test_describe_run_prefers_the_recorded_decision():
    assert precision.describe_run({"dtype": "float32"}, {}) == "float32"
    assert precision.describe_run({}, {"precision": {"summary": "bfloat16 (auto: x)"}}) == "bfloat16 (auto: x)"
    assert precision.describe_run({}, {}) == "dtype not recorded"


def test_the_report_header_shows_the_dtype_and_why(tmp_path):
    from fake_suite_run import make_suite_run

    from harness import report
    from harness.store import Store

    store = Store(tmp_path / "h.db")
    rid = make_suite_run(store)
    d = precision.Decision("bfloat16", "auto", "bf16 352 vs fp32 77 GFLOP/s = 4.57x >= 1.5x on X [avx512_bf16]")
    store.update_run_meta(rid, precision=d.to_dict())
    paths = report.render(rid, store, tmp_path / "reports", n_boot=200)
    assert f"dtype {d.describe()}" in paths["markdown"].read_text()
    assert "dtype bfloat16 (auto: bf16 352 vs fp32 77 GFLOP/s" in paths["html"].read_text()


def test_eval_prior_default_auto_keys_the_weights_by_the_concrete_dtype(probe, tmp_path, env):
    from harness.cli import app
    from harness.hashing import hash_obj
    from harness.models import fingerprint
    from harness.store import Store

    shutil.copytree(ROOT / "suites", tmp_path / "suites", dirs_exist_ok=True)
    r = CliRunner().invoke(app, ["eval", "prior", "--model", env["model"], "--suite", "suites/prior-quick.yaml",
                                 "--benchmarks", "winogrande", "--limit", "2", "--db", str(env["db"])],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "dtype bfloat16 (auto: bf16 352 vs fp32 77 GFLOP/s" in r.output
    store = Store(env["db"])
    assert {e["model_hash"] for e in store.find_evals()} == {
        hash_obj([fingerprint(env["model"]), "bfloat16", "merged-adapter"])}
    run = store.list_runs(kind="eval-prior")[0]
    assert run["config"]["dtype"] == "bfloat16" and run["meta"]["precision"]["dtype"] == "bfloat16"
