"""pytest plugin: one test per gated metric.

    pytest --harness-candidate RUN_OR_CHECKPOINT --harness-baseline results/baselines/base.json \\
           --harness-gate suites/gate.yaml [--harness-db results/harness.db]

Registered through the `pytest11` entry point (or load it explicitly with
`-p harness.pytest_plugin`). Without `--harness-gate` it does nothing. Each rule of the gate file
becomes a test `harness-gate::<metric>`: a failing metric fails with the gate's one-line reason;
an inconclusive metric fails, unless the gate file says `inconclusive: pass` and the sample could
have detected a drop of the allowed size (n >= needed n): then it is skipped. The comparison runs once, when
the first gate test runs; a bad input (missing metric, different item set, malformed file) fails
every gate test with that one line. Use pytest's own `--junitxml` for a JUnit report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .errors import HarnessError

_RESULT = pytest.StashKey[object]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("harness", "harness regression gate")
    g.addoption("--harness-candidate", metavar="SPEC",
                help="candidate: stored run id (RUN[#ARM]), outcome/baseline JSON file, or checkpoint")
    g.addoption("--harness-baseline", metavar="SPEC", help="baseline: results/baselines/*.json or a stored run id")
    g.addoption("--harness-gate", metavar="PATH", help="gate file with the rules (e.g. suites/gate.yaml)")
    g.addoption("--harness-db", metavar="PATH", default=None,
                help="results store (default: HARNESS_DB or results/harness.db)")


def _enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("--harness-gate", default=None))


def pytest_configure(config: pytest.Config) -> None:
    if _enabled(config):
        missing = [o for o in ("--harness-candidate", "--harness-baseline") if not config.getoption(o)]
        if missing:
            raise pytest.UsageError(f"--harness-gate needs {' and '.join(missing)}")


class GateError(Exception):
    """A HarnessError seen while running the gate, reported as one line."""


class GateFile(pytest.File):
    """The gate file as a collector: one item per rule."""

    def collect(self):
        from .gate import load_gate_config

        try:
            cfg = load_gate_config(self.path)
        except HarnessError as e:
            raise GateError(str(e)) from None
        for rule in cfg.rules:
            yield GateItem.from_parent(self, name=rule.metric, metric=rule.metric)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, GateError):
            return f"harness gate: {excinfo.value}"
        return super().repr_failure(excinfo)


def _run(config: pytest.Config, gate_path: Path):
    """Run the gate once per session; cache the result (or the one-line error)."""
    if _RESULT in config.stash:
        return config.stash[_RESULT]
    from .gate import lazy_default_evaluator, run_gate
    from .paths import results_db
    from .store import Store

    store = None
    try:
        dbp = results_db(config.getoption("--harness-db"))
        store = Store(dbp) if Path(dbp).is_file() else None
        res = run_gate(config.getoption("--harness-baseline"), config.getoption("--harness-candidate"), gate_path,
                       store=store, evaluator=lazy_default_evaluator)
    except HarnessError as e:
        res = GateError(str(e))
    finally:
        if store is not None:
            store.close()
    config.stash[_RESULT] = res
    return res


class GateItem(pytest.Item):
    def __init__(self, *, metric: str, **kw):
        super().__init__(**kw)
        self.metric = metric

    def runtest(self) -> None:
        res = _run(self.config, self.path)
        if isinstance(res, GateError):
            raise res
        row = next(r for r in res.rows if r.metric == self.metric)
        if row.failed:  # a regression, or an inconclusive metric the gate counts as failing
            raise GateError(row.message)
        if row.verdict == "inconclusive":
            pytest.skip(row.message)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, GateError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"harness gate: {self.metric}"


def pytest_collect_file(file_path: Path, parent):
    cfg = parent.config
    if _enabled(cfg) and file_path.resolve() == Path(cfg.getoption("--harness-gate")).resolve():
        return GateFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """Add the gate tests when the gate file was not among the collected paths."""
    if not _enabled(config) or any(isinstance(i, GateItem) for i in items):
        return
    path = Path(config.getoption("--harness-gate"))
    if not path.is_file():
        raise pytest.UsageError(f"--harness-gate: {path}: gate file not found")
    gf = GateFile.from_parent(session, path=path.resolve())
    try:
        items.extend(gf.collect())
    except GateError as e:
        raise pytest.UsageError(f"harness gate: {e}") from None
