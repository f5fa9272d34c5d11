"""A training run's output folder: its lock, run_config.json, the atomic checkpoints a run resumes
from, and the final (and merged) model it exports.

Functions of the run (`loop.Run`), called by the loop (resume, lock) and by the `Checkpoints`
callback (save, export). Every write goes to a temporary name first and is renamed into place, so a
crash leaves either the previous checkpoint or the new one, never half of one."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from ..models import TRAIN_META_NAME

log = logging.getLogger("harness.train")
LOCK_NAME = ".harness-train.lock"  # held (flock) while a run writes its output folder
DONE_MARKER = Path("final") / TRAIN_META_NAME


def trainable_state(run) -> dict[str, torch.Tensor]:
    params = dict(run.model.named_parameters())
    return {n: params[n].detach().to("cpu").contiguous() for n in run.trainable_names}


def save(run) -> None:
    """Trainable weights, EMA teacher, optimiser, scheduler, step, totals and log, at `ckpt-<step>`;
    the oldest beyond `keep_checkpoints` are removed."""
    if not run.acc.is_main_process:
        run.acc.wait_for_everyone()
        return
    final = run.out / f"ckpt-{run.step:06d}"
    tmp = run.out / f".ckpt-{run.step:06d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(trainable_state(run), tmp / "trainable.safetensors")
    ts = run.teacher.state_dict()
    if ts:
        save_file({k: v.to("cpu").contiguous() for k, v in ts.items()}, tmp / "teacher.safetensors")
    torch.save({"optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict()}, tmp / "optim.pt")
    (tmp / "state.json").write_text(json.dumps({"step": run.step, "key": run.key, "totals": run.totals,
                                                "log": run.log}, default=str))
    os.replace(tmp, final)
    for old in sorted(run.out.glob("ckpt-*"))[:-run.cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    run.acc.wait_for_everyone()


def check_dir(run) -> None:
    """The output folder is empty, or holds a run of this exact configuration (to resume)."""
    cfg_file = run.out / "run_config.json"
    if cfg_file.is_file():
        old = json.loads(cfg_file.read_text())
        if old.get("key") != run.key:
            now = run.cfg.to_dict()
            diff = [k for k in now if old.get("config", {}).get(k) != now[k]]
            what = ", ".join(diff[:4]) if diff else "data, base model or rollout sampler"
            raise CheckpointError(f"{run.out}: holds a run with a different configuration "
                                  f"(differs in: {what}); use another --output-dir")
    elif run.out.is_dir() and any(p.name != LOCK_NAME for p in run.out.iterdir()):
        raise CheckpointError(f"{run.out}: not empty and not a harness training directory")


def write_run_config(run) -> None:
    if run.acc.is_main_process:
        run.out.mkdir(parents=True, exist_ok=True)
        (run.out / "run_config.json").write_text(json.dumps(
            {"key": run.key, "config": run.cfg.to_dict(), "data_hash": run.data_hash,
             "model_hash": run.model_hash, "data_source": run.data_source, "skipped": run.skipped,
             "ema_over": run.teacher.ema_over}, indent=1))
    run.acc.wait_for_everyone()


def _read(run, ck: Path) -> tuple[dict, dict, dict | None, dict]:
    """Every part of a checkpoint, read (and checked) before any of it is applied."""
    state = json.loads((ck / "state.json").read_text())
    if not isinstance(state, dict) or not {"step", "key", "totals", "log"} <= set(state):
        raise ValueError("state.json lacks step/key/totals/log")
    if state["key"] != run.key:
        raise CheckpointError(f"{ck}: checkpoint from a different configuration")
    trainable = load_file(ck / "trainable.safetensors")
    params = dict(run.model.named_parameters())
    for n, v in trainable.items():
        if n not in params or params[n].shape != v.shape:
            raise ValueError(f"trainable.safetensors: '{n}' does not match the model")
    teacher = load_file(ck / "teacher.safetensors") if (ck / "teacher.safetensors").is_file() else None
    opt = torch.load(ck / "optim.pt", weights_only=True)
    return state, trainable, teacher, opt


def resume(run) -> int:
    """Continue from the newest readable checkpoint. A damaged one (a truncated file after a
    crash or a full disk) is skipped with a warning for the one before it; when none is readable
    the run stops in one line and leaves every file as it is, never training over them."""
    cks = sorted((p for p in run.out.glob("ckpt-*") if (p / "state.json").is_file()), reverse=True)
    if not cks:
        return 0
    problems = []
    for ck in cks:
        try:
            state, trainable, teacher, opt = _read(run, ck)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - any unreadable part means: try the previous checkpoint
            problems.append(f"{ck.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        if problems:
            log.warning("%s: damaged checkpoint(s) skipped (%s); resuming from %s", run.out,
                        "; ".join(problems), ck.name)
        params = dict(run.model.named_parameters())
        with torch.no_grad():
            for n, v in trainable.items():
                params[n].copy_(v)
        if teacher is not None:
            run.teacher.load_state_dict(teacher)
        run.opt.load_state_dict(opt["optimizer"])
        run.sched.load_state_dict(opt["scheduler"])
        run.step, run.totals, run.log = state["step"], state["totals"], state["log"]
        return run.step
    raise CheckpointError(f"{run.out}: no readable checkpoint to resume from ({'; '.join(problems)}); "
                          "move the folder aside to start over, or use another output folder")


def export(run) -> tuple[Path, Path | None]:
    """The trained model as `final/` (the adapter, or full weights) and, with `merge`, `merged/`;
    each with `harness_train.json` (config, key, hashes, totals, skipped records)."""
    final = run.out / "final"
    merged = run.out / "merged" if run.cfg.merge else None
    if not run.acc.is_main_process:
        run.acc.wait_for_everyone()
        return final, merged
    tmp = run.out / ".final.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    meta = {"config": run.cfg.to_dict(), "key": run.key, "data_hash": run.data_hash,
            "model_hash": run.model_hash, "steps": run.step, "totals": run.totals,
            "data_source": run.data_source, "skipped": run.skipped, "ema_over": run.teacher.ema_over}
    if run.cfg.lora:
        run.model.save_pretrained(tmp, selected_adapters=["default"], safe_serialization=True)
        acfg = json.loads((tmp / "adapter_config.json").read_text())
        acfg["base_model_name_or_path"] = run.cfg.model  # alias/folder the loader resolves
        (tmp / "adapter_config.json").write_text(json.dumps(acfg, indent=2))
    else:
        run.model.save_pretrained(tmp, safe_serialization=True)
    run.tok.save_pretrained(tmp)
    (tmp / TRAIN_META_NAME).write_text(json.dumps(meta, indent=1, default=str))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if merged is not None:
        mtmp = run.out / ".merged.tmp"
        if mtmp.exists():
            shutil.rmtree(mtmp)
        if run.cfg.lora:
            from ..models import load_model

            m, _ = load_model(str(final), merge_adapter=True)
        else:
            m = run.model
        m.save_pretrained(mtmp, safe_serialization=True)
        run.tok.save_pretrained(mtmp)
        (mtmp / TRAIN_META_NAME).write_text(json.dumps(meta, indent=1, default=str))
        if merged.exists():
            shutil.rmtree(merged)
        os.replace(mtmp, merged)
    run.acc.wait_for_everyone()
    return final, merged


def lock(out: Path):
    """An exclusive lock on the output folder while this run writes it, so a second run on the
    same folder stops in one line instead of reading a half-written file. Released when the
    returned file is closed or the process dies (flock); None where flock does not exist."""
    try:
        import fcntl
    except ImportError:
        return None
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / LOCK_NAME, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise CheckpointError(f"{out}: another harness process is writing this folder; wait for it "
                              "to finish or use another output folder") from None
    return f
