"""Statistics over stored per-item outcomes: intervals, paired tests, forgetting, power.

    from harness.metrics import mean_ci, paired_test, forgetting, mde
    mean, lo, hi = mean_ci([1, 0, 1, 1])              # Wilson interval (binary scores)
    paired_test(base_scores, sft_scores)              # McNemar (binary) or paired bootstrap

Pure functions of numbers (numpy + scipy, no torch), so reports and the gate can be rebuilt from
the results store anywhere. Conventions:

- Scores are per item, in the same item order for paired functions (`a` = reference/baseline,
  `b` = arm/candidate); differences are always `b - a`, so a negative difference is a drop.
- "Binary" means every score is exactly 0 or 1; binary metrics get exact or score-based methods
  because the small test sets this project affords (68 tool-use items) break normal approximations.
- Confidence levels are two-sided unless a docstring says otherwise.

Modules (import from `harness.metrics`, which re-exports their public names):

- `intervals`: score coercion, Wilson and t intervals (`mean_ci`, `seed_ci`), the Agresti-Min paired
  interval and `variance_floor`; the base the other modules import from.
- `paired`: paired t, paired bootstrap, exact McNemar, `paired_test`; Holm and Benjamini-Hochberg.
- `aggregate`: prior average, forgetting and its paired change, flip tables, chance levels.
- `cost`: cost ratios (wall-clock, FLOPs) against a reference, with intervals.
- `power`: minimum detectable effect (`mde`) and `required_n`.
- `ratio`: micro (weighted) means, the cluster and seeds-then-items bootstraps, `micro_scaled`.
- `choice`: multiple-choice measures (log p(gold), margin) and their metric names.
"""

from .aggregate import CHANCE, flip_table, forgetting, is_at_chance, prior_average, prior_average_change_ci
from .choice import MC_MEASURES, choice_measures, gold_index, mc_item_measures, mc_task
from .cost import cost_ratio, cost_table
from .intervals import (agresti_min, is_binary, mean_ci, paired_binary_ci, seed_ci, variance_floor,
                        wilson_interval, wilson_upper)
from .paired import benjamini_hochberg, holm, mcnemar, paired_bootstrap, paired_t, paired_test
from .power import mde, required_n
from .ratio import (hierarchical_change_ci, instruction_counts, micro_scaled, paired_ratio_bootstrap, ratio_ci,
                    ratio_stderr, weighted_mean)

__all__ = [
    "CHANCE", "is_binary", "wilson_interval", "wilson_upper", "mean_ci", "paired_binary_ci", "paired_bootstrap",
    "mcnemar", "paired_test", "holm", "benjamini_hochberg", "seed_ci", "prior_average",
    "forgetting", "prior_average_change_ci", "flip_table", "mde", "required_n", "cost_ratio",
    "cost_table", "is_at_chance", "MC_MEASURES", "choice_measures", "gold_index", "mc_item_measures", "mc_task",
    "agresti_min", "variance_floor", "paired_t",
    "weighted_mean", "ratio_ci", "paired_ratio_bootstrap", "hierarchical_change_ci",
    "ratio_stderr", "instruction_counts", "micro_scaled",
]
