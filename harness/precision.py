"""`dtype: auto`: pick bfloat16 only where this machine runs it natively, from a measured probe.

Whether bf16 pays off on a CPU depends on the CPU, not on the code: with AVX512-BF16 or AMX a
bf16 matmul runs several times faster than float32, while on an AVX2-only CPU torch emulates it
and it runs ~6x *slower*. CPU types vary between machines of the same kind, so a suite cannot
hard-code either. `auto` therefore times one float32 and one bfloat16 matmul on a single thread
(well under a second) and picks bfloat16 only when it is faster by `MARGIN`; on CUDA it means
bfloat16 without a probe. The measurement is cached per machine (CPU model, CPU flags, torch
version) in the harness cache dir, so it runs once.

`auto` is resolved once, before any cache key is computed: keys, run records, summaries and
reports carry the concrete dtype (numbers differ across dtypes), never the word "auto".

    from harness.precision import resolve_dtype
    d = resolve_dtype("auto", "cpu")   # d.dtype == "bfloat16" or "float32"; d.describe() says why
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ConfigError
from .hashing import hash_obj

DTYPES = ("float32", "bfloat16", "bf16-autocast", "float16")   # concrete choices
CHOICES = DTYPES + ("auto",)
MARGIN = 1.5               # bf16 must be at least this much faster than float32 to be chosen
PROBE_VERSION = 1          # bump when the measurement changes: old cached probes are then ignored
ENV = "HARNESS_DTYPE"      # optional override of what `auto` resolves to
# CPU flags that decide bf16 speed (shown with the decision; the cache key uses every flag)
BF16_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16")

_memo: dict[str, dict] = {}   # probe results already read or measured in this process, by cache key


@dataclass(frozen=True)
class Decision:
    """A concrete dtype and why it was chosen (`probe`: what was measured, if anything)."""

    dtype: str
    requested: str
    reason: str
    probe: dict | None = None

    def describe(self) -> str:
        """One line for tables and reports: `bfloat16 (auto: bf16 352 vs fp32 77 GFLOP/s ...)`."""
        if self.requested == self.dtype:
            return f"{self.dtype} (as requested)"
        return f"{self.dtype} ({self.requested}: {self.reason})"

    def to_dict(self) -> dict:
        return asdict(self) | {"summary": self.describe()}


def cpu_info() -> dict:
    """CPU model name and flags from /proc/cpuinfo (Linux), else what `platform` knows."""
    model, flags = None, []
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        k, _, v = line.partition(":")
        k = k.strip()
        if k == "model name" and model is None:
            model = v.strip()
        elif k in ("flags", "Features") and not flags:
            flags = v.split()
    return {"model": model or platform.processor() or platform.machine(), "flags": sorted(set(flags))}


def measure(n: int = 1024, min_s: float = 0.04, max_reps: int = 8, slow_s: float = 0.1) -> dict:
    """GFLOP/s of an n×n matmul in float32 and in bfloat16, one thread, best of a few repeats.

    One thread, because that is the per-core speed ratio and it is least disturbed by other work
    on a shared machine. Each dtype gets one untimed warm-up (oneDNN builds its kernel on first
    use), then repeats until `min_s` has passed or `max_reps` ran; the fastest repeat counts.
    About 0.3 s where bf16 is native, ~0.5 s where it is emulated."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {"n": n, "threads": 1}
    try:
        g = torch.Generator().manual_seed(0)
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a = torch.randn(n, n, generator=g).to(dt)
            b = torch.randn(n, n, generator=g).to(dt)
            with torch.inference_mode():
                t0 = time.perf_counter()
                torch.matmul(a, b)
                warm = time.perf_counter() - t0
                # a warm-up this slow is already conclusive (emulated bf16): repeats would only
                # stretch the probe, and counting the warm-up can only understate the speed
                best, spent, reps = (warm, warm, max_reps) if warm > slow_s else (float("inf"), 0.0, 0)
                while reps < max_reps and (reps == 0 or spent < min_s):
                    t0 = time.perf_counter()
                    torch.matmul(a, b)
                    dt_s = time.perf_counter() - t0
                    best, spent, reps = min(best, dt_s), spent + dt_s, reps + 1
            out[f"{name}_gflops"] = round(2 * n ** 3 / max(best, 1e-9) / 1e9, 1)
    finally:
        torch.set_num_threads(threads)
    return out


def _cache_key() -> tuple[str, dict]:
    import torch

    cpu = cpu_info()
    ident = {"cpu": cpu["model"], "flags": cpu["flags"], "torch": torch.__version__, "probe": PROBE_VERSION}
    return hash_obj(ident), cpu


def _valid(rec) -> bool:
    return (isinstance(rec, dict) and rec.get("probe_version") == PROBE_VERSION
            and all(isinstance(rec.get(k), (int, float)) and rec[k] > 0 for k in ("fp32_gflops", "bf16_gflops")))


def probe_cpu() -> dict:
    """The cached measurement for this machine, measuring (and caching) it if there is none.

    The cache file is `<cache_dir>/precision/<key>.json`, written atomically; an unreadable or
    malformed file is measured again and replaced, never an error. A cache dir that cannot be
    written only costs a re-measurement next time."""
    from .paths import cache_dir

    key, cpu = _cache_key()
    if key in _memo:
        return _memo[key]
    path = cache_dir() / "precision" / f"{key}.json"
    rec = None
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    if _valid(rec):
        rec = rec | {"cached": True}
    else:
        m = measure()
        rec = {"probe_version": PROBE_VERSION, "cpu": cpu["model"],
               "flags": [f for f in BF16_FLAGS if f in cpu["flags"]], "torch": _torch_version(),
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **m}
        _write_atomic(path, rec)
        rec = rec | {"cached": False}
    _memo[key] = rec
    return rec


def _torch_version() -> str:
    import torch

    return torch.__version__


def _write_atomic(path: Path, rec: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".probe-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(rec, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        pass


def check_choice(dtype: str, where: str = "dtype") -> str:
    if dtype not in CHOICES:
        raise ConfigError(f"{where}: unknown '{dtype}' ({', '.join(CHOICES)})")
    return dtype


def require_concrete(dtype: str) -> str:
    """Guard for code that loads weights or builds keys: `auto` must have been resolved before."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not concrete: resolve it with harness.precision.resolve_dtype first")
    return dtype


def resolve_dtype(requested: str, device: str = "cpu") -> Decision:
    """The concrete dtype for `requested` on `device`. Explicit dtypes are returned unchanged;
    `auto` is bfloat16 on CUDA, the probe's choice on CPU, float32 on anything else. `HARNESS_DTYPE`
    (a concrete dtype), when set, is what `auto` means."""
    check_choice(requested)
    if requested != "auto":
        return Decision(requested, requested, "as requested")
    env = os.environ.get(ENV)
    if env:
        if env not in DTYPES:
            raise ConfigError(f"{ENV}: unknown '{env}' ({', '.join(DTYPES)})")
        return Decision(env, "auto", f"{ENV}={env}")
    kind = str(device).split(":")[0]
    if kind == "cuda":
        return Decision("bfloat16", "auto", "CUDA GPU: native bf16")
    if kind != "cpu":
        return Decision("float32", "auto", f"device type {kind}: float32 (bf16 probe is CPU-only)")
    p = probe_cpu()
    ratio = p["bf16_gflops"] / p["fp32_gflops"]
    fast = ratio >= MARGIN
    flags = ", ".join(p.get("flags", [])) or "no CPU flags known"
    why = (f"bf16 {p['bf16_gflops']:.0f} vs fp32 {p['fp32_gflops']:.0f} GFLOP/s = {ratio:.2f}x "
           f"{'>=' if fast else '<'} {MARGIN}x on {p.get('cpu', '?')} [{flags}]")
    return Decision("bfloat16" if fast else "float32", "auto", why, p)


def resolve_autocast(requested: bool | str, device: str) -> tuple[bool, Decision]:
    """Training's bf16 autocast: True/False as given; `auto` through `resolve_dtype` (bf16 autocast
    when auto would pick a bf16 dtype)."""
    if isinstance(requested, bool):
        d = "bfloat16" if requested else "float32"
        return requested, Decision(d, d, "as requested")
    if requested != "auto":
        raise ConfigError(f"bf16: must be true, false or auto, got {requested!r}")
    dec = resolve_dtype("auto", device)
    return dec.dtype in ("bfloat16", "bf16-autocast"), dec


def describe_run(config: dict, meta: dict) -> str:
    """The dtype line of a stored run (suite or eval): the decision if recorded, else the dtype."""
    p = (meta or {}).get("precision") or (config or {}).get("precision")
    if isinstance(p, dict) and p.get("summary"):
        return str(p["summary"])
    return str((config or {}).get("dtype", "dtype not recorded"))
