"""What each `harness` command does, as functions a notebook, a test or the pytest plugin can call
without the command line: they take the commands' options as arguments, raise `HarnessError`
(one-line message, exit code) on bad input before writing anything, and return result objects. The
command line (`harness.cli`) only parses options, calls one of these, and prints.

- `evaluation`: `eval_task` / `prepare_task_eval` (new task), `eval_prior` / `prepare_prior_eval`
- `training`: `prepare_training` -> `TrainingJob.run`
- `results`: `list_runs`, `run_evaluations`, `export_run`, `write_baseline`, `check_run_claims`,
  `render_report`, `check_tooluse_data`
- `suites`: `open_suite`, `run_suite`, `plan_suite`
- `checks`: the input checks these share
"""

from .evaluation import (PriorEval, PriorEvalResult, TaskEval, TaskEvalResult, eval_prior, eval_task,
                         prepare_prior_eval, prepare_task_eval)
from .results import (check_run_claims, check_tooluse_data, export_run, list_runs, render_report, run_evaluations,
                      write_baseline)
from .suites import open_suite, plan_suite, run_suite
from .training import TrainingJob, prepare_training

__all__ = ["PriorEval", "PriorEvalResult", "TaskEval", "TaskEvalResult", "TrainingJob", "check_run_claims", "check_tooluse_data",
           "eval_prior", "eval_task", "export_run", "list_runs", "open_suite", "plan_suite", "prepare_prior_eval",
           "prepare_task_eval", "prepare_training", "render_report", "run_evaluations", "run_suite",
           "write_baseline"]
