"""Check the paper's claims against a stored suite run.

    harness claims RUN                          # table in the terminal (exit code 0)
    from harness.claims import check_claims
    rows = check_claims(harness.results.load("quick"))

Claims (Shenfeld et al., arXiv 2601.19897; numbers for Qwen2.5-7B-Instruct on tool use):

(a) teacher > base on the new task: the demonstration-conditioned teacher solves far more than the
    base model (paper: 100% vs 42.9%). Measured: teacher - base accuracy on the same items; test:
    exact McNemar p with the Agresti-Min 95% interval (`metrics.paired_test`).
(b) SDFT new-task accuracy >= SFT (paper: 70.6 vs 63.2). Measured: SDFT - SFT on the same items,
    selected points (best validation). One seed per arm: McNemar / Agresti-Min for 0/1 scores.
(c) SDFT forgets less than SFT (paper: prior average 65.4 vs 56.0). Measured: SDFT prior average -
    SFT prior average (= SFT forgetting - SDFT forgetting). One seed per arm: paired bootstrap over
    items within each benchmark of the unweighted average (IFEval as its micro average, a ratio).
(b), (c) with >= 2 seeds in either arm: a test on seed-averaged items ignores training randomness,
    so the interval is the seeds-then-items bootstrap (`Results.seed_change`,
    `metrics.hierarchical_change_ci`), and because a bootstrap of 2-3 seeds understates their
    spread, "supported" / "contradicted" also need the across-seed t interval of the per-seed
    differences (seeds paired by number) to lie on the same side of 0; otherwise inconclusive.
(c-drift) SDFT moves less from the base model than SFT on general text (paper: KL to the base policy,
    SFT 1.26 nats, teacher 0.68, on the task's outputs). Measured: SFT - SDFT of KL(base ‖ arm) per
    token on the general-text drift probe (`harness.drift_probe`: fixed GSM8K / ARC-Challenge
    prompts, the base model's greedy continuations, so both arms are scored on the same tokens);
    paired bootstrap over prompts (seeds-then-prompts with >= 2 seeds, as (b) and (c)).
(c-mc) SDFT keeps the prior benchmarks' gold answers ahead of the other choices at least as well as
    SFT (no paper number: a continuous, paired companion of (c)). Measured: SDFT - SFT of the
    unweighted mean over the multiple-choice prior benchmarks of each benchmark's mean margin
    log p(gold) - max log p(other choice), in nats (`metrics.choice_measures`: lm-eval's
    per-choice loglikelihoods, stored per item). The margin, not log p(gold) alone, because
    fine-tuning also shifts every choice's log-probability alike (on the quick suite both arms
    raised ARC-Easy's gold log p by 0.6-1.0 nats while its margins moved < 0.07): that shift is
    drift, which (c-drift) measures, not lost discrimination. The change in log p(gold) is in the
    note and in `Results.mc_table()`. Paired bootstrap over items within each benchmark
    (seeds-then-items with >= 2 seeds).
(d) cost: SDFT takes about 2.5x the FLOPs (d-flops) and about 4x the wall-clock (d-wall) of SFT.
    Measured: SDFT/SFT ratio (`Results.cost_ratio`: matched grid points when both arms trained
    the same hyper-parameters and seeds, else per optimizer step).

Verdict rules (95% two-sided intervals; one verdict per row):

(a)-(c), the claim says the difference D is > 0 (the "claim's side"):
    supported      the interval lies entirely above 0 (lo > 0)
    contradicted   the interval lies entirely below 0 (hi < 0)
    equivalent within the margin   (b), (c), (c-drift), (c-mc) only: the interval contains 0 but lies
                   inside (-margin, +margin), i.e. "no difference larger than the margin" at 95%;
                   margins per claim id in the suite's `claims.margins` (defaults `DEFAULT_MARGINS`:
                   5 pp for (b), 2 pp for (c), 0.01 nats for (c-drift), 0.05 nats for (c-mc))
    inconclusive at this sample size   otherwise (the interval contains 0)
    Only the direction is tested; the magnitude is shown beside the paper's (a 7B model's).
(d), the claim says the ratio R is about C (C = 2.5 or 4); tolerance band [C / 1.5, C x 1.5]
    (FLOPs [1.67, 3.75], wall-clock [2.67, 6.0]); interval = the ratio's 95% interval, or the ratio
    itself when there is no interval (one measurement per arm; FLOPs are not timed, so one value
    per arm is not noisy the way a single timing is, but it is an *estimate* -- `FLOPS_ESTIMATE`,
    `harness.train.accounting.flops_estimate` -- and the note says so; a single timing is flagged too):
    supported      the interval lies inside the band
    contradicted   the interval lies entirely outside the band (all below or all above it)
    inconclusive at this sample size   otherwise (the interval straddles a band edge)
Power (every difference claim): `mde` is the smallest true difference a two-sided 5% test detects
with power 0.8 at this run's n, from the observed per-item variance of the paired change (the
Wilson upper bound of the discordance rate for 0/1 scores); `n_needed` is the items per
comparison at which the MDE reaches the paper's reported effect ((a), (b), (c)) or the equivalence
margin ((c-drift), (c-mc), where the paper reports no SFT-vs-SDFT number). `formatting.claim_power` shows both.
Any claim whose inputs the run lacks (no teacher, no prior suite, no cost) gets "not measured".
No multiple-comparison correction across claims: each is a separate, pre-stated hypothesis.
"""

from __future__ import annotations

import math
from typing import Any

from . import formatting as F
from .drift_probe import TASK as DRIFT_TASK
from .paper import CLAIMS, PAPER_LABEL, table5_row, teacher_acc

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
EQUIVALENT = "equivalent within the margin"
INCONCLUSIVE = "inconclusive at this sample size"
NOT_MEASURED = "not measured"
VERDICTS = (SUPPORTED, CONTRADICTED, EQUIVALENT, INCONCLUSIVE, NOT_MEASURED)
#: Default equivalence margins per claim id (fractions for pp claims, nats for drift); a suite's
#: `claims.margins` overrides them. An interval inside ±margin answers "no difference larger than
#: the margin", which is an answer, unlike "inconclusive".
DEFAULT_MARGINS = {"b": 0.05, "c": 0.02, "c-drift": 0.01, "c-mc": 0.05, "c-retain": 0.05}
COST_TOLERANCE = 1.5  # multiplicative band around the paper's cost ratios
#: How the training loop counts FLOPs (harness/train/accounting.py): shown wherever FLOPs are.
FLOPS_ESTIMATE = ("FLOPs are an estimate, not a measurement: 2N per forward-only token (teacher prompt and "
                  "completion, rollout prefill, sampled tokens, each counted), 4N per trained student token "
                  "(+2N weight gradients with full fine-tuning, +2N recompute with gradient checkpointing), "
                  "attention's length term left out (harness.train.accounting.flops_estimate)")


def sign_verdict(lo: float, hi: float, margin: float | None = None) -> str:
    """Verdict for a claim 'difference > 0' from its interval [lo, hi] (see module docstring):
    with an equivalence `margin`, an interval containing 0 but lying inside (-margin, +margin) is
    'equivalent within the margin'."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return NOT_MEASURED
    if lo > 0:
        return SUPPORTED
    if hi < 0:
        return CONTRADICTED
    if margin is not None and -margin < lo and hi < margin:
        return EQUIVALENT
    return INCONCLUSIVE


def band_verdict(ratio: float, lo: float, hi: float, claim: float, tol: float = COST_TOLERANCE) -> str:
    """Verdict for a claim 'ratio is about `claim`' with band [claim / tol, claim * tol]; the
    interval [lo, hi] falls back to the point `ratio` when lo/hi are NaN."""
    if ratio is None or math.isnan(ratio):
        return NOT_MEASURED
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        lo = hi = ratio
    b_lo, b_hi = claim / tol, claim * tol
    if b_lo <= lo and hi <= b_hi:
        return SUPPORTED
    if hi < b_lo or lo > b_hi:
        return CONTRADICTED
    return INCONCLUSIVE


def _row(cid: str, claim: str, paper: str, unit: str, rule: str, **kw: Any) -> dict:
    row = {"id": cid, "claim": claim, "paper": paper, "unit": unit, "measured": math.nan, "lo": math.nan,
           "hi": math.nan, "p": math.nan, "n": 0, "test": "", "rule": rule, "verdict": NOT_MEASURED, "note": "",
           "mde": math.nan, "n_needed": None, "n_needed_for": ""}
    row.update(kw)
    return row


POWER = 0.8


def power_terms(parts: list[tuple[float, int]], target: float | None, alpha: float = 0.05,
                power: float = POWER) -> tuple[float, int | None]:
    """(MDE, items needed per comparison) for a difference that is the unweighted mean over K
    paired comparisons, each given as (psi, n): psi bounds its per-item variance
    (`Results.change_variance`). MDE is the smallest true difference a two-sided level-`alpha`
    test detects with probability `power` at these n (`metrics.mde`'s formula with variance
    sum(psi_k / n_k) / K^2); items needed scales every n_k alike until MDE = `target` and reports
    the largest n_k then (None without a target)."""
    from . import metrics as M

    if not parts:
        return math.nan, None
    k = len(parts)
    var = sum(psi / n for psi, n in parts) / k ** 2
    mde = float(M.mde(1, 0.0, alpha=alpha, power=power, discordance=var, two_sided=True))
    if target is None or not target > 0 or not math.isfinite(mde):
        return mde, None
    grow = (mde / target) ** 2
    return mde, int(math.ceil(max(n for _, n in parts) * grow - 1e-9))


def _set_power(row: dict, results, ref_arm: str, arm: str, tasks: list[str], target: float | None,
               target_label: str) -> None:
    parts = [v for t in tasks if (v := results.change_variance(ref_arm, arm, t))]
    if len(parts) != len(tasks):
        return
    mde, need = power_terms(parts, target)
    row.update(mde=mde, n_needed=need, n_needed_for=target_label if need is not None else "")


def check_claims(results) -> list[dict]:
    """Evaluate claims (a)-(d) on a loaded `harness.results.Results`.

    Returns one dict per claim row (ids 'a', 'b', 'c', 'd-flops', 'd-wall') with: claim, paper
    (the paper's numbers, labelled with the paper's model), measured, lo, hi (95% interval),
    unit ('pp' for accuracy differences in fractions, 'x' for ratios), p (NaN where not a test),
    n (items or pairs), test, rule, verdict (one of `VERDICTS`) and note.
    """
    r = results
    task = r.task
    margins = DEFAULT_MARGINS | dict(((r.config or {}).get("claims") or {}).get("margins") or {})
    sign_rule = "supported if 95% CI > 0, contradicted if < 0, else inconclusive"

    def eq_rule(cid: str, unit: str) -> str:
        m = margins[cid]
        shown = f"{100 * m:.1f} pp" if unit == "pp" else f"{m:g} {unit}"
        return (f"supported if 95% CI > 0, contradicted if < 0, equivalent if inside ±{shown}, "
                "else inconclusive")
    p_base, p_sft, p_sdft = (table5_row(task, m) for m in ("base", "sft", "sdft"))
    rows = []

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    # (a) teacher vs base
    t_paper = teacher_acc(task)
    row = _row("a", f"teacher (demonstration in context) > base on {task}",
               f"{pct(t_paper)} vs {pct(p_base['task_acc']) if p_base else 'n/a'} ({PAPER_LABEL})"
               if t_paper is not None else f"no paper number for the {task} teacher",
               "pp", sign_rule)
    if "teacher" in r.arms and "base" in r.arms and (c := r.paired("base", "teacher", task)):
        row.update(measured=c["diff"], lo=c["lo"], hi=c["hi"], p=c["p"], n=c["n"],
                   test=_test_name(c), verdict=sign_verdict(c["lo"], c["hi"]),
                   note=f"teacher {100 * c['value']:.1f}% vs base {100 * c['ref_value']:.1f}%")
        eff = t_paper - p_base["task_acc"] if p_base and t_paper is not None else None
        _set_power(row, r, "base", "teacher", [task], eff, f"the paper's {100 * eff:.1f} pp" if eff else "")
    else:
        row["note"] = "needs base and teacher evaluated on the new task"
    rows.append(row)

    sft, sdft = r.sft_arm, r.sdft_arm
    seeds_note = ""
    multi_seed = False
    if sft and sdft:
        ns = (len(r.arm_points(sft)), len(r.arm_points(sdft)))
        seeds_note = f"seeds: SFT {ns[0]}, SDFT {ns[1]}; selected (best-validation) points"
        multi_seed = max(ns) >= 2
    # (b) SDFT >= SFT on the new task
    row = _row("b", f"SDFT new-task accuracy >= SFT ({task})",
               (f"{pct(p_sdft['task_acc'])} vs {pct(p_sft['task_acc'])} ({PAPER_LABEL})"
                if p_sdft and p_sft else PAPER_LABEL), "pp", eq_rule("b", "pp"))
    if multi_seed and (c := r.seed_change(sft, sdft, [task])):
        verdict, agree = seed_agreement(sign_verdict(c["lo"], c["hi"], margins["b"]), c)
        row.update(measured=c["diff"], lo=c["lo"], hi=c["hi"], p=c["p"], n=c["n_items"], test=HIERARCHICAL,
                   verdict=verdict, note=f"SDFT {100 * r.arm_value(sdft, task):.1f}% vs SFT "
                                         f"{100 * r.arm_value(sft, task):.1f}%; {seeds_note}; {agree}")
    elif not multi_seed and sft and sdft and (c := r.paired(sft, sdft, task)):
        row.update(measured=c["diff"], lo=c["lo"], hi=c["hi"], p=c["p"], n=c["n"], test=_test_name(c),
                   verdict=sign_verdict(c["lo"], c["hi"], margins["b"]),
                   note=f"SDFT {100 * c['value']:.1f}% vs SFT {100 * c['ref_value']:.1f}%; {seeds_note}")
    else:
        row["note"] = "needs SFT and SDFT arms evaluated on the new task"
    if sft and sdft:
        eff = (p_sdft["task_acc"] - p_sft["task_acc"]) if p_sdft and p_sft else None
        _set_power(row, r, sft, sdft, [task], eff, f"the paper's {100 * eff:+.1f} pp" if eff else "")
    rows.append(row)

    # (c) SDFT forgets less than SFT
    row = _row("c", "SDFT forgets less than SFT (prior average, SDFT - SFT)",
               (f"prior avg {pct(p_sdft['prior_avg'])} vs {pct(p_sft['prior_avg'])}, base "
                f"{pct(p_base['prior_avg'])} ({PAPER_LABEL})" if p_sdft and p_sft and p_base else PAPER_LABEL),
               "pp", eq_rule("c", "pp"))
    c = None
    if sft and sdft and r.average_tasks:
        c = r.seed_change(sft, sdft, r.average_tasks) if multi_seed else r.prior_change(sft, sdft)
    if c:
        names = ", ".join(t.split("/", 1)[1] for t in r.average_tasks)
        verdict, agree = sign_verdict(c["lo"], c["hi"], margins["c"]), ""
        if multi_seed:
            verdict, agree = seed_agreement(verdict, c)
            agree = f"; {agree}"
        row.update(measured=c["diff"], lo=c["lo"], hi=c["hi"], p=c["p"],
                   n=len(r.average_tasks),
                   test=(f"{HIERARCHICAL} (unweighted average)" if multi_seed
                         else "paired bootstrap over items (unweighted average)"),
                   verdict=verdict, note=f"benchmarks: {names}; {seeds_note}{agree}")
        eff = (p_sdft["prior_avg"] - p_sft["prior_avg"]) if p_sdft and p_sft else None
        _set_power(row, r, sft, sdft, list(r.average_tasks), eff, f"the paper's {100 * eff:+.1f} pp" if eff else "")
        at_chance = _at_chance(r)
        if at_chance:
            row["note"] += f"; base at chance on {', '.join(at_chance)} (cannot show forgetting there)"
    else:
        row["note"] = ("no prior benchmarks in this run" if not r.average_tasks
                       else "needs SFT and SDFT arms evaluated on every benchmark of the prior average")
    rows.append(row)

    # (c-drift) SDFT moves less from the base than SFT on general text
    row = _row("c-drift", "SDFT drifts less than SFT from the base on general text "
               "(KL(base‖arm) per token, SFT - SDFT)",
               f"KL to base: SFT {CLAIMS['kl_to_base_sft']:g} nats, teacher {CLAIMS['kl_to_base_teacher']:g} "
               f"nats, on the task's outputs ({PAPER_LABEL})", "nats", eq_rule("c-drift", "nats"))
    if sft and sdft and (c := r.paired(sdft, sft, DRIFT_TASK)):
        verdict, agree, test = sign_verdict(c["lo"], c["hi"], margins["c-drift"]), "", "paired bootstrap over prompts"
        if multi_seed and (h := r.seed_change(sdft, sft, [DRIFT_TASK])):
            c = c | {k: h[k] for k in ("diff", "lo", "hi", "p")}
            verdict, agree = seed_agreement(sign_verdict(c["lo"], c["hi"], margins["c-drift"]), h)
            agree, test = f"; {agree}", HIERARCHICAL
        row.update(measured=c["diff"], lo=c["lo"], hi=c["hi"], p=c["p"], n=c["n"], test=test, verdict=verdict,
                   note=f"SFT {c['value']:.4f} vs SDFT {c['ref_value']:.4f} nats per token on "
                        f"{c['n']} general prompts (base model's greedy continuations){agree}")
        _set_power(row, r, sdft, sft, [DRIFT_TASK], margins["c-drift"], f"the {margins['c-drift']:g}-nat margin")
    else:
        row["note"] = "needs SFT and SDFT arms measured by the drift probe (suite key drift_probe)"
    rows.append(row)

    # (c-mc) SDFT keeps the MC benchmarks' gold answers ahead of the other choices as well as SFT
    row = _row("c-mc", "SDFT keeps prior gold answers ahead at least as well as SFT "
               "(mean Δ margin log p(gold) - max log p(other) over MC benchmarks, SDFT - SFT)",
               "not reported (continuous companion of (c))", "nats", eq_rule("c-mc", "nats"))
    tasks = r.mc_tasks("margin")
    if sft and sdft and tasks and (c := r.mc_change(sft, sdft, "margin")):
        verdict, agree = sign_verdict(c["lo"], c["hi"], margins["c-mc"]), ""
        if multi_seed:
            verdict, agree = seed_agreement(verdict, c)
            agree = f"; {agree}"
        g = r.mc_change(sft, sdft, "gold_logp")
        names = ", ".join(t.split("/")[1] for t in tasks)
        row.update(measured=c["diff"], lo=c["lo"], hi=c["hi"], p=c["p"], n=c["n_items"],
                   test=HIERARCHICAL if multi_seed else "paired bootstrap over items (unweighted average)",
                   verdict=verdict,
                   note=(f"benchmarks: {names}" + (f"; log p(gold) alone, SDFT - SFT {g['diff']:+.3f} "
                                                    f"[{g['lo']:+.3f}, {g['hi']:+.3f}] nats" if g else "") + agree))
        _set_power(row, r, sft, sdft, tasks, margins["c-mc"], f"the {margins['c-mc']:g}-nat margin")
    else:
        row["note"] = "needs SFT and SDFT arms evaluated on multiple-choice prior benchmarks"
    rows.append(row)

    # (d) cost ratios
    for cid, measure, key, what in (("d-flops", "flops", "sdft_flops_ratio", "FLOPs (estimated)"),
                                    ("d-wall", "train_wall_s", "sdft_wall_ratio", "wall-clock")):
        claim_v = CLAIMS[key]
        row = _row(cid, f"SDFT / SFT training {what} ~ {claim_v:g}x",
                   f"~{claim_v:g}x (paper text)", "x",
                   f"band [{claim_v / COST_TOLERANCE:.2f}, {claim_v * COST_TOLERANCE:.2f}]: supported if the "
                   "95% CI (or the point, without one) lies inside, contradicted if entirely outside, "
                   "else inconclusive")
        c = r.cost_ratio(sdft, sft, measure) if sft and sdft else None
        if c:
            note = c["basis"]
            if c.get("note"):
                note += f"; {c['note']}"
            if measure == "train_wall_s" and (math.isnan(c["lo"]) or math.isnan(c["hi"])):
                note += "; single timing on shared hardware: indicative only"
            if measure == "flops":
                note += f"; {FLOPS_ESTIMATE}"
            row.update(measured=c["ratio"], lo=c["lo"], hi=c["hi"], n=c["n"], test="ratio of costs",
                       verdict=band_verdict(c["ratio"], c["lo"], c["hi"], claim_v), note=note)
        else:
            row["note"] = f"no {what} recorded for both SFT and SDFT"
        rows.append(row)
    return rows


HIERARCHICAL = "hierarchical bootstrap (seeds, then items)"


def seed_agreement(verdict: str, c: dict) -> tuple[str, str]:
    """With several seeds: keep a supported / contradicted verdict only when the across-seed
    interval (`seed_lo`, `seed_hi` of `Results.seed_change`) lies on the same side of 0, else
    inconclusive. Returns (verdict, note). Without an across-seed interval (fewer than two seeds
    paired by number) the bootstrap's verdict stands, and the note says so."""
    slo, shi = c.get("seed_lo", math.nan), c.get("seed_hi", math.nan)
    if slo is None or shi is None or math.isnan(slo) or math.isnan(shi):
        return verdict, f"across-seed interval n/a ({c.get('n_seed_pairs', 0)} seed pair(s))"
    note = f"across-seed 95% CI [{100 * slo:+.1f}, {100 * shi:+.1f}] pp"
    if (verdict == SUPPORTED and not slo > 0) or (verdict == CONTRADICTED and not shi < 0):
        return INCONCLUSIVE, f"{note} does not agree with the bootstrap interval: inconclusive"
    return verdict, note


def _test_name(c: dict) -> str:
    if c["test"] == "mcnemar":
        return f"exact McNemar (gains {c.get('n01')}, losses {c.get('n10')}), Agresti-Min CI"
    return "paired bootstrap over items"


def _at_chance(r) -> list[str]:
    bt = r.benchmark_table()
    if bt.empty:
        return []
    return sorted(set(bt.loc[bt["at_chance"].astype(bool) & bt["in_average"].astype(bool), "benchmark"]))


def lead_sentences(rows: list[dict]) -> list[str]:
    """Three or four sentences that answer "did SDFT forget less than SFT here, how sure are we,
    at what cost", from `check_claims` rows: the report opens with them."""
    by = {r["id"]: r for r in rows}

    def said(cid: str) -> str | None:
        r = by.get(cid)
        if r is None or r["verdict"] == NOT_MEASURED:
            return None
        m, ci = F.claim_value(r)
        pw = F.claim_power(r)
        inner = "; ".join(x for x in (f"95% CI {ci}" if ci else "", r["verdict"], pw) if x)
        return f"{m} ({inner})"

    out = []
    forget = [(cid, s) for cid in ("c", "c-mc", "c-drift") if (s := said(cid))]
    # the measures that decide come first, so the answer is followed by its grounds
    forget.sort(key=lambda t: by[t[0]]["verdict"] not in (SUPPORTED, CONTRADICTED, EQUIVALENT))
    if forget:
        what = {"c": "the prior-suite average of SDFT minus SFT is",
                "c-mc": "the gold answers' margin over the other choices on the multiple-choice benchmarks, "
                        "SDFT minus SFT, is",
                "c-drift": "SFT minus SDFT drift from the base on general text is"}
        parts = [f"{what[cid]} {s}" for cid, s in forget]
        verdicts = {by[cid]["verdict"] for cid, _ in forget}
        answer = ("Yes: SDFT forgot less than SFT here" if verdicts & {SUPPORTED} and not verdicts & {CONTRADICTED}
                  else "No: SFT forgot less than SDFT here" if verdicts & {CONTRADICTED} and not verdicts & {SUPPORTED}
                  else "No difference beyond the stated margins" if verdicts <= {EQUIVALENT}
                  else "Mixed evidence" if verdicts >= {SUPPORTED, CONTRADICTED}
                  else "Not decided at this sample size")
        out.append(f"{answer}: " + "; ".join(parts) + ".")
    else:
        out.append("Forgetting was not measured in this run (no prior suite or drift probe for both SFT and SDFT).")
    if (s := said("b")):
        out.append(f"On the new task, SDFT minus SFT accuracy is {s}.")
    if (s := said("a")):
        out.append(f"The demonstration-conditioned teacher SDFT learns from beats the base by {s}.")
    cost = [f"{r['claim'].split('training ')[-1].split(' ~')[0]} {F.claim_value(r)[0]}"
            for cid in ("d-wall", "d-flops") if (r := by.get(cid)) and r["verdict"] != NOT_MEASURED]
    if cost:
        out.append("Cost, SDFT / SFT: " + ", ".join(cost) + ".")
    return out
