"""`harness run` on the ci-tiny suite with a tiny random model: plan, caching, partial recompute,
resume of an interrupted evaluation, and suite validation errors."""

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import ConfigError
from harness.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "ci-tiny.yaml"


def write_suite(tmp_path, mutate=None, name="s.yaml"):
    d = yaml.safe_load(SUITE.read_text())
    if mutate:
        mutate(d)
    (tmp_path / "suites").mkdir(exist_ok=True)
    for f in ("prior-quick.yaml",):
        shutil.copy(ROOT / "suites" / f, tmp_path / "suites" / f)
    p = tmp_path / "suites" / name
    p.write_text(yaml.safe_dump(d))
    return p


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def env(tmp_path, tiny_model_dir, data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    return {"db": tmp_path / "results" / "h.db", "model": str(tiny_model_dir)}


def test_run_then_cached_rerun_then_partial_recompute(tmp_path, env):
    suite = write_suite(tmp_path)
    common = ["--model", env["model"], "--db", env["db"], "--reports", tmp_path / "reports"]
    r = invoke("run", suite, "--dry-run", *common)
    assert "prior 0.25" in r.output  # fresh store: the stated prior variance, said so
    import re

    m = re.search(r"(\d+) of (\d+) steps will run", r.output)
    assert r.exit_code == 0 and m and m.group(1) == m.group(2)  # fresh store: everything runs
    r = invoke("run", suite, *common)
    assert r.exit_code == 0, r.output
    assert "report:" in r.output and (tmp_path / "reports").is_dir()
    assert re.search(r"dtype (bfloat16|float32) \(auto: ", r.output)  # the summary says what auto chose
    if "GFLOP/s" in r.output:  # a CPU probe: its flags are printed literally (not eaten as rich markup)
        assert re.search(r"GFLOP/s = [\d.]+x .* on .*\[[^\]]+\]\)", r.output), r.output
    from harness.store import Store

    store = Store(env["db"])
    n_evals = len(store.find_evals())
    n_trained = len(list((tmp_path / "results" / "checkpoints").iterdir()))
    assert n_trained == 3  # two SFT grid points and one SDFT point
    # skip_invalid: true is never silent: the run and every trained checkpoint list the dropped records
    skipped = store.list_runs(kind="suite")[0]["meta"]["skipped"]
    assert list(skipped) == ["train"] and len(skipped["train"]) == 4
    assert all("CurrencyBeacon" in s["record"] and s["file"].endswith("eval_real.json") for s in skipped["train"])
    import json

    for ck in (tmp_path / "results" / "checkpoints").iterdir():
        assert len(json.loads((ck / "final" / "harness_train.json").read_text())["skipped"]) == 4
    # every trained point has its general-text drift measured (KL to base > 0) and the claim uses it
    run_meta = store.list_runs(kind="suite")[0]["meta"]
    # the manifest validates against the one schema; a validation evaluation is linked under its `evals` name
    from harness.manifest import SuiteManifest, link_label, read_manifest

    first = store.list_runs(kind="suite")[0]
    manifest = read_manifest(first)
    assert isinstance(manifest, SuiteManifest) and manifest.task == "tooluse" and manifest.wall_s > 0
    links = {(e["label"], e["eval_key"]) for e in store.run_evals(first["run_id"])}
    val_links = [(link_label(p.point, "tooluse-val"), p.evals["tooluse-val"]) for p in manifest.points
                 if "tooluse-val" in p.evals]
    assert val_links and all(v in links for v in val_links)
    for pt in run_meta["points"]:
        key = pt["evals"].get("probe/general-kl")
        assert (key is not None) == (pt["train_key"] is not None), pt["point"]
        if key:
            ev = store.get_eval(key)
            assert ev["summary"]["n"] == 4 and ev["summary"]["value"] > 0
    from harness.claims import check_claims
    from harness.results import load

    drift = {c["id"]: c for c in check_claims(load(run_meta and store.list_runs(kind="suite")[0]["run_id"],
                                                   store, n_boot=200))}["c-drift"]
    assert drift["verdict"] != "not measured" and drift["n"] == 4
    # unchanged suite: everything cached, nothing new computed
    r = invoke("run", suite, "--dry-run", *common)
    assert "0 of" in r.output
    # power planning: before any run the variances are stated priors; now the run's own are used
    assert "minimum detectable effect" in r.output
    r = invoke("plan", suite, "--target-mde", "0.05", "--model", env["model"], "--db", env["db"])
    assert r.exit_code == 0, r.output
    rows = [l for l in r.output.splitlines() if l.startswith("│ ")]
    assert [l.split("│")[1].strip() for l in rows] == ["b", "c", "c-mc", "c-drift"]
    assert all("previous run" in l for l in rows), r.output
    r = invoke("run", suite, *common)
    assert r.exit_code == 0 and len(store.find_evals()) == n_evals
    # change one arm's setting: only that arm (training + its evaluations) recomputes
    suite2 = write_suite(tmp_path, lambda d: d["arms"]["sdft"]["train"].update(ema_alpha=0.5), name="s2.yaml")
    r = invoke("run", suite2, "--dry-run", *common)
    lines = [l for l in r.output.splitlines() if "will run" in l and "│" in l]
    assert lines and all("sdft" in l for l in lines)
    r = invoke("run", suite2, *common)
    assert r.exit_code == 0
    assert len(list((tmp_path / "results" / "checkpoints").iterdir())) == 4
    runs = store.list_runs(kind="suite")
    meta = runs[-1]["meta"]
    sel = {p["point"]: p["selected"] for p in meta["points"]}
    assert sum(v for k, v in sel.items() if k.startswith("sft/")) == 1  # best-by-validation per arm


def test_interrupted_evaluation_resumes_missing_items_only(tmp_path, tiny_model_dir, data_dir):
    from harness.evaluate import EvalRequest, evaluate, hf_backend_factory
    from harness.generation import GenerationSettings
    from harness.store import Store
    from harness.tasks.tooluse import data as tu

    loaded = tu.load_tooluse(data_dir / tu.SPLITS["paper68"])
    recs = loaded.records[:6]
    req = EvalRequest(recs, "h", "base", GenerationSettings(max_new_tokens=4))
    store = Store(tmp_path / "h.db")
    real = hf_backend_factory(str(tiny_model_dir), "float32", "cpu", 2)()
    calls = []

    class Dying:
        def generate(self, prompts, settings):
            calls.append(len(prompts))
            if len(calls) == 2:
                raise KeyboardInterrupt  # killed during the second chunk
            return real.generate(prompts, settings)

    with pytest.raises(KeyboardInterrupt):
        evaluate(req, store, "mh", "tiny", Dying(), chunk=2)
    key = next(iter(store.find_evals()))["eval_key"]
    assert store.get_eval(key) is None and len(store.done_items(key)) == 2  # nothing marked complete
    seen = []

    class Counting:
        def generate(self, prompts, settings):
            seen.extend(prompts)
            return real.generate(prompts, settings)

    res = evaluate(req, store, "mh", "tiny", Counting(), chunk=2)
    assert len(seen) == 4 and res["n"] == 6 and not res["cached"]
    # the summary describes all 6 items, not only the 4 generated after the resume
    rows = store.examples(res["eval_key"])
    assert res["resumed_items"] == 2 and res["gen_tokens"] == sum(r["tokens"] for r in rows) > 0
    assert res["wall_s"] >= sum(r["diagnostics"]["gen_s"] for r in rows) > 0
    again = evaluate(req, store, "mh", "tiny", Counting(), chunk=2)
    assert again["cached"] and len(seen) == 4


def test_generation_batches_are_as_large_as_the_backend_batch_size(tmp_path, tiny_model_dir, data_dir):
    from harness.evaluate import EvalRequest, evaluate, hf_backend_factory
    from harness.generation import GenerationSettings
    from harness.store import Store
    from harness.tasks.tooluse import data as tu

    recs = tu.load_tooluse(data_dir / tu.SPLITS["paper68"]).records[:13]
    factory = hf_backend_factory(str(tiny_model_dir), "float32", "cpu", 10)
    sizes = []
    real = factory.__call__

    def counting():
        backend = real()
        inner = backend.generate

        class Wrapped:
            def generate(self, prompts, settings):
                sizes.append(len(prompts))
                return inner(prompts, settings)
        return Wrapped()

    counting.batch_size = factory.batch_size
    evaluate(EvalRequest(recs, "h", "base", GenerationSettings(max_new_tokens=2)), Store(tmp_path / "h.db"),
             "mh", "tiny", counting)
    # the backend gets COMMIT_BATCHES batches per call (it decodes at most 10 rows at once and
    # refills freed slots from the rest of the call), so 13 items are one call here
    assert sizes == [13]
    sizes.clear()
    evaluate(EvalRequest(recs, "h2", "base", GenerationSettings(max_new_tokens=2)), Store(tmp_path / "h.db"),
             "mh", "tiny", counting, chunk=5)
    assert sizes == [5, 5, 3]

def test_a_new_decoder_version_recomputes_instead_of_reusing_cached_outputs(tmp_path, tiny_model_dir, data_dir,
                                                                             monkeypatch):
    from harness import generation
    from harness.evaluate import EvalRequest, evaluate, hf_backend_factory
    from harness.store import Store
    from harness.tasks.tooluse import data as tu

    recs = tu.load_tooluse(data_dir / tu.SPLITS["paper68"]).records[:2]
    req = EvalRequest(recs, "h", "base", generation.GenerationSettings(max_new_tokens=3))
    store = Store(tmp_path / "h.db")
    backend = hf_backend_factory(str(tiny_model_dir), "float32", "cpu", 2)()
    first = evaluate(req, store, "mh", "tiny", backend)
    assert store.get_eval(first["eval_key"])["settings"]["decoder"] == f"hf.greedy-pruned/{generation.DECODER_VERSION}"
    monkeypatch.setattr(generation, "DECODER_VERSION", generation.DECODER_VERSION + 1)
    second = evaluate(req, store, "mh", "tiny", backend)
    assert not second["cached"] and second["eval_key"] != first["eval_key"]
    monkeypatch.undo()
    assert evaluate(req, store, "mh", "tiny", backend)["cached"]
    sampled = EvalRequest(recs, "h", "base", generation.GenerationSettings(max_new_tokens=3, temperature=0.7))
    assert generation.decoder_id(sampled.settings).startswith("hf.sample-generate/")


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["arms"].update(dpo={}), "arms.dpo: unknown arm 'dpo'"),
    (lambda d: d["arms"]["sft"]["grid"].update(lrr=[1]), "arms.sft.grid.lrr: unknown training setting"),
    (lambda d: d["arms"]["sft"]["grid"].update(lr=[]), "grid 'lr' must be a non-empty list"),
    (lambda d: d["arms"]["sdft"]["train"].update(divergence="tv"), "arms.sdft.train.divergence: unknown divergence"),
    # the error names the block the key was written in, with the expected type
    (lambda d: d["train"].update(lrr=1), ": train.lrr: unknown training setting"),
    (lambda d: d["train"].update(lr="fast"), ": train.lr: expected a number, got 'fast'"),
    (lambda d: d["arms"]["sdft"]["train"].update(lora_targets="q_proj"),
     "arms.sdft.train.lora_targets: expected a list of strings, got 'q_proj'"),
    (lambda d: d["arms"]["sft"]["grid"].update(max_steps=[1.5]), "arms.sft.grid.max_steps: expected an integer or null"),
    (lambda d: d["train"].update(bf16="no"), ": train.bf16: expected true, false or auto, got 'no'"),
    (lambda d: d.pop("task") and None or d.update(task={"train": {"split": "eval_real"}, "test": {"split": "paper68"}})
     or d["task"].update(validation=None), "task.validation: a grid needs a validation split"),
    (lambda d: d["prior"].update(benchmarks=["hellaswg"]), "prior.benchmarks: unknown benchmark 'hellaswg'"),
    (lambda d: d.update(seeds=[]), "seeds: at least one seed"),
    (lambda d: d["task"].update(tset=1), "task.tset: unknown key"),
])
def test_suite_errors_name_the_key(tmp_path, mutate, message):
    p = write_suite(tmp_path, mutate)
    with pytest.raises(ConfigError) as e:
        load_suite(p)
    assert message in str(e.value) and str(p) in str(e.value)


def test_shipped_suites_validate():
    for name in ("quick", "smoke", "ci-tiny", "paper-tooluse"):
        s = load_suite(ROOT / "suites" / f"{name}.yaml")
        assert set(s.arms) >= {"base", "teacher", "sft", "sdft"}
        assert (ROOT / "suites" / f"{name}.yaml").read_text().startswith("# harness run suites/")
    paper = load_suite(ROOT / "suites" / "paper-tooluse.yaml")
    assert paper.seeds == [0, 1, 2] and len(paper.arms["sdft"].grid["lr"]) == 3


def test_bad_input_exits_2_and_writes_nothing(tmp_path, env):
    p = write_suite(tmp_path, lambda d: d["arms"].update(dpo={}))
    r = CliRunner().invoke(app, ["run", str(p), "--db", str(env["db"])])
    assert r.exit_code != 0
    assert not env["db"].exists()
    from harness.cli import run as cli_run
    import subprocess, sys

    out = subprocess.run([sys.executable, "-m", "harness.cli", "report", "nope", "--db", str(tmp_path / "x.db")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "not found" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "reports").exists()


def test_a_suite_device_that_is_not_there_fails_before_the_run_row_but_still_plans(tmp_path, env):
    from harness.errors import ModelError
    from harness.pipeline import SuiteRunner
    from harness.store import Store

    p = write_suite(tmp_path, lambda d: d.update(device="cuda:99"))
    runner = SuiteRunner(p, env["db"], overrides={"model": env["model"]})
    assert runner.plan()  # planning a GPU suite on any machine works
    with pytest.raises(ModelError, match=r"^device 'cuda:99': (CUDA is not available|only \d+ CUDA device)"):
        runner.run()
    assert Store(env["db"]).list_runs() == []
