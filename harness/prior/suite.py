"""The prior-suite file (`suites/prior.yaml`): which benchmarks, and per-benchmark settings.

Validated strictly (`harness.config_schema`) because a typo (`hellaswg`, `nshot`) would otherwise
silently change what the suite measures. Every problem raises one `ConfigError` line naming the
file and the key path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, ValidationError, field_validator

from ..config_schema import Section, Strict, config_error, typed
from ..errors import ConfigError
from .tasks import BENCHMARKS

DEFAULT_SUITE = Path(__file__).resolve().parent.parent.parent / "suites" / "prior.yaml"


# Every setting may be written as null (= unset); values are checked, never converted.
_Int, _Number, _Str, _Bool = (typed(k, "none") for k in ("int", "float", "str", "bool"))


class BenchSettings(Section):
    """One benchmark's settings as written; unset ones take the benchmark's defaults (`Suite.settings`)."""

    unknown_key: ClassVar[str] = "unknown setting"
    mapping_of: ClassVar[str] = "a mapping of settings"
    metric: _Str = None             # headline metric (default: the paper's)
    n_shot: _Int = None             # few-shot examples (0 default; only mmlu has a few-shot split)
    chat_template: _Bool = None     # apply the tokenizer's chat template (off default)
    limit: _Int = None              # per-benchmark subset size when no limit is given by the caller
    max_gen_toks: _Int = None       # generation budget for generate_until tasks
    timeout_s: _Number = None       # HumanEval sandbox wall-clock limit per program
    memory_mb: _Int = None          # HumanEval sandbox address-space limit
    default: _Bool = None           # run when no benchmark list is given
    in_average: _Bool = None        # part of the prior average


def _known_benchmark(name: str) -> str:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark (known: {', '.join(BENCHMARKS)})")
    return name


class PriorFile(Strict):
    """The file's schema; `load_suite` turns it into a `Suite`."""

    description: Any = None
    seed: _Int = 1234
    limit: _Int = None
    batch_size: _Int = None
    benchmarks: dict[Annotated[str, AfterValidator(_known_benchmark)], BenchSettings] = Field(
        None, validate_default=True)

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _benchmarks(cls, v: Any) -> dict:
        if not isinstance(v, dict) or not v:
            raise ValueError("must map benchmark names to settings")
        return v


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
    try:
        doc = PriorFile.model_validate(raw)
    except ValidationError as e:
        raise config_error(e, PriorFile, file=path) from None
    out: dict[str, dict] = {}
    for name in doc.benchmarks:
        settings = dict(raw["benchmarks"][name] or {})  # as written: nothing converted, the file's order
        if settings.get("n_shot") and not BENCHMARKS[name].fewshot_ok:
            raise ConfigError(f"{path}: benchmarks.{name}.n_shot: the local data has no few-shot "
                              "split for this benchmark (only mmlu supports n_shot > 0)")
        if "metric" in settings:
            _check_metric(path, name, settings["metric"])
        out[name] = settings
    return Suite(path, seed=doc.seed, limit=doc.limit, batch_size=doc.batch_size, benchmarks=out)
