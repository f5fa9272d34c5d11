"""General-text drift probe: fixed items, exact KL at the right positions, paired and cached."""

from __future__ import annotations

import pytest
import torch

from harness.drift_probe import (N_PER_SOURCE, _encode, base_continuations, evaluate_drift, kl_per_item,
                                 probe_items)
from harness.errors import DataError
from harness.models import load_model
from harness.store import Store


def test_probe_items_are_fixed_and_come_from_both_sources(data_dir):
    a = probe_items(data_dir)
    b = probe_items(data_dir)
    assert a == b and len(a) == 2 * N_PER_SOURCE
    assert len({it.item_id for it in a}) == len(a)
    assert {it.item_id.split("/")[0] for it in a} == {"gsm8k", "arc_challenge"}
    arc = next(it for it in a if it.item_id.startswith("arc"))
    assert "\nA. " in arc.prompt and "\nD. " in arc.prompt


def test_missing_probe_data_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(DataError, match=r"gsm8k.*test\.jsonl.*not found"):
        probe_items(tmp_path)


def _direct_kl(ref, arm, prompt, cont):
    """KL(ref ‖ arm) per continuation token from one unpadded forward of each model."""
    ids = torch.tensor([prompt + cont])
    with torch.no_grad():
        lr = torch.log_softmax(ref(input_ids=ids).logits[0].float(), -1)
        la = torch.log_softmax(arm(input_ids=ids).logits[0].float(), -1)
    s = len(prompt)
    pr, pa = lr[s - 1:s - 1 + len(cont)], la[s - 1:s - 1 + len(cont)]
    return float((pr.exp() * (pr - pa)).sum(-1).mean())


def test_kl_matches_a_direct_unpadded_computation_and_is_zero_against_itself(tiny_model_dir, tiny_model_dir_b,
                                                                             data_dir):
    ref = load_model(str(tiny_model_dir))
    arm = load_model(str(tiny_model_dir_b))
    tok = ref[1]
    items = probe_items(data_dir, n_per_source=2)
    prompts = [_encode(tok, it.prompt)[:40 + 7 * i] for i, it in enumerate(items)]  # different lengths: padding
    conts = base_continuations(ref[0], tok, prompts, new_tokens=6, batch_size=3)
    assert all(1 <= len(c) <= 6 for c in conts)
    got = kl_per_item(ref, arm, prompts, conts, batch_size=3)
    for (v, n), p, c in zip(got, prompts, conts):
        assert n == len(c)
        assert v == pytest.approx(_direct_kl(ref[0], arm[0], p, c), abs=1e-5)
        assert v > 0
    same = kl_per_item(ref, ref, prompts, conts, batch_size=3)
    assert all(abs(v) < 1e-6 for v, _ in same)


def test_evaluate_drift_stores_items_and_reuses_the_result(tiny_model_dir, tiny_model_dir_b, data_dir, tmp_path):
    store = Store(tmp_path / "h.db")
    ref = load_model(str(tiny_model_dir))
    calls = []

    def arm_loader():
        calls.append(1)
        return load_model(str(tiny_model_dir_b))

    kw = dict(arm_label="sft", store=store, ref_hash="r0", arm_hash="a1", data_dir=data_dir, n_per_source=2,
              new_tokens=4)
    first = evaluate_drift(ref, arm_loader, **kw)
    assert not first["cached"] and first["n"] == 4 and first["value"] > 0 and calls == [1]
    rows = store.examples(first["eval_key"])
    assert [r["item_id"].split("/")[0] for r in rows] == ["gsm8k"] * 2 + ["arc_challenge"] * 2
    assert first["value"] == pytest.approx(sum(r["score"] for r in rows) / len(rows))
    assert all(r["tokens"] >= 1 for r in rows)
    again = evaluate_drift(ref, arm_loader, **kw)
    assert again["cached"] and again["value"] == first["value"] and calls == [1]  # nothing loaded
    other = evaluate_drift(ref, arm_loader, **(kw | {"arm_hash": "a2"}))
    assert not other["cached"] and other["eval_key"] != first["eval_key"]
