"""A model's module names from its config alone, so LoRA targets are checked before anything runs.

A typo in `lora_targets` would otherwise surface only when training starts: in `harness run`
after the base model's evaluations, in `harness train` after the weights have loaded. The module
tree of a causal LM follows from its `config.json`: the model is built on the meta device
(`accelerate.init_empty_weights`), which allocates no weights and takes well under a second.
Nothing is materialised or downloaded here: a built-in alias that is not materialised yet, or a
hub id without a cached config, has no readable config, and the check is deferred (`None`) to
the training-time check of `harness.train.loop`, which sees the loaded model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import ModelError


@dataclass(frozen=True)
class ModuleNames:
    """Every module's dotted name, and the leaf names of the layers LoRA adapts (linear and
    GPT-2-style Conv1D), the ones worth suggesting."""

    names: frozenset[str]
    adaptable: tuple[str, ...]

    def has(self, target: str) -> bool:
        """peft's rule for a list of targets: a module whose name is `target` or ends in `.target`."""
        return any(n == target or n.endswith("." + target) for n in self.names)


def module_names(model) -> ModuleNames:
    """The module names of a built model (loaded, or empty on the meta device)."""
    import torch

    names, leaves = set(), set()
    for name, m in model.named_modules():
        names.add(name)
        if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D":
            leaves.add(name.rsplit(".", 1)[-1])
    leaves.discard("lm_head")  # not adaptable here (see lora_target_problem)
    return ModuleNames(frozenset(names), tuple(sorted(leaves)))


def lora_target_problem(targets, modules: ModuleNames) -> str | None:
    """Why `targets` cannot be adapted in a model with `modules`, or None when they all can."""
    if "lm_head" in targets:
        return "'lm_head' is not supported (the teacher shares the output head)"
    missing = [t for t in targets if not modules.has(t)]
    if missing:
        return f"module '{missing[0]}' not in the model (has: {', '.join(modules.adaptable)})"
    return None


def config_folder(spec: str) -> Path | None:
    """The local folder holding `spec`'s config.json (for an adapter folder: its base model's),
    found without materialising or downloading; None when there is none yet (an alias not
    materialised, a hub id not in the local cache)."""
    from .models import resolve

    ms = resolve(spec, materialise_alias=False)
    path = Path(ms.path)
    if path.is_dir():  # a model folder, or a materialised alias (its folder appears atomically)
        return path
    if not path.is_absolute() and ms.path.count("/") == 1:  # a hub id: its cached snapshot, if any
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(ms.path, allow_patterns=["config.json"], local_files_only=True))
        except Exception:  # not in the local cache: nothing to read offline
            return None
    return None


@lru_cache(maxsize=8)
def _from_folder(folder: str, mtime_ns: int, trust_remote_code: bool) -> ModuleNames:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_file = Path(folder) / "config.json"
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        with init_empty_weights(include_buffers=True):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:  # unreadable config, unknown architecture
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"{cfg_file}: cannot build the model from its config ({first})") from None
    return module_names(model)


def module_names_from_config(spec: str, trust_remote_code: bool = False) -> ModuleNames | None:
    """The module names of `spec`'s model from its config, or None when the config is not on this
    machine yet (the check is deferred to training time)."""
    folder = config_folder(spec)
    if folder is None or not (folder / "config.json").is_file():
        return None
    return _from_folder(str(folder), (folder / "config.json").stat().st_mtime_ns, trust_remote_code)
