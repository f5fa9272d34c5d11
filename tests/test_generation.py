"""Greedy decoding with row pruning must produce exactly what transformers `generate` produces; the
prefix-sharing, slot-refilling decoder exactly what `greedy_pruned` produces; sampling with row pruning
samples the policy's own distribution."""

from __future__ import annotations

import pytest

from harness.decoding import _greedy_batches, prefix_groups, greedy_pruned, greedy_shared, sample_pruned
from harness.generation import GenerationSettings, HFBackend

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


DOC = ("Your task is to answer the user's question using available tools. The tool is getWeather: it returns "
       "the weather of a city. Parameters: city (string), unit (celsius or fahrenheit). ")


def _shared_prompts(tok) -> list[list[int]]:
    """Token ids of chat-formatted prompts: two families sharing a long documentation prefix each,
    and two unrelated prompts, so both shared and unshared rows meet in one batch."""
    from harness.generation import render_chat

    texts = [DOC * 3 + f"Question: {q}" for q in ("Paris?", "the weather in Rome tomorrow", "Oslo", "Lima now")]
    texts += [DOC[::-1] * 2 + f"Question: {q}" for q in ("add 2 and 3", "def add(a, b):", "0123")]
    texts += PROMPTS[:2]
    return [tok(render_chat(tok, t), add_special_tokens=False)["input_ids"] for t in texts]


def _early_token(model, prompts):
    """A token some rows emit early and others do not (used as EOS so rows finish at different steps)."""
    import torch

    with torch.no_grad():
        ref = _greedy_batches(model, prompts, 16, None, 4)
    counts: dict[int, int] = {}
    for r in ref:
        for t in set(r[1:10]):
            counts[t] = counts.get(t, 0) + 1
    cands = sorted((t for t, c in counts.items() if 1 < c < len(ref) - 1), key=lambda t: -counts[t])
    assert cands, "tiny model produced no usable early token"
    return cands[0]


def test_prefix_groups_share_one_documentation_each_and_leave_every_row_a_suffix():
    doc_a, doc_b, head = list(range(100, 160)), list(range(200, 240)), [1, 2, 3, 4, 5]
    prompts = [head + doc_a + [7, 8], head + doc_b + [9], head + doc_a + [7, 9, 9], [5, 6], head + doc_b + [9, 1],
               head + doc_a + [7, 8]]   # a duplicate prompt still keeps one token of its own
    groups = prefix_groups(prompts, min_shared=16)
    by_members = {tuple(sorted(m)): p for p, m in groups}
    # the 5-token head common to all does not merge the two documentations into one group
    assert by_members == {(0, 2, 5): 66, (1, 4): 45, (3,): 0}
    assert sorted(i for _, m in groups for i in m) == list(range(len(prompts)))
    assert all(p < len(prompts[i]) and prompts[i][:p] == prompts[m[0]][:p] for p, m in groups for i in m)
    assert prefix_groups(prompts, min_shared=100) == [(0, [i]) for i in sorted(range(6), key=lambda i: prompts[i])]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_shared_prefill_with_slot_refill_equals_greedy_pruned(tiny_model, batch_size):
    import torch

    model, tok = tiny_model
    prompts = _shared_prompts(tok)
    groups = prefix_groups(prompts, 32)
    assert sum(1 for p, m in groups if p and len(m) > 1) == 2 and any(p == 0 for p, _ in groups)
    eos = _early_token(model, prompts)
    with torch.no_grad():
        ref = _greedy_batches(model, prompts, 16, eos, 4)          # greedy_pruned, 4 rows per batch
        got = greedy_shared(model, prompts, 16, eos, batch_size=batch_size)
    assert len({len(r) for r in ref}) > 2, "rows must finish at different steps for this test to bite"
    assert got == ref
    with torch.no_grad():
        assert greedy_shared(model, prompts, 0, eos, batch_size) == [[] for _ in prompts]
        assert greedy_shared(model, prompts[:2], 5, None, batch_size) == _greedy_batches(model, prompts[:2], 5, None, 2)


class _Counting:
    """Wraps a model: records each forward's real (unmasked) new tokens and its rows."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, input_ids, attention_mask, **kw):
        n = input_ids.shape[1]
        self.calls.append((input_ids.shape[0], n, int(attention_mask[:, -n:].sum())))
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kw)


def test_shared_prefix_is_prefilled_once_and_freed_slots_are_refilled(tiny_model):
    import torch

    model, tok = tiny_model
    prompts = _shared_prompts(tok)
    eos = _early_token(model, prompts)
    batch = 2
    counting = _Counting(model)
    with torch.no_grad():
        got = greedy_shared(counting, prompts, 32, eos, batch_size=batch)
    groups = prefix_groups(prompts, 32)
    prefix_of = {i: p for p, m in groups for i in m}
    # each shared prefix runs once; each row forwards only its own suffix and its decoded tokens
    expected = (sum(p for p, m in groups if p) + sum(len(q) - prefix_of[i] for i, q in enumerate(prompts))
                + sum(len(r) - 1 for r in got))
    assert sum(real for _, _, real in counting.calls) == expected
    assert expected < sum(map(len, prompts)) * 0.6
    assert max(rows for rows, _, _ in counting.calls) <= batch
    # slot refill: a finished row's slot is taken by the next waiting prompt at the next step, so the
    # decode steps are those of this schedule; batches of `batch` without refill take longer
    queue, running, sched = [i for _, m in groups for i in m], {}, 0
    while queue or running:
        sched += bool(running)                    # rows already running decode one token together
        while queue and len(running) < batch:
            running[queue.pop(0)] = 0             # a new row's first token comes from its prefill
        for r in list(running):
            running[r] += 1
            if running[r] == len(got[r]):
                del running[r]
    steps = sum(1 for _, n, _ in counting.calls if n == 1)
    assert all(len(q) - prefix_of[i] > 1 for i, q in enumerate(prompts))  # so n == 1 only for decode steps
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))   # the old backend's batches
    batched = sum(max(len(got[i]) for i in order[b:b + batch]) - 1 for b in range(0, len(order), batch))
    order = [i for _, m in groups for i in m]                             # this decoder's order, no refill
    unrefilled = sum(max(len(got[i]) for i in order[b:b + batch]) - 1 for b in range(0, len(order), batch))
    assert steps == sched < min(batched, unrefilled), (steps, sched, batched, unrefilled)


def test_sliding_window_models_fall_back_to_pruned_batches_with_the_same_tokens(tiny_model):
    """Sliding-window cache layers keep only the window, so the shared layout cannot be built on them."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    _, tok = tiny_model
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             sliding_window=8)).eval()
    prompts = [p[:60] for p in _shared_prompts(tok)]
    with torch.no_grad():
        assert greedy_shared(model, prompts, 6, None, batch_size=3) == _greedy_batches(model, prompts, 6, None, 3)


def test_backend_greedy_uses_the_shared_decoder_with_its_batch_size(tiny_model, monkeypatch):
    from harness import generation

    model, tok = tiny_model
    seen = {}
    real = generation.greedy_shared

    def spy(model_, prompts, max_new, eos, batch_size):
        seen["n"], seen["batch"] = len(prompts), batch_size
        return real(model_, prompts, max_new, eos, batch_size=batch_size)

    monkeypatch.setattr(generation, "greedy_shared", spy)
    got = HFBackend(model, tok, batch_size=2).generate(PROMPTS, GenerationSettings(max_new_tokens=4))
    assert seen == {"n": len(PROMPTS), "batch": 2} and all(g.n_new_tokens == 4 for g in got)


def _generate_sample(model, tok, batch, max_new, eos, **kw):
    import torch

    with torch.no_grad():
        gen = model.generate(**batch, max_new_tokens=max_new, do_sample=True, repetition_penalty=1.0,
                             pad_token_id=tok.pad_token_id, eos_token_id=eos, **kw)
    return gen[:, batch["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("kw", [dict(temperature=0.7, top_p=1.0, top_k=0), dict(temperature=1.3, top_p=0.9, top_k=20)])
def test_sample_pruned_equals_generate_under_the_same_seed_while_no_row_finishes(tiny_model, kw):
    import torch

    model, tok = tiny_model
    batch = _batch(tok)
    torch.manual_seed(11)
    ref = _generate_sample(model, tok, batch, 12, None, **kw)
    torch.manual_seed(11)
    with torch.no_grad():
        got = sample_pruned(model, batch["input_ids"], batch["attention_mask"], 12, None, **kw)
    assert got == ref
    torch.manual_seed(12)
    with torch.no_grad():
        assert sample_pruned(model, batch["input_ids"], batch["attention_mask"], 12, None, **kw) != ref


def test_sample_pruned_is_deterministic_under_a_generator_seed(tiny_model):
    import torch

    model, tok = tiny_model
    batch = _batch(tok)
    eos = _frequent_token(model, tok, batch)

    def run(seed):
        with torch.no_grad():
            return sample_pruned(model, batch["input_ids"], batch["attention_mask"], 16, eos, temperature=1.0,
                                 top_p=1.0, generator=torch.Generator().manual_seed(seed))

    a = run(3)
    assert a == run(3) and a != run(4)
    assert all(len(r) == 16 or r[-1] == eos for r in a)
    with pytest.raises(ValueError, match="temperature"):
        sample_pruned(model, batch["input_ids"], batch["attention_mask"], 4, eos, temperature=0.0, top_p=1.0)


def test_sample_pruned_from_a_prefilled_cache_draws_what_it_draws_from_the_prompts(tiny_model):
    """SDFT samples from the cache of the student's own prompt forward: started there, with the
    last position's logits, the sampler draws the same tokens as from the prompt ids, and leaves
    the given cache's tensors as they were."""
    import torch
    from transformers import DynamicCache

    from harness.decoding import cache_kwarg, detached_cache

    model, tok = tiny_model
    batch = _batch(tok)
    eos = _frequent_token(model, tok, batch)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    kw = dict(temperature=1.0, top_p=0.95, top_k=50)

    def gens():
        return [torch.Generator().manual_seed(100 + i) for i in range(ids.shape[0])]

    with torch.no_grad():
        ref = sample_pruned(model, ids, mask, 16, eos, row_generators=gens(), **kw)
        cache = DynamicCache(config=model.config)
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                    **{cache_kwarg(model): cache})
        before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
        got = sample_pruned(model, None, mask, 16, eos, row_generators=gens(),
                            prefilled=(detached_cache(model, cache), out.logits[:, -1]), **kw)
    assert got == ref
    assert len({len(r) for r in got}) > 1, "rows must finish at different steps for this test to bite"
    for layer, (k, v) in zip(cache.layers, before):
        assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)


def test_sample_pruned_draws_from_the_policy_itself_not_the_generation_config(tiny_model, monkeypatch):
    """Each alive row's step distribution is softmax(logits / T) of a full forward of the row's own
    prefix, even when the model's generation_config asks for a repetition penalty and top-k."""
    import torch

    model, tok = tiny_model
    model.generation_config.repetition_penalty, model.generation_config.top_k = 3.0, 2
    batch = _batch(tok)
    eos = list(range(0, len(tok), 8))   # near-uniform samples of a random model: 1 in 8 ends a row
    recorded = []
    real = torch.multinomial

    def spy(probs, num_samples, generator=None):
        recorded.append(probs.clone())
        return real(probs, num_samples, generator=generator)

    monkeypatch.setattr(torch, "multinomial", spy)
    temp = 0.8
    with torch.no_grad():
        got = sample_pruned(model, batch["input_ids"], batch["attention_mask"], 10, eos, temperature=temp,
                            top_p=1.0, generator=torch.Generator().manual_seed(0))
    monkeypatch.undo()
    assert len({len(r) for r in got}) > 1, "rows must finish at different steps for this test to bite"
    assert len(recorded) == max(map(len, got))
    for step, probs in enumerate(recorded):
        alive = [r for r in range(len(got)) if len(got[r]) > step]
        assert probs.shape[0] == len(alive)
        for j, r in enumerate(alive):
            prompt = batch["input_ids"][r][batch["attention_mask"][r].bool()].tolist()
            ids = torch.tensor([prompt + got[r][:step]])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, -1].float()
            want = torch.softmax(logits / temp, -1)
            assert torch.allclose(probs[j], want, atol=1e-5), (step, r)
            assert (probs[j] > 0).sum() > 2  # no top-k from the generation_config


def test_vllm_backend_is_wired_through_evaluate_with_its_own_cache_key(tmp_path, tiny_model_dir, data_dir,
                                                                        monkeypatch):
    """A stand-in `vllm` module (the real one lives in .venv-vllm, tests/test_vllm.py) checks what
    the harness hands the engine through `evaluate`: token-id prompts rendered by the harness's own
    chat template, greedy decoding with no sampling defaults, and a cache key of its own."""
    import importlib.machinery
    import sys
    import types

    from harness.evaluate import EvalRequest, backend_factory, eval_key, evaluate
    from harness.models import load_tokenizer
    from harness.store import Store
    from harness.tasks.tooluse import data as tu

    calls = {}

    class LLM:
        def __init__(self, **kw):
            calls["engine"] = kw

        def generate(self, prompts, sp, lora_request=None, use_tqdm=True):
            calls.setdefault("prompts", []).extend(prompts)
            calls["sp"], calls["lora"] = sp, lora_request
            out = types.SimpleNamespace(token_ids=tok("Action: getWeather", add_special_tokens=False)["input_ids"])
            return [types.SimpleNamespace(outputs=[out]) for _ in prompts]

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)
        return m

    tok = load_tokenizer(str(tiny_model_dir))
    module("vllm", LLM=LLM, SamplingParams=lambda **kw: kw)
    module("vllm.inputs", TokensPrompt=lambda prompt_token_ids: list(prompt_token_ids))
    module("vllm.platforms", current_platform=types.SimpleNamespace(is_cpu=lambda: False))

    recs = tu.load_tooluse(data_dir / tu.SPLITS["paper68"]).records[:3]
    req = EvalRequest(recs, "h", "base", GenerationSettings(max_new_tokens=5), backend="vllm")
    res = evaluate(req, Store(tmp_path / "h.db"), "mh", "tiny",
                   backend_factory("vllm", str(tiny_model_dir), "bfloat16", "cuda", 8))
    eng = calls["engine"]
    assert eng["model"] == str(tiny_model_dir) and eng["dtype"] == "bfloat16"
    assert eng["generation_config"] == "vllm" and eng["enable_prefix_caching"] and "enable_lora" not in eng
    sp = calls["sp"]
    assert sp["temperature"] == 0.0 and sp["max_tokens"] == 5 and sp["top_k"] == 0 and sp["seed"] is None
    assert calls["lora"] is None
    from harness.generation import render_prompt

    want = [tok(render_prompt(tok, r.prompt), add_special_tokens=False)["input_ids"] for r in recs]
    assert sorted(calls["prompts"]) == sorted(want)
    assert res["n"] == 3
    hf = EvalRequest(recs, "h", "base", GenerationSettings(max_new_tokens=5))
    assert eval_key(req, "mh") != eval_key(hf, "mh")  # vLLM outputs never stand in for HF outputs


def test_evaluation_greedy_ignores_the_models_generation_config(tiny_model):
    """Evaluation is pure greedy (the paper's protocol): a hub model's generation_config (a
    repetition penalty, sampling defaults, a bad-words list) must not change the answers."""
    model, tok = tiny_model
    settings = GenerationSettings(max_new_tokens=10, chat_template=False)
    before = [g.text for g in HFBackend(model, tok, batch_size=2).generate(PROMPTS, settings)]
    gc = model.generation_config
    gc.repetition_penalty, gc.no_repeat_ngram_size, gc.do_sample, gc.top_k = 5.0, 1, True, 2
    after = [g.text for g in HFBackend(model, tok, batch_size=2).generate(PROMPTS, settings)]
    assert after == before
    # the same config does change `generate`'s output, so the check above has teeth
    import torch

    batch = _batch(tok)
    with torch.no_grad():
        penalised = model.generate(**batch, max_new_tokens=10, pad_token_id=tok.pad_token_id)
    plain = _reference(model, tok, batch, 10, eos=-1)
    assert [r[:10] for r in penalised[:, batch["input_ids"].shape[1]:].tolist()] != [r[:10] for r in plain]


def test_appending_cache_layer_holds_what_concatenation_holds_with_few_reallocations(tiny_model):
    """The decoder's cache layers append into spare capacity: after prefill and many one-token steps
    (and an outside replacement of the tensors, as row removal does) they hold exactly what
    `DynamicLayer`'s concatenation holds, reallocating O(log n) times instead of at every step."""
    import torch
    from transformers import DynamicCache

    from harness.decoding import _appending

    model, _ = tiny_model
    plain, fast = DynamicCache(config=model.config), _appending(DynamicCache(config=model.config))
    g = torch.Generator().manual_seed(0)
    layer = fast.layers[0]
    buffers, rows = set(), 3
    for step in range(200):
        n = 37 if step == 0 else 1
        k, v = torch.randn(rows, 2, n, 8, generator=g), torch.randn(rows, 2, n, 8, generator=g)
        for c in (plain, fast):
            c.update(k, v, 0)
        buffers.add(layer._buf[0].data_ptr())
        if step == 120:  # rows leave: the tensors are replaced from outside, the next update re-buffers
            sel = torch.tensor([0, 2])
            for c in (plain, fast):
                c.layers[0].batch_select_indices(sel)
            rows = 2
            g2 = torch.Generator().manual_seed(1)
            k, v = torch.randn(2, 2, 1, 8, generator=g2), torch.randn(2, 2, 1, 8, generator=g2)
            for c in (plain, fast):
                c.update(k, v, 0)
        assert torch.equal(plain.layers[0].keys, layer.keys) and torch.equal(plain.layers[0].values, layer.values)
    assert layer.keys.shape == (2, 2, 37 + 200, 8) and fast.get_seq_length() == plain.get_seq_length()
    assert len(buffers) <= 8, len(buffers)


def test_decode_width_enters_the_tool_use_key_only_when_it_is_not_8(data_dir):
    """Another batch shape can flip a bf16 near-tie, so a decode width other than the historical 8 is
    part of the key (8 keeps every existing key); vLLM schedules its own batches, so not there."""
    from harness.evaluate import EvalRequest, eval_key
    from harness.tasks.tooluse import data as tu

    recs = tu.load_tooluse(data_dir / tu.SPLITS["paper68"]).records[:3]
    def key(**kw):
        return eval_key(EvalRequest(recs, tu.records_hash(recs), "base", GenerationSettings(max_new_tokens=7), **kw), "mh")

    assert key() == key(batch_size=8)
    assert key(batch_size=32) != key() and key(batch_size=32) != key(batch_size=16)
    assert key(backend="vllm", batch_size=32) == key(backend="vllm")


@pytest.mark.parametrize("slack", [1.0, 1.25, 100.0])
def test_joining_rows_prefilled_in_sub_batches_of_similar_length_decode_the_same_tokens(tiny_model, monkeypatch, slack):
    """Rows that join together are prefilled in runs of similar suffix length (each run padded to
    its own longest) and merged: the tokens are `greedy_pruned`'s whatever the split (1.0: every
    distinct length alone; 100: one batch), and the split bounds the padding it computes."""
    import torch

    import harness.decoding as dec

    model, tok = tiny_model
    prompts = _shared_prompts(tok)
    prompts = [p + p[-(7 * i + 3):] for i, p in enumerate(prompts)]  # suffixes of clearly different lengths
    eos = _early_token(model, prompts)
    monkeypatch.setattr(dec, "PREFILL_PAD_SLACK", slack)
    with torch.no_grad():
        got = greedy_shared(model, prompts, 12, eos, batch_size=len(prompts))
        want = _greedy_batches(model, prompts, 12, eos, len(prompts))
    assert got == want
    lengths = [5, 40, 38, 9, 41, 6]
    parts = dec._similar_lengths(list(range(6)), lengths, slack)
    assert sorted(i for p in parts for i in p) == list(range(6))
    for p in parts:
        assert max(lengths[i] for i in p) * len(p) <= slack * sum(lengths[i] for i in p) or len(p) == 1
    if slack == 1.0:
        assert len(parts) == len(set(lengths))
    if slack == 100.0:
        assert len(parts) == 1
