"""Power planning for paired comparisons: the minimum detectable effect on n items (`mde`) and its
inverse, the items an effect needs (`required_n`), by the normal approximation. The gate, claims and
results all plan with these two.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats


def _quantiles(alpha: float, power: float, two_sided: bool) -> float:
    za = stats.norm.ppf(1 - alpha / 2) if two_sided else stats.norm.ppf(1 - alpha)
    return float(za + stats.norm.ppf(power))


def _planning_variance(p0: float, paired: bool, discordance: Any) -> Any:
    if paired and discordance is not None:
        d = np.asarray(discordance, dtype=float)
        if np.any(d < 0):
            raise ValueError("discordance must be >= 0")
        return float(d) if d.ndim == 0 else d
    if not 0 <= p0 <= 1:
        raise ValueError("p0 must be a proportion in [0, 1]")
    return 2.0 * p0 * (1.0 - p0)


def mde(n: Any, p0: float, alpha: float = 0.05, power: float = 0.8, paired: bool = True,
        discordance: Any = None, two_sided: bool = False) -> Any:
    """Minimum detectable effect: the smallest true change in accuracy that a level-`alpha` test
    on `n` items detects with probability `power`.

    Paired binary outcomes (same items, two models): the per-item difference is +-1 on discordant
    items and 0 otherwise, so its variance under "no change" is the discordance rate psi =
    P(items disagree), and MDE = (z_{1-alpha} + z_{power}) * sqrt(psi / n) (normal approximation
    of McNemar's test; it ignores the small -delta^2 correction, so it errs on the large side).
    For non-binary scores pass the second moment E[(b - a)^2] as `discordance`.
    Without a `discordance`, or with paired=False (two independent samples of n each), psi =
    2 * p0 * (1 - p0): the independent-samples value, conservative for paired model comparisons,
    whose outcomes are positively correlated. One-sided by default, as the gate's test is.
    `n` and `discordance` may be arrays.
    """
    psi = _planning_variance(p0, paired, discordance)
    n = np.asarray(n, dtype=float)
    out = _quantiles(alpha, power, two_sided) * np.sqrt(psi / n)
    return float(out) if out.ndim == 0 else out


def required_n(effect: float, p0: float, alpha: float = 0.05, power: float = 0.8, paired: bool = True,
               discordance: Any = None, two_sided: bool = False) -> Any:
    """Items needed so that `mde(n, ...) <= effect`: ceil((z_a + z_b)^2 * psi / effect^2).

    Same model and assumptions as `mde` (its exact inverse, rounded up). Raises ValueError for a
    non-positive effect, which no finite sample can detect. `discordance` may be an array (then
    so is the result).
    """
    effect = abs(float(effect))
    if effect == 0:
        raise ValueError("required_n: effect must be non-zero")
    psi = _planning_variance(p0, paired, discordance)
    out = np.ceil(_quantiles(alpha, power, two_sided) ** 2 * np.asarray(psi, dtype=float) / effect ** 2 - 1e-9)
    return int(out) if out.ndim == 0 else out.astype(int)
