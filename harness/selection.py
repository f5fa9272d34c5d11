"""Which point stands for one (arm, seed) of a grid: one rule, for the run and for its reader.

`pipeline.SuiteRunner` marks the chosen points `selected` when a run finishes; `results` applies
the same rule to a group with no point marked (a run that stopped before marking), so a number in
a report never depends on which of the two chose it.
"""

from __future__ import annotations

import math
from typing import Sequence


def choose(val_scores: Sequence[float | None], by_validation: bool = True) -> int | None:
    """The index of the point to select among one (arm, seed)'s points, from each point's
    validation score (None or NaN: not evaluated on the validation split).

    A single point is selected (there is nothing to choose). Several are chosen between only by
    validation score, when `by_validation` (the suite's `selection.metric: validation`) and every
    point has one: the best, the first on ties (the paper's protocol). Otherwise None: picking one
    would be arbitrary, and picking by test score would report a number selected on the test set.
    """
    if len(val_scores) == 1:
        return 0
    scored = [s is not None and not math.isnan(s) for s in val_scores]
    if not val_scores or not by_validation or not all(scored):
        return None
    return max(range(len(val_scores)), key=lambda i: val_scores[i])
