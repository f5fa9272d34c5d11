"""Display strings for the numbers the harness shows: percentages, percentage-point changes,
intervals, p-values, SI magnitudes, durations and ratios.

Scores are stored as fractions; every table shows them in percent with one decimal, changes signed.
A missing value (None or NaN) prints as "n/a" (or "" where an empty cell reads better, as for an
interval beside a missing estimate) rather than raising, because a report must render for a partial
run. This module imports nothing from the harness, so any layer can use it.
"""

from __future__ import annotations

import math
from typing import Any

NA = "n/a"


def missing(v: Any) -> bool:
    """True for None and NaN: the two ways the results tables mark "not measured"."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def pct(v: Any, digits: int = 1) -> str:
    """A fraction as percent: 0.4567 -> '45.7'."""
    return NA if missing(v) else f"{100 * float(v):.{digits}f}"


def pp(v: Any) -> str:
    """A difference of fractions as signed percentage points: 0.071 -> '+7.1'."""
    return NA if missing(v) else f"{100 * float(v):+.1f}"


def ci(lo: Any, hi: Any, signed: bool = False) -> str:
    """A 95% interval of fractions in percent, '[28.9, 51.6]' (signed: '[+5.0, +9.3]'); '' if a bound is missing."""
    if missing(lo) or missing(hi):
        return ""
    fmt = "+.1f" if signed else ".1f"
    return f"[{100 * float(lo):{fmt}}, {100 * float(hi):{fmt}}]"


def pct_ci(v: Any, lo: Any, hi: Any) -> str:
    """A fraction in percent with its interval, '45.7 [28.9, 51.6]'; the value alone when a bound is
    missing, 'n/a' when the value is."""
    if missing(v):
        return NA
    return f"{pct(v)} {ci(lo, hi)}".rstrip()


def nats(v: Any, digits: int = 4, signed: bool = False) -> str:
    """A quantity in nats (KL, log-probability changes): '0.0305', signed '+0.021'."""
    return NA if missing(v) else f"{float(v):{'+' if signed else ''}.{digits}f}"


def seed_ci(lo: Any, hi: Any, n_seeds: int, signed: bool = False) -> str:
    """The across-seed interval, or why there is none: one seed has no spread to estimate."""
    if n_seeds < 2:
        return f"{NA} ({n_seeds} seed)"
    return ci(lo, hi, signed) or NA


def p_value(p: Any) -> str:
    """'<0.001' or three decimals; '' when there is no test (an empty cell, not a claim of n/a)."""
    if missing(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def pval(p: Any) -> str:
    """A p-value for a table cell where the test was expected: 'n/a' when it is missing."""
    return p_value(p) or NA


def si(v: Any, unit: str = "") -> str:
    """A magnitude with an SI prefix: 2.6e15 FLOP -> '2.60 PFLOP'; 312 -> '312'."""
    if missing(v):
        return NA
    v = float(v)
    for div, suf in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f} {suf}{unit}"
    return f"{v:.3g} {unit}".strip()


def secs(v: Any) -> str:
    """A duration in the largest unit that keeps it readable: '42.0 s', '20.6 min', '1.50 h'."""
    if missing(v):
        return NA
    v = float(v)
    if v >= 3600:
        return f"{v / 3600:.2f} h"
    if v >= 60:
        return f"{v / 60:.1f} min"
    return f"{v:.1f} s"


def ratio(v: Any, lo: Any = None, hi: Any = None) -> str:
    """A cost ratio with its interval when it has one: '4.19× [3.9, 4.5]'."""
    if missing(v):
        return NA
    return f"{v:.2f}×" + (f" [{lo:.2f}, {hi:.2f}]" if not (missing(lo) or missing(hi)) else "")


def count(v: Any) -> str:
    """A number shown without decimals (optimizer steps, averaged over seeds)."""
    return NA if missing(v) else f"{v:.0f}"


def per_hour(v: Any) -> str:
    """A rate with one decimal (new-task gain in pp per training hour)."""
    return NA if missing(v) else f"{v:.1f}"


def claim_value(row: dict) -> tuple[str, str]:
    """A claim row's (measured, interval) (`claims.check_claims`): '+7.4 pp' / '[0.0, 15.4]',
    '2.50x' / '[2.1, 3.0]', or '+0.0123 nats' / '[...]'."""
    m, lo, hi = row["measured"], row["lo"], row["hi"]
    if m is None or math.isnan(m):
        return "n/a", ""
    if row["unit"] == "x":
        ci = "" if math.isnan(lo) or math.isnan(hi) else f"[{lo:.2f}, {hi:.2f}]"
        return f"{m:.2f}x", ci or "n/a (1 measurement)"
    if row["unit"] == "nats":
        ci = "" if math.isnan(lo) or math.isnan(hi) else f"[{lo:+.4f}, {hi:+.4f}]"
        return f"{m:+.4f} nats", ci
    ci = "" if math.isnan(lo) or math.isnan(hi) else f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"
    return f"{100 * m:+.1f} pp", ci


def claim_power(row: dict) -> str:
    """A claim row's power: 'MDE 12.3 pp; ~410 items for the paper's +7.4 pp' (two-sided 5%,
    power 0.8), or ''."""
    mde = row.get("mde", math.nan)
    if mde is None or math.isnan(mde):
        return ""
    txt = f"MDE {100 * mde:.1f} pp" if row["unit"] == "pp" else f"MDE {mde:.4f} {row['unit']}"
    if row.get("n_needed"):
        txt += f"; ~{row['n_needed']} items for {row['n_needed_for']}"
    return txt
