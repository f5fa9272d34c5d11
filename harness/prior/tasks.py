"""lm-eval task configs for the prior-capability suite, generated in Python with absolute paths.

Why generated: lm-eval's built-in tasks read Hugging Face hub datasets. To keep their prompts and
metrics while reading local files, each benchmark becomes a *group* `harness_<benchmark>` whose
`task:` list names the built-in task and overrides `dataset_path: json`, `dataset_name: null`,
`dataset_kwargs.data_files` and the split names (lm-eval merges these over the built-in config; a
bare top-level task of the same name would instead be a new, empty task). YAML cannot expand
variables and relative `data_files` resolve against the current directory, so paths are written
absolute. HumanEval is our own task (the built-in one fetches a metric from the hub): a plain task
whose `process_results` runs completions in `harness.prior.humaneval`'s sandbox.

The same folder of YAMLs serves the in-process evaluation and the standalone `lm_eval` CLI
(`--include_path`), which is what makes the parity test meaningful.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..hashing import hash_file, hash_obj
from ..paths import cache_dir
from .data import Prepared

HUMANEVAL_TASK_VERSION = 1
SHIM_MODULE = "harness_humaneval_utils"


@dataclass(frozen=True)
class BenchmarkSpec:
    """Static facts about one benchmark."""

    name: str
    builtin: str | None          # lm-eval built-in task (None: our own task)
    builtin_dir: str | None      # its folder under lm_eval/tasks (include path, config hash)
    metric: str                  # headline metric as reported (the paper's name)
    lm_metric: str               # lm-eval's key for it, "<metric>,<filter>"
    chance: float | None         # None: computed from the evaluated items
    generate: bool = False       # generate_until (else loglikelihood)
    splits: dict[str, Any] = field(default_factory=dict)  # split overrides for the built-in config
    fewshot_ok: bool = False     # local data has a few-shot split
    in_average: bool = True      # part of the paper's prior average

    @property
    def group(self) -> str:
        return f"harness_{self.name}"

    @property
    def result_key(self) -> str:
        """Where lm-eval reports the headline: the group for MMLU (aggregated over subjects) and
        for our own task, else the built-in subtask."""
        return self.group if self.builtin is None or self.name == "mmlu" else self.builtin


_NO_SPLITS = {"training_split": None, "validation_split": None, "test_split": None, "fewshot_split": None}

BENCHMARKS: dict[str, BenchmarkSpec] = {s.name: s for s in [
    BenchmarkSpec("hellaswag", "hellaswag", "hellaswag", "acc", "acc,none", 0.25,
                  splits=_NO_SPLITS | {"validation_split": "validation"}),
    BenchmarkSpec("truthfulqa_mc1", "truthfulqa_mc1", "truthfulqa", "mc1", "acc,none", None,
                  splits=_NO_SPLITS | {"validation_split": "validation"}),
    BenchmarkSpec("mmlu", "mmlu", "mmlu/default", "acc", "acc,none", 0.25,
                  splits=_NO_SPLITS | {"test_split": "test"}, fewshot_ok=True),
    BenchmarkSpec("ifeval", "ifeval", "ifeval", "inst_level_loose_acc", "inst_level_loose_acc,none", 0.0,
                  generate=True, splits=_NO_SPLITS | {"test_split": "train"}),
    BenchmarkSpec("winogrande", "winogrande", "winogrande", "acc", "acc,none", 0.5,
                  splits=_NO_SPLITS | {"validation_split": "validation"}),
    BenchmarkSpec("humaneval", None, None, "pass@1", "pass@1,none", 0.0, generate=True),
    BenchmarkSpec("arc_easy", "arc_easy", "arc", "acc", "acc,none", 0.25, in_average=False,
                  splits=_NO_SPLITS | {"test_split": "test"}),
    BenchmarkSpec("arc_challenge", "arc_challenge", "arc", "acc", "acc,none", 0.25, in_average=False,
                  splits=_NO_SPLITS | {"test_split": "test"}),
    BenchmarkSpec("gsm8k", "gsm8k", "gsm8k", "exact_match", "exact_match,strict-match", 0.0,
                  generate=True, in_average=False, splits=_NO_SPLITS | {"test_split": "test"}),
]}
PAPER_SIX = ("hellaswag", "truthfulqa_mc1", "mmlu", "ifeval", "winogrande", "humaneval")

# Metrics of the task configs generated below (`_render`): HumanEval's own task, and the MMLU group's
# aggregate over subjects (where its headline is reported).
HUMANEVAL_METRICS = [{"metric": "pass@1", "aggregation": "mean", "higher_is_better": True}]
MMLU_AGGREGATE = [{"metric": "acc", "weight_by_size": True}]

HUMANEVAL_GEN = {"until": ["\nclass", "\ndef", "\n#", "\nif", "\nprint"], "max_gen_toks": 1024,
                 "do_sample": False}


def lm_eval_tasks_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("lm-eval is not installed (pip install lm-eval)")
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


class _TolerantLoader(yaml.SafeLoader):
    """Reads built-in YAMLs without importing their `!function` helpers."""


_TolerantLoader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix}")


def builtin_config(spec: BenchmarkSpec, file: str | None = None) -> dict:
    path = lm_eval_tasks_dir() / spec.builtin_dir / (file or f"{spec.builtin}.yaml")
    return yaml.load(path.read_text(), Loader=_TolerantLoader) or {}


def _read_task_yaml(path: Path) -> dict:
    """A task YAML merged over the YAMLs it `include`s (paths relative to its folder), as lm-eval
    merges them: the including file's keys win."""
    cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_TolerantLoader) or {}
    includes = cfg.pop("include", None) or []
    merged: dict = {}
    for inc in [includes] if isinstance(includes, str) else includes:
        merged.update(_read_task_yaml(path.parent / inc))
    return merged | cfg


@lru_cache(maxsize=None)
def builtin_task_config(name: str) -> dict:
    """The merged config of benchmark `name`'s built-in lm-eval task: the YAML in its folder whose
    `task:` is the built-in task (its file is not always named after it: winogrande's is default.yaml)."""
    spec = BENCHMARKS[name]
    folder = lm_eval_tasks_dir() / spec.builtin_dir
    first = folder / f"{spec.builtin}.yaml"
    for path in [first] + sorted(p for p in folder.glob("*.yaml") if p != first):
        if path.is_file():
            cfg = _read_task_yaml(path)
            if cfg.get("task") == spec.builtin:
                return cfg
    raise ConfigError(f"{folder}: no lm-eval task '{spec.builtin}' here (another lm-eval version?)")


def declared_metrics(spec: BenchmarkSpec) -> list[str]:
    """The results keys '<metric>,<filter>' lm-eval reports at `spec.result_key` for the task the
    harness generates: each metric of the task's `metric_list` under each filter of its
    `filter_list` ('none' without one); for MMLU the group's aggregate. Read from the task configs,
    so a metric the benchmark does not compute is found before any model loads."""
    if spec.builtin is None:
        entries, filters = HUMANEVAL_METRICS, ["none"]
    elif spec.name == "mmlu":
        entries, filters = MMLU_AGGREGATE, ["none"]
    else:
        cfg = builtin_task_config(spec.name)
        entries = cfg.get("metric_list") or []
        filters = [f["name"] for f in cfg.get("filter_list") or []] or ["none"]
    return [f"{e['metric']},{f}" for e in entries for f in filters]


@lru_cache(maxsize=None)
def _builtin_hash(rel_dir: str) -> str:
    """Hash of the built-in task folder (YAMLs and helpers): upstream prompt changes recompute."""
    root = lm_eval_tasks_dir() / rel_dir
    files = sorted(p for p in root.iterdir() if p.is_file() and (p.suffix in (".yaml", ".py") or p.name.endswith("_yaml")))
    return hash_obj({p.name: hash_file(p) for p in files})


@dataclass
class TaskBundle:
    """A generated task folder for one benchmark."""

    benchmark: str
    task_name: str          # what to pass to --tasks / TaskManager.load
    result_key: str         # where the headline metric sits in lm-eval's results
    sample_keys: dict[str, str]  # lm-eval sample key -> data part ('' or MMLU subject)
    folder: Path            # holds the YAML (and the HumanEval shim)
    include_paths: list[Path]   # folder + the built-in task folder
    config_hash: str        # content hash of the config, independent of where files live
    files: list[str]        # file names in `folder` belonging to this benchmark


def generation_kwargs(spec: BenchmarkSpec, settings: dict) -> dict | None:
    """Upstream generation settings (the whole dict: lm-eval's merge is shallow) with the suite's
    `max_gen_toks`; None for log-likelihood tasks."""
    if not spec.generate:
        return None
    base = dict(HUMANEVAL_GEN) if spec.builtin is None else dict(builtin_config(spec).get("generation_kwargs") or {})
    if settings.get("max_gen_toks") is not None:
        base["max_gen_toks"] = int(settings["max_gen_toks"])
    return base


def _task_entry(spec: BenchmarkSpec, task: str, data_files: dict[str, str], settings: dict,
                fewshot_split: str | None = None) -> dict:
    entry = {"task": task, "dataset_path": "json", "dataset_name": None,
             "dataset_kwargs": {"data_files": data_files}, **spec.splits,
             "num_fewshot": int(settings.get("n_shot", 0))}
    if fewshot_split:
        entry["fewshot_split"] = fewshot_split
    gen = generation_kwargs(spec, settings)
    if gen is not None:
        entry["generation_kwargs"] = gen
    return entry


def _render(spec: BenchmarkSpec, prepared: Prepared, settings: dict, path_of) -> tuple[str, dict, str]:
    """Return (yaml text, sample key -> part, result key); `path_of(Path)` renders data paths."""
    n_shot = int(settings.get("n_shot", 0))
    if n_shot and not spec.fewshot_ok:
        raise ConfigError(f"{spec.name}: n_shot {n_shot} needs a few-shot split, and the local data "
                          "has none (only mmlu supports n_shot > 0)")
    if spec.name == "humaneval":
        files = prepared.files[""]
        cfg = {"task": spec.group, "dataset_path": "json", "dataset_name": None,
               "dataset_kwargs": {"data_files": {k: path_of(v) for k, v in files.items()}},
               "test_split": "test", "output_type": "generate_until",
               "doc_to_text": "{{prompt}}", "doc_to_target": "{{test}}\ncheck({{entry_point}})",
               "generation_kwargs": generation_kwargs(spec, settings),
               "process_results": "@@PROCESS_RESULTS@@",
               "metric_list": HUMANEVAL_METRICS,
               "repeats": 1, "num_fewshot": 0,
               "metadata": {"version": HUMANEVAL_TASK_VERSION}}
        text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, width=1000)
        text = text.replace("'@@PROCESS_RESULTS@@'", f"!function {SHIM_MODULE}.process_results")
        return text, {spec.group: ""}, spec.result_key
    members, sample_keys = [], {}
    for part, files in prepared.files.items():
        task = f"mmlu_{part}" if spec.name == "mmlu" else spec.builtin
        data_files = {k: path_of(v) for k, v in files.items()}
        members.append(_task_entry(spec, task, data_files, settings,
                                   fewshot_split="dev" if "dev" in files else None))
        sample_keys[task] = part
    cfg: dict[str, Any] = {"group": spec.group, "task": members}
    if spec.name == "mmlu":
        cfg["aggregate_metric_list"] = MMLU_AGGREGATE
    cfg["metadata"] = {"version": 1}
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, width=1000), sample_keys, spec.result_key


def _shim(settings: dict) -> str:
    sandbox = {"timeout_s": float(settings.get("timeout_s", 10.0)),
               "memory_mb": int(settings.get("memory_mb", 1024))}
    return ('"""Generated by harness.prior.tasks: HumanEval scoring through the harness sandbox."""\n'
            "from harness.prior import humaneval as _he\n\n"
            f"SANDBOX = {json.dumps(sandbox)}\n\n\n"
            "def process_results(doc, results):\n"
            "    return _he.process_results(doc, results, **SANDBOX)\n")


def build(spec: BenchmarkSpec, prepared: Prepared, settings: dict, root: Path | None = None) -> TaskBundle:
    """Write the task folder for one benchmark (content-addressed) and describe it."""
    # the config hash sees data files by name only, so it does not depend on the cache location
    canon, sample_keys, result_key = _render(spec, prepared, settings, lambda p: Path(p).name)
    text, _, _ = _render(spec, prepared, settings, lambda p: str(Path(p).resolve()))
    shim = _shim(settings) if spec.name == "humaneval" else None
    config_hash = hash_obj({
        "yaml": canon, "shim": shim, "builtin": _builtin_hash(spec.builtin_dir) if spec.builtin_dir else None,
        "humaneval_task": HUMANEVAL_TASK_VERSION if spec.name == "humaneval" else None,
        "chat_template": bool(settings.get("chat_template", False)),
    })
    files = {f"{spec.group}.yaml": text}
    if shim:
        files[f"{SHIM_MODULE}.py"] = shim
    base = Path(root) if root else cache_dir() / "prior-tasks"
    folder = base / hash_obj(files)
    if not folder.is_dir():
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=".tasks-"))
        for name, body in files.items():
            (tmp / name).write_text(body, encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    includes = [folder] + ([lm_eval_tasks_dir() / spec.builtin_dir] if spec.builtin_dir else [])
    return TaskBundle(spec.name, spec.group, result_key, sample_keys, folder, includes, config_hash,
                      sorted(files))


def export(task_dirs, out_dir: str | os.PathLike) -> Path:
    """Copy the generated files of several benchmarks (their `task_dir`s) into one folder, for the
    standalone CLI: `lm_eval --include_path <out_dir> --tasks harness_<benchmark>,...`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for d in task_dirs:
        for f in Path(d).iterdir():
            if f.is_file() and f.suffix in (".yaml", ".py"):
                shutil.copyfile(f, out / f.name)
    return out
