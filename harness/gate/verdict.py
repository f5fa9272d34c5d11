"""A gated metric's verdict: the row every output shows, how it counts, and the exit code.

`counted` is the one place that says how a verdict counts for the gate (vectorised, so the
simulation tests and `benchmarks/gate_calibration.py` apply the same rule to arrays of trials);
`Verdict.counts_as` and `exit_code` use it for real rows. `message` is the one-line reason shown
in the console, the Markdown comment, JUnit and the pytest plugin.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from .rules import GateConfig

VERDICTS = ("pass", "improved", "inconclusive", "fail")
#: Exit codes of `harness gate` (and `exit_code`): the project-wide convention.
EXIT_PASS, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_UNDECIDED = 0, 1, 2, 3


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


def pts(x: float) -> str:
    """A score as percentage points (0.123 -> '12.3'); 'n/a' where no finite value exists."""
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def spts(x: float) -> str:
    """A change as signed percentage points ('+1.5', '-0.3')."""
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.1f}"


def message(v: Verdict) -> str:
    """Why the metric got its verdict, in one line, with the numbers a reviewer needs to judge it."""
    conf = f"{100 * v.confidence:g}%"
    ci = f"[{spts(v.lo)}, {spts(v.hi)}]"
    if v.verdict == "fail":
        return (f"{v.metric}: dropped {pts(-v.diff)} pts ({pts(v.base)} -> {pts(v.cand)}, n={v.n}); the drop "
                f"exceeds the allowed {pts(v.allowed)} pts at {conf} confidence (change bounds {ci} pts, "
                f"p={v.p:.3g})")
    if v.verdict == "improved":
        return (f"{v.metric}: improved by {pts(v.diff)} pts ({pts(v.base)} -> {pts(v.cand)}, n={v.n}); "
                f"lower bound {spts(v.lo)} pts at {conf} confidence")
    if v.verdict == "inconclusive":
        if v.needed_n is None:
            need = "no finite sample can show a 0 drop"
        elif v.powered:
            need = f"n >= needed n {v.needed_n:,}, so the true drop is likely near the allowance"
        else:
            need = f"about {v.needed_n:,} items would be needed to detect a drop of {pts(v.allowed)} pts"
        how = v.counts_as if v.counts_as == "pass" else "failing (cannot decide)"
        why = "" if v.counts_as == "pass" or v.on_inconclusive == "fail" else \
            " (`inconclusive: pass` needs n >= needed n)"
        return (f"{v.metric}: inconclusive: change {spts(v.diff)} pts ({pts(v.base)} -> {pts(v.cand)}, n={v.n}), "
                f"bounds {ci} at {conf} neither show the drop is within the allowed {pts(v.allowed)} pts nor "
                f"that it exceeds it; MDE {pts(v.mde)} pts (power {v.power:g}); {need}; counted as {how}{why}")
    note = ""
    if -v.diff > v.allowed:
        note = "; the observed drop exceeds the allowance but not significantly"
    return (f"{v.metric}: pass: change {spts(v.diff)} pts ({pts(v.base)} -> {pts(v.cand)}, n={v.n}), "
            f"bounds {ci} at {conf}; allowed drop {pts(v.allowed)} pts{note}")


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

