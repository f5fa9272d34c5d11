"""Greedy decoding with row pruning must produce exactly what transformers `generate` produces."""

from __future__ import annotations

import pytest

from harness.generation import GenerationSettings, HFBackend, greedy_pruned

PROMPTS = ["Thought: I need to call", "Action Input: {\"city\": \"Paris\"} and then a much longer prompt here",
           "def add(a, b):", "The quick brown fox jumps over the lazy dog. 0123", "Your task"]


def _batch(tok):
    tok.padding_side = "left"
    return tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)


def _reference(model, tok, batch, max_new, eos):
    import torch

    with torch.no_grad():
        gen = model.generate(**batch, max_new_tokens=max_new, do_sample=False, temperature=None, top_p=None,
                             top_k=None, repetition_penalty=1.0, pad_token_id=tok.pad_token_id,
                             eos_token_id=eos)
    rows = []
    for r in gen[:, batch["input_ids"].shape[1]:].tolist():
        if eos in r:                      # generate pads after EOS; keep up to and including EOS
            r = r[:r.index(eos) + 1]
        rows.append(r)
    return rows


def _frequent_token(model, tok, batch):
    """A token that some rows emit early and others do not: used as EOS so rows finish at different steps."""
    ref = _reference(model, tok, batch, 12, eos=-1)
    counts: dict[int, int] = {}
    for r in ref:
        for t in set(r[1:8]):
            counts[t] = counts.get(t, 0) + 1
    cands = [t for t, c in counts.items() if 0 < c < len(ref)]
    assert cands, "tiny model produced no usable early token"
    return cands[0]


def test_pruned_greedy_equals_generate_when_rows_finish_at_different_steps(tiny_model):
    import torch

    model, tok = tiny_model
    batch = _batch(tok)
    eos = _frequent_token(model, tok, batch)
    ref = _reference(model, tok, batch, 24, eos)
    assert len({len(r) for r in ref}) > 1, "rows must finish at different steps for this test to bite"
    with torch.no_grad():
        got = greedy_pruned(model, batch["input_ids"], batch["attention_mask"], 24, eos)
    assert got == ref


def test_pruned_greedy_without_eos_runs_the_full_budget(tiny_model):
    import torch

    model, tok = tiny_model
    batch = _batch(tok)
    ref = _reference(model, tok, batch, 9, eos=-1)
    with torch.no_grad():
        got = greedy_pruned(model, batch["input_ids"], batch["attention_mask"], 9, None)
    assert got == ref and all(len(r) == 9 for r in got)
    assert greedy_pruned(model, batch["input_ids"], batch["attention_mask"], 0, None) == [[]] * len(PROMPTS)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_backend_outputs_do_not_depend_on_batch_size(tiny_model, batch_size):
    model, tok = tiny_model
    settings = GenerationSettings(max_new_tokens=10, chat_template=True)
    one = HFBackend(model, tok, batch_size=1).generate(PROMPTS, settings)
    got = HFBackend(model, tok, batch_size=batch_size).generate(PROMPTS, settings)
    assert [g.text for g in got] == [g.text for g in one]
    assert [g.n_new_tokens for g in got] == [g.n_new_tokens for g in one]


def test_vllm_backend_is_wired_through_evaluate_with_its_own_cache_key(tmp_path, tiny_model_dir, data_dir,
                                                                        monkeypatch):
    """vLLM is not installed here (no GPU); a stand-in module checks what the harness hands it."""
    import importlib.machinery
    import sys
    import types

    from harness.evaluate import EvalRequest, backend_factory, eval_key, evaluate
    from harness.store import Store
    from harness.tasks import tooluse as tu

    calls = {}

    class LLM:
        def __init__(self, model, **kw):
            calls["engine"] = (model, kw)

        def generate(self, texts, sp):
            calls.setdefault("texts", []).extend(texts)
            calls["sp"] = sp
            out = types.SimpleNamespace(text="Action: getWeather\nAction Input: {}", token_ids=[1, 2, 3])
            return [types.SimpleNamespace(outputs=[out], prompt_token_ids=[0] * 7) for _ in texts]

    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    fake.LLM, fake.SamplingParams = LLM, lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)

    recs = tu.load_tooluse(data_dir / tu.SPLITS["paper68"]).records[:3]
    req = EvalRequest(recs, "h", "base", GenerationSettings(max_new_tokens=5), backend="vllm")
    res = evaluate(req, Store(tmp_path / "h.db"), "mh", "tiny",
                   backend_factory("vllm", str(tiny_model_dir), "bfloat16", "cuda", 8))
    assert calls["engine"] == (str(tiny_model_dir), {"dtype": "bfloat16", "trust_remote_code": False})
    assert calls["sp"]["temperature"] == 0.0 and calls["sp"]["max_tokens"] == 5
    assert len(calls["texts"]) == 3 and all(t.startswith("<|im_start|>user\n") for t in calls["texts"])
    assert res["n"] == 3 and res["gen_tokens"] == 9
    hf = EvalRequest(recs, "h", "base", GenerationSettings(max_new_tokens=5))
    assert eval_key(req, "mh") != eval_key(hf, "mh")  # vLLM outputs never stand in for HF outputs
