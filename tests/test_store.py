"""The results store: schema versioning and migration, read-only opening, refusal of files that are
not a results store, exact run-id lookup, and no evaluation attached to a run that does not exist."""

from __future__ import annotations

import hashlib
import re
import sqlite3

import pytest

from harness.errors import StoreError
from harness import store as store_mod
from harness.store import SCHEMA, SCHEMA_VERSION, Store, check_safe_name


def _files(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _v0_store(path):
    """A store as written before schema versioning: the same tables, user_version 0, no trigger."""
    c = sqlite3.connect(path)
    c.executescript(SCHEMA)
    c.execute("INSERT INTO runs(run_id, kind, created, status) VALUES ('old-run', 'suite', 1.0, 'complete')")
    c.commit()
    c.close()


def _version(path) -> int:
    c = sqlite3.connect(path)
    try:
        return c.execute("PRAGMA user_version").fetchone()[0]
    finally:
        c.close()


def test_a_new_store_carries_the_schema_version(tmp_path):
    Store(tmp_path / "h.db").close()
    assert _version(tmp_path / "h.db") == SCHEMA_VERSION == 1


def test_an_unversioned_store_is_migrated_and_keeps_its_rows(tmp_path):
    _v0_store(tmp_path / "h.db")
    s = Store(tmp_path / "h.db")
    assert _version(tmp_path / "h.db") == SCHEMA_VERSION
    assert s.get_run("old-run")["status"] == "complete"
    triggers = {r[0] for r in s.conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert "run_evals_need_run" in triggers


def test_a_failing_migration_leaves_the_old_store_as_it_was(tmp_path, monkeypatch):
    _v0_store(tmp_path / "h.db")
    monkeypatch.setattr(store_mod, "_V1", "CREATE TRIGGER broken BEFORE INSERT ON no_such_table BEGIN SELECT 1; END")
    with pytest.raises(StoreError, match="cannot open the results store"):
        Store(tmp_path / "h.db")
    assert _version(tmp_path / "h.db") == 0
    c = sqlite3.connect(tmp_path / "h.db")
    assert not c.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall()
    assert c.execute("SELECT run_id FROM runs").fetchall() == [("old-run",)]


@pytest.mark.parametrize("readonly", [False, True])
def test_a_newer_schema_is_refused_untouched(tmp_path, readonly):
    c = sqlite3.connect(tmp_path / "h.db")
    c.executescript("CREATE TABLE runs(run_id TEXT, extra TEXT NOT NULL); PRAGMA user_version=7;")
    c.close()
    before = _files(tmp_path)
    with pytest.raises(StoreError, match=r"h\.db: results store has schema version 7, newer"):
        Store(tmp_path / "h.db", readonly=readonly)
    assert _files(tmp_path) == before


@pytest.mark.parametrize("content,needle", [(b"", "an empty file"), (b"name,score\nx,1\n", "not an SQLite database")])
@pytest.mark.parametrize("readonly", [False, True])
def test_a_file_that_is_not_a_store_is_refused_and_never_overwritten(tmp_path, content, needle, readonly):
    (tmp_path / "h.db").write_bytes(content)
    with pytest.raises(StoreError, match=needle):
        Store(tmp_path / "h.db", readonly=readonly)
    assert (tmp_path / "h.db").read_bytes() == content and len(list(tmp_path.iterdir())) == 1


def test_a_folder_as_store_is_refused(tmp_path):
    with pytest.raises(StoreError, match="path is a folder"):
        Store(tmp_path)


def test_read_only_open_writes_nothing(tmp_path):
    s = Store(tmp_path / "h.db")
    s.new_run("suite", run_id="r1")
    s.close()
    before = _files(tmp_path)
    ro = Store.open_existing(tmp_path / "h.db")
    assert ro.get_run("r1")["kind"] == "suite"
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.new_run("suite", run_id="r2")
    ro.close()
    assert _files(tmp_path) == before  # no -wal/-shm left behind, same bytes


def test_read_only_open_of_an_old_store_does_not_migrate_it(tmp_path):
    _v0_store(tmp_path / "h.db")
    before = _files(tmp_path)
    assert Store.open_existing(tmp_path / "h.db").get_run("old-run")["run_id"] == "old-run"
    assert _files(tmp_path) == before and _version(tmp_path / "h.db") == 0


@pytest.mark.parametrize("path_kind", ["missing", "foreign"])
def test_read_only_open_needs_a_harness_store(tmp_path, path_kind):
    if path_kind == "foreign":
        c = sqlite3.connect(tmp_path / "h.db")
        c.execute("CREATE TABLE t(x)")
        c.close()
    before = _files(tmp_path)
    with pytest.raises(StoreError, match="not found" if path_kind == "missing" else "no 'runs' table"):
        Store.open_existing(tmp_path / "h.db")
    assert _files(tmp_path) == before


def test_no_evaluation_can_be_linked_to_a_missing_run(tmp_path):
    s = Store(tmp_path / "h.db")
    s.begin_eval("k", task="tooluse", arm="base", model="m", model_hash="h", data_hash="d", settings={})
    with pytest.raises(StoreError, match="no such run"):
        s.link("never-recorded", "k", "base")
    assert s.conn.execute("SELECT COUNT(*) FROM run_evals").fetchone()[0] == 0
    rid = s.new_run("eval-tooluse")
    s.link(rid, "k", "base")
    s.link(rid, "k", "base")  # linking twice is harmless
    assert [e["eval_key"] for e in s.run_evals(rid)] == ["k"]


def test_constraint_violations_are_not_swallowed(tmp_path):
    s = Store(tmp_path / "h.db")
    s.new_run("suite", run_id="r1")
    with pytest.raises(StoreError, match="cannot record run 'r1'"):
        s.new_run("suite", run_id="r1")
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
        s.begin_eval("k", task="tooluse", arm="base", model=None, model_hash="h", data_hash="d", settings={})
    # an existing evaluation is returned as it is (a resume), not replaced
    first = s.begin_eval("k2", task="tooluse", arm="base", model="m", model_hash="h", data_hash="d", settings={})
    again = s.begin_eval("k2", task="tooluse", arm="teacher", model="m", model_hash="h", data_hash="d", settings={})
    assert again["arm"] == "base" and again["created"] == first["created"]


@pytest.fixture
def runs(tmp_path):
    s = Store(tmp_path / "h.db")
    for rid, name in (("20260101-a1", "quick"), ("20260101-a2", "quick"), ("20260101-b1", None), ("x_1", None)):
        s.new_run("suite", name=name, run_id=rid)
    return s


@pytest.mark.parametrize("query,expected", [
    ("20260101-a1", "20260101-a1"),   # exact
    ("20260101-b", "20260101-b1"),    # unambiguous prefix
    ("quick", "20260101-a2"),         # suite name: its newest run
    ("x_1", "x_1"),
])
def test_run_lookup(runs, query, expected):
    assert runs.get_run(query)["run_id"] == expected


@pytest.mark.parametrize("query,needle", [
    ("", "empty run id"), ("  ", "empty run id"),
    ("%", "no run '%'"), ("_", "no run '_'"), ("2026%", "no run '2026%'"), ("x%", "no run 'x%'"),
    ("20260101-a", "prefix '20260101-a' is ambiguous (2 runs"), ("2026", "is ambiguous (3 runs"),
    ("nosuch", "no run 'nosuch'"),
])
def test_run_ids_are_literal_and_never_guessed(runs, query, needle):
    with pytest.raises(StoreError, match=re.escape(needle)):
        runs.get_run(query)


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "", "a b", "x" * 201, "a\\b"])
def test_unsafe_names_are_refused(tmp_path, name):
    with pytest.raises(StoreError, match="not a safe file name"):
        check_safe_name(name)
    if name:  # an empty id asks new_run for a generated one
        with pytest.raises(StoreError, match="not a safe file name"):
            Store(tmp_path / "h.db").new_run("suite", run_id=name)


def test_generated_run_ids_are_safe_names(tmp_path):
    rid = Store(tmp_path / "h.db").new_run("eval-tooluse")
    assert check_safe_name(rid) == rid
