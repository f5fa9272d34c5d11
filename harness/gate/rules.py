"""Gate files (`suites/gate.yaml`): which metrics are gated, and how much each may drop.

    format: harness-gate/1
    defaults: {confidence: 0.95, power: 0.8, inconclusive: fail}
    metrics:
      tooluse: {max_drop: 0.05}
      prior/average: {mean_of: [prior/hellaswag, prior/mmlu], max_drop: 0.015}
      mc/mmlu/margin: {max_drop: 0.05}                       # nats: log p(gold) - max log p(other)
      probe/general-kl: {max_drop: 0.01, higher_is_better: false}   # KL(base || candidate) per token

Validated like every file a user writes (`harness.config_schema`): unknown keys, wrong types and
values out of range raise one `ConfigError` line naming the file and the key path
(`metrics.tooluse.max_drop`).
The validated file is resolved into plain `Rule`s (defaults merged in) that the decision code reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StrictBool, ValidationError, field_validator, model_validator

from ..config_schema import Section, Strict, config_error
from ..errors import ConfigError

GATE_FORMAT = "harness-gate/1"


@dataclass
class Rule:
    """One gated metric. Exactly one of max_drop (absolute, in score units: 0.02 = 2 points) or
    max_rel_drop (fraction of the baseline mean) is set. `mean_of` makes it an aggregate: the
    unweighted mean of the listed metrics."""

    metric: str
    max_drop: float | None = None
    max_rel_drop: float | None = None
    confidence: float = 0.95
    power: float = 0.8
    inconclusive: str = "fail"
    discordance: float | None = None
    mean_of: list[str] | None = None
    higher_is_better: bool = True


@dataclass
class GateConfig:
    path: str
    name: str
    suite: str | None
    rules: list[Rule]

    def needed_metrics(self) -> list[str]:
        """Metric names the outcome sets must contain (aggregates resolved to their parts)."""
        out: list[str] = []
        for r in self.rules:
            for m in (r.mean_of or [r.metric]):
                if m not in out:
                    out.append(m)
        return out


# ----- the file's schema ------------------------------------------------------------------------
def _number(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False):
    """A finite number in a range. Booleans are refused: YAML reads `yes` as true, and pydantic
    would take it for 1."""
    rng = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    def check(v: Any) -> float:
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
        if not (ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)):
            raise ValueError(f"expected a number in {rng}, got {v!r}")
        return float(v)

    return BeforeValidator(check)


def _inconclusive(v: Any) -> str:
    """'pass' or 'fail'; YAML booleans (`inconclusive: yes`) read as pass / fail."""
    out = {True: "pass", False: "fail"}.get(v, v) if isinstance(v, bool) else v
    if out not in ("pass", "fail"):
        raise ValueError(f"expected 'pass' or 'fail', got {v!r}")
    return out


def _text(v: Any) -> Any:
    """Free text (a name, a description); a bare number written there is taken as text."""
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


Text = Annotated[str, BeforeValidator(_text)]


class Defaults(Section):
    """Settings every rule inherits unless it sets its own."""

    confidence: Annotated[float, _number(0.5, 1, True, True)] = Rule.confidence  # one-sided level of both tests
    power: Annotated[float, _number(0, 1, True, True)] = Rule.power              # for the MDE and the needed n
    inconclusive: Annotated[str, BeforeValidator(_inconclusive)] = Rule.inconclusive
    discordance: Annotated[float, _number(0, 1, True)] = None    # planning variance: can only raise the data's


class RuleSpec(Defaults):
    """One metric's rule as written (unset settings come from `defaults`)."""

    max_drop: Annotated[float, _number(0, math.inf)] = None
    max_rel_drop: Annotated[float, _number(0, 1)] = None
    mean_of: list[str] = None
    # false for a metric where lower is better (drift KL, probe/general-kl): the rule is applied to
    # -score, so a rise of more than max_drop is the regression (rows show the negated values)
    higher_is_better: StrictBool = True
    description: Text | None = None

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, d: Any) -> Any:
        if not isinstance(d, dict):
            raise ValueError(f"expected a mapping with max_drop or max_rel_drop, got {d!r}")
        return d

    @field_validator("mean_of", mode="before")
    @classmethod
    def _parts(cls, mo: Any) -> list[str]:
        if not isinstance(mo, list) or not mo or not all(isinstance(x, str) for x in mo):
            raise ValueError(f"expected a non-empty list of metric names, got {mo!r}")
        if len(set(mo)) != len(mo):
            raise ValueError("lists a metric twice")
        return mo

    @model_validator(mode="after")
    def _one_allowance(self) -> "RuleSpec":
        has = [k for k in ("max_drop", "max_rel_drop") if k in self.model_fields_set]
        if len(has) != 1:
            raise ValueError("give exactly one of max_drop (absolute) or max_rel_drop "
                             f"(relative){'' if not has else ', not both'}")
        return self


class GateFile(Strict):
    format: str = GATE_FORMAT
    name: Text | None = None
    suite: str | None = None
    description: Text | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    metrics: dict[str, RuleSpec] = Field(None, validate_default=True)

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, v: Any) -> str:
        if v != GATE_FORMAT:
            raise ValueError(f"{v!r} is not supported (expected {GATE_FORMAT!r})")
        return v

    @field_validator("suite", mode="before")
    @classmethod
    def _suite(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, str):
            raise ValueError(f"expected a string, got {v!r}")
        return v

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics(cls, v: Any) -> dict:
        if not isinstance(v, dict) or not v:
            raise ValueError("expected a non-empty mapping of metric name -> rule")
        return {str(k): r for k, r in v.items()}


def load_gate_config(path: str | Path) -> GateConfig:
    """Read and validate a gate file; every problem raises ConfigError naming the file and key."""
    p = str(path)
    if not Path(p).is_file():
        raise ConfigError(f"{p}: gate file not found")
    from ..suite import read_mapping  # UTF-8 checked, duplicate keys and YAML aliases refused

    try:
        doc = GateFile.model_validate(read_mapping(p))
    except ValidationError as e:
        raise config_error(e, GateFile, file=p) from None
    base = doc.defaults.model_dump(exclude_unset=True)
    rules = []
    for name, spec in doc.metrics.items():
        kw = base | spec.model_dump(exclude_unset=True, exclude={"description"})
        rules.append(Rule(metric=name, **kw))
    for r in rules:
        for m in r.mean_of or []:
            if any(o.metric == m and o.mean_of for o in rules):
                raise ConfigError(f"{p}: metrics.{r.metric}.mean_of: {m!r} is itself an aggregate")
    return GateConfig(path=p, name=str(doc.name or Path(p).stem), suite=doc.suite, rules=rules)
