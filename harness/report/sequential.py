"""The report of a sequential (continual-learning) run: the answer first, then the accuracy
matrix, transfer and retention, the normalised curves and the cost of every stage.

It renders through the same templates as a single-task report (`report.TEMPLATES`), so the page
looks and reads alike; only the sections differ. The numbers come from `harness.continual` on the
run's stored per-item outcomes (`sequential.outcomes`).
"""

from __future__ import annotations

import time

from .. import claims as C
from .. import formatting as F
from ..continual import retention_claim
from ..formatting import secs
from ..manifest import SequentialManifest
from ..paper import PAPER_MODEL
from ..precision import describe_run
from . import Bullets, Figure, Lead, Note, Section, VERDICT_CLASS
from . import tables
from .continual import fig_normalised, matrix_tables, transfer_table
from .tables import Table


def _lead(row: dict, tasks: list[str]) -> list[str]:
    if row["verdict"] == C.NOT_MEASURED:
        return [f"Retention was not measured: {row.get('note', '')}."]
    measured, ci = F.claim_value(row)
    answer = {C.SUPPORTED: "Yes: SDFT kept more of the earlier skills than SFT here",
              C.CONTRADICTED: "No: SFT kept more of the earlier skills than SDFT here",
              C.EQUIVALENT: "No difference beyond the stated margin",
              }.get(row["verdict"], "Not decided at this sample size")
    power = F.claim_power(row)
    return [f"{answer}: backward transfer over {' then '.join(tasks)}, SDFT minus SFT, is {measured} "
            f"(95% CI {ci}; {row['verdict']}{'; ' + power if power else ''}).", row.get("note", "")]


def _cost_table(manifest: SequentialManifest) -> Table:
    t = Table(["point", "stage", "task", "steps", "train wall", "tokens generated"],
              "Training cost per stage (a cached stage shows the time it took when it was trained).")
    for p in manifest.points:
        c = p.cost
        t.add([p.point, p.stage_name, p.task, "-" if c.steps is None else c.steps,
               secs(c.train_wall_s or c.wall_s), c.tokens_generated or 0])
    return t


def build_context(run: dict, manifest: SequentialManifest, data, demonstrations: str) -> dict:
    config = run.get("config") or {}
    margins = C.DEFAULT_MARGINS | dict((config.get("claims") or {}).get("margins") or {})
    row = retention_claim(data, margin=margins.get("c-retain"))
    tasks = list(data.tasks)
    fig = fig_normalised(data)
    answer: list = [Lead([s for s in _lead(row, tasks) if s])]
    sections = [Section("answer", "The answer", answer),
                Section("claims", "Claim", [tables.claims_table([row])]),
                Section("matrix", "Accuracy after each stage", list(matrix_tables(data))),
                Section("transfer", "Backward and forward transfer, retention", [transfer_table(data)]),
                Section("curves", "Normalised accuracy (0 = base, 1 = the best either method reached)",
                        [Figure("normalised", "", "Per task, accuracy after each stage rescaled between the base "
                                "model (0) and the best accuracy either method reached on it (1).",
                                "Normalised accuracy per stage", fig) if fig is not None
                         else Note("No task improved over the base model under either method: the normalised "
                                   "curves are undefined.")]),
                Section("cost", "Cost", [_cost_table(manifest)]),
                Section("notes", "Notes", [Bullets([
                    f"Demonstrations: {demonstrations}. Science's offline default 'answer-only' shows the teacher "
                    "the gold letter in the required format, which measures copying the format and answer, not "
                    "reasoning (the paper's GPT-4o demonstrations are not available offline).",
                    "Each stage trains from the previous stage's merged weights; its checkpoint key chains the "
                    "previous stage's key, so changing a later stage never retrains an earlier one."])])]
    header = {"run_id": run["run_id"], "status": run.get("status", "?"),
              "suite": str(manifest.suite or run.get("name")),
              "model": str(manifest.model or "?"), "paper_model": PAPER_MODEL,
              "task": " then ".join(tasks),
              "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.get("created") or time.time())),
              "wall": secs(manifest.wall_s), "dtype": describe_run(config, {"precision": manifest.precision}),
              "demonstrations": demonstrations}
    return {"title": f"Continual learning report · {run.get('name') or run['run_id']}", "run": header,
            "sections": sections, "verdict_class": VERDICT_CLASS,
            "figures": {"normalised": fig} if fig is not None else {}}
