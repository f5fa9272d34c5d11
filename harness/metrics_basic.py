"""Small statistics needed by evaluation itself (kept apart from `metrics` so the evaluation path
has no scipy dependency at import)."""

from __future__ import annotations

import math


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: well behaved at 0/n and n/n, unlike the
    normal approximation, which matters for the small samples a CPU run affords."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))
