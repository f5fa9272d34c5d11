"""Regression gate: does a candidate model lose more than an allowed amount on any metric?

    harness gate --baseline results/baselines/qwen2.5-0.5b.json --candidate RUN_ID_OR_CHECKPOINT \\
                 --suite suites/gate.yaml --markdown gate.md --junit gate.xml

Exit codes: 0 every metric passed or improved (or was inconclusive where the gate file allows it
and the sample could have detected a drop of the allowed size); 1 at least one metric regressed
(and only then); 2 bad input (raised as `HarnessError`, printed as one line by the CLI); 3 cannot
decide (an inconclusive metric that counts as failing). CI can therefore tell a regression from a
sample too small to judge from a broken invocation.

Data flow: the baseline and the candidate become *outcome sets* (per metric, the per-item scores
of one model: `OutcomeSet`), from a committed baseline file (`results/baselines/*.json`, see
`save_baseline`), a run in the results store (`RUN_ID` or `RUN_ID#ARM`), or, for a checkpoint with
nothing stored, an evaluator callable `evaluator(spec, metrics, store, baseline) -> outcome set`
that measures it with the baseline's own settings (carried in the baseline, see
`outcomes_from_store`) through the evaluation cache. `compare` then tests every gated metric on
exactly the baseline's items.

The decision rule, for one metric with allowed drop A (absolute, or relative x baseline mean) and
confidence level c (alpha = 1 - c), on the paired change D = mean(candidate) - mean(baseline).
"Must not drop by more than A" is a non-inferiority question, so a metric passes only when the
data show the drop is within A; a sample that merely could have seen a larger drop is not enough
(that rule passed true drops between A and A + MDE about half the time):

    L, U  = one-sided lower and upper c-confidence bounds on D (together: a two-sided
            (2c-1) interval, e.g. 90% for c = 0.95)
    MDE   = smallest drop a one-sided level-alpha test detects with the rule's power (0.8)
            at this n, using a conservative (upper c-bound) estimate of the per-item variance;
            needed n = the n at which MDE = A (`harness.metrics.mde`, `required_n`)
    fail          iff U < -A         the drop exceeds the allowance, significantly (one-sided
                                     test of H0: D >= -A at level alpha; p = its p-value)
    improved      iff L > 0          (and not fail) a significant improvement
    pass          iff L >= -A        (and not improved) non-inferiority shown: the drop is within
                                     the allowance at level alpha
    inconclusive  otherwise          neither shown; the row carries MDE and needed n

So a true drop of A or more passes at most alpha of the time, and a true drop of A + MDE or more
fails with probability at least the power. An inconclusive metric counts as failing (exit 3)
unless its rule says `inconclusive: pass` AND n >= needed n, i.e. the sample could have detected
a drop of size A; below that, "inconclusive" carries no evidence and never passes the gate. Even
then `inconclusive: pass` gives up the alpha guarantee: a powered sample lets a true drop of
A + MDE through up to 1 - power of the time (benchmarks/gate_calibration.py prints the rates).

Intervals: binary scores use the Agresti-Min adjusted paired interval (McNemar's exact p for "any
change" is reported beside it); non-binary scores use a paired t interval whose variance is at
least that of one discordant pair among n + 2 items, the same pseudo-count Agresti-Min adds, so a
small sample in which no score happened to change is not read as a zero-variance, infinitely
precise one; an aggregate (`mean_of`, e.g. the prior average) combines its components' standard
errors (benchmarks are independent samples). The variance bound used for the MDE is the Wilson
upper c-bound of the discordance rate (the mean squared per-item change); a rule's `discordance`
can only raise it (planning for more churn than observed), never replace the data's bound.
Consequence: with a 0 allowance a metric can fail or improve but never pass.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from xml.etree import ElementTree as ET

import numpy as np
from scipy import stats

from .errors import ConfigError, HarnessError, StoreError
from .hashing import hash_obj
from .metrics import _agresti_min, instruction_counts, mcnemar, micro_scaled, required_n, wilson_upper
from .precision import DTYPES
from .metrics import mde as _mde

BASELINE_FORMAT = "harness-baseline/1"
GATE_FORMAT = "harness-gate/1"
VERDICTS = ("pass", "improved", "inconclusive", "fail")
#: Exit codes of `harness gate` (and `exit_code`): the project-wide convention.
EXIT_PASS, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_UNDECIDED = 0, 1, 2, 3
MARKER = "<!-- harness-gate -->"

Evaluator = Callable[[str, Mapping[str, list[str]], Any, "OutcomeSet"], Any]


# ----- outcome sets ---------------------------------------------------------------------------
def item_set_hash(items: Mapping[str, Any] | Sequence[str]) -> str:
    """Hash of the sorted item ids: two outcome sets are comparable iff their hashes match."""
    return hash_obj(sorted(str(i) for i in items), n=16)


@dataclass
class OutcomeSet:
    """Per-item scores of one model on each metric, plus what identifies them.

    metrics: {name: {"task": str, "metric": str, "items": {item_id: score}, ...}}; the name is the
    evaluation's task ('tooluse', 'prior/hellaswag'). suite: the suite that produced it, if known.
    source: a human-readable origin (file path, run id, checkpoint).
    """

    metrics: dict[str, dict]
    suite: str | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def item_set(self, name: str) -> str:
        return item_set_hash(self.metrics[name]["items"])


def as_outcome_set(obj: Any, source: str = "") -> OutcomeSet:
    """Coerce and validate an outcome set: an `OutcomeSet`, a baseline-file dict, or a plain
    {metric: {"items": {...}, ...}} dict (what an evaluator may return)."""
    if isinstance(obj, OutcomeSet):
        out = obj
    elif isinstance(obj, Mapping) and "metrics" in obj and isinstance(obj.get("metrics"), Mapping):
        out = OutcomeSet(metrics=dict(obj["metrics"]), suite=obj.get("suite"),
                         source=str(obj.get("source") or source), meta=dict(obj.get("meta") or {}))
    elif isinstance(obj, Mapping):
        out = OutcomeSet(metrics=dict(obj), source=source)
    else:
        raise ConfigError(f"{source or 'outcome set'}: expected a mapping of metrics, got {type(obj).__name__}")
    src = out.source or source or "outcome set"
    clean: dict[str, dict] = {}
    for name, m in out.metrics.items():
        if not isinstance(m, Mapping) or not isinstance(m.get("items"), Mapping):
            raise ConfigError(f"{src}: metrics.{name}: expected a mapping with 'items' {{item_id: score}}")
        items = {}
        for k, v in m["items"].items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{src}: metrics.{name}.items.{k}: expected a finite number, got {v!r}")
            items[str(k)] = float(v)
        entry = {**m, "task": m.get("task", name), "metric": m.get("metric", "score"), "items": items}
        if m.get("weights") is not None:
            w = m["weights"]
            if not isinstance(w, Mapping) or set(map(str, w)) != set(items):
                raise ConfigError(f"{src}: metrics.{name}.weights: expected one weight per item")
            for k, v in w.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                    raise ConfigError(f"{src}: metrics.{name}.weights.{k}: expected a positive number, got {v!r}")
            entry["weights"] = {str(k): float(v) for k, v in w.items()}
        clean[str(name)] = entry
    out.metrics, out.source = clean, src
    return out


def save_baseline(outcomes: OutcomeSet | Mapping, path: str | Path, note: str | None = None) -> Path:
    """Write a committed baseline: human-readable JSON, one item per line, keys sorted, so that a
    change shows up as a small diff in review. Versioned by its `format` field."""
    o = as_outcome_set(outcomes, source=str(path))
    doc = {"format": BASELINE_FORMAT,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "suite": o.suite, "source": o.source, "note": note, "meta": o.meta,
           "metrics": {}}
    for name, m in sorted(o.metrics.items()):
        items = dict(sorted(m["items"].items()))
        extra = {k: v for k, v in m.items() if k not in ("items", "task", "metric", "weights")}
        w = m.get("weights")
        mean = ((sum(items[k] * w[k] for k in items) / sum(w.values())) if w else
                (sum(items.values()) / len(items))) if items else None
        doc["metrics"][name] = {**extra, "task": m["task"], "metric": m["metric"], "n": len(items),
                                "mean": mean, "item_set": item_set_hash(items), "items": items}
        if w:
            doc["metrics"][name]["weights"] = dict(sorted(w.items()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def _read_baseline_file(path: Path) -> OutcomeSet:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a JSON object with 'format' and 'metrics'")
    fmt = doc.get("format")
    if fmt != BASELINE_FORMAT:
        raise ConfigError(f"{path}: format {fmt!r} is not supported (expected {BASELINE_FORMAT!r})")
    if not isinstance(doc.get("metrics"), dict) or not doc["metrics"]:
        raise ConfigError(f"{path}: 'metrics' must be a non-empty object")
    o = as_outcome_set(doc, source=str(path))
    o.source = str(path)
    for name, m in doc["metrics"].items():
        h = m.get("item_set")
        if h is not None and h != item_set_hash(m["items"]):
            raise ConfigError(f"{path}: metrics.{name}.item_set does not match its items "
                              "(edited by hand? regenerate the baseline with save_baseline)")
    return o


def _run_suite_name(run: dict) -> str | None:
    for src in (run.get("meta") or {}, run.get("config") or {}):
        s = src.get("suite")
        if isinstance(s, str):
            return s
        if isinstance(s, dict) and isinstance(s.get("name"), str):
            return s["name"]
    return None


def _metric_key(ev: dict) -> str:
    summary = ev.get("summary") or {}
    settings = ev.get("settings") or {}
    return str(summary.get("metric") or settings.get("metric") or ("accuracy" if "accuracy" in summary else "score"))


def outcomes_from_store(store: Any, spec: str) -> OutcomeSet | None:
    """Build an outcome set from a stored run: `RUN` (prefix or name) or `RUN#SEL`, where SEL
    picks evaluations by arm or link label when a run holds several of the same task.
    Returns None when no such run exists."""
    run_id, _, sel = spec.partition("#")
    try:
        run = store.get_run(run_id)
    except StoreError:
        return None
    evals = store.run_evals(run["run_id"])
    if sel:
        # a link label (a suite point such as 'base' or 'sft/default/seed=0') wins over an arm name:
        # trained checkpoints are evaluated as arm 'base' of their own weights
        by_label = [e for e in evals if e.get("label") == sel]
        evals = by_label or [e for e in evals if e.get("arm") == sel]
        if not evals:
            raise ConfigError(f"run {run['run_id']}: no evaluation with arm or label {sel!r}")
    by_task: dict[str, list[dict]] = {}
    incomplete = []
    for e in evals:
        if e["status"] != "complete":
            incomplete.append(e["task"])
            continue
        by_task.setdefault(e["task"], []).append(e)
    metrics = {}
    for task, es in by_task.items():
        if len({e["eval_key"] for e in es}) > 1:
            arms = sorted({f"{e.get('arm')}" + (f"/{e['label']}" if e.get("label") else "") for e in es})
            raise ConfigError(f"run {run['run_id']} holds {len(es)} evaluations of task {task!r} "
                              f"({', '.join(arms)}); pick one with {run['run_id']}#ARM")
        e = es[0]
        rows = store.examples(e["eval_key"])
        items = {str(r["item_id"]): float(r["score"]) for r in rows}
        metrics[task] = {"task": task, "metric": _metric_key(e), "items": items, **_how_measured(e, run)}
        weights = instruction_counts([r.get("diagnostics") or {} for r in rows])  # IFEval: Σ followed / Σ given
        if weights:
            metrics[task]["weights"] = dict(zip(items, weights))
    return OutcomeSet(metrics=metrics, suite=_run_suite_name(run), source=f"run {spec}",
                      meta={"run_id": run["run_id"], "incomplete": sorted(set(incomplete) - set(metrics))})


def _how_measured(e: dict, run: dict) -> dict:
    """What a checkpoint candidate must be measured with to be comparable: the evaluation's key,
    arm, model, hashes and settings (its item-id list left out: the baseline lists the items), and
    the dtype when recorded (tool-use settings; else the run's configured dtype). Written into
    baseline files, so a committed baseline still says how it was measured."""
    settings = {k: v for k, v in (e.get("settings") or {}).items() if k != "item_ids"}
    out = {"eval_key": e["eval_key"], "arm": e.get("arm"), "model": e.get("model"),
           "model_hash": e.get("model_hash"), "data_hash": e.get("data_hash"), "settings": settings}
    dtype = settings.get("dtype") or (run.get("config") or {}).get("dtype")
    if dtype in DTYPES:
        out["dtype"] = dtype
    return out


def _resolve(spec: Any, store: Any, role: str = "baseline") -> OutcomeSet | None:
    """An outcome set from an object, a `*.json` outcome file or a stored run; None if neither."""
    if isinstance(spec, (OutcomeSet, Mapping)):
        return as_outcome_set(spec, source=f"{role} outcome set")
    s = str(spec)
    p = Path(s)
    if p.suffix == ".json":
        if not p.is_file():
            raise ConfigError(f"{s}: {role} file not found")
        return _read_baseline_file(p)
    if store is not None:
        return outcomes_from_store(store, s)
    return None


def load_baseline(path_or_run: Any, store: Any = None) -> OutcomeSet:
    """Load a baseline: a committed baseline file (`*.json`) or a stored run id (`RUN[#ARM]`)."""
    o = _resolve(path_or_run, store, role="baseline")
    if o is None:
        why = "no results store to look it up in" if store is None else f"no run of that name in {store.path}"
        raise ConfigError(f"baseline {path_or_run!r}: not a baseline file and {why}")
    return o


# ----- gate file --------------------------------------------------------------------------------
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


_TOP_KEYS = {"format", "name", "suite", "description", "defaults", "metrics"}
_RULE_KEYS = {"max_drop", "max_rel_drop", "confidence", "power", "inconclusive", "discordance", "mean_of",
              "description"}
_DEFAULT_KEYS = {"confidence", "power", "inconclusive", "discordance"}


def _num(path: str, where: str, v: Any, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> float:
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
    if ok:
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        rng = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ConfigError(f"{path}: {where}: expected a number in {rng}, got {v!r}")
    return float(v)


def _check_keys(path: str, where: str, d: Mapping, allowed: set[str]) -> None:
    bad = sorted(set(d) - allowed)
    if bad:
        raise ConfigError(f"{path}: {where}: unknown key {bad[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _rule_fields(path: str, where: str, d: Mapping) -> dict:
    out: dict[str, Any] = {}
    if "confidence" in d:
        out["confidence"] = _num(path, f"{where}.confidence", d["confidence"], 0.5, 1, True, True)
    if "power" in d:
        out["power"] = _num(path, f"{where}.power", d["power"], 0, 1, True, True)
    if "discordance" in d:
        out["discordance"] = _num(path, f"{where}.discordance", d["discordance"], 0, 1, True)
    if "inconclusive" in d:
        v = d["inconclusive"]
        v = {True: "pass", False: "fail"}.get(v, v) if isinstance(v, bool) else v
        if v not in ("pass", "fail"):
            raise ConfigError(f"{path}: {where}.inconclusive: expected 'pass' or 'fail', got {d['inconclusive']!r}")
        out["inconclusive"] = v
    return out


def load_gate_config(path: str | Path) -> GateConfig:
    """Read and validate a gate file; every problem raises ConfigError naming the file and key."""

    p = str(path)
    if not Path(p).is_file():
        raise ConfigError(f"{p}: gate file not found")
    from .suite import read_mapping  # UTF-8 checked, duplicate keys and YAML aliases refused

    doc = read_mapping(p)
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: expected a mapping with a 'metrics' key at the top level")
    _check_keys(p, "top level", doc, _TOP_KEYS)
    if "format" in doc and doc["format"] != GATE_FORMAT:
        raise ConfigError(f"{p}: format: {doc['format']!r} is not supported (expected {GATE_FORMAT!r})")
    suite = doc.get("suite")
    if suite is not None and not isinstance(suite, str):
        raise ConfigError(f"{p}: suite: expected a string, got {suite!r}")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{p}: defaults: expected a mapping, got {defaults!r}")
    _check_keys(p, "defaults", defaults, _DEFAULT_KEYS)
    base = _rule_fields(p, "defaults", defaults)
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise ConfigError(f"{p}: metrics: expected a non-empty mapping of metric name -> rule")
    rules = []
    for name, d in metrics.items():
        where = f"metrics.{name}"
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: {where}: expected a mapping with max_drop or max_rel_drop, got {d!r}")
        _check_keys(p, where, d, _RULE_KEYS)
        has = [k for k in ("max_drop", "max_rel_drop") if k in d]
        if len(has) != 1:
            raise ConfigError(f"{p}: {where}: give exactly one of max_drop (absolute) or max_rel_drop "
                              f"(relative){'' if not has else ', not both'}")
        kw = dict(base) | _rule_fields(p, where, d)
        if "max_drop" in d:
            kw["max_drop"] = _num(p, f"{where}.max_drop", d["max_drop"], 0, math.inf)
        else:
            kw["max_rel_drop"] = _num(p, f"{where}.max_rel_drop", d["max_rel_drop"], 0, 1)
        if "mean_of" in d:
            mo = d["mean_of"]
            if not isinstance(mo, list) or not mo or not all(isinstance(x, str) for x in mo):
                raise ConfigError(f"{p}: {where}.mean_of: expected a non-empty list of metric names, got {mo!r}")
            if len(set(mo)) != len(mo):
                raise ConfigError(f"{p}: {where}.mean_of: lists a metric twice")
            kw["mean_of"] = list(mo)
        rules.append(Rule(metric=str(name), **kw))
    for r in rules:
        for m in r.mean_of or []:
            if any(o.metric == m and o.mean_of for o in rules):
                raise ConfigError(f"{p}: metrics.{r.metric}.mean_of: {m!r} is itself an aggregate")
    return GateConfig(path=p, name=str(doc.get("name") or Path(p).stem), suite=suite, rules=rules)


# ----- statistics (vectorised: the simulation tests call these on arrays of trials) ---------------
def _classify(lo, hi, allowed) -> np.ndarray:
    """The non-inferiority rule of the module docstring, element-wise."""
    lo, hi, allowed = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (lo, hi, allowed)))
    fail = hi < -allowed
    improved = ~fail & (lo > 0)
    passed = ~fail & ~improved & (lo >= -allowed)
    return np.where(fail, "fail", np.where(improved, "improved", np.where(passed, "pass", "inconclusive")))


def _power_terms(psi: Any, n: Any, allowed: Any, confidence: float, power: float) -> tuple[np.ndarray, np.ndarray]:
    """(MDE, needed n) from the per-item variance bound psi: the formulas of `harness.metrics`
    (one-sided level 1 - confidence). needed n is inf where no finite sample suffices (A = 0)."""
    psi, n, allowed = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (psi, n, allowed)))
    alpha = 1.0 - confidence
    with np.errstate(divide="ignore", invalid="ignore"):
        mde = np.asarray(_mde(n, 0.0, alpha=alpha, power=power, discordance=psi), dtype=float)
    needed = np.full(psi.shape, np.inf)
    ok = (allowed > 0) & np.isfinite(psi)
    for a in np.unique(allowed[ok]):
        sel = ok & (allowed == a)
        needed[sel] = required_n(float(a), 0.0, alpha=alpha, power=power, discordance=psi[sel])
    return mde, needed


def _psi(data_bound: np.ndarray, discordance: float | None) -> np.ndarray:
    """The variance bound for the MDE: the data's, raised (never lowered) by a rule's planning value."""
    return data_bound if discordance is None else np.maximum(data_bound, float(discordance))


def counted(verdict: Any, n: Any, needed_n: Any, on_inconclusive: Any = "fail") -> np.ndarray:
    """How each verdict counts for the gate (element-wise): "pass", "fail" (a regression) or
    "undecided" (an inconclusive metric that blocks the gate). `inconclusive: pass` lets an
    inconclusive metric through only when n >= needed n: the sample could have detected a drop of
    the allowed size, so "not shown either way" is evidence that the drop is near the allowance
    rather than a sample too small to see anything."""
    verdict, n, needed_n, on_inc = np.broadcast_arrays(np.asarray(verdict), np.asarray(n, dtype=float),
                                                        np.asarray(needed_n, dtype=float), np.asarray(on_inconclusive))
    allowed_inc = (verdict == "inconclusive") & (on_inc == "pass") & (n >= needed_n)
    return np.where(verdict == "fail", "fail",
                    np.where((verdict == "inconclusive") & ~allowed_inc, "undecided", "pass"))


def binary_decision(n01: Any, n10: Any, n: Any, allowed: Any, confidence: float = 0.95, power: float = 0.8,
                    discordance: float | None = None) -> dict:
    """Gate statistics for paired binary outcomes, from counts (arrays allowed).

    n01 = items the candidate gained (baseline 0 -> candidate 1), n10 = items it lost. Returns
    arrays: center (adjusted change), se, lo, hi (one-sided `confidence` bounds, Agresti-Min),
    p (one-sided p-value of H0: change >= -allowed), psi (variance bound used), mde, needed_n
    (inf when allowed = 0), verdict.
    """
    n01, n10, n = (np.asarray(v, dtype=float) for v in (n01, n10, n))
    z = float(stats.norm.ppf(confidence))
    center, se = _agresti_min(n01, n10, n, z)
    lo, hi = np.maximum(center - z * se, -1.0), np.minimum(center + z * se, 1.0)
    p = stats.norm.cdf((center + np.asarray(allowed, float)) / se)
    psi = _psi(np.asarray(wilson_upper((n01 + n10) / n, n, confidence), dtype=float), discordance)
    mde, needed = _power_terms(psi, n, allowed, confidence, power)
    return {"center": center, "se": se, "lo": lo, "hi": hi, "p": p, "psi": psi, "mde": mde, "needed_n": needed,
            "verdict": _classify(lo, hi, allowed)}


def continuous_decision(mean_d: Any, sd_d: Any, m2: Any, n: Any, allowed: Any, confidence: float = 0.95,
                        power: float = 0.8, discordance: float | None = None, scale: Any = 1.0) -> dict:
    """Gate statistics for paired non-binary scores from the per-item differences' mean, standard
    deviation (ddof=1), second moment E[d^2] and count (arrays allowed): paired t bounds, and an
    MDE from the Wilson upper bound of E[d^2] (scores scaled to [0, 1] by `scale`, the largest
    |difference| when above 1).

    The variance in the t interval is at least scale^2 / (n + 2), that of one full-scale
    discordant pair among n + 2 items (the pseudo-count Agresti-Min adds in the binary branch).
    Without it, a sample in which no per-item score changed has se = 0 and would pass at n = 2.
    """
    mean_d, sd_d, m2, n, scale = (np.asarray(v, dtype=float) for v in (mean_d, sd_d, m2, n, scale))
    allowed = np.asarray(allowed, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.maximum(n - 1, 1)
        q = stats.t.ppf(confidence, df)
        var = np.maximum(np.nan_to_num(sd_d * sd_d, nan=0.0), scale ** 2 / (n + 2))
        se = np.where(n >= 2, np.sqrt(var / n), np.inf)
        lo, hi = mean_d - q * se, mean_d + q * se
        p = np.where(n >= 2, stats.t.cdf((mean_d + allowed) / se, df), np.nan)
        psi = _psi(scale ** 2 * np.asarray(wilson_upper(np.clip(m2 / scale ** 2, 0, 1), n, confidence)), discordance)
        mde, needed = _power_terms(psi, n, allowed, confidence, power)
    return {"center": mean_d, "se": se, "lo": lo, "hi": hi, "p": p, "psi": psi, "mde": mde, "needed_n": needed,
            "verdict": _classify(lo, hi, allowed)}


def aggregate_decision(centers: Any, ses: Any, psis: Any, ns: Any, allowed: Any, confidence: float = 0.95,
                       power: float = 0.8) -> dict:
    """Gate statistics for an unweighted mean of K independent benchmarks, from each one's change
    estimate, standard error, variance bound psi and item count (arrays whose last axis is the K
    benchmarks): change = mean of changes, se = sqrt(sum se^2) / K, normal bounds. The MDE uses
    var = sum(psi_k / n_k) / K^2 and needed n scales the total item count by (MDE / A)^2 (every
    benchmark grown in proportion)."""
    centers, ses, psis, ns = (np.asarray(v, dtype=float) for v in (centers, ses, psis, ns))
    k = centers.shape[-1]
    center = centers.mean(axis=-1)
    se = np.sqrt(np.sum(ses ** 2, axis=-1)) / k
    z = float(stats.norm.ppf(confidence))
    lo, hi = center - z * se, center + z * se
    allowed = np.asarray(allowed, dtype=float)
    n_total = ns.sum(axis=-1)
    var_unit = np.sum(psis / ns, axis=-1) / k ** 2  # variance bound of the mean change
    mde, needed = _power_terms(var_unit * n_total, n_total, allowed, confidence, power)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(se > 0, stats.norm.cdf((center + allowed) / se), np.where(center < -allowed, 0.0, 1.0))
        p_change = np.where(se > 0, 2 * stats.norm.sf(np.abs(center) / se), np.where(center == 0, 1.0, 0.0))
    return {"center": center, "se": se, "lo": lo, "hi": hi, "p": p, "p_change": p_change, "psi": var_unit * n_total,
            "mde": mde, "needed_n": needed, "n": n_total, "verdict": _classify(lo, hi, allowed)}


# ----- comparison -------------------------------------------------------------------------------
@dataclass
class Verdict:
    """One gated metric's result (a row of the table, a JUnit test case, a pytest test)."""

    metric: str
    task: str
    score: str               # metric key within the task ('accuracy', 'acc', ...)
    n: int                   # items compared (total over parts for an aggregate)
    base: float
    cand: float
    diff: float              # cand - base (raw means)
    lo: float                # one-sided lower confidence bound on diff
    hi: float                # one-sided upper confidence bound on diff
    p: float                 # one-sided p-value of H0 "drop <= allowance" (fail iff p < 1 - confidence)
    p_change: float          # two-sided p-value of "no change" (McNemar exact / paired t / normal)
    test: str
    allowed: float           # allowed drop in score units
    allowance: str           # as written in the gate file
    confidence: float
    power: float
    mde: float
    needed_n: int | None     # n at which MDE = allowed drop (None: no finite n, allowed = 0)
    verdict: str             # pass | improved | inconclusive | fail
    on_inconclusive: str     # pass | fail (as the gate file says; see `counts_as`)
    gained: int | None = None
    lost: int | None = None
    message: str = ""

    @property
    def counts_as(self) -> str:
        """One of "pass", "fail" (a regression) or "undecided" (an inconclusive metric blocking the gate)."""
        return str(counted(self.verdict, self.n, math.inf if self.needed_n is None else self.needed_n,
                           self.on_inconclusive))

    @property
    def powered(self) -> bool:
        """True when the sample could detect a drop of the allowed size (n >= needed n)."""
        return self.needed_n is not None and self.n >= self.needed_n

    @property
    def failed(self) -> bool:
        """True when this metric makes the gate exit non-zero."""
        return self.counts_as != "pass"

    def as_dict(self) -> dict:
        return asdict(self)


def _pts(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def _spts(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.1f}"


def _message(v: Verdict) -> str:
    conf = f"{100 * v.confidence:g}%"
    ci = f"[{_spts(v.lo)}, {_spts(v.hi)}]"
    if v.verdict == "fail":
        return (f"{v.metric}: dropped {_pts(-v.diff)} pts ({_pts(v.base)} -> {_pts(v.cand)}, n={v.n}); the drop "
                f"exceeds the allowed {_pts(v.allowed)} pts at {conf} confidence (change bounds {ci} pts, "
                f"p={v.p:.3g})")
    if v.verdict == "improved":
        return (f"{v.metric}: improved by {_pts(v.diff)} pts ({_pts(v.base)} -> {_pts(v.cand)}, n={v.n}); "
                f"lower bound {_spts(v.lo)} pts at {conf} confidence")
    if v.verdict == "inconclusive":
        if v.needed_n is None:
            need = "no finite sample can show a 0 drop"
        elif v.powered:
            need = f"n >= needed n {v.needed_n:,}, so the true drop is likely near the allowance"
        else:
            need = f"about {v.needed_n:,} items would be needed to detect a drop of {_pts(v.allowed)} pts"
        how = v.counts_as if v.counts_as == "pass" else "failing (cannot decide)"
        why = "" if v.counts_as == "pass" or v.on_inconclusive == "fail" else \
            " (`inconclusive: pass` needs n >= needed n)"
        return (f"{v.metric}: inconclusive: change {_spts(v.diff)} pts ({_pts(v.base)} -> {_pts(v.cand)}, n={v.n}), "
                f"bounds {ci} at {conf} neither show the drop is within the allowed {_pts(v.allowed)} pts nor "
                f"that it exceeds it; MDE {_pts(v.mde)} pts (power {v.power:g}); {need}; counted as {how}{why}")
    note = ""
    if -v.diff > v.allowed:
        note = "; the observed drop exceeds the allowance but not significantly"
    return (f"{v.metric}: pass: change {_spts(v.diff)} pts ({_pts(v.base)} -> {_pts(v.cand)}, n={v.n}), "
            f"bounds {ci} at {conf}; allowed drop {_pts(v.allowed)} pts{note}")


def _check_suites(cfg: GateConfig, base: OutcomeSet, cand: OutcomeSet) -> None:
    if cfg.suite and base.suite and cfg.suite != base.suite:
        raise ConfigError(f"baseline {base.source} is from suite {base.suite!r} but the gate file {cfg.path} "
                          f"is for suite {cfg.suite!r}")
    if cfg.suite and cand.suite and cfg.suite != cand.suite:
        raise ConfigError(f"candidate {cand.source} is from suite {cand.suite!r} but the gate file {cfg.path} "
                          f"is for suite {cfg.suite!r}")
    if base.suite and cand.suite and base.suite != cand.suite:
        raise ConfigError(f"baseline {base.source} is from suite {base.suite!r} but candidate {cand.source} "
                          f"from suite {cand.suite!r}")


def _examples(ids: set[str], k: int = 3) -> str:
    s = sorted(ids)
    return ", ".join(s[:k]) + (", ..." if len(s) > k else "")


def _check_items(cfg: GateConfig, base: OutcomeSet, cand: OutcomeSet) -> None:
    problems = []
    for name in cfg.needed_metrics():
        for role, o in (("baseline", base), ("candidate", cand)):
            if name not in o.metrics:
                extra = ""
                if name in (o.meta or {}).get("incomplete", []):
                    extra = " (its evaluation is incomplete)"
                raise ConfigError(f"{role} {o.source} has no metric {name!r} required by {cfg.path}{extra} "
                                  f"(it has: {', '.join(sorted(o.metrics)) or 'none'})")
        b, c = set(base.metrics[name]["items"]), set(cand.metrics[name]["items"])
        if not b:
            raise ConfigError(f"baseline {base.source}: metric {name!r} has no items")
        missing = b - c
        if missing:
            only_c = c - b
            msg = (f"metric {name!r}: baseline {base.source} and candidate {cand.source} are on different item "
                   f"sets: {len(missing)} of the baseline's {len(b)} items are missing from the candidate "
                   f"(e.g. {_examples(missing)})")
            if only_c:
                msg += f" and {len(only_c)} candidate items are not in the baseline (e.g. {_examples(only_c)})"
            problems.append(msg)
    if problems:
        more = f" (and {len(problems) - 1} more metric(s) differ)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)


def _allowed(rule: Rule, base_mean: float) -> tuple[float, str]:
    if rule.max_drop is not None:
        return rule.max_drop, f"{_pts(rule.max_drop)} pts"
    allowed = rule.max_rel_drop * abs(base_mean)
    return allowed, f"{100 * rule.max_rel_drop:g}% rel = {_pts(allowed)} pts"


def _metric_stats(x: np.ndarray, y: np.ndarray, rule: Rule, allowed: float) -> dict:
    n = x.size
    binary = bool(np.all((x == 0) | (x == 1)) and np.all((y == 0) | (y == 1)))
    if binary:
        n01 = int(np.sum((x == 0) & (y == 1)))
        n10 = int(np.sum((x == 1) & (y == 0)))
        r = binary_decision(n01, n10, n, allowed, rule.confidence, rule.power, rule.discordance)
        m = mcnemar(x, y)
        return {k: (v.item() if isinstance(v, np.ndarray) else v) for k, v in r.items()} | {
            "p_change": m["p"], "test": "McNemar exact + Agresti-Min", "gained": n01, "lost": n10}
    d = y - x
    sd = float(d.std(ddof=1)) if n >= 2 else math.nan
    scale = max(1.0, float(np.max(np.abs(d))) if n else 1.0)
    r = continuous_decision(d.mean(), sd, float(np.mean(d * d)), n, allowed, rule.confidence, rule.power,
                            rule.discordance, scale)
    if n >= 2 and sd > 0:
        p_change = float(2 * stats.t.sf(abs(d.mean()) / (sd / math.sqrt(n)), n - 1))
    else:
        p_change = 1.0 if d.mean() == 0 else (0.0 if n >= 2 else math.nan)
    return {k: (v.item() if isinstance(v, np.ndarray) else v) for k, v in r.items()} | {
        "p_change": p_change, "test": "paired t", "gained": int(np.sum(d > 0)), "lost": int(np.sum(d < 0))}


def compare(baseline: OutcomeSet, candidate: OutcomeSet, cfg: GateConfig) -> list[Verdict]:
    """Compare a candidate with a baseline on every gated metric, on exactly the baseline's items.

    Raises ConfigError (exit 2) when the two come from different suites, a metric is missing, or
    the candidate lacks baseline items; extra candidate items are ignored (pairing needs the same
    items on both sides).
    """
    baseline, candidate = as_outcome_set(baseline), as_outcome_set(candidate)
    _check_suites(cfg, baseline, candidate)
    _check_items(cfg, baseline, candidate)

    def pair(name: str) -> tuple[np.ndarray, np.ndarray]:
        bi, ci = baseline.metrics[name]["items"], candidate.metrics[name]["items"]
        keys = sorted(bi)
        x, y = np.array([bi[k] for k in keys]), np.array([ci[k] for k in keys])
        w = baseline.metrics[name].get("weights")
        if w:  # a micro average: the paired t interval of these values is the ratio estimator's
            ww = [w[k] for k in keys]
            x, y = micro_scaled(x, ww), micro_scaled(y, ww)
        return x, y

    rows = []
    for rule in cfg.rules:
        if rule.mean_of:
            rows.append(_aggregate(rule, [pair(m) for m in rule.mean_of], baseline))
            continue
        x, y = pair(rule.metric)
        allowed, text = _allowed(rule, float(x.mean()))
        s = _metric_stats(x, y, rule, allowed)
        m = baseline.metrics[rule.metric]
        needed = float(s["needed_n"])
        rows.append(Verdict(
            metric=rule.metric, task=m["task"], score=m["metric"], n=int(x.size), base=float(x.mean()),
            cand=float(y.mean()), diff=float(y.mean() - x.mean()), lo=float(s["lo"]), hi=float(s["hi"]),
            p=float(s["p"]), p_change=float(s["p_change"]), test=s["test"], allowed=allowed, allowance=text,
            confidence=rule.confidence, power=rule.power, mde=float(s["mde"]),
            needed_n=int(needed) if math.isfinite(needed) else None,
            verdict=str(s["verdict"]), on_inconclusive=rule.inconclusive, gained=s["gained"], lost=s["lost"]))
    for v in rows:
        v.message = _message(v)
    return rows


def _aggregate(rule: Rule, pairs: list[tuple[np.ndarray, np.ndarray]], baseline: OutcomeSet) -> Verdict:
    """An unweighted mean over benchmarks (`aggregate_decision`); each part's estimate, standard
    error and variance bound come from its own branch (binary or continuous)."""
    k = len(pairs)
    parts = []
    for x, y in pairs:
        s = _metric_stats(x, y, Rule(metric="", max_drop=0.0, confidence=rule.confidence, power=rule.power,
                                     discordance=rule.discordance), 0.0)
        parts.append((x, y, s))
    base = float(np.mean([x.mean() for x, _, _ in parts]))
    cand = float(np.mean([y.mean() for _, y, _ in parts]))
    allowed, text = _allowed(rule, base)
    a = aggregate_decision([s["center"] for *_, s in parts], [s["se"] for *_, s in parts],
                           [s["psi"] for *_, s in parts], [x.size for x, _, _ in parts], allowed,
                           rule.confidence, rule.power)
    needed = float(a["needed_n"])
    return Verdict(metric=rule.metric, task="mean of " + ", ".join(rule.mean_of or []), score="mean",
                   n=int(a["n"]), base=base, cand=cand, diff=cand - base, lo=float(a["lo"]), hi=float(a["hi"]),
                   p=float(a["p"]), p_change=float(a["p_change"]), test=f"normal, mean of {k}", allowed=allowed,
                   allowance=text, confidence=rule.confidence, power=rule.power, mde=float(a["mde"]),
                   needed_n=int(needed) if math.isfinite(needed) else None, verdict=str(a["verdict"]),
                   on_inconclusive=rule.inconclusive,
                   gained=int(sum(s["gained"] for *_, s in parts)), lost=int(sum(s["lost"] for *_, s in parts)))


def exit_code(rows: Sequence[Verdict], cfg: GateConfig | None = None) -> int:
    """1 if any metric failed (a regression), else 3 if an inconclusive metric counts as failing
    (cannot decide), else 0; 2 (bad input) is raised as a HarnessError before there are rows. The
    rule's own `inconclusive` setting is used (cfg is accepted for symmetry; rows already carry it)."""
    how = {r.counts_as for r in rows}
    if "fail" in how:
        return EXIT_REGRESSION
    if "undecided" in how:
        return EXIT_UNDECIDED
    return EXIT_PASS


# ----- running ----------------------------------------------------------------------------------
@dataclass
class GateResult:
    rows: list[Verdict]
    config: GateConfig
    baseline: OutcomeSet
    candidate: OutcomeSet
    exit_code: int


def default_evaluator() -> Evaluator | None:
    """The project's checkpoint evaluator, `harness.evaluate.evaluate_candidate`, if it exists."""
    try:
        from . import evaluate
    except Exception:  # pragma: no cover - heavy optional import
        return None
    return getattr(evaluate, "evaluate_candidate", None)


def lazy_default_evaluator(spec: str, metrics: Mapping[str, list[str]], store: Any, baseline: OutcomeSet) -> Any:
    """Calls `default_evaluator()` only when a checkpoint must be evaluated, so gating two stored
    results never imports the model stack (torch, transformers)."""
    ev = default_evaluator()
    if ev is None:
        raise ConfigError(f"candidate {spec!r} is not a baseline file or a stored run, and no evaluator is "
                          "available to evaluate it (harness.evaluate.evaluate_candidate not found)")
    return ev(spec, metrics, store, baseline)


def run_gate(baseline: Any, candidate: Any, gate_path: str | Path, store: Any = None,
             evaluator: Evaluator | None = None, record: bool = False) -> GateResult:
    """Resolve both sides, compare, and return rows with the exit code.

    `candidate` may be a baseline-format JSON file, a stored run (`RUN[#ARM]`), an outcome set,
    or anything else the evaluator understands (a checkpoint path or model spec): then
    `evaluator(candidate, metrics, store, baseline)` is called, where `metrics` maps each needed
    metric to the baseline's item ids (iterating it gives the metric names) and `baseline` is the
    baseline's outcome set (its metrics carry how they were measured), and must return an outcome set.
    With `record`, a 'gate' run holding the verdicts is added to the store.
    """
    cfg = load_gate_config(gate_path)
    base = load_baseline(baseline, store)
    lacking = [m for m in cfg.needed_metrics() if m not in base.metrics]
    if lacking:  # say so before an expensive evaluation of the candidate
        raise ConfigError(f"baseline {base.source} has no metric {lacking[0]!r} required by {cfg.path} "
                          f"(it has: {', '.join(sorted(base.metrics)) or 'none'})")
    if cfg.suite and base.suite and cfg.suite != base.suite:
        _check_suites(cfg, base, base)
    cand = _resolve(candidate, store, role="candidate")
    if cand is None:
        if evaluator is None:
            raise ConfigError(f"candidate {candidate!r} is not a baseline file or a stored run, and no evaluator "
                              "is available to evaluate it")
        wanted = {m: sorted(base.metrics[m]["items"]) if m in base.metrics else [] for m in cfg.needed_metrics()}
        cand = as_outcome_set(evaluator(str(candidate), wanted, store, base), source=str(candidate))
    rows = compare(base, cand, cfg)
    code = exit_code(rows, cfg)
    if record and store is not None:
        rid = store.new_run("gate", name=cfg.name, config={"baseline": str(baseline), "candidate": str(candidate),
                                                           "gate": cfg.path})
        store.finish_run(rid, meta={"exit_code": code, "rows": [r.as_dict() for r in rows]})
    return GateResult(rows=rows, config=cfg, baseline=base, candidate=cand, exit_code=code)


# ----- rendering --------------------------------------------------------------------------------
_STYLE = {"pass": "green", "improved": "bold green", "inconclusive": "yellow", "fail": "bold red"}
_ICON = {"pass": "✅", "improved": "🟢", "inconclusive": "⚠️", "fail": "❌"}


def _verdict_text(r: Verdict) -> str:
    if r.verdict == "inconclusive":
        return f"inconclusive ({'pass' if r.counts_as == 'pass' else 'fail'})"
    return r.verdict


def render_table(rows: Sequence[Verdict], title: str | None = None):
    """A rich Table of the verdicts (print it with a rich Console)."""
    from rich.table import Table

    conf = {r.confidence for r in rows}
    band = f"{100 * (2 * next(iter(conf)) - 1):g}% CI" if len(conf) == 1 else "CI (2c-1)"
    t = Table(title=title or "harness gate", title_justify="left")
    for col, j in (("metric", "left"), ("n", "right"), ("base", "right"), ("cand", "right"), ("Δ pts", "right"),
                   (band, "right"), ("p", "right"), ("allowed", "right"), ("MDE", "right"),
                   ("needed n", "right"), ("verdict", "left")):
        t.add_column(col, justify=j)
    for r in rows:
        t.add_row(r.metric, str(r.n), _pts(r.base), _pts(r.cand), _spts(r.diff), f"{_spts(r.lo)} … {_spts(r.hi)}",
                  f"{r.p:.3g}", r.allowance, _pts(r.mde),
                  f"{r.needed_n:,}" if r.verdict == "inconclusive" and r.needed_n else "",
                  f"[{_STYLE[r.verdict]}]{_verdict_text(r)}[/]")
    return t


def render_markdown(rows: Sequence[Verdict], baseline: str = "", candidate: str = "", gate: str = "",
                    code: int | None = None) -> str:
    """A Markdown report for a pull-request comment (starts with a hidden marker so a workflow can
    update its previous comment instead of adding a new one)."""
    code = exit_code(rows) if code is None else code
    head = {EXIT_PASS: "✅ **Gate passed**", EXIT_REGRESSION: "❌ **Gate failed: regression**",
            EXIT_UNDECIDED: "⚠️ **Gate cannot decide** (inconclusive metrics count as failing)"}[code]
    lines = [MARKER, f"### harness gate: {head}", ""]
    if baseline or candidate:
        lines += [f"Baseline `{baseline}` → candidate `{candidate}`" + (f", rules `{gate}`" if gate else ""), ""]
    lines += ["| metric | n | baseline | candidate | Δ (pts) | CI (pts) | p | allowed drop | MDE (pts) | needed n "
              "| verdict |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        band = f"{100 * (2 * r.confidence - 1):g}%: {_spts(r.lo)} … {_spts(r.hi)}"
        need = f"{r.needed_n:,}" if r.verdict == "inconclusive" and r.needed_n else ""
        lines.append(f"| `{r.metric}` | {r.n} | {_pts(r.base)} | {_pts(r.cand)} | {_spts(r.diff)} | {band} | "
                     f"{r.p:.3g} | {r.allowance} | {_pts(r.mde)} | {need} | {_ICON[r.verdict]} {_verdict_text(r)} |")
    notable = [r for r in rows if r.verdict != "pass"]
    if notable:
        lines += [""] + [f"- {r.message}" for r in notable]
    lines += ["", "<details><summary>How to read this</summary>", "",
              "Δ = candidate − baseline on the same items, in percentage points. A metric **passes** only when "
              "the lower one-sided confidence bound of Δ is at or above −(allowed drop): the data show the drop "
              "is within the allowance. It **fails** when the upper bound is below −(allowed drop), i.e. the "
              "drop significantly exceeds the allowance (p is that one-sided test's p-value). **Improved**: the "
              "lower bound is above 0. **Inconclusive**: neither; MDE is the smallest drop beyond the allowance "
              "detected with the stated power and *needed n* the sample size at which MDE equals the allowed "
              "drop. An inconclusive metric blocks the gate (exit 3) unless the gate file says "
              "`inconclusive: pass` and n ≥ needed n. The CI column is the two-sided interval whose ends are the "
              "one-sided bounds.", "", "</details>", ""]
    return "\n".join(lines)


def render_junit(rows: Sequence[Verdict], path: str | Path, name: str = "harness-gate") -> Path:
    """JUnit XML, one test case per gated metric: fail -> <failure>, inconclusive counted as failing
    -> <failure type="inconclusive">, inconclusive allowed (n >= needed n) -> <skipped>."""
    failures = sum(r.failed for r in rows)
    skipped = sum(r.verdict == "inconclusive" and not r.failed for r in rows)
    suites = ET.Element("testsuites", name=name, tests=str(len(rows)), failures=str(failures), errors="0")
    suite = ET.SubElement(suites, "testsuite", name=name, tests=str(len(rows)), failures=str(failures),
                          errors="0", skipped=str(skipped))
    for r in rows:
        tc = ET.SubElement(suite, "testcase", classname=f"{name}.{r.task.split(' ')[0]}", name=r.metric, time="0")
        if r.failed:
            el = ET.SubElement(tc, "failure", message=r.message, type=r.verdict)
            el.text = json.dumps(r.as_dict(), indent=2, default=str)
        elif r.verdict == "inconclusive":
            ET.SubElement(tc, "skipped", message=r.message)
        out = ET.SubElement(tc, "system-out")
        out.text = r.message
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
    return path


def gate_command(baseline: str, candidate: str, suite: str | Path, db: str | Path | None = None,
                 markdown: str | Path | None = None, junit: str | Path | None = None, console: Any = None,
                 evaluator: Evaluator | None = None) -> int:
    """What `harness gate` does: run the gate, print the table, write the Markdown and JUnit files,
    and return the exit code (0 pass, 1 regression, 3 cannot decide). HarnessError propagates
    (the CLI prints it as one line, exit 2).
    The store is opened only if the file exists (`--db`, `HARNESS_DB`, or results/harness.db)."""
    from rich.console import Console

    from .paths import results_db
    from .store import Store

    console = console or Console()
    dbp = results_db(db)
    store = Store(dbp) if Path(dbp).is_file() else None
    try:
        res = run_gate(baseline, candidate, suite, store=store,
                       evaluator=evaluator if evaluator is not None else lazy_default_evaluator, record=True)
    finally:
        if store is not None:
            store.close()
    console.print(render_table(res.rows, title=f"harness gate: {res.baseline.source} → {res.candidate.source}"))
    for r in res.rows:
        if r.verdict != "pass":
            console.print(f"[{_STYLE[r.verdict]}]{r.message}[/]", highlight=False)
    console.print({EXIT_PASS: "[green]gate passed[/]", EXIT_REGRESSION: "[bold red]gate failed: regression[/]",
                   EXIT_UNDECIDED: "[yellow]gate cannot decide (exit 3)[/]"}[res.exit_code])
    if markdown:
        Path(markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown).write_text(render_markdown(res.rows, res.baseline.source, res.candidate.source,
                                                  str(suite), res.exit_code))
    if junit:
        render_junit(res.rows, junit)
    return res.exit_code


__all__ = ["EXIT_PASS", "EXIT_REGRESSION", "EXIT_BAD_INPUT", "EXIT_UNDECIDED", "OutcomeSet", "Rule", "GateConfig",
           "Verdict", "GateResult", "as_outcome_set", "item_set_hash", "save_baseline", "load_baseline",
           "outcomes_from_store", "load_gate_config", "binary_decision", "continuous_decision", "aggregate_decision",
           "counted", "compare", "exit_code", "run_gate", "default_evaluator", "lazy_default_evaluator",
           "render_table", "render_markdown", "render_junit", "gate_command", "HarnessError"]
