"""Simulated error rates of the gate's decision rule (`harness.gate`), per branch and sample size.

    python benchmarks/gate_calibration.py [--trials 20000] [--seed 0]

For every branch (binary: tool use, MMLU...; continuous: IFEval-like fractional scores; aggregate:
the mean of one binary and one continuous benchmark) and n = 16, 68, 500, 4000 items, it draws
paired baseline/candidate samples whose true change is a drop of 0, A, A + MDE or 2A, runs the
gate's own vectorised statistics on each, and prints the share of trials that exit 0 (pass),
3 (cannot decide) and 1 (regression), for `inconclusive: fail` (the default) and for
`inconclusive: pass`. MDE is computed from the true per-item variance at the boundary (drop = A),
so "A + MDE" is the drop the fail test should catch with the rule's power (0.8).

Reading it: with drop 0 the error is a false fail (exit 1); with a drop above A it is a false pass
(exit 0); a drop of exactly A is the boundary, where a level-alpha test passes about alpha of the
time. The last column is what the previous rule let through, for comparison: "pass iff the lower
bound >= -A or MDE <= A" (with `inconclusive: fail`) / anything not failed (with `inconclusive:
pass`, which then counted at any n), applied to the same intervals.

Samples: binary items flip each way with probability 0.05 plus `drop` more losses (a baseline
accuracy of 0.5); continuous per-item changes take values in {-.5, -.25, 0, .25, .5} with
symmetric churn plus `drop` moved to -0.5. Everything is a pure function of the seed.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import stats

from harness import gate as G

CHURN = 0.05
D = np.array([-0.5, -0.25, 0.0, 0.25, 0.5])


def binary(rng, n, drop, trials, allowed):
    c = rng.multinomial(n, [0.5 - CHURN - drop, CHURN + drop, CHURN, 0.5 - CHURN], size=trials)
    return G.binary_decision(c[:, 2], c[:, 1], n, allowed)


def continuous(rng, n, drop, trials, allowed):
    probs = [CHURN + 2 * drop, 0.1, 0.0, 0.1, CHURN]
    probs[2] = 1 - sum(probs)
    c = rng.multinomial(n, probs, size=trials)
    mean, m2 = c @ D / n, c @ D ** 2 / n
    sd = np.sqrt(np.maximum(n * (m2 - mean ** 2) / max(n - 1, 1), 0.0))
    return G.continuous_decision(mean, sd, m2, n, allowed)


def aggregate(rng, n, drop, trials, allowed):
    b, c = binary(rng, n, drop, trials, 0.0), continuous(rng, n, drop, trials, 0.0)
    return G.aggregate_decision(np.stack([b["center"], c["center"]], -1), np.stack([b["se"], c["se"]], -1),
                                np.stack([b["psi"], c["psi"]], -1), [n, n], allowed)


def variance_at_boundary(branch: str, n: int, allowed: float) -> float:
    """Variance of the mean change when the true drop is `allowed` (per branch's sampling model)."""
    v_bin = 2 * CHURN + allowed
    v_cont = 0.25 * (2 * CHURN + 2 * allowed) + 0.0625 * 0.2
    return {"binary": v_bin / n, "continuous": v_cont / n, "aggregate": (v_bin / n + v_cont / n) / 4}[branch]


BRANCHES = {"binary": (binary, 0.05), "continuous": (continuous, 0.03), "aggregate": (aggregate, 0.02)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--power", type=float, default=0.8)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    k = float(stats.norm.ppf(a.confidence) + stats.norm.ppf(a.power))
    print(f"alpha = {1 - a.confidence:g}, power = {a.power:g}, {a.trials} trials per row; rates are shares of "
          "trials (exit 0 pass / 3 cannot decide / 1 regression)\n")
    print("| branch | A (pts) | n | true drop (pts) | error measured | inconclusive: fail → exit 0 / 3 / 1 "
          "| inconclusive: pass → exit 0 / 3 / 1 | previous rule exit 0 (fail / pass) |")
    print("|---|---:|---:|---|---|---|---|---|")
    for branch, (draw, allowed) in BRANCHES.items():
        for n in (16, 68, 500, 4000):
            mde = k * math.sqrt(variance_at_boundary(branch, n, allowed))
            for label, drop in (("0", 0.0), ("A", allowed), ("A+MDE", allowed + mde), ("2A", 2 * allowed)):
                out = draw(rng, n, drop, a.trials, allowed)
                n_eff = out.get("n", n)
                cells = []
                for on_inc in ("fail", "pass"):
                    how = G.counted(out["verdict"], n_eff, out["needed_n"], on_inc)
                    cells.append(" / ".join(f"{np.mean(how == h):.3f}" for h in ("pass", "undecided", "fail")))
                not_fail = out["verdict"] != "fail"
                old = not_fail & ((out["lo"] >= -allowed) | (out["mde"] <= allowed) | (out["verdict"] == "improved"))
                error = {"0": "false fail = exit 1", "A": "boundary (≈ alpha passes)"}.get(label, "false pass = exit 0")
                print(f"| {branch} | {100 * allowed:g} | {n} | {label} = {100 * drop:.1f} | {error} | {cells[0]} | "
                      f"{cells[1]} | {np.mean(old):.3f} / {np.mean(not_fail):.3f} |")


if __name__ == "__main__":
    main()
