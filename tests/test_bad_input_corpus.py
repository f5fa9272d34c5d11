"""A corpus of bad input for every CLI verb, run in-process through the CLI's one error edge
(`harness.cli.cli_main`).

Each case asserts: the documented exit code (2 for bad input and usage errors), exactly one stderr
line and that it names the file, record, field or option at fault, and that the file system under
the test's folder (every file's bytes, the results store included) is unchanged. Library progress
bars or warnings printed before the error would break the one-line rule, so they are caught too.

The workspace (`_template`) is built once and copied for each case: bad data files, bad suites
and config files, broken model folders, and results stores of every broken kind next to a good one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from harness.cli import cli_main
from harness.store import Store

from fake_suite_run import make_suite_run  # tests/ is on sys.path under pytest

REPO = Path(__file__).resolve().parents[1]
PRIOR_QUICK = REPO / "suites" / "prior-quick.yaml"
GOOD_RECORD = {"prompt": "Your task is to answer the user's question using available tools.\nQuestion: hi",
               "name": "Axolotl", "description": "axolotl facts", "nl_documentation": "getRandomAxolotlImage: one image",
               "instruction": "Show me an axolotl", "golden_answer": [{"Action": "getRandomAxolotlImage", "Action_Input": "{}"}]}
GATE = REPO / "suites" / "gate.yaml"
SCIENCE_RECORD = {"prompt": [{"role": "system", "content": "Answer with <answer>X</answer>."},
                             {"role": "user", "content": "Which is a noble gas?\n\nA: N2\nB: Ar\nC: O2\nD: H2"}],
                  "answer": "B"}
# A valid suite for the tiny model (the tests pass --model); each bad suite below changes one line.
# It is spelled out here so that edits to suites/*.yaml cannot turn a case into a different one.
GOOD_SUITE = f"""\
name: corpus-tiny
model: tiny-model-folder-given-on-the-command-line
dtype: float32
threads: 1
task:
  name: tooluse
  train: {{split: eval_real, skip_invalid: true, limit: 8}}
  test: {{split: paper68, limit: 3}}
  max_new_tokens: 8
  batch_size: 3
seeds: [0]
train:
  lora: true
  lora_targets: [q_proj, v_proj]
  lr: 1.0e-3
  max_steps: 1
  batch_size: 4
  micro_batch_size: 2
  warmup_steps: 0
  bf16: false
  max_prompt_tokens: 4096
  max_completion_tokens: 200
arms:
  base: {{}}
  teacher: {{}}
  sft: {{}}
  sdft:
    train: {{max_completion_tokens: 8}}
selection: {{metric: none}}
prior:
  suite: {PRIOR_QUICK}
  benchmarks: [winogrande, hellaswag]
  limit: 3
  batch_size: 4
"""


def _suite(**replace: str) -> str:
    """ci-tiny.yaml with whole lines replaced (`old line` -> `new line`)."""
    text = GOOD_SUITE
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def _write(p: Path, content: str | bytes) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")


@pytest.fixture(scope="module")
def _template(tmp_path_factory, tiny_model_dir) -> Path:
    ws = tmp_path_factory.mktemp("corpus-template")
    good = json.dumps([GOOD_RECORD])
    # --- data files
    _write(ws / "data/good.json", good)
    _write(ws / "s/good.yaml", GOOD_SUITE)
    _write(ws / "data/utf16.json", good.encode("utf-16"))
    _write(ws / "data/latin1.json", json.dumps([GOOD_RECORD | {"instruction": "Café"}], ensure_ascii=False).encode("latin-1"))
    _write(ws / "data/nul.json", good.encode("utf-16-le"))
    _write(ws / "data/bad.json", good[:-5])
    _write(ws / "data/notlist.json", "42")
    _write(ws / "data/nofield.json", json.dumps([{k: v for k, v in GOOD_RECORD.items() if k != "golden_answer"}]))
    _write(ws / "data/sci_good.jsonl", "\n".join(json.dumps(SCIENCE_RECORD) for _ in range(1)) + "\n")
    _write(ws / "data/sci_noanswer.jsonl", json.dumps(SCIENCE_RECORD) + "\n"
           + json.dumps({"prompt": SCIENCE_RECORD["prompt"]}) + "\n")
    _write(ws / "data/sci_letter.jsonl", json.dumps(SCIENCE_RECORD | {"answer": "E"}) + "\n")
    # --- suites (ci-tiny.yaml variants)
    _write(ws / "s/dup.yaml", GOOD_SUITE + "seeds: [1]\n")
    _write(ws / "s/alias.yaml", _suite(**{"seeds: [0]": "seeds: &s [0]\nlaughs: [*s, *s]"}))
    _write(ws / "s/list.yaml", "- name: x\n")
    _write(ws / "s/utf16.yaml", GOOD_SUITE.encode("utf-16"))
    _write(ws / "s/latin1.yaml", ("# Café\n" + GOOD_SUITE).encode("latin-1"))
    _write(ws / "s/badyaml.yaml", "name: [unclosed\n")
    _write(ws / "s/unknown_key.yaml", _suite(**{"seeds: [0]": "seeds: [0]\nseedz: [1]"}))
    _write(ws / "s/bad_split.yaml", _suite(**{"test: {split: paper68, limit: 3}": "test: {split: nope, limit: 3}"}))
    _write(ws / "s/neg_limit.yaml", _suite(**{"test: {split: paper68, limit: 3}": "test: {split: paper68, limit: -3}"}))
    _write(ws / "s/bad_dtype.yaml", _suite(**{"dtype: float32": "dtype: float8"}))
    _write(ws / "s/neg_margin.yaml", _suite(**{"seeds: [0]": "seeds: [0]\nclaims: {margins: {c: -0.02}}"}))
    _write(ws / "s/probe_zero.yaml", _suite(**{"seeds: [0]": "seeds: [0]\ndrift_probe: {n_per_source: 0}"}))
    _write(ws / "s/bad_sample.yaml", _suite(**{"test: {split: paper68, limit: 3}":
                                               "test: {split: paper68, limit: 3, sample: random}"}))
    _write(ws / "s/micro3.yaml", _suite(**{"  batch_size: 4": "  batch_size: 3"}))
    _write(ws / "s/few_train.yaml", _suite(**{"train: {split: eval_real, skip_invalid: true, limit: 8}":
                                              "train: {split: eval_real, skip_invalid: true, limit: 2}"}))
    _write(ws / "s/targets_str.yaml", _suite(**{"lora_targets: [q_proj, v_proj]": "lora_targets: q_proj"}))
    _write(ws / "s/threads.yaml", _suite(**{"threads: 1": "threads: -1"}))
    _write(ws / "s/no_model.yaml", _suite(**{"model: tiny-model-folder-given-on-the-command-line": ""}))
    _write(ws / "s/bad_task.yaml", _suite(**{"  name: tooluse": "  name: summarise"}))
    _write(ws / "s/task_in_train.yaml", _suite(**{"  warmup_steps: 0": "  warmup_steps: 0\n  task: science"}))
    _write(ws / "s/tool_demos.yaml", _suite(**{"  batch_size: 3": "  batch_size: 3\n  demonstrations: answer-only"}))
    _write(ws / "s/backend_typo.yaml", _suite(**{"  batch_size: 3": "  batch_size: 3\n  backend: vlm"}))
    _write(ws / "s/backend_vllm.yaml", _suite(**{"  batch_size: 3": "  batch_size: 3\n  backend: vllm"}))
    sci = {"  name: tooluse": "  name: science", "train: {split: eval_real, skip_invalid: true, limit: 8}":
           "train: {split: train_pool, limit: 8}", "test: {split: paper68, limit: 3}": "test: {split: eval507, limit: 3}"}
    _write(ws / "s/sci_noanswer.yaml", _suite(**sci | {"test: {split: paper68, limit: 3}":
                                                      "test: {split: data/sci_noanswer.jsonl}"}))
    _write(ws / "s/sci_letter.yaml", _suite(**sci | {"test: {split: paper68, limit: 3}":
                                                    "test: {split: data/sci_letter.jsonl}"}))
    _write(ws / "s/sci_good.yaml", _suite(**sci))
    _write(ws / "s/sci_demos.yaml", _suite(**sci | {"  batch_size: 3": "  batch_size: 3\n  demonstrations: nope.jsonl"}))
    _write(ws / "s/bad_max_new.yaml", _suite(**{"max_new_tokens: 8": "max_new_tokens: 0"}))
    _write(ws / "s/bad_method.yaml", _suite(**{"  sdft:\n    train: {max_completion_tokens: 8}":
                                              "  sdft:\n    train: {max_completion_tokens: -8}"}))
    _write(ws / "s/empty.yaml", "")
    # LoRA targets the model lacks, in each place a suite sets them (checked against the config's modules)
    _write(ws / "s/lora_arm.yaml", _suite(**{"train: {max_completion_tokens: 8}":
                                            "train: {max_completion_tokens: 8, lora_targets: [q_projj]}"}))
    _write(ws / "s/lora_top.yaml", _suite(**{"lora_targets: [q_proj, v_proj]": "lora_targets: [q_proj, w_pack]"}))
    _write(ws / "s/lora_grid.yaml", _suite(**{"  sft: {}\n": "  sft:\n    grid: {lora_targets: [[q_proj], [qkv]]}\n"}))
    _write(ws / "s/lora_head.yaml", _suite(**{"lora_targets: [q_proj, v_proj]": "lora_targets: [q_proj, lm_head]"}))
    # prior suites naming metrics their lm-eval task does not compute, and one with valid non-default metrics
    _write(ws / "p/metric_typo.yaml", "benchmarks:\n  hellaswag: {metric: acc_nrom}\n")
    _write(ws / "p/metric_filter.yaml", "benchmarks:\n  hellaswag: {}\n  gsm8k: {metric: 'exact_match,strict_match', default: false}\n")
    _write(ws / "p/metric_mc2.yaml", "benchmarks:\n  truthfulqa_mc1: {metric: mc2}\n")
    _write(ws / "p/metric_ok.yaml", "benchmarks:\n  hellaswag: {metric: acc_norm}\n  winogrande: {}\n"
                                    "  gsm8k: {metric: 'exact_match,flexible-extract', default: false}\n")
    _write(ws / "s/prior_metric.yaml", _suite(**{f"suite: {PRIOR_QUICK}": "suite: p/metric_typo.yaml"}))
    _write(ws / "s/prior_ok.yaml", _suite(**{f"suite: {PRIOR_QUICK}": "suite: p/metric_ok.yaml"}))
    # --- train --config files
    _write(ws / "c/dup.yaml", "lr: 1.0e-4\nlr: 2.0e-4\n")
    _write(ws / "c/utf16.yaml", "lr: 1.0e-4\n".encode("utf-16"))
    _write(ws / "c/list.yaml", "- lr\n")
    _write(ws / "c/unknown.yaml", "learning_rate: 1.0e-4\n")
    _write(ws / "c/lr_str.yaml", "lr: fast\n")
    _write(ws / "c/targets_str.yaml", "lora_targets: q_proj\n")
    _write(ws / "c/badyaml.yaml", "lr: {\n")
    _write(ws / "c/alias.yaml", "a: &x 1\nlr: *x\n")
    _write(ws / "c/dup.json", '{"lr": 0.001, "lr": 0.002}')
    _write(ws / "c/targets_bad.yaml", "lora_targets: [q_proj, w_pack]\n")
    # --- broken model folders
    shutil.copytree(tiny_model_dir, ws / "m/garbage")
    for f in (ws / "m/garbage").glob("*.safetensors"):
        f.write_bytes(b"\x00garbage" * 10)
    shutil.copytree(tiny_model_dir, ws / "m/notok")
    for f in (ws / "m/notok").glob("tokenizer*"):
        f.unlink()
    shutil.copytree(tiny_model_dir, ws / "m/badconfig")
    (ws / "m/badconfig/config.json").write_text("{not json")
    _write(ws / "m/noconfig/README.md", "no model here")
    # models the shared rollout prefill would get wrong (train-mode dropout; logits scaled after the head)
    for name, extra in (("dropout", {"attention_dropout": 0.1}), ("logitscale", {"logit_scale": 0.5})):
        shutil.copytree(tiny_model_dir, ws / f"m/{name}")
        cfg = json.loads((ws / f"m/{name}/config.json").read_text())
        (ws / f"m/{name}/config.json").write_text(json.dumps(cfg | extra))
    _write(ws / "m/badadapter/adapter_config.json", "{not json")
    # --- results stores
    store = Store(ws / "h.db")
    # ids chosen for the lookups under test; "../../escape" is an id no harness command creates,
    # as a shared store written by something else might hold
    for rid in ("20260101-suite-aaa1", "20260101-suite-aaa2", "../../escape"):
        old = make_suite_run(store, n_tool=8, n_val=4, n_prior=8)
        for table in ("runs", "run_evals"):
            store.conn.execute(f"UPDATE {table} SET run_id=? WHERE run_id=?", (rid, old))
    store.new_run("eval-tooluse", name="plain", run_id="evalrun_1")
    store.close()
    _write(ws / "empty.db", b"")
    _write(ws / "text.db", "not a database\n")
    (ws / "dbdir.db").mkdir()
    newer = sqlite3.connect(ws / "newer.db")
    newer.executescript("CREATE TABLE runs(run_id TEXT); PRAGMA user_version=99;")
    newer.close()
    other = sqlite3.connect(ws / "notharness.db")
    other.execute("CREATE TABLE t(x)")
    other.close()
    # --- gate inputs
    _write(ws / "g/bad.yaml", "metrics: [\n")
    _write(ws / "g/nometrics.yaml", "format: harness-gate/1\nname: x\n")
    _write(ws / "g/baseline_bad.json", "{\"format\": ")
    _write(ws / "g/baseline_list.json", "[1, 2]")
    # --- plain things in the way
    _write(ws / "a_file", "just a file\n")
    (ws / "outdir").mkdir()
    return ws


def _snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# (id, argv, exit code, text the one stderr line must contain). {ws}: the case's workspace,
# {tiny}: the tiny model folder, {data}: the shared datasets folder.
T = ["--model", "{tiny}"]
TOOL = ["eval", "tooluse", *T, "--arms", "base", "--limit", "1", "--max-new-tokens", "2"]
PRIOR = ["eval", "prior", *T, "--suite", str(PRIOR_QUICK), "--benchmarks", "hellaswag", "--limit", "2"]
TRAIN = ["train", *T, "--method", "sft", "-o", "{ws}/out", "--split", "{ws}/data/good.json"]
RUN = ["run", "--dry-run", "--model", "{tiny}"]
HDB = ["--db", "{ws}/h.db"]
SCI = ["eval", "science", *T, "--arms", "base", "--limit", "1", "--max-new-tokens", "2"]
SCI_TRAIN = ["train", *T, "--task", "science", "--method", "sft", "-o", "{ws}/out"]
SDFT_ONE = ["train", "--method", "sdft", "-o", "{ws}/out", "--split", "{ws}/data/good.json", "--batch-size", "1",
            "--micro-batch-size", "1"]  # good.json holds one record
CASES = [
    # ---- usage errors (vendored click exceptions)
    ("usage-no-args", [], 2, "harness: missing command"),
    ("usage-bad-option", ["--lmit"], 2, "No such option: --lmit"),
    ("usage-bad-command", ["evl"], 2, "No such command 'evl'"),
    ("usage-eval-alone", ["eval"], 2, "harness eval: missing command"),
    ("usage-results-alone", ["results"], 2, "harness results: missing command"),
    ("usage-models-alone", ["models"], 2, "harness models: missing command"),
    ("usage-data-alone", ["data"], 2, "harness data: missing command"),
    ("usage-models-typo", ["models", "lst"], 2, "No such command 'lst'"),
    ("usage-eval-typo", ["eval", "toolus"], 2, "No such command 'toolus'"),
    # ---- eval tooluse
    ("tool-limit-abc", [*TOOL, "--limit", "abc"], 2, "Invalid value for '--limit'"),
    ("tool-limit-0", [*TOOL, "--limit", "0"], 2, "--limit must be positive"),
    ("tool-limit-neg", [*TOOL, "--limit", "-3"], 2, "--limit must be positive"),
    ("tool-batch-0", [*TOOL, "--batch-size", "0"], 2, "--batch-size must be positive"),
    ("tool-max-new-0", [*TOOL, "--max-new-tokens", "0"], 2, "--max-new-tokens must be positive"),
    ("tool-max-new-abc", [*TOOL, "--max-new-tokens", "abc"], 2, "Invalid value for '--max-new-tokens'"),
    ("tool-dtype", [*TOOL, "--dtype", "float8"], 2, "float8"),
    ("tool-arm", [*TOOL, "--arms", "base,oracle"], 2, "unknown arm 'oracle'"),
    ("tool-utf16", [*TOOL, "--split", "{ws}/data/utf16.json"], 2, "utf16.json: tool-use data file is UTF-16"),
    ("tool-latin1", [*TOOL, "--split", "{ws}/data/latin1.json"], 2, "latin1.json: tool-use data file is not UTF-8"),
    ("tool-nul", [*TOOL, "--split", "{ws}/data/nul.json"], 2, "nul.json: tool-use data file contains NUL bytes"),
    ("tool-badjson", [*TOOL, "--split", "{ws}/data/bad.json"], 2, "bad.json: not valid JSON"),
    ("tool-notlist", [*TOOL, "--split", "{ws}/data/notlist.json"], 2, "notlist.json"),
    ("tool-nofield", [*TOOL, "--split", "{ws}/data/nofield.json"], 2, "nofield.json, record"),
    ("tool-missing-file", [*TOOL, "--split", "{ws}/data/nope.json"], 2, "nope.json"),
    ("tool-strict", [*TOOL, "--split", "eval_real"], 2, "Action_Input is not JSON"),
    ("tool-data-dir", [*TOOL, "--data-dir", "{ws}/nope"], 2, "nope: data directory not found"),
    ("tool-template", [*TOOL, "--arms", "teacher", "--teacher-template", "{prompt} only"], 2, "{demonstration}"),
    ("tool-backend", [*TOOL, "--backend", "tgi"], 2, "unknown backend 'tgi'"),
    ("tool-device", [*TOOL, "--device", "gpu0"], 2, "device 'gpu0'"),
    ("tool-alias", [*TOOL, "--model", "no-such-alias"], 2, "unknown model 'no-such-alias'"),
    ("tool-model-noconfig", [*TOOL, "--model", "{ws}/m/noconfig"], 2, "m/noconfig: folder has no config.json"),
    ("tool-model-garbage", [*TOOL, "--model", "{ws}/m/garbage"], 2, "model.safetensors: not a readable safetensors file"),
    ("tool-model-badadapter", [*TOOL, "--model", "{ws}/m/badadapter"], 2, "adapter_config.json: not valid JSON"),
    ("tool-model-notok", [*TOOL, "--model", "{ws}/m/notok"], 2, "cannot load tokenizer"),
    ("tool-model-badconfig", [*TOOL, "--model", "{ws}/m/badconfig"], 2, "config.json: cannot load the model config"),
    ("tool-model-file", [*TOOL, "--model", "{ws}/a_file"], 2, "a_file: not a model folder"),
    ("tool-threads-neg", [*TOOL, "--threads", "-1"], 2, "--threads must be positive"),
    ("tool-threads-0", [*TOOL, "--threads", "0"], 2, "--threads must be positive"),
    ("tool-db-empty", [*TOOL, "--db", "{ws}/empty.db"], 2, "empty.db: an empty file"),
    ("tool-db-dir", [*TOOL, "--db", "{ws}/dbdir.db"], 2, "dbdir.db: results store path is a folder"),
    ("tool-db-text", [*TOOL, "--db", "{ws}/text.db"], 2, "text.db: not an SQLite database"),
    ("tool-db-newer", [*TOOL, "--db", "{ws}/newer.db"], 2, "newer.db: results store has schema version 99"),
    ("tool-db-under-file", [*TOOL, "--db", "{ws}/a_file/h.db"], 2, "a_file/h.db: cannot create the results store: "),
    ("tool-bad-option", [*TOOL, "--modle", "x"], 2, "No such option: --modle"),
    ("tool-arms-twice", [*TOOL, "--arms", "base,base"], 2, "--arms: arm 'base' is listed twice"),
    ("tool-limit-over", [*TOOL, "--split", "{ws}/data/good.json", "--limit", "2"], 2, "--limit 2: "),
    ("tool-demonstrations", [*TOOL, "--demonstrations", "answer-only"], 2,
     "--demonstrations: tool use takes its demonstrations from the data file"),
    # ---- eval science
    ("sci-no-answer", [*SCI, "--split", "{ws}/data/sci_noanswer.jsonl"], 2,
     "sci_noanswer.jsonl, record line 2, field 'answer': missing"),
    ("sci-letter", [*SCI, "--split", "{ws}/data/sci_letter.jsonl"], 2,
     "sci_letter.jsonl, record line 1, field 'answer': 'E' is not among the option letters A, B, C, D"),
    ("sci-missing-file", [*SCI, "--split", "{ws}/data/nope.jsonl"], 2, "nope.jsonl: science data file not found"),
    ("sci-demos-missing", [*SCI, "--demonstrations", "{ws}/nope.jsonl"], 2, "nope.jsonl: demonstrations file not found"),
    ("sci-sample", [*SCI, "--sample", "random"], 2, "--sample: unknown sample 'random'"),
    ("sci-limit-over", [*SCI, "--split", "{ws}/data/sci_good.jsonl", "--limit", "2"], 2, "--limit 2: "),
    # ---- eval prior
    ("prior-suite-missing", ["eval", "prior", *T, "--suite", "{ws}/nope.yaml"], 2, "nope.yaml"),
    ("prior-bench-typo", [*PRIOR, "--benchmarks", "hellaswag,mmlu_typo"], 2, "mmlu_typo"),
    ("prior-device", [*PRIOR, "--device", "gpu0"], 2, "device 'gpu0'"),
    ("prior-limit-0", [*PRIOR, "--limit", "0"], 2, "--limit must be positive"),
    ("prior-limit-abc", [*PRIOR, "--limit", "abc"], 2, "Invalid value for '--limit'"),
    ("prior-batch-0", [*PRIOR, "--batch-size", "0"], 2, "--batch-size must be positive"),
    ("prior-threads-neg", [*PRIOR, "--threads", "-1"], 2, "--threads must be positive"),
    ("prior-model-garbage", [*PRIOR, "--model", "{ws}/m/garbage"], 2, "not a readable safetensors file"),
    ("prior-model-notok", [*PRIOR, "--model", "{ws}/m/notok"], 2, "cannot load tokenizer"),
    ("prior-model-alias", [*PRIOR, "--model", "no-such-alias"], 2, "unknown model 'no-such-alias'"),
    ("prior-db-empty", [*PRIOR, "--db", "{ws}/empty.db"], 2, "empty.db: an empty file"),
    ("prior-db-newer", [*PRIOR, "--db", "{ws}/newer.db"], 2, "schema version 99"),
    ("prior-metric-typo", [*PRIOR, "--suite", "{ws}/p/metric_typo.yaml"], 2,
     "p/metric_typo.yaml: benchmarks.hellaswag.metric: 'acc_nrom' is not a metric of lm-eval's 'hellaswag' task "
     "(known: 'acc', 'acc_norm')"),
    ("prior-metric-no-filter", [*PRIOR, "--suite", "{ws}/p/metric_filter.yaml"], 2,
     "p/metric_filter.yaml: benchmarks.gsm8k.metric: 'exact_match,strict_match' is not a metric of lm-eval's "
     "'gsm8k' task (known: 'exact_match', 'exact_match,strict-match', 'exact_match,flexible-extract')"),
    ("prior-metric-other-task", [*PRIOR, "--suite", "{ws}/p/metric_mc2.yaml"], 2,
     "p/metric_mc2.yaml: benchmarks.truthfulqa_mc1.metric: 'mc2' is not a metric"),
    # ---- train
    ("train-method", [*TRAIN, "--method", "dpo"], 2, "train.method: unknown method 'dpo'"),
    ("train-divergence", [*TRAIN, "--divergence", "tv"], 2, "unknown divergence"),
    ("train-config-dup", [*TRAIN, "--config", "{ws}/c/dup.yaml"], 2, "dup.yaml: not valid YAML/JSON (line 2): duplicate key 'lr'"),
    ("train-config-dup-json", [*TRAIN, "--config", "{ws}/c/dup.json"], 2, "dup.json: duplicate key 'lr'"),
    ("train-config-utf16", [*TRAIN, "--config", "{ws}/c/utf16.yaml"], 2, "utf16.yaml: config file is UTF-16"),
    ("train-config-list", [*TRAIN, "--config", "{ws}/c/list.yaml"], 2, "list.yaml: expected a mapping"),
    ("train-config-unknown", [*TRAIN, "--config", "{ws}/c/unknown.yaml"], 2,
     "c/unknown.yaml: learning_rate: unknown training setting"),
    ("train-config-lr-str", [*TRAIN, "--config", "{ws}/c/lr_str.yaml"], 2,
     "c/lr_str.yaml: lr: expected a number, got 'fast'"),
    ("train-config-targets-str", [*TRAIN, "--config", "{ws}/c/targets_str.yaml"], 2,
     "c/targets_str.yaml: lora_targets: expected a list of strings"),
    ("train-config-badyaml", [*TRAIN, "--config", "{ws}/c/badyaml.yaml"], 2, "badyaml.yaml: not valid YAML/JSON"),
    ("train-config-alias", [*TRAIN, "--config", "{ws}/c/alias.yaml"], 2, "alias.yaml: not valid YAML/JSON (line 2): alias *x is not allowed"),
    ("train-config-missing", [*TRAIN, "--config", "{ws}/c/nope.yaml"], 2, "nope.yaml: file not found"),
    ("train-threads-neg", [*TRAIN, "--threads", "-1"], 2, "--threads must be positive"),
    ("train-task", [*TRAIN, "--task", "summarise"], 2, "--task: unknown task 'summarise'"),
    ("train-sci-no-answer", [*SCI_TRAIN, "--split", "{ws}/data/sci_noanswer.jsonl"], 2,
     "sci_noanswer.jsonl, record line 2, field 'answer': missing"),
    ("train-sci-letter", [*SCI_TRAIN, "--split", "{ws}/data/sci_letter.jsonl"], 2,
     "sci_letter.jsonl, record line 1, field 'answer': 'E' is not among the option letters"),
    ("train-tool-demonstrations", [*TRAIN, "--demonstrations", "output_text"], 2,
     "--demonstrations: tool use takes its demonstrations"),
    ("train-sdft-dropout-model", [*SDFT_ONE, "--model", "{ws}/m/dropout"], 2,
     "train.share_rollout_prefill: the model has dropout or train-mode noise (attention_dropout)"),
    ("train-sdft-logitscale-model", [*SDFT_ONE, "--model", "{ws}/m/logitscale"], 2,
     "train.share_rollout_prefill: the model scales its logits after the head (logit_scale)"),
    ("train-utf16", [*TRAIN, "--split", "{ws}/data/utf16.json"], 2, "utf16.json: tool-use data file is UTF-16"),
    ("train-latin1", [*TRAIN, "--split", "{ws}/data/latin1.json"], 2, "latin1.json: tool-use data file is not UTF-8"),
    ("train-limit-0", [*TRAIN, "--limit", "0"], 2, "--limit must be positive"),
    ("train-lr-abc", [*TRAIN, "--lr", "abc"], 2, "Invalid value for '--lr'"),
    ("train-no-output", ["train", *T], 2, "Missing option '--output-dir'"),
    ("train-strict", [*TRAIN, "--split", "eval_real"], 2, "Action_Input is not JSON"),
    ("train-out-under-file", [*TRAIN, "-o", "{ws}/a_file/out"], 2, "a_file is a file, expected a folder"),
    ("train-out-is-file", [*TRAIN, "-o", "{ws}/a_file"], 2, "--output-dir"),
    ("train-lora-target-flag", [*TRAIN, "--lora-targets", "q_proj,qkv"], 2,
     "--lora-targets: module 'qkv' not in the model (has: down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj"),
    ("train-lora-target-config", [*TRAIN, "--config", "{ws}/c/targets_bad.yaml"], 2,
     "c/targets_bad.yaml: lora_targets: module 'w_pack' not in the model"),
    ("train-lora-lm-head", [*TRAIN, "--lora-targets", "lm_head"], 2, "--lora-targets: 'lm_head' is not supported"),
    # ---- run (suites)
    ("run-missing", [*RUN, "{ws}/s/nope.yaml"], 2, "nope.yaml: file not found"),
    ("run-dup", [*RUN, "{ws}/s/dup.yaml"], 2, "dup.yaml: not valid YAML/JSON"),
    ("run-alias", [*RUN, "{ws}/s/alias.yaml"], 2, "alias.yaml: not valid YAML/JSON"),
    ("run-list", [*RUN, "{ws}/s/list.yaml"], 2, "list.yaml: expected a mapping"),
    ("run-utf16", [*RUN, "{ws}/s/utf16.yaml"], 2, "utf16.yaml: config file is UTF-16"),
    ("run-latin1", [*RUN, "{ws}/s/latin1.yaml"], 2, "latin1.yaml: config file is not UTF-8"),
    ("run-badyaml", [*RUN, "{ws}/s/badyaml.yaml"], 2, "badyaml.yaml: not valid YAML/JSON"),
    ("run-empty", [*RUN, "{ws}/s/empty.yaml"], 2, "empty.yaml: expected a mapping"),
    ("run-unknown-key", [*RUN, "{ws}/s/unknown_key.yaml"], 2, "seedz"),
    ("run-bad-split", [*RUN, "{ws}/s/bad_split.yaml"], 2, "nope"),
    ("run-neg-limit", [*RUN, "{ws}/s/neg_limit.yaml"], 2, "limit"),
    ("run-neg-margin", [*RUN, "{ws}/s/neg_margin.yaml"], 2, "claims.margins: margin for 'c' must be positive"),
    ("run-probe-zero", [*RUN, "{ws}/s/probe_zero.yaml"], 2, "drift_probe.n_per_source"),
    ("run-bad-sample", [*RUN, "{ws}/s/bad_sample.yaml"], 2, "task.test.sample"),
    ("run-batch-not-multiple", [*RUN, "{ws}/s/micro3.yaml"], 2,
     "train.batch_size: 3 is not a multiple of micro_batch_size 2"),
    ("run-fewer-records-than-a-batch", [*RUN, "{ws}/s/few_train.yaml"], 2, "task.train: 2 training records, fewer"),
    ("run-targets-str", [*RUN, "{ws}/s/targets_str.yaml"], 2, "train.lora_targets: expected a list of strings"),
    ("run-bad-dtype", [*RUN, "{ws}/s/bad_dtype.yaml"], 2, "dtype"),
    ("run-threads", [*RUN, "{ws}/s/threads.yaml"], 2, "threads"),
    ("run-bad-task", [*RUN, "{ws}/s/bad_task.yaml"], 2,
     "bad_task.yaml: task.name: unknown task 'summarise' (known: science, tooluse)"),
    ("run-task-in-train", [*RUN, "{ws}/s/task_in_train.yaml"], 2,
     "task_in_train.yaml: train.task: the task is set once, in task.name"),
    ("run-backend-typo", [*RUN, "{ws}/s/backend_typo.yaml"], 2, "backend_typo.yaml: task.backend"),
    ("run-tool-demonstrations", [*RUN, "{ws}/s/tool_demos.yaml"], 2,
     "task.demonstrations: tool use takes its demonstrations from the data file"),
    ("run-sci-no-answer", [*RUN, "{ws}/s/sci_noanswer.yaml"], 2,
     "sci_noanswer.jsonl, record line 2, field 'answer': missing"),
    ("run-sci-letter", [*RUN, "{ws}/s/sci_letter.yaml"], 2,
     "sci_letter.jsonl, record line 1, field 'answer': 'E' is not among the option letters A, B, C, D"),
    ("run-sci-demos", [*RUN, "{ws}/s/sci_demos.yaml"], 2, "nope.jsonl: demonstrations file not found"),
    ("run-max-new", [*RUN, "{ws}/s/bad_max_new.yaml"], 2, "max_new_tokens"),
    ("run-sdft-train", [*RUN, "{ws}/s/bad_method.yaml"], 2, "max_completion_tokens"),
    ("run-lora-arm", [*RUN, "{ws}/s/lora_arm.yaml"], 2,
     "lora_arm.yaml: arms.sdft.train.lora_targets: module 'q_projj' not in the model (has: down_proj, "),
    ("run-lora-top", [*RUN, "{ws}/s/lora_top.yaml"], 2, "lora_top.yaml: train.lora_targets: module 'w_pack'"),
    ("run-lora-grid", [*RUN, "{ws}/s/lora_grid.yaml"], 2, "lora_grid.yaml: arms.sft.grid.lora_targets: module 'qkv'"),
    ("run-lora-lm-head", [*RUN, "{ws}/s/lora_head.yaml"], 2, "lora_head.yaml: train.lora_targets: 'lm_head'"),
    ("run-lora-no-dry-run", ["run", "{ws}/s/lora_arm.yaml", "--model", "{tiny}"], 2,
     "arms.sdft.train.lora_targets: module 'q_projj'"),
    ("run-prior-metric", [*RUN, "{ws}/s/prior_metric.yaml"], 2,
     "p/metric_typo.yaml: benchmarks.hellaswag.metric: 'acc_nrom'"),
    ("run-prior-metric-no-dry-run", ["run", "{ws}/s/prior_metric.yaml", "--model", "{tiny}"], 2,
     "benchmarks.hellaswag.metric: 'acc_nrom'"),
    ("run-model-alias", ["run", "--dry-run", "--model", "no-such-alias", "{ws}/s/good.yaml"], 2, "no-such-alias"),
    ("run-data-dir", [*RUN, "{ws}/s/good.yaml", "--data-dir", "{ws}/nope"], 2, "nope: data directory not found"),
    ("run-db-empty", [*RUN, "{ws}/s/good.yaml", "--db", "{ws}/empty.db"], 2, "empty.db: an empty file"),
    # ---- plan (power planning: reads the suite and the store, writes nothing)
    ("plan-missing", ["plan", "{ws}/s/nope.yaml"], 2, "nope.yaml: file not found"),
    ("plan-target-big", ["plan", "{ws}/s/good.yaml", "--model", "{tiny}", "--target-mde", "5"], 2, "--target-mde"),
    ("plan-target-abc", ["plan", "{ws}/s/good.yaml", "--target-mde", "abc"], 2, "--target-mde"),
    ("plan-db-empty", ["plan", "{ws}/s/good.yaml", "--model", "{tiny}", "--db", "{ws}/empty.db"], 2,
     "empty.db: an empty file"),
    ("plan-lora", ["plan", "{ws}/s/lora_top.yaml", "--model", "{tiny}"], 2, "train.lora_targets: module 'w_pack'"),
    ("plan-prior-metric", ["plan", "{ws}/s/prior_metric.yaml", "--model", "{tiny}"], 2,
     "benchmarks.hellaswag.metric: 'acc_nrom'"),
    ("run-db-dir", [*RUN, "{ws}/s/good.yaml", "--db", "{ws}/dbdir.db"], 2, "dbdir.db: results store path is a folder"),
    ("run-db-newer", [*RUN, "{ws}/s/good.yaml", "--db", "{ws}/newer.db"], 2, "schema version 99"),
    ("run-db-notharness", [*RUN, "{ws}/s/good.yaml", "--db", "{ws}/notharness.db"], 2, "no 'runs' table"),
    ("run-no-suite", ["run"], 2, "Missing argument 'suite'"),
    ("run-reports-under-file", ["run", "{ws}/s/good.yaml", "--model", "{tiny}", "--reports", "{ws}/a_file/r"], 2,
     "--reports"),
    # ---- report
    ("report-empty-id", ["report", "", *HDB], 2, "empty run id"),
    ("report-percent", ["report", "%", *HDB], 2, "no run '%'"),
    ("report-underscore", ["report", "_", *HDB], 2, "no run '_'"),
    ("report-like-pattern", ["report", "2026%aaa1", *HDB], 2, "no run '2026%aaa1'"),
    ("report-ambiguous", ["report", "20260101-suite-aaa", *HDB], 2, "prefix '20260101-suite-aaa' is ambiguous"),
    ("report-nosuch", ["report", "nosuch", *HDB], 2, "no run 'nosuch'"),
    ("report-unsafe-id", ["report", "../../escape", *HDB], 2, "'../../escape' is not a safe file name"),
    ("report-not-suite", ["report", "evalrun_1", *HDB], 2, "is a 'eval-tooluse' run, not a suite run"),
    ("report-db-empty", ["report", "x", "--db", "{ws}/empty.db"], 2, "empty.db: an empty file"),
    ("report-db-text", ["report", "x", "--db", "{ws}/text.db"], 2, "text.db: not an SQLite database"),
    ("report-db-newer", ["report", "x", "--db", "{ws}/newer.db"], 2, "schema version 99"),
    ("report-db-missing", ["report", "x", "--db", "{ws}/nope.db"], 2, "nope.db: results store not found"),
    ("report-db-notharness", ["report", "x", "--db", "{ws}/notharness.db"], 2, "no 'runs' table"),
    ("report-db-dir", ["report", "x", "--db", "{ws}/dbdir.db"], 2, "results store path is a folder"),
    ("report-out-file", ["report", "20260101-suite-aaa1", *HDB, "--out", "{ws}/a_file"], 2,
     "--out {ws}/a_file: {ws}/a_file is a file, expected a folder"),
    # ---- claims
    ("claims-empty-id", ["claims", "", *HDB], 2, "empty run id"),
    ("claims-percent", ["claims", "%", *HDB], 2, "no run '%'"),
    ("claims-ambiguous", ["claims", "20260101-suite-aaa", *HDB], 2, "is ambiguous"),
    ("claims-not-suite", ["claims", "evalrun_1", *HDB], 2, "not a suite run"),
    ("claims-db-empty", ["claims", "x", "--db", "{ws}/empty.db"], 2, "empty.db: an empty file"),
    ("claims-db-newer", ["claims", "x", "--db", "{ws}/newer.db"], 2, "schema version 99"),
    ("claims-db-missing", ["claims", "x", "--db", "{ws}/nope.db"], 2, "nope.db: results store not found"),
    ("claims-no-arg", ["claims"], 2, "Missing argument 'run'"),
    # ---- results show / export / baseline
    ("show-nosuch", ["results", "show", "nosuch", *HDB], 2, "no run 'nosuch'"),
    ("show-percent", ["results", "show", "%", *HDB], 2, "no run '%'"),
    ("show-underscore-like", ["results", "show", "evalrun%", *HDB], 2, "no run 'evalrun%'"),
    ("show-empty-id", ["results", "show", " ", *HDB], 2, "empty run id"),
    ("show-db-empty", ["results", "show", "--db", "{ws}/empty.db"], 2, "empty.db: an empty file"),
    ("show-db-newer", ["results", "show", "--db", "{ws}/newer.db"], 2, "schema version 99"),
    ("show-db-dir", ["results", "show", "--db", "{ws}/dbdir.db"], 2, "results store path is a folder"),
    ("show-db-missing", ["results", "show", "--db", "{ws}/nope.db"], 2, "nope.db: results store not found"),
    ("export-to-dir", ["results", "export", "evalrun_1", "-o", "{ws}/outdir", *HDB], 2, "outdir: is a folder"),
    ("export-under-file", ["results", "export", "evalrun_1", "-o", "{ws}/a_file/x.json", *HDB], 2, "a_file/x.json"),
    ("export-nosuch", ["results", "export", "nosuch", "-o", "{ws}/x.json", *HDB], 2, "no run 'nosuch'"),
    ("export-no-out", ["results", "export", "evalrun_1", *HDB], 2, "Missing option '--out'"),
    ("export-db-empty", ["results", "export", "x", "-o", "{ws}/x.json", "--db", "{ws}/empty.db"], 2, "an empty file"),
    ("baseline-nosuch", ["results", "baseline", "nosuch", "-o", "{ws}/b.json", *HDB], 2, "nosuch"),
    ("baseline-label", ["results", "baseline", "20260101-suite-aaa1#nolabel", "-o", "{ws}/b.json", *HDB], 2,
     "no evaluation with arm or label 'nolabel'"),
    ("baseline-db-empty", ["results", "baseline", "x", "-o", "{ws}/b.json", "--db", "{ws}/empty.db"], 2, "an empty file"),
    ("baseline-no-out", ["results", "baseline", "x", *HDB], 2, "Missing option '--out'"),
    # ---- gate (bad input is exit 2, never 1: 1 means a regression)
    ("gate-suite-missing", ["gate", "--baseline", "{ws}/g/baseline_bad.json", "--candidate", "x",
                            "--suite", "{ws}/g/nope.yaml", *HDB], 2, "nope.yaml"),
    ("gate-suite-badyaml", ["gate", "--baseline", "20260101-suite-aaa1", "--candidate", "20260101-suite-aaa2",
                            "--suite", "{ws}/g/bad.yaml", *HDB], 2, "bad.yaml"),
    ("gate-suite-nometrics", ["gate", "--baseline", "20260101-suite-aaa1", "--candidate", "20260101-suite-aaa2",
                              "--suite", "{ws}/g/nometrics.yaml", *HDB], 2, "nometrics.yaml"),
    ("gate-baseline-badjson", ["gate", "--baseline", "{ws}/g/baseline_bad.json", "--candidate", "20260101-suite-aaa2",
                               "--suite", str(GATE), *HDB], 2, "baseline_bad.json: not valid JSON"),
    ("gate-baseline-list", ["gate", "--baseline", "{ws}/g/baseline_list.json", "--candidate", "20260101-suite-aaa2",
                            "--suite", str(GATE), *HDB], 2, "baseline_list.json"),
    ("gate-baseline-missing", ["gate", "--baseline", "{ws}/g/nope.json", "--candidate", "20260101-suite-aaa2",
                               "--suite", str(GATE), *HDB], 2, "nope.json"),
    ("gate-no-candidate", ["gate", "--baseline", "x"], 2, "Missing option '--candidate'"),
    ("gate-db-empty", ["gate", "--baseline", "20260101-suite-aaa1", "--candidate", "20260101-suite-aaa2",
                       "--suite", str(GATE), "--db", "{ws}/empty.db"], 2, "empty.db: an empty file"),
    ("gate-db-newer", ["gate", "--baseline", "20260101-suite-aaa1", "--candidate", "20260101-suite-aaa2",
                       "--suite", str(GATE), "--db", "{ws}/newer.db"], 2, "newer.db: results store has schema version 99"),
    ("gate-markdown-dir", ["gate", "--baseline", "20260101-suite-aaa1", "--candidate", "20260101-suite-aaa2",
                           "--suite", str(GATE), *HDB, "--markdown", "{ws}/g"], 2, "--markdown"),
    ("gate-junit-under-file", ["gate", "--baseline", "20260101-suite-aaa1", "--candidate", "20260101-suite-aaa2",
                               "--suite", str(GATE), *HDB, "--junit", "{ws}/a_file/x.xml"], 2, "--junit"),
    # ---- models
    ("models-pull-unknown", ["models", "pull", "gpt-5"], 2, "unknown model alias 'gpt-5'"),
    ("models-pull-no-arg", ["models", "pull"], 2, "Missing argument 'alias'"),
    ("models-list-extra", ["models", "list", "extra"], 2, "Got unexpected extra argument"),
    # ---- data check
    ("data-utf16", ["data", "check", "{ws}/data/utf16.json"], 2, "utf16.json: tool-use data file is UTF-16"),
    ("data-latin1", ["data", "check", "{ws}/data/latin1.json"], 2, "latin1.json: tool-use data file is not UTF-8 (byte 0xe9"),
    ("data-nul", ["data", "check", "{ws}/data/nul.json"], 2, "nul.json: tool-use data file contains NUL bytes"),
    ("data-badjson", ["data", "check", "{ws}/data/bad.json"], 2, "bad.json: not valid JSON"),
    ("data-missing", ["data", "check", "{ws}/data/nope.json"], 2, "nope.json"),
    ("data-dir", ["data", "check", "paper68", "--data-dir", "{ws}/nope"], 2, "nope: data directory not found"),
    ("data-strict", ["data", "check", "eval_real"], 2, "Action_Input is not JSON"),
    ("data-nofield", ["data", "check", "{ws}/data/nofield.json"], 2, "nofield.json, record"),
    ("data-notlist", ["data", "check", "{ws}/data/notlist.json"], 2, "notlist.json"),
]
if importlib.util.find_spec("vllm") is None:  # where vLLM is installed, `backend: vllm` is valid
    CASES.append(("run-backend-vllm-missing", [*RUN, "{ws}/s/backend_vllm.yaml"], 2,
                  "backend_vllm.yaml: task.backend: backend 'vllm' requested but vllm is not installed"))


def test_the_corpus_is_large_and_covers_every_verb():
    verbs = {" ".join(a for a in argv[:2] if not a.startswith("-") and "{" not in a and "/" not in a)
             for _, argv, _, _ in CASES if argv}
    for v in ("run", "plan", "eval tooluse", "eval science", "eval prior", "train", "report", "claims", "results show",
              "results export", "results baseline", "gate", "models pull", "data check"):
        assert any(x.startswith(v) for x in verbs), v
    assert len(CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("argv,code,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(argv, code, needle, _template, tiny_model_dir, data_dir, tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    shutil.copytree(_template, ws)
    monkeypatch.chdir(ws)
    monkeypatch.setenv("HARNESS_DB", str(ws / "h.db"))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    argv = [a.replace("{ws}", str(ws)).replace("{tiny}", str(tiny_model_dir)) for a in argv]
    needle = needle.replace("{ws}", str(ws))
    before = _snapshot(tmp_path)
    capsys.readouterr()
    rc = cli_main(argv)
    err = capsys.readouterr().err
    lines = err.splitlines()  # blank lines count: nothing but the error line may reach stderr
    assert rc == code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0], err
    assert "internal error" not in lines[0], err  # a bug's catch-all line is not a diagnosis
    assert _snapshot(tmp_path) == before


# Controls: the valid inputs the cases above each spoil in one place are accepted.
CONTROLS = [
    ("run-dry-run", [*RUN, "{ws}/s/good.yaml"], "steps will run"),
    ("run-dry-run-lora-checked", [*RUN, "{ws}/s/good.yaml"], "LoRA targets: checked against the module names of"),
    ("run-dry-run-prior-metrics", [*RUN, "{ws}/s/prior_ok.yaml"], "steps will run"),
    ("data-check", ["data", "check", "{ws}/data/good.json"], "1 records"),
    ("eval-tooluse", [*TOOL, "--split", "{ws}/data/good.json", "--db", "{ws}/new.db"], "stored in"),
    ("eval-science", [*SCI, "--split", "{ws}/data/sci_good.jsonl", "--db", "{ws}/new.db"], "stored in"),
    ("run-dry-run-science", [*RUN, "{ws}/s/sci_good.yaml"], "steps will run"),
    ("results-show", ["results", "show", "evalrun_1", *HDB], "evalrun_1"),
]


@pytest.mark.parametrize("argv,needle", [c[1:] for c in CONTROLS], ids=[c[0] for c in CONTROLS])
def test_controls(argv, needle, _template, tiny_model_dir, data_dir, tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    shutil.copytree(_template, ws)
    monkeypatch.chdir(ws)
    monkeypatch.setenv("HARNESS_DB", str(ws / "h.db"))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_dir))
    argv = [a.replace("{ws}", str(ws)).replace("{tiny}", str(tiny_model_dir)) for a in argv]
    capsys.readouterr()
    rc = cli_main(argv)
    out = capsys.readouterr()
    assert rc == 0 and needle in out.out, out.err
    assert "error:" not in out.err
