"""The prior-suite file (`suites/prior.yaml`): which benchmarks, and per-benchmark settings.

Validated strictly because a typo (`hellaswg`, `nshot`) would otherwise silently change what the
suite measures. Every problem raises one `ConfigError` line naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .tasks import BENCHMARKS

DEFAULT_SUITE = Path(__file__).resolve().parent.parent.parent / "suites" / "prior.yaml"

TOP_KEYS = {"description", "seed", "limit", "batch_size", "benchmarks"}
BENCH_KEYS = {
    "metric": str,          # headline metric (default: the paper's)
    "n_shot": int,          # few-shot examples (0 default; only mmlu has a few-shot split)
    "chat_template": bool,  # apply the tokenizer's chat template (off default)
    "limit": int,           # per-benchmark subset size when no limit is given by the caller
    "max_gen_toks": int,    # generation budget for generate_until tasks
    "timeout_s": (int, float),  # HumanEval sandbox wall-clock limit per program
    "memory_mb": int,       # HumanEval sandbox address-space limit
    "default": bool,        # run when no benchmark list is given
    "in_average": bool,     # part of the prior average
}


@dataclass
class Suite:
    path: Path
    seed: int = 1234
    limit: int | None = None
    batch_size: int | None = None
    benchmarks: dict[str, dict] = field(default_factory=dict)

    @property
    def default_benchmarks(self) -> list[str]:
        return [n for n, s in self.benchmarks.items() if s.get("default", True)]

    def settings(self, name: str) -> dict:
        """Settings for one benchmark; known benchmarks absent from the file get defaults."""
        if name not in BENCHMARKS:
            raise ConfigError(f"{self.path}: unknown benchmark '{name}' "
                              f"(known: {', '.join(BENCHMARKS)})")
        spec = BENCHMARKS[name]
        s = {"metric": spec.metric, "n_shot": 0, "chat_template": False, "in_average": spec.in_average}
        s.update(self.benchmarks.get(name) or {})
        return s


def _check_type(path: Path, key: str, value, kind) -> None:
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, (int, float)))
    if value is not None and not ok:
        raise ConfigError(f"{path}: {key}: expected {getattr(kind, '__name__', 'number')}, got {value!r}")


def _check_metric(path: Path, name: str, metric: str) -> None:
    """A metric the benchmark's lm-eval task does not compute fails here, when the suite is read
    (`--dry-run`, before any model loads), not after the benchmark has run."""
    from .evaluate import lm_metric_key
    from .tasks import declared_metrics

    spec = BENCHMARKS[name]
    declared = declared_metrics(spec)
    if not isinstance(metric, str) or lm_metric_key(name, metric) not in declared:
        known = ([spec.metric] if spec.lm_metric in declared else []) + [k.removesuffix(",none") for k in declared]
        raise ConfigError(f"{path}: benchmarks.{name}.metric: {metric!r} is not a metric of lm-eval's "
                          f"'{spec.builtin or spec.group}' task (known: "
                          f"{', '.join(repr(k) for k in dict.fromkeys(known))})")


def load_suite(path: str | Path | None = None) -> Suite:
    path = Path(path) if path else DEFAULT_SUITE
    if not path.is_file():
        raise ConfigError(f"{path}: suite file not found")
    from ..suite import read_mapping  # UTF-8 checked, duplicate keys and YAML aliases refused

    raw = read_mapping(path)
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}' (allowed: {', '.join(sorted(TOP_KEYS))})")
    _check_type(path, "seed", raw.get("seed"), int)
    _check_type(path, "limit", raw.get("limit"), int)
    _check_type(path, "batch_size", raw.get("batch_size"), int)
    benches = raw.get("benchmarks")
    if not isinstance(benches, dict) or not benches:
        raise ConfigError(f"{path}: 'benchmarks' must map benchmark names to settings")
    out: dict[str, dict] = {}
    for name, settings in benches.items():
        if name not in BENCHMARKS:
            raise ConfigError(f"{path}: benchmarks.{name}: unknown benchmark "
                              f"(known: {', '.join(BENCHMARKS)})")
        settings = settings or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"{path}: benchmarks.{name}: expected a mapping of settings")
        for key, value in settings.items():
            if key not in BENCH_KEYS:
                raise ConfigError(f"{path}: benchmarks.{name}.{key}: unknown setting "
                                  f"(allowed: {', '.join(sorted(BENCH_KEYS))})")
            _check_type(path, f"benchmarks.{name}.{key}", value, BENCH_KEYS[key])
        if settings.get("n_shot") and not BENCHMARKS[name].fewshot_ok:
            raise ConfigError(f"{path}: benchmarks.{name}.n_shot: the local data has no few-shot "
                              "split for this benchmark (only mmlu supports n_shot > 0)")
        if "metric" in settings:
            _check_metric(path, name, settings["metric"])
        out[name] = dict(settings)
    return Suite(path, seed=raw.get("seed", 1234), limit=raw.get("limit"),
                 batch_size=raw.get("batch_size"), benchmarks=out)
