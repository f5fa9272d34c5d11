"""General-text drift probe: how far has a trained arm moved from the base model, per token?

    from harness.drift_probe import evaluate_drift
    res = evaluate_drift(base=(base_model, tok), arm=(sft_model, tok), arm_label="sft",
                         store=store, ref_hash=h0, arm_hash=h1)
    res["value"]      # KL(base ‖ arm) in nats per token, averaged over the probe's prompts

Why: accuracy on a few hundred benchmark items is a coarse, binary view of forgetting. KL(base ‖ arm)
on fixed general text is continuous, paired across arms item by item, and cheap (two forwards of a few
thousand tokens), so it resolves small differences between SFT and SDFT that accuracy cannot. The
paper reports the same quantity against the base policy (SFT 1.26 nats, teacher 0.68), on the task's
own outputs; this probe deliberately uses *general* text instead, so it measures drift away from the
new task.

The probe set (version `PROBE_VERSION`; any change to it bumps the version, which is in every key):
- prompts: `N_PER_SOURCE` questions from each of two sources outside the new task and outside the
  prior suite's headline benchmarks, drawn with a fixed seed: GSM8K test (grade-school maths word
  problems) and ARC-Challenge test (science questions, shown with their lettered options);
- each prompt is one user turn through the model's chat template, as the model is used;
- whose continuation is scored: the **base model's** greedy continuation of up to `NEW_TOKENS` tokens
  (EOS included when produced). Every arm is scored on exactly the same token sequences, so per-item
  values are paired across arms (SFT vs SDFT item by item).
- the value per item is the mean over its continuation positions of the full-vocabulary
  KL(base ‖ arm) = Σ_v p_base(v) (log p_base(v) − log p_arm(v)), in nats per token (float32 softmax);
  the headline is the mean over items (the token-weighted mean is stored beside it).
- both models run in the suite's dtype with adapters merged, as the prior suite runs them.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import DataError
from .hashing import hash_obj
from .paths import data_dir as resolve_data_dir

PROBE_VERSION = 1
PROBE_SEED = 20260119
N_PER_SOURCE = 32
NEW_TOKENS = 48
TASK = "probe/general-kl"

ModelPair = tuple[Any, Any]  # (model, tokenizer)


@dataclass(frozen=True)
class ProbeItem:
    item_id: str
    prompt: str


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError.at(path, None, None, "drift probe data file not found (set HARNESS_DATA_DIR)")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError.at(path, f"line {i}", None, f"not JSON ({e.msg})") from None
    return rows


def _field(path: Path, i: int, row: dict, name: str, kind: type) -> Any:
    v = row.get(name)
    if not isinstance(v, kind):
        raise DataError.at(path, i, name, f"expected {kind.__name__}, got {type(v).__name__}")
    return v


def probe_items(data_dir: str | Path | None = None, n_per_source: int = N_PER_SOURCE) -> list[ProbeItem]:
    """The fixed probe prompts (deterministic for a given `n_per_source`)."""
    root = resolve_data_dir(data_dir) / "benchmarks"
    rng = random.Random(PROBE_SEED)
    items: list[ProbeItem] = []
    gsm = root / "gsm8k" / "test.jsonl"
    rows = _jsonl(gsm)
    for i in sorted(rng.sample(range(len(rows)), min(n_per_source, len(rows)))):
        items.append(ProbeItem(f"gsm8k/{i}", _field(gsm, i, rows[i], "question", str).strip()))
    arc = root / "arc" / "arc_challenge_test.jsonl"
    rows = _jsonl(arc)
    for i in sorted(rng.sample(range(len(rows)), min(n_per_source, len(rows)))):
        query = _field(arc, i, rows[i], "query", str).strip()
        choices = _field(arc, i, rows[i], "choices", list)
        opts = "\n".join(f"{chr(65 + k)}. {c}" for k, c in enumerate(choices))
        items.append(ProbeItem(f"arc_challenge/{i}", f"{query}\n{opts}"))
    return items


def items_hash(items: list[ProbeItem]) -> str:
    return hash_obj([[it.item_id, it.prompt] for it in items])


def _encode(tok, prompt: str) -> list[int]:
    from .generation import render_chat

    return tok(render_chat(tok, prompt), add_special_tokens=False)["input_ids"]


def _left_pad(seqs: list[list[int]], pad_id: int):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[r, width - len(s):] = 1
    return ids, mask


def _device(model):
    return next(model.parameters()).device


def base_continuations(model, tok, prompts: list[list[int]], new_tokens: int = NEW_TOKENS,
                       batch_size: int = 16) -> list[list[int]]:
    """The reference model's greedy continuation of each tokenised prompt (EOS kept when produced)."""
    import torch

    from .decoding import greedy_pruned

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: list[list[int]] = []
    with torch.inference_mode():
        for a in range(0, len(prompts), batch_size):
            ids, mask = _left_pad(prompts[a:a + batch_size], pad)
            dev = _device(model)
            out += greedy_pruned(model, ids.to(dev), mask.to(dev), new_tokens, tok.eos_token_id)
    return out


def _scored_logprobs(model, ids, mask, lengths: list[int]):
    """Log-softmax (float32) at the positions that predict each row's continuation tokens, as a list
    of (len_i, V) tensors. Rows are left-padded, so every continuation ends at the last column; only
    the last max(len)+1 positions go through the LM head (`logits_to_keep`)."""
    import torch

    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    dev = _device(model)
    keep = max(lengths) + 1
    logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), use_cache=False,
                   logits_to_keep=keep).logits
    # column k of `logits` is sequence position width-keep+k; the token at position p is predicted at p-1,
    # so a row's n continuation tokens (the last n positions) are predicted at columns keep-1-n .. keep-2
    return [torch.log_softmax(logits[r, keep - 1 - n:keep - 1].float(), dim=-1) for r, n in enumerate(lengths)]


def kl_per_item(ref: ModelPair, arm: ModelPair, prompts: list[list[int]], conts: list[list[int]],
                batch_size: int = 8) -> list[tuple[float, int]]:
    """(mean per-token KL(ref ‖ arm) in nats, number of scored tokens) for each (prompt, continuation)."""
    import torch

    from .train.losses import divergence_from_logprobs

    (ref_model, tok), (arm_model, _) = ref, arm
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    res: list[tuple[float, int]] = []
    with torch.inference_mode():
        for a in range(0, len(prompts), batch_size):
            seqs = [p + c for p, c in zip(prompts[a:a + batch_size], conts[a:a + batch_size])]
            ids, mask = _left_pad(seqs, pad)
            lengths = [len(c) for c in conts[a:a + batch_size]]
            lp_ref = _scored_logprobs(ref_model, ids, mask, lengths)
            lp_arm = _scored_logprobs(arm_model, ids, mask, lengths)
            for t, s, n in zip(lp_ref, lp_arm, lengths):
                if n == 0:
                    res.append((0.0, 0))
                    continue
                # forward divergence = KL(first ‖ second) with the reference as the first argument
                kl = divergence_from_logprobs(s.to(t.device), t, "forward")
                res.append((float(kl.mean()), n))
    return res


def probe_key(ref_hash: str, arm_hash: str, items: list[ProbeItem], new_tokens: int) -> str:
    return hash_obj({"task": TASK, "probe_version": PROBE_VERSION, "ref": ref_hash, "arm": arm_hash,
                     "items": items_hash(items), "new_tokens": new_tokens})


def evaluate_drift(base: ModelPair | Callable[[], ModelPair], arm: ModelPair | Callable[[], ModelPair], *,
                   arm_label: str, store, ref_hash: str, arm_hash: str, data_dir=None,
                   n_per_source: int = N_PER_SOURCE, new_tokens: int = NEW_TOKENS, batch_size: int = 8,
                   run_id: str | None = None, model_desc: str = "") -> dict:
    """KL(base ‖ arm) on the probe set, stored per item and cached by content.

    `base` and `arm` are (model, tokenizer) pairs or zero-argument loaders of one (called only on a
    cache miss). The two must share a tokenizer. Returns {"value", "n", "tokens", "eval_key",
    "cached", "wall_s"}. An arm whose weights equal the base's is measured like any other (KL 0).
    """
    items = probe_items(data_dir, n_per_source)
    key = probe_key(ref_hash, arm_hash, items, new_tokens)
    hit = store.get_eval(key)
    if hit is not None:
        s = hit["summary"]
        if run_id:
            store.link(run_id, key, arm_label)
        return {"value": s["value"], "n": s["n"], "tokens": s["tokens"], "eval_key": key, "cached": True,
                "wall_s": s["wall_s"]}
    t0 = time.perf_counter()
    base = base() if callable(base) else base
    arm = arm() if callable(arm) else arm
    tok = base[1]
    prompts = [_encode(tok, it.prompt) for it in items]
    conts = base_continuations(base[0], tok, prompts, new_tokens)
    vals = kl_per_item(base, arm, prompts, conts, batch_size)
    settings = {"probe_version": PROBE_VERSION, "seed": PROBE_SEED, "n_per_source": n_per_source,
                "new_tokens": new_tokens, "sources": ["gsm8k/test", "arc_challenge/test"],
                "continuations": "base model, greedy", "measure": "KL(base || arm) per token, full vocabulary",
                "ref_hash": ref_hash}
    store.begin_eval(key, task=TASK, arm=arm_label, model=model_desc or arm_label, model_hash=arm_hash,
                     data_hash=items_hash(items), settings=settings)
    rows = [{"item_id": it.item_id, "idx": i, "prompt_hash": hash_obj(it.prompt), "score": v,
             "output": tok.decode(c), "diagnostics": {"scored_tokens": n}, "tokens": n}
            for i, (it, c, (v, n)) in enumerate(zip(items, conts, vals))]
    store.add_examples(key, rows)
    tokens = sum(n for _, n in vals)
    # the headline is the mean over prompts of each prompt's per-token KL: the same definition the
    # paired per-item statistics use; the token-weighted mean is kept beside it
    value = sum(v for v, _ in vals) / len(vals)
    summary = {"metric": "kl_per_token", "value": value, "token_mean": sum(v * n for v, n in vals) / max(tokens, 1),
               "n": len(vals), "tokens": tokens, "wall_s": round(time.perf_counter() - t0, 3)}
    store.finish_eval(key, summary)
    if run_id:
        store.link(run_id, key, arm_label)
    return {"value": value, "n": len(vals), "tokens": tokens, "eval_key": key, "cached": False,
            "wall_s": summary["wall_s"]}
