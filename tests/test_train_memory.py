"""What keeps a training step's memory down, without changing its numbers: frozen base projections
stored in bf16 under bf16 autocast (the pages of their fp32 originals released), and teacher logits
recomputed in backward rather than held from the forward pass."""

import gc
import mmap
import shutil
import sys
import weakref
from pathlib import Path

import pytest
import torch

import harness.train.loop as loop
from harness.models import load_model
from harness.train.frozen import store_frozen_linears
from harness.train.losses import chunked_divergence, per_token_divergence
from harness.train.loop import Run
from train_helpers import tiny_cfg, tiny_records

torch.set_num_threads(1)


def make_run(model_dir, tmp_path, **kw):
    return Run(tiny_cfg(model_dir, **kw), tiny_records(), tmp_path / "out", "datahash")


def dtypes(run) -> dict[str, set]:
    out = {"base": set(), "lora": set(), "head": set(), "embed": set()}
    head, emb = run.model.get_output_embeddings().weight, run.model.get_input_embeddings().weight
    for n, p in run.model.named_parameters():
        if p is head:
            out["head"].add(p.dtype)
        elif p is emb:
            out["embed"].add(p.dtype)
        elif "lora_" in n:
            out["lora"].add(p.dtype)
        elif "base_layer" in n:
            out["base"].add(p.dtype)
    return out


@pytest.mark.parametrize("bf16", [True, False])
def test_frozen_projections_are_bf16_only_under_bf16_autocast(tiny_model_dir, tmp_path, bf16):
    run = make_run(tiny_model_dir, tmp_path, method="sdft", teacher="ema", bf16=bf16)
    d = dtypes(run)
    assert d["base"] == ({torch.bfloat16} if bf16 else {torch.float32})
    # trained and EMA-averaged factors, the head (fp32 student head) and the embedding lookup stay fp32
    assert d["lora"] == d["head"] == d["embed"] == {torch.float32}
    assert any(".teacher." in n for n, _ in run.model.named_parameters())


def test_full_fine_tuning_keeps_every_weight_in_fp32(tiny_model_dir, tmp_path):
    run = make_run(tiny_model_dir, tmp_path, method="sft", lora=False, bf16=True)
    assert {p.dtype for p in run.model.parameters()} == {torch.float32}


def _perturbed(run):
    """A non-zero student adapter (the EMA teacher keeps B = 0), so every LoRA factor gets a gradient."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in run.model.named_parameters():
            if "lora_B.default" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return run


def _loss_and_grads(run, method):
    exs = run.examples[:2]
    if method == "sdft":
        comp, cmask = run.rollouts(exs, seeds=[3] * len(exs))
        loss, _, _ = run.divergence_loss(exs, comp, cmask)
    else:
        loss, comp, cmask = run.sft_loss(exs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in run.model.named_parameters() if p.grad is not None}
    return comp, loss.detach(), grads


@pytest.mark.parametrize("method,divergence", [("sdft", "forward"), ("sdft", "jsd"), ("sft", "forward")])
def test_bf16_storage_changes_neither_rollouts_nor_loss_nor_gradients(tiny_model_dir, tmp_path, monkeypatch,
                                                                      method, divergence):
    kw = dict(method=method, divergence=divergence, bf16=True, skip_tokens=1)
    stored = _loss_and_grads(_perturbed(make_run(tiny_model_dir, tmp_path / "a", **kw)), method)
    monkeypatch.setattr(loop, "store_frozen_linears", lambda model, dtype: (0, 0))  # autocast casts at each call
    cast = _loss_and_grads(_perturbed(make_run(tiny_model_dir, tmp_path / "b", **kw)), method)
    assert dtypes(make_run(tiny_model_dir, tmp_path / "c", **kw))["base"] == {torch.float32}  # patch took
    assert torch.equal(stored[0], cast[0])
    assert torch.allclose(stored[1], cast[1], atol=1e-6, rtol=0)
    assert stored[2].keys() == cast[2].keys() and len(stored[2]) == 8
    for n in stored[2]:
        assert torch.allclose(stored[2][n], cast[2][n], atol=1e-6, rtol=0), n
    assert any(g.abs().max() > 1e-4 for n, g in stored[2].items() if "lora_A" in n)


def _present(addr: int, length: int) -> list[bool]:
    """Whether each whole page in [addr, addr+length) is mapped in this process (/proc/self/pagemap bit 63)."""
    page = mmap.PAGESIZE
    first, last = -(-addr // page), (addr + length) // page
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(first * 8)
        raw = f.read((last - first) * 8)
    return [bool(int.from_bytes(raw[i:i + 8], "little") >> 63) for i in range(0, len(raw), 8)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/pagemap (Linux only)")
def test_the_fp32_originals_pages_leave_the_resident_set(tiny_model_dir, tmp_path):
    """The checkpoint stays mapped (embeddings, head and norms are views of it), so each page read
    from it stays resident unless released: the converted projections' pages are released."""
    own = shutil.copytree(tiny_model_dir, tmp_path / "model")
    model, _ = load_model(str(own), dtype="float32")
    model.requires_grad_(False)  # a LoRA run's base
    assert str(own.resolve()) in Path("/proc/self/maps").read_text(), \
        "the loader no longer maps the checkpoint; this test would measure nothing"
    lin = [m for n, m in model.named_modules() if type(m) is torch.nn.Linear and m is not model.lm_head]
    ranges = [(m.weight.data_ptr(), m.weight.numel() * 4) for m in lin]
    for m in lin:
        float(m.weight.sum())  # read every page, as a forward would
    before = [p for r in ranges for p in _present(*r)]
    assert before and all(before)
    head_w, n_before = model.lm_head.weight, float(model.lm_head.weight.sum())
    n, released = store_frozen_linears(model, torch.bfloat16)
    assert n == len(lin) and released == len(before) * mmap.PAGESIZE
    assert not any(p for r in ranges for p in _present(*r))
    assert model.lm_head.weight is head_w and float(head_w.sum()) == n_before  # kept in fp32, untouched
    ids = torch.tensor([[1, 2, 3]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_teacher_logits_live_only_within_their_chunk_and_are_recomputed_in_backward():
    torch.manual_seed(1)
    head = torch.nn.Linear(5, 11, bias=False)
    t_head = torch.nn.Linear(5, 11, bias=False)
    h = torch.randn(2, 9, 5, requires_grad=True)
    t_h = torch.randn(2, 9, 5)
    y = torch.randint(0, 11, (2, 9))
    alive, calls = [], []

    def teacher(a, b):
        with torch.no_grad():
            out = t_head(t_h[:, a:b])
        calls.append((a, b))
        alive.append(weakref.ref(out))
        return out

    per_tok = chunked_divergence(h, teacher, head, y, "forward", "full", 100, 0.5, chunk=4)
    gc.collect()
    assert calls == [(0, 4), (4, 8), (8, 9)]
    assert all(r() is None for r in alive)  # nothing of B×L×V size waits for the backward pass
    per_tok.sum().backward()
    assert sorted(calls) == sorted([(0, 4), (4, 8), (8, 9)] * 2)
    with torch.no_grad():
        t_full = t_head(t_h)
    h2 = h.detach().clone().requires_grad_(True)
    per_token_divergence(head(h2), t_full, y, "forward", "full").sum().backward()
    assert torch.allclose(h.grad, h2.grad, atol=1e-6)
