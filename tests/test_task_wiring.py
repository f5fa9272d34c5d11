"""Evaluation, training, the pipeline, the CLI and the gate through the task interface
(`tasks.base.Task`): tool use keeps every key, stored row and token id it had before the interface,
and Science Q&A runs single-stage through `harness eval`, `harness train`, `harness run` and the gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.evaluate import EvalRequest, eval_key, evaluate
from harness.generation import Generation, GenerationSettings, decoder_id, render_chat
from harness.hashing import hash_obj, hash_text
from harness.store import Store
from harness.tasks.base import render_messages, teacher_turn
from harness.tasks.registry import get_task
from harness.tasks.tooluse import data as tu
from harness.tasks.tooluse.scorer import SCORER_VERSION
from harness.tasks.tooluse.scorer import score as tooluse_score

SCIENCE = get_task("science")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def _old_tooluse_prompt(rec, arm, template):
    """The prompt string evaluation built for tool use before the task interface."""
    return rec.prompt if arm == "base" else teacher_turn(rec.prompt, rec.demonstration, template)


class Scripted:
    """A backend that answers the gold demonstration for even items and junk for odd ones, and
    records the prompts it was handed."""

    batch_size = 8

    def __init__(self, records):
        self.records, self.seen = records, []

    def generate(self, prompts, settings):
        start = len(self.seen)
        self.seen.extend(prompts)
        return [Generation(self.records[i].demonstration if i % 2 == 0 else "Action: nothing", 10, 3)
                for i in range(start, start + len(prompts))]


# ---------------------------------------------------------------- tool use: nothing changes
@pytest.mark.parametrize("arm,template", [("base", "paper"), ("teacher", "paper"), ("teacher", "code")])
def test_tooluse_eval_key_and_stored_rows_are_those_of_before_the_interface(tmp_path, data_dir, arm, template):
    recs = tu.load_tooluse(data_dir / tu.SPLITS["paper68"]).records[:5]
    settings = GenerationSettings(max_new_tokens=7)
    req = EvalRequest(recs, tu.records_hash(recs), arm, settings, template, "paper68", "float32", device="cpu:0")
    # the key exactly as evaluate.eval_key computed it when tool use was hard-wired
    old_key = Store.eval_key(task="tooluse", arm=arm, model_hash="mh", data_hash=req.data_hash,
                             items=hash_obj([r.item_id for r in recs]), settings=settings.key(),
                             decoder=decoder_id(settings, "hf"), dtype="float32", device="cpu",
                             template=template if arm == "teacher" else None, scorer=SCORER_VERSION)
    assert eval_key(req, "mh") == old_key
    assert eval_key(EvalRequest(recs, req.data_hash, arm, settings, template, "paper68", "float32",
                                task=get_task("tooluse")), "mh") == old_key  # task given as an object
    store = Store(tmp_path / "h.db")
    backend = Scripted(recs)
    res = evaluate(req, store, "mh", "tiny", backend)
    assert res["eval_key"] == old_key
    old_prompts = [_old_tooluse_prompt(r, arm, template) for r in recs]
    assert backend.seen == old_prompts  # the backend gets today's strings, rendered as before
    rows = store.examples(old_key)
    for i, (r, row) in enumerate(zip(recs, rows)):
        s = tooluse_score(row["output"], r.gold_calls)
        assert row["prompt_hash"] == hash_text(old_prompts[i])
        assert row["parsed"] == {"actions": s.pred_actions, "inputs": s.pred_inputs}
        assert {k: v for k, v in row["diagnostics"].items() if k != "gen_s"} == s.diagnostics()
        assert row["score"] == float(s.correct) and row["item_id"] == r.item_id and row["idx"] == i
    assert sum(r["score"] for r in rows) >= 1  # the scripted gold answers score
    ev = store.get_eval(old_key)
    assert ev["task"] == "tooluse" and ev["settings"]["scorer"] == SCORER_VERSION
    assert "demonstrations" not in ev["settings"]
    assert list(ev["summary"])[:7] == ["n", "correct", "accuracy", "ci95", "format_valid", "action_match", "arg_f1"]


def test_tooluse_training_token_ids_are_those_of_before_the_interface(tiny_model_dir, data_dir):
    from transformers import AutoTokenizer

    from harness.train.batches import encode_records

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    recs = tu.load_tooluse(data_dir / tu.SPLITS["paper68"]).records[:6]
    for template in ("paper", "code"):
        ex = encode_records(recs, tok, 8192, 8192, "sdft", template, False, "data")
        for r, e in zip(recs, ex):
            assert e.student_ids == tok(render_chat(tok, r.prompt), add_special_tokens=False)["input_ids"]
            assert e.teacher_ids == tok(render_chat(tok, teacher_turn(r.prompt, r.demonstration, template)),
                                        add_special_tokens=False)["input_ids"]
            assert e.demo_ids == tok(r.demonstration + tok.eos_token, add_special_tokens=False)["input_ids"]


def test_training_keys_keep_tool_use_and_separate_science():
    from harness.train.config import TrainConfig

    cfg = TrainConfig(method="sft", bf16=False, max_steps=3)
    # the key as TrainConfig.key computed it before `task` was a setting
    d = cfg.to_dict()
    for k in ("save_every", "keep_checkpoints", "merge", "drift_every", "task", "top_k",
              "rollout_backend", "vllm_is_cap", "share_rollout_prefill"):  # added since, left out of the key
        d.pop(k)
    assert cfg.key("data", "model") == hash_obj({"config": d, "data": "data", "model": "model"}, n=20)
    sci = TrainConfig(method="sft", bf16=False, max_steps=3, task="science")
    assert sci.key("data", "model") != cfg.key("data", "model")
    assert TrainConfig.from_dict(sci.to_dict()).key("d", "m") == sci.key("d", "m")


def test_science_training_key_follows_the_task_version(monkeypatch):
    from harness.train.config import TrainConfig

    before = TrainConfig(method="sdft", bf16=False, task="science").key("d", "m")
    monkeypatch.setattr(type(SCIENCE), "version", SCIENCE.version + "-changed")
    assert TrainConfig(method="sdft", bf16=False, task="science").key("d", "m") != before


# ---------------------------------------------------------------- science through the interface
def test_science_records_encode_with_the_system_message_and_answer_target(tiny_model_dir, data_dir):
    from transformers import AutoTokenizer

    from harness.train.batches import encode_records

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    recs = SCIENCE.load_split("train_pool", data_dir).records[:3]
    ex = encode_records(recs, tok, 8192, 64, "sft", task="science")
    for r, e in zip(recs, ex):
        assert r.messages[0]["role"] == "system"
        student = render_messages(tok, r.messages)
        assert e.student_ids == tok(student, add_special_tokens=False)["input_ids"]
        teacher = tok.decode(e.teacher_ids)
        assert r.messages[0]["content"] in teacher and r.demonstration in teacher  # system kept, demo shown
        assert tok.decode(e.demo_ids) == f"<answer>\n{r.answer}\n</answer>" + tok.eos_token


def test_hf_backend_renders_messages_like_their_string(tiny_model):
    from harness.generation import HFBackend

    model, tok = tiny_model
    b = HFBackend(model, tok, batch_size=2)
    st = GenerationSettings(max_new_tokens=3)
    as_text = b.generate(["What is 2+2?"], st)
    as_messages = b.generate([[{"role": "user", "content": "What is 2+2?"}]], st)
    assert [(g.text, g.n_prompt_tokens) for g in as_text] == [(g.text, g.n_prompt_tokens) for g in as_messages]
    sys_msgs = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2+2?"}]
    (g,) = b.generate([sys_msgs], st)
    assert g.n_prompt_tokens == len(tok(render_messages(tok, sys_msgs), add_special_tokens=False)["input_ids"])


@pytest.fixture()
def env(tmp_path, tiny_model_dir, data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    return {"db": tmp_path / "h.db", "model": str(tiny_model_dir)}


def test_science_eval_through_the_cli(env, data_dir):
    r = invoke("eval", "science", "--model", env["model"], "--arms", "base,teacher", "--limit", "4",
               "--sample", "stratified", "--max-new-tokens", "4", "--dtype", "float32", "--db", env["db"])
    assert r.exit_code == 0, r.output
    assert "demonstrations: answer-only" in r.output and "valid letter" in r.output
    store = Store(env["db"])
    (run,) = store.list_runs(kind="eval-science")
    assert run["meta"]["task"] == "science" and run["meta"]["demo_policy"] == "answer-only"
    evals = {e["arm"]: e for e in store.run_evals(run["run_id"])}
    assert set(evals) == {"base", "teacher"}
    recs = SCIENCE.subset(SCIENCE.load_split("eval507", data_dir).records, 4, "stratified", 0)
    assert len({r.answer for r in recs}) == 4  # stratified by gold letter: one item per letter
    for arm, e in evals.items():
        ev = store.get_eval(e["eval_key"])
        assert ev["task"] == "science" and ev["settings"]["scorer"] == SCIENCE.version
        assert ev["settings"]["items"] == [x.item_id for x in recs]
        assert {"format_valid", "valid_letter", "has_reasoning"} <= set(ev["summary"])
        rows = store.examples(e["eval_key"])
        for rec, row in zip(recs, rows):
            msgs = SCIENCE.student_prompt(rec) if arm == "base" else SCIENCE.teacher_prompt(rec)
            assert row["prompt_hash"] == hash_obj(msgs)  # system message and user turn, as messages
            assert row["score"] == float(SCIENCE.score(rec, row["output"]).correct)
            assert set(row["diagnostics"]) >= {"valid_letter", "n_answer_tags"}
    # cached: a second run generates nothing
    r = invoke("eval", "science", "--model", env["model"], "--arms", "base", "--limit", "4",
               "--sample", "stratified", "--max-new-tokens", "4", "--dtype", "float32", "--db", env["db"])
    assert r.exit_code == 0, r.output
    base_row = next(line for line in r.output.splitlines() if line.startswith("│ base"))
    assert base_row.rstrip(" │").endswith("yes")  # the 'cached' column
    assert len(store.find_evals()) == 2


@pytest.mark.parametrize("method", ["sft", "sdft"])
def test_science_training_one_step_through_the_cli(env, tmp_path, data_dir, method):
    from harness.train.config import TrainConfig

    out = tmp_path / f"out-{method}"
    r = invoke("train", "--task", "science", "--method", method, "--model", env["model"], "--limit", "4",
               "--batch-size", "2", "--micro-batch-size", "2", "--max-steps", "1", "--warmup-steps", "0",
               "--fp32", "--lora-targets", "q_proj,v_proj", "--max-completion-tokens", "32",
               "--save-every", "1", "-o", out, "--db", env["db"])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "final" / "harness_train.json").read_text())
    assert meta["steps"] == 1 and meta["config"]["task"] == "science"
    recs = SCIENCE.subset(SCIENCE.load_split("train_pool", data_dir).records, 4)
    assert meta["data_hash"] == SCIENCE.records_hash(recs)
    from harness.models import fingerprint

    mh = fingerprint(env["model"])
    assert meta["key"] == TrainConfig.from_dict(meta["config"]).key(meta["data_hash"], mh)
    assert meta["key"] != TrainConfig.from_dict(meta["config"] | {"task": "tooluse"}).key(meta["data_hash"], mh)


SCIENCE_SUITE = """\
name: science-tiny
model: {model}
dtype: float32
threads: 1
task:
  name: science
  train: {{split: train_pool, limit: 4}}
  test: {{split: eval507, limit: 4, sample: stratified}}
  max_new_tokens: 4
  batch_size: 4
seeds: [0]
train:
  lora: true
  lora_targets: [q_proj, v_proj]
  lr: 1.0e-3
  max_steps: 1
  batch_size: 2
  micro_batch_size: 2
  warmup_steps: 0
  bf16: false
  max_completion_tokens: 32
arms:
  base: {{}}
  teacher: {{}}
  sft: {{}}
  sdft:
    train: {{max_completion_tokens: 4}}
selection: {{metric: none}}
"""


def test_a_science_suite_runs_reports_and_gates(env, tmp_path):
    from harness.claims import check_claims
    from harness.results import load

    suite = tmp_path / "suites" / "science-tiny.yaml"
    suite.parent.mkdir()
    suite.write_text(SCIENCE_SUITE.format(model=env["model"]))
    r = invoke("run", suite, "--dry-run", "--db", env["db"])
    assert r.exit_code == 0 and "science test" in r.output, r.output
    r = invoke("run", suite, "--db", env["db"], "--reports", tmp_path / "reports")
    assert r.exit_code == 0, r.output
    store = Store(env["db"])
    (run,) = store.list_runs(kind="suite")
    meta = run["meta"]
    assert meta["task"] == "science" and meta["demonstrations"] == {"train": "answer-only", "test": "answer-only"}
    assert all(set(p["evals"]) == {"science"} for p in meta["points"])
    trained = [p for p in meta["points"] if p["train_key"]]
    assert len(trained) == 2
    for p in trained:
        assert json.loads((Path(p["checkpoint"]) / "harness_train.json").read_text())["config"]["task"] == "science"
    res = load(run["run_id"], store, n_boot=100)
    nt = res.new_task_table().set_index("arm")
    assert res.task == "science" and set(nt.index) == {"base", "teacher", "sft", "sdft"}
    assert (nt["n"] == 4).all()
    claims = {c["id"]: c for c in check_claims(res)}
    assert claims["a"]["paper"] == "no paper number for the science teacher"
    assert "science" in claims["b"]["claim"]
    md = next((tmp_path / "reports").rglob("*.md")).read_text()
    assert "task science (demonstrations: answer-only)" in md
    # the gate on a science run: a stored baseline against a trained checkpoint, measured exactly as
    # the baseline was, so the suite's own evaluation of that checkpoint is reused (nothing generated)
    gate = tmp_path / "gate.yaml"
    gate.write_text("defaults: {inconclusive: pass}\nmetrics:\n  science: {max_drop: 0.5}\n")
    n_evals = len(store.find_evals())
    sft = next(p for p in trained if p["arm"] == "sft")
    r = invoke("gate", "--baseline", f"{run['run_id']}#base", "--candidate", sft["checkpoint"], "--suite", gate,
               "--db", env["db"])
    assert r.exit_code == 0, r.output
    assert "science" in r.output
    assert len(Store(env["db"]).find_evals()) == n_evals
    gate_run = Store(env["db"]).list_runs(kind="gate")
    assert gate_run, "the gate records its run"


def test_suite_task_errors_name_the_key(tmp_path):
    from harness.errors import ConfigError
    from harness.suite import load_suite

    p = tmp_path / "s.yaml"
    p.write_text(SCIENCE_SUITE.format(model="m").replace("name: science", "name: sciense"))
    with pytest.raises(ConfigError, match=r"task\.name: unknown task 'sciense' \(known: science, tooluse\)"):
        load_suite(p)
    p.write_text(SCIENCE_SUITE.format(model="m").replace("  lr: 1.0e-3", "  lr: 1.0e-3\n  task: tooluse"))
    with pytest.raises(ConfigError, match=r"train\.task: the task is set once, in task\.name"):
        load_suite(p)
    p.write_text(SCIENCE_SUITE.format(model="m").replace("  max_new_tokens: 4\n", ""))
    assert load_suite(p).task.max_new_tokens == SCIENCE.default_max_new_tokens == 2048  # the task's own budget


def _pre_interface_tooluse_split(spec, data_dir, where):
    """How `pipeline._load_split` selected a tool-use split before the task interface (the reference
    that the suite's data, and so its training and evaluation keys, must still equal)."""
    from harness.errors import ConfigError

    loaded = tu.load_tooluse(tu.resolve_split(spec.split, data_dir), skip_invalid=spec.skip_invalid)
    records = loaded.records
    if spec.exclude:
        drop = {r.prompt for r in tu.load_tooluse(tu.resolve_split(spec.exclude, data_dir), skip_invalid=True).records}
        records = [r for r in records if r.prompt not in drop]
        if not records:
            raise ConfigError(f"{where}.exclude: removes every item of {spec.split}")
    records = tu.subset(records, spec.limit, spec.sample, spec.seed)
    return tu.LoadResult(records, loaded.skipped, loaded.path, tu.records_hash(records))


@pytest.mark.parametrize("spec", [
    {"split": "regen97", "exclude": "paper68", "limit": 12, "sample": "stratified", "seed": 1},
    {"split": "eval_real", "skip_invalid": True, "limit": 8},
    {"split": "paper68"},
])
def test_suite_data_for_tool_use_is_the_pre_interface_selection(data_dir, spec):
    from harness.pipeline import load_split
    from harness.suite import SplitSpec

    s = SplitSpec(**spec)
    ref = _pre_interface_tooluse_split(s, data_dir, "task.test")
    got = load_split(get_task("tooluse"), s, data_dir, "task.test")
    assert (got.records, got.skipped, got.path, got.data_hash) == (ref.records, ref.skipped, ref.path, ref.data_hash)
