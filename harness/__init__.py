"""harness: measure catastrophic forgetting when a language model learns from demonstrations,
comparing supervised fine-tuning (SFT) with Self-Distillation Fine-Tuning (SDFT, arXiv 2601.19897).

Modules, in the order data flows: `models` (load), `tasks` (new-task data and scorers),
`generation` (backends), `evaluate` (new-task evaluation), `prior` (lm-eval suite), `train` (SFT and
SDFT on one loop), `store` (SQLite results), `metrics`, `report`, `gate`.
"""

__version__ = "0.1.0"
