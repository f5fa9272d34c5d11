"""Continuous per-item measures of multiple-choice items (log p(gold) and its margin over the best
wrong choice) from stored per-choice loglikelihoods, and the metric names they are filed under
(`mc_task`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


#: The two continuous per-item measures of a multiple-choice item, from lm-eval's per-choice
#: loglikelihoods (raw sums of the continuation's token log-probabilities, not length-normalised):
#: `gold_logp` = log p(gold choice), `margin` = log p(gold) - max over the other choices.
MC_MEASURES = ("gold_logp", "margin")


def choice_measures(loglikelihoods: Sequence[float], gold: int) -> dict[str, float]:
    """{'gold_logp', 'margin'} of one multiple-choice item (see `MC_MEASURES`).

    Why: accuracy changes only when the argmax flips, so on a few hundred items a small model's
    loss of confidence stays invisible; the gold choice's log-probability and its margin over the
    best wrong choice move continuously with every item, and paired by item they detect a shift
    with far fewer items. The margin's sign is accuracy under raw loglikelihood (lm-eval's `acc`);
    benchmarks whose headline is `acc_norm` decide on length-normalised scores instead.
    """
    ll = [float(v) for v in loglikelihoods]
    if not 0 <= gold < len(ll) or len(ll) < 2:
        raise ValueError(f"choice_measures: gold {gold} outside {len(ll)} choices")
    other = max(v for i, v in enumerate(ll) if i != gold)
    return {"gold_logp": ll[gold], "margin": ll[gold] - other}


def gold_index(diag: Mapping[str, Any]) -> int | None:
    """The gold choice index a prior evaluation stored with a multiple-choice row: `gold`, else an
    integer `target` (lm-eval's, for rows stored before `gold` was)."""
    for k in ("gold", "target"):
        v = diag.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, str) and v.isdigit():
            return int(v)
    return None


def mc_item_measures(ids: Sequence[str], diags: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """{measure: {item_id: value}} (`MC_MEASURES`) for the stored rows that carry per-choice
    `loglikelihoods` and a gold index; {} for a benchmark without them (generation)."""
    out: dict[str, dict[str, float]] = {m: {} for m in MC_MEASURES}
    for i, d in zip(ids, diags):
        lls, gold = (d or {}).get("loglikelihoods"), gold_index(d or {})
        if not isinstance(lls, list) or len(lls) < 2 or gold is None or not 0 <= gold < len(lls):
            continue
        for m, v in choice_measures(lls, gold).items():
            out[m][str(i)] = v
    return out if out[MC_MEASURES[0]] else {}


def mc_task(task: str, measure: str) -> str:
    """The metric name of one continuous measure of a prior MC benchmark ('prior/mmlu', 'margin'
    -> 'mc/mmlu/margin'): results, claims and gate files use it like a task name."""
    return f"mc/{task.split('/', 1)[-1]}/{measure}"
