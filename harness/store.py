"""The results store: one SQLite file holding runs, evaluations, per-example outcomes and
training curves.

Why SQLite: one file, transactional, readable from pandas without this package, and safe against
a process killed mid-write (WAL journal). Every evaluation is keyed by a content hash of what
produced it (`Store.eval_key`), so an identical re-run is a cache hit and any change recomputes.

Life of an evaluation:
1. `begin_eval(key, ...)` creates the row with status 'running' (or returns the existing row).
2. `add_examples(key, rows)` commits per-example outcomes in batches as they are produced; an
   interrupted evaluation keeps them, and a re-run (same key) asks `done_items(key)` and only
   computes the rest.
3. `finish_eval(key, summary)` marks it 'complete' in one transaction. Only complete evaluations
   are cache hits (`get_eval`).

The report layer reads this file and never imports torch.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import StoreError
from .hashing import hash_obj

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,              -- 'eval-<task>' (eval-tooluse, eval-science), 'eval-prior', 'train', 'suite', 'gate'
    name TEXT,
    created REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL,            -- 'running' | 'complete' | 'failed' | 'interrupted'
    config TEXT NOT NULL DEFAULT '{}',
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS evaluations (
    eval_key TEXT PRIMARY KEY,       -- content hash of model, data, arm, settings, decoder, scorer
    task TEXT NOT NULL,              -- 'tooluse', 'science', 'prior/hellaswag', ...
    arm TEXT NOT NULL,               -- 'base', 'teacher', 'sft', ... or a benchmark variant
    model TEXT NOT NULL,             -- human-readable model spec
    model_hash TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    settings TEXT NOT NULL,          -- JSON: generation settings, template, scorer version, ...
    status TEXT NOT NULL,            -- 'running' | 'complete'
    summary TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS run_evals (
    run_id TEXT NOT NULL,
    eval_key TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',  -- role of this evaluation in the run (arm name, seed, ...)
    PRIMARY KEY (run_id, eval_key, label)
);
CREATE TABLE IF NOT EXISTS examples (
    eval_key TEXT NOT NULL,
    item_id TEXT NOT NULL,           -- stable id of the item within its dataset
    idx INTEGER NOT NULL,            -- position in the evaluated list
    prompt_hash TEXT NOT NULL,
    output TEXT,
    parsed TEXT,                     -- JSON
    score REAL NOT NULL,             -- the headline per-item score (0/1 for binary metrics)
    diagnostics TEXT NOT NULL DEFAULT '{}',  -- JSON: other per-item metrics and details
    tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (eval_key, item_id)
);
CREATE TABLE IF NOT EXISTS train_steps (
    train_key TEXT NOT NULL,
    step INTEGER NOT NULL,
    metrics TEXT NOT NULL,           -- JSON: loss, divergence, drift_kl, lr, tokens_per_s, ...
    PRIMARY KEY (train_key, step)
);
"""


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


SCHEMA_VERSION = 1
"""`PRAGMA user_version` of the schema this code writes. 0 is a store from before versioning (the same
tables, without the `run_evals_need_run` trigger); `_migrate` brings it to 1 in one transaction."""

# Version 1: a link between a run and an evaluation needs the run row, so no evaluation can be
# attached to a run that was never recorded.
_V1 = """
CREATE TRIGGER IF NOT EXISTS run_evals_need_run BEFORE INSERT ON run_evals
WHEN NOT EXISTS (SELECT 1 FROM runs WHERE run_id = NEW.run_id)
BEGIN SELECT RAISE(ABORT, 'run_evals: no such run'); END;
"""

SQLITE_MAGIC = b"SQLite format 3\x00"
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}")


def check_safe_name(name: str, what: str = "run id") -> str:
    """Return `name` if it can be used as one file or folder name (a report folder is named after
    its run id, and a shared store may hold ids written by anyone); raise StoreError otherwise."""
    if not _SAFE_ID.fullmatch(name or "") or name in (".", ".."):
        raise StoreError(f"{what} {name!r} is not a safe file name "
                         "(letters, digits and . _ = + -, starting with a letter or digit)")
    return name


class Store:
    """Thin, typed access to the SQLite results file.

    `Store(path)` opens for writing: it creates the file if absent and migrates an older schema.
    `Store(path, readonly=True)` (and `open_existing`) never creates, alters or migrates anything:
    read verbs must be safe on a store shared with a newer harness or another user. A path that
    holds something other than an SQLite database (an empty file, a text file, a folder) is refused
    in both modes and never overwritten."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._check_file()
        try:
            if readonly:
                self.conn = self._connect_readonly()
            else:
                above = self.path.absolute().parent
                while not above.exists():
                    above = above.parent
                if not above.is_dir():
                    raise StoreError(f"{self.path}: cannot create the results store: {above} is a file, not a folder")
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: results store has schema version {version}, newer than this "
                                 f"harness understands ({SCHEMA_VERSION}); upgrade harness to use it")
            if readonly:
                have = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if "runs" not in have:
                    raise StoreError(f"{self.path}: not a harness results store (no 'runs' table)")
            else:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                if version < SCHEMA_VERSION:
                    self._migrate(version)
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open the results store: {e}") from None
        except OSError as e:
            raise StoreError(f"{self.path}: cannot open the results store: {e.strerror or e}") from None

    def _check_file(self) -> None:
        p = self.path
        if p.is_dir():
            raise StoreError(f"{p}: results store path is a folder, expected an SQLite file")
        if p.exists():
            try:
                with open(p, "rb") as f:
                    head = f.read(len(SQLITE_MAGIC))
            except OSError as e:
                raise StoreError(f"{p}: cannot read the results store: {e.strerror}") from None
            if head != SQLITE_MAGIC:
                what = "an empty file" if not head else "not an SQLite database"
                raise StoreError(f"{p}: {what}, expected a harness results store (left untouched)")
        elif self.readonly:
            raise StoreError(f"{p}: results store not found")

    def _connect_readonly(self) -> sqlite3.Connection:
        """Open without writing a byte. SQLite's `mode=ro` still creates `-wal`/`-shm` files next to
        a WAL database; when no `-wal` file exists no writer is active, and `immutable=1` reads the
        file as it is. With a writer active its journal files exist already."""
        uri = self.path.resolve().as_uri() + "?mode=ro"
        if not Path(str(self.path) + "-wal").exists():
            uri += "&immutable=1"
        return sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)

    def _migrate(self, version: int) -> None:
        """Bring a version-0 (or new, empty) store to SCHEMA_VERSION in one transaction, so an
        interrupted migration leaves the old store as it was."""
        with self.transaction() as c:
            # re-read under the write lock: another process may have migrated meanwhile
            if c.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return
            for stmt in SCHEMA.split(";"):  # executescript would commit; the schema has no other ';'
                if stmt.strip():
                    c.execute(stmt)
            c.execute(_V1)
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @classmethod
    def open_existing(cls, path: str | Path) -> "Store":
        """Open a store for reading only; fail cleanly if it does not exist."""
        return cls(path, readonly=True)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    # ----- keys -------------------------------------------------------------------------
    @staticmethod
    def eval_key(**parts: Any) -> str:
        """Content key of an evaluation; pass everything that can change its result."""
        return hash_obj(parts, n=24)

    # ----- runs ---------------------------------------------------------------------------
    def new_run(self, kind: str, name: str | None = None, config: dict | None = None,
                meta: dict | None = None, run_id: str | None = None) -> str:
        run_id = check_safe_name(run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:6]}")
        try:
            with self.transaction() as c:
                # a plain INSERT: a duplicate id or a constraint of the table fails loudly instead of
                # leaving the evaluations that follow attached to no run
                c.execute(
                    "INSERT INTO runs(run_id, kind, name, created, status, config, meta) "
                    "VALUES (?,?,?,?,?,?,?)",
                    (run_id, kind, name, time.time(), "running", json.dumps(config or {}, default=str),
                     json.dumps(meta or {}, default=str)),
                )
        except sqlite3.IntegrityError as e:
            raise StoreError(f"{self.path}: cannot record run '{run_id}': {e}") from None
        return run_id

    def finish_run(self, run_id: str, status: str = "complete", meta: dict | None = None) -> None:
        with self.transaction() as c:
            if meta is not None:
                old = self.get_run(run_id)["meta"]
                old.update(meta)
                c.execute("UPDATE runs SET meta=? WHERE run_id=?", (json.dumps(old, default=str), run_id))
            c.execute("UPDATE runs SET status=?, finished=? WHERE run_id=?", (status, time.time(), run_id))

    @contextmanager
    def failing_run(self, run_id: str):
        """Mark the run 'interrupted' (Ctrl-C) or 'failed' when the block raises, so no run is left
        'running' forever; what it stored stays for the resume."""
        try:
            yield
        except BaseException as e:
            self.finish_run(run_id, "interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
            raise

    def update_run_meta(self, run_id: str, **meta: Any) -> None:
        old = self.get_run(run_id)["meta"]
        old.update(meta)
        self.conn.execute("UPDATE runs SET meta=? WHERE run_id=?", (json.dumps(old, default=str), run_id))

    def get_run(self, run_id: str) -> dict:
        """The run with this exact id; else the newest run with this name (a suite name); else the
        one run whose id starts with `run_id`. Ids are literal (no SQL patterns); an empty id or an
        ambiguous prefix is an error, never "the newest run"."""
        if not isinstance(run_id, str) or not run_id.strip():
            raise StoreError(f"{self.path}: empty run id (give a run id, an unambiguous prefix or a suite name)")
        row = self.conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            row = self.conn.execute("SELECT * FROM runs WHERE name=? ORDER BY created DESC LIMIT 1",
                                    (run_id,)).fetchone()
        if row is None:
            rows = self.conn.execute("SELECT * FROM runs WHERE substr(run_id, 1, ?)=? ORDER BY created DESC",
                                     (len(run_id), run_id)).fetchall()
            if len(rows) > 1:
                ids = ", ".join(r["run_id"] for r in rows[:3]) + (", ..." if len(rows) > 3 else "")
                raise StoreError(f"{self.path}: run id prefix '{run_id}' is ambiguous ({len(rows)} runs: {ids})")
            row = rows[0] if rows else None
        if row is None:
            raise StoreError(f"{self.path}: no run '{run_id}'")
        d = dict(row)
        d["config"], d["meta"] = _loads(d["config"]), _loads(d["meta"])
        return d

    def list_runs(self, kind: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM runs", ()
        if kind:
            q, args = q + " WHERE kind=?", (kind,)
        rows = self.conn.execute(q + " ORDER BY created", args).fetchall()
        return [dict(r) | {"config": _loads(r["config"]), "meta": _loads(r["meta"])} for r in rows]

    def link(self, run_id: str, eval_key: str, label: str = "") -> None:
        try:
            self.conn.execute("INSERT INTO run_evals(run_id, eval_key, label) VALUES (?,?,?) "
                              "ON CONFLICT DO NOTHING", (run_id, eval_key, label))
        except sqlite3.IntegrityError as e:
            raise StoreError(f"{self.path}: cannot link evaluation {eval_key[:12]} to run '{run_id}': {e}") from None

    def run_evals(self, run_id: str) -> list[dict]:
        rows = self.conn.execute(
            "SELECT e.*, r.label FROM run_evals r JOIN evaluations e ON e.eval_key=r.eval_key "
            "WHERE r.run_id=? ORDER BY e.created", (run_id,)).fetchall()
        return [self._eval_row(r) for r in rows]

    # ----- evaluations -----------------------------------------------------------------
    @staticmethod
    def _eval_row(row: sqlite3.Row) -> dict:
        d = dict(row)
        d["settings"], d["summary"] = _loads(d["settings"]), _loads(d["summary"])
        return d

    def begin_eval(self, key: str, *, task: str, arm: str, model: str, model_hash: str,
                   data_hash: str, settings: dict) -> dict:
        self.conn.execute(
            "INSERT INTO evaluations(eval_key, task, arm, model, model_hash, data_hash, "
            "settings, status, created) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(eval_key) DO NOTHING",
            (key, task, arm, model, model_hash, data_hash, json.dumps(settings, default=str),
             "running", time.time()))
        return self.get_eval(key, complete_only=False)

    def get_eval(self, key: str, complete_only: bool = True) -> dict | None:
        row = self.conn.execute("SELECT * FROM evaluations WHERE eval_key=?", (key,)).fetchone()
        if row is None or (complete_only and row["status"] != "complete"):
            return None
        return self._eval_row(row)

    def find_evals(self, **where: Any) -> list[dict]:
        cols = ", ".join(f"{k}=?" for k in where) if where else ""
        q = "SELECT * FROM evaluations" + (" WHERE " + cols.replace(", ", " AND ") if cols else "")
        return [self._eval_row(r) for r in self.conn.execute(q + " ORDER BY created", tuple(where.values()))]

    def done_items(self, key: str) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT item_id FROM examples WHERE eval_key=?", (key,))}

    def add_examples(self, key: str, rows: Iterable[dict]) -> None:
        """Store per-example outcomes (one transaction per call). Each row needs item_id, idx,
        prompt_hash and score; output, parsed, diagnostics and tokens are optional."""
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO examples(eval_key, item_id, idx, prompt_hash, output, parsed, "
                "score, diagnostics, tokens) VALUES (?,?,?,?,?,?,?,?,?)",
                [(key, str(r["item_id"]), int(r["idx"]), r["prompt_hash"], r.get("output"),
                  json.dumps(r.get("parsed"), default=str), float(r["score"]),
                  json.dumps(r.get("diagnostics") or {}, default=str), int(r.get("tokens", 0)))
                 for r in rows])

    def finish_eval(self, key: str, summary: dict) -> None:
        with self.transaction() as c:
            c.execute("UPDATE evaluations SET status='complete', summary=?, finished=? WHERE eval_key=?",
                      (json.dumps(summary, default=str), time.time(), key))

    def examples(self, key: str) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM examples WHERE eval_key=? ORDER BY idx", (key,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["parsed"], d["diagnostics"] = _loads(d["parsed"]), _loads(d["diagnostics"])
            out.append(d)
        return out

    # ----- training curves and artefacts ---------------------------------------------
    def add_train_step(self, train_key: str, step: int, metrics: dict) -> None:
        self.conn.execute("INSERT OR REPLACE INTO train_steps(train_key, step, metrics) VALUES (?,?,?)",
                          (train_key, step, json.dumps(metrics, default=str)))

    def train_steps(self, train_key: str) -> list[dict]:
        rows = self.conn.execute("SELECT step, metrics FROM train_steps WHERE train_key=? ORDER BY step",
                                 (train_key,)).fetchall()
        return [{"step": r["step"], **json.loads(r["metrics"])} for r in rows]
