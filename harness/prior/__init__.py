"""Prior-capability suite: general benchmarks through lm-eval 0.4.x, fully offline.

Measures what fine-tuning forgets (HellaSwag, TruthfulQA MC1, MMLU, IFEval, Winogrande, HumanEval;
ARC and GSM8K available). Modules: `adapters` (shared files -> lm-eval's column schema), `data`
(seeded subsets written as JSONL), `tasks` (generated lm-eval task configs), `humaneval` (sandboxed
code execution), `suite` (the YAML suite file), `evaluate` (the entry point, cached in the store).
"""

from .evaluate import evaluate_prior, prior_average
from .suite import DEFAULT_SUITE, load_suite
from .tasks import BENCHMARKS, PAPER_SIX

__all__ = ["evaluate_prior", "prior_average", "load_suite", "DEFAULT_SUITE", "BENCHMARKS", "PAPER_SIX"]
