"""The shared-context scorer (`harness.prior.scorer`) against stock lm-eval `HFLM`.

Fast tests: the tiny random Llama, synthetic requests (shared contexts, multi- and single-token
continuations, a context longer than `max_length`, duplicates, groups larger than the batch).
Slow test: float32 on the default model, a few items of each multiple-choice benchmark through
the harness's own prior task bundles, every choice within 1e-4 nats of stock `HFLM`, the same
`is_greedy` and the same accuracy.

Near-ties: the two scorers run different matmul shapes, so their float32 log-likelihoods differ by
rounding (~1e-6 nats per token; up to ~5e-5 summed over a 50-token HellaSwag ending, while float32
itself is ~2e-3 off a float64 reference there). Where two choices of an item are closer than
that, lm-eval (which takes the first maximum) can pick a different choice, so that item's accuracy
can differ; the slow test finds such items from the stock scores (best two within `TIE` nats) and
then allows the accuracy to differ by at most their count, while every log-likelihood must still
agree within 1e-4. A continuation token whose top-2 logits are that close could likewise flip
`is_greedy`; the test compares `is_greedy` exactly and would fail on such a token, to be
inspected rather than hidden (none occurs on its items).
"""

from __future__ import annotations

import random

import pytest
import torch

torch.set_num_threads(1)

TOL = 1e-4
TIE = TOL  # nats: two choices closer than this may be ordered differently by rounding


class RecordingHook:
    """Stands in for lm-eval's CacheHook: records what the scorer hands to the cache."""

    def __init__(self):
        self.calls: list[tuple] = []

    def add_partial(self, attr, req, res):
        self.calls.append((attr, req, res))


def _lms(model, tok, batch_size, max_length=None):
    from lm_eval.models.huggingface import HFLM

    from harness.prior.scorer import SharedContextHFLM, make_lm

    kw = {"max_length": max_length} if max_length else {}
    stock = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, **kw)
    ours = make_lm(model, tok, batch_size=batch_size, **kw)
    assert isinstance(ours, SharedContextHFLM) and isinstance(ours, HFLM)
    return stock, ours


def _requests(vocab: int, window: int) -> list[tuple]:
    """Synthetic lm-eval requests ((ctx str, cont str), ctx ids, cont ids), shuffled."""
    rng = random.Random(7)
    toks = lambda n: [rng.randrange(3, vocab) for _ in range(n)]  # noqa: E731
    reqs = []
    for g in range(5):  # shared contexts, continuations of 1..9 tokens (single and multi mixed)
        ctx = toks(rng.randrange(3, 30))
        for c in range(rng.randrange(2, 7)):
            cont = toks(rng.choice([1, 1, 2, 5, 9]))
            reqs.append(((f"ctx{g}", f"cont{g}.{c}"), ctx, cont))
    ctx = toks(4)
    for c in range(4):  # an MMLU-like item: single-token choices only
        reqs.append((("mc", f"choice{c}"), ctx, toks(1)))
    long_ctx = toks(window + 25)  # longer than the window: left-truncated, per continuation length
    for c, n in enumerate([1, 3, 7, 7]):
        reqs.append((("long", f"c{c}"), long_ctx, toks(n)))
    primer = toks(12)  # TruthfulQA-like: items whose contexts begin with the same primer
    for g in range(3):
        ctx = primer + toks(rng.randrange(1, 6))
        for c in range(3):
            reqs.append(((f"primed{g}", f"c{c}"), ctx, toks(rng.choice([1, 4]))))
    reqs.append((("primed", "is the primer"), primer[:10], toks(3)))  # a context that is a prefix of others
    reqs.append((("one", "x"), toks(1), toks(6)))  # a one-token context
    reqs.append((None, toks(9), toks(3)))  # no request strings (rolling-style): not cached
    reqs += reqs[:3] + [next(r for r in reqs if len(r[2]) > 1)]  # duplicates, one multi-token for sure
    rng.shuffle(reqs)
    return reqs


@pytest.mark.parametrize("batch_size", [2, 16])
def test_matches_stock_hflm_in_order(tiny_model, batch_size):
    model, tok = tiny_model
    model.float().eval()
    window = 48
    stock, ours = _lms(model, tok, batch_size, max_length=window)
    reqs = _requests(len(tok), window)
    assert max(len(r[1]) + len(r[2]) for r in reqs) > window + 1  # truncation is exercised
    hook = RecordingHook()
    ours.set_cache_hook(hook)
    want = stock._loglikelihood_tokens(reqs, disable_tqdm=True)
    got = ours._loglikelihood_tokens(reqs, disable_tqdm=True)
    assert len(got) == len(want) == len(reqs)
    for i, ((lw, gw), (lg, gg)) in enumerate(zip(want, got)):
        assert abs(lw - lg) <= TOL, (i, reqs[i][0], lw, lg)
        assert gw == gg, (i, reqs[i][0])
    # the same order as stock, not merely the same multiset: a swap of two requests would show
    assert [round(x[0], 3) for x in got] == [round(x[0], 3) for x in want]
    # caching hook: one call per request that has request strings, with its own answer
    expected = [("loglikelihood", r[0], got[i]) for i, r in enumerate(reqs) if r[0] is not None]
    assert sorted(hook.calls, key=repr) == sorted(expected, key=repr)


def test_is_greedy_true_when_continuation_is_the_argmax(tiny_model):
    """A continuation built from the model's own greedy choices must score is_greedy=True for both
    scorers (random continuations essentially never do, so the comparison above alone is weak)."""
    model, tok = tiny_model
    model.float().eval()
    stock, ours = _lms(model, tok, 4)
    ctx = tok("Thought: I need to call getWeather.")["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ctx]), max_new_tokens=5, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    greedy = out[0, len(ctx):].tolist()
    reqs = [(("c", "g5"), ctx, greedy), (("c", "g1"), ctx, greedy[:1]),
            (("c", "bad"), ctx, greedy[:2] + [(greedy[2] + 1) % len(tok)])]
    want = stock._loglikelihood_tokens(reqs, disable_tqdm=True)
    got = ours._loglikelihood_tokens(reqs, disable_tqdm=True)
    assert [g for _, g in want] == [g for _, g in got] == [True, True, False]
    for (lw, _), (lg, _) in zip(want, got):
        assert abs(lw - lg) <= TOL


def _spy_model_calls(monkeypatch, model):
    calls = []
    real = type(model).forward

    def spy(self, *a, **kw):
        out = real(self, *a, **kw)
        calls.append((tuple(kw["input_ids"].shape), tuple(out.logits.shape[:-1])))
        return out

    monkeypatch.setattr(type(model), "forward", spy)
    return calls


CTX_A, CTX_B = list(range(10, 40)), list(range(50, 70))
FORWARD_REQS = [(("a", "1"), CTX_A, [5, 6, 7]), (("a", "2"), CTX_A, [8]), (("a", "3"), CTX_A, [9, 10]),
                (("b", "1"), CTX_B, [11]), (("b", "2"), CTX_B, [12]), (("a", "1 again"), CTX_A, [5, 6, 7])]


def test_packed_contexts_share_one_forward(tiny_model, monkeypatch):
    """Both contexts, each once with its distinct multi-token continuations, go through one
    forward, and logits are projected only where they are read."""
    model, tok = tiny_model
    model.float().eval()
    stock, ours = _lms(model, tok, 8)
    want = stock._loglikelihood_tokens(FORWARD_REQS, disable_tqdm=True)
    assert ours._packing_ok()
    calls = _spy_model_calls(monkeypatch, model)
    res = ours._loglikelihood_tokens(FORWARD_REQS, disable_tqdm=True)
    assert res[5] == res[0]
    # row a: 30 context + [5, 6] + [9]; row b: 20 context, padded to 33
    # kept: a's last context position + 3 continuation positions, b's last context position
    assert calls == [((2, 33), (5,))]
    for (lw, gw), (lg, gg) in zip(want, res):
        assert abs(lw - lg) <= TOL and gw == gg


def test_packed_batches_respect_rows_and_tokens(tiny_model):
    model, tok = tiny_model
    _, ours = _lms(model, tok, 2)
    reqs = [((str(g), "c"), [g + 3] * (10 * (g + 1)), [7, 8]) for g in range(5)]
    groups = ours._group_by_context(reqs)
    batches = list(ours._pack_batches(ours._plan_rows(groups, reqs), reqs, rows=2, tokens_per_row=40))
    assert all(shared == 0 and len(plan) == 1 for b in batches for shared, plan in b)  # nothing shared
    widths = [[len(plan[0][0]) + 1 for _, plan in b] for b in batches]
    # budget 2 x 40 = 80 padded tokens: 2 x 51 and 2 x 41 exceed it, 2 x 31 fits; at most 2 rows
    assert widths == [[51], [41], [31, 21], [11]]
    assert sorted(i for b in batches for _, plan in b for _, m in plan for i in m) == list(range(5))


PRIMER = list(range(100, 140))  # 40 tokens every context below begins with
PRIMED_REQS = [((f"q{q}", f"c{c}"), PRIMER + [200 + q, 210 + q], [220 + c, 230 + c, 240])
               for q in range(3) for c in range(2)] + \
              [(("q0", "one token"), PRIMER + [200, 210], [250]),
               (("w0", "a"), PRIMER[:12] + [300, 301], [302, 303]),      # Winogrande-like: the sentence
               (("w0", "b"), PRIMER[:12] + [304], [302, 303])]           # up to the blank, two options


def test_contexts_sharing_a_primer_run_it_once(tiny_model, monkeypatch):
    """Contexts that begin with the same run share one packed row in which the run appears once
    (each context keeps its own tail, each continuation its own tokens), and every score still
    equals stock HFLM's."""
    model, tok = tiny_model
    model.float().eval()
    stock, ours = _lms(model, tok, 8)
    want = stock._loglikelihood_tokens(PRIMED_REQS, disable_tqdm=True)
    plans = ours._plan_rows(ours._group_by_context(PRIMED_REQS), PRIMED_REQS)
    # the three primed items share their 40-token primer; the two Winogrande-like contexts their
    # 12-token sentence start (merging all five on those 12 would save less: prefix_groups' rule)
    assert [(shared, [len(ctx) for ctx, _ in plan]) for shared, plan in plans] == [(40, [42, 42, 42]), (12, [14, 13])]
    calls = _spy_model_calls(monkeypatch, model)
    got = ours._loglikelihood_tokens(PRIMED_REQS, disable_tqdm=True)
    for (lw, gw), (lg, gg) in zip(want, got):
        assert abs(lw - lg) <= TOL and gw == gg
    # rows: 40 + 3 x (2 own + 2 x 2 continuation tokens) = 58 and 12 + (2 + 1) + (1 + 1) = 17
    # (one context apiece: 3 x 46 + 15 + 14); kept: 5 last context positions + 3 x 4 + 2
    assert calls == [((2, 58), (19,))]


def test_a_row_of_shared_contexts_is_split_at_its_width_cap(tiny_model, monkeypatch):
    from harness.prior import scorer

    model, tok = tiny_model
    model.float().eval()
    stock, ours = _lms(model, tok, 8)
    monkeypatch.setattr(scorer, "MAX_ROW_TOKENS", 55)
    plans = ours._plan_rows(ours._group_by_context(PRIMED_REQS), PRIMED_REQS)
    # 40 + 6 + 6 = 52 fits, the third primed context would make 58: it gets a row of its own
    assert [(shared, [len(ctx) for ctx, _ in plan]) for shared, plan in plans] == \
        [(40, [42, 42]), (0, [42]), (12, [14, 13])]
    for (lw, gw), (lg, gg) in zip(stock._loglikelihood_tokens(PRIMED_REQS, disable_tqdm=True),
                                  ours._loglikelihood_tokens(PRIMED_REQS, disable_tqdm=True)):
        assert abs(lw - lg) <= TOL and gw == gg


def test_a_split_group_gets_rows_of_about_equal_width(tiny_model):
    """Rows of one batch are padded to the widest, so a group too wide for one row is split into
    the fewest rows that fit, of about equal width, not filled greedily (6 + 4 contexts here)."""
    model, tok = tiny_model
    _, ours = _lms(model, tok, 8)
    reqs = [((f"q{q}", "c"), PRIMER + [200 + q, 210 + q], [220, 230, 240, 250, 260]) for q in range(10)]
    plans = ours._plan_rows(ours._group_by_context(reqs), reqs, max_width=40 + 36)  # 6 tokens per context
    assert [(shared, len(plan)) for shared, plan in plans] == [(40, 5), (40, 5)]


def test_group_by_group_fallback_without_packing(tiny_model, monkeypatch):
    """A model that cannot take a custom 4D mask (flash attention, sliding windows) is scored one
    context at a time from its KV cache: the context once, its multi-token continuations batched."""
    model, tok = tiny_model
    model.float().eval()
    _, ours = _lms(model, tok, 8)
    monkeypatch.setattr(type(ours), "_packing_ok", lambda self: False)
    calls = _spy_model_calls(monkeypatch, model)
    res = ours._loglikelihood_tokens(FORWARD_REQS, disable_tqdm=True)
    assert res[5] == res[0]
    assert sorted(calls) == sorted([
        ((1, 30), (1, 1)),      # context a, last position only
        ((2, 2), (3,)),         # a's two distinct multi-token continuations: 2 + 1 real positions
        ((1, 20), (1, 1)),      # context b: single-token choices need nothing more
    ])


def test_packing_matches_stock_with_eager_attention(tiny_model):
    """Eager attention adds the mask to the scores: the packed mask is additive (0 / dtype min),
    so eager and SDPA models score alike."""
    model, tok = tiny_model
    model.float().eval()
    saved = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        stock, ours = _lms(model, tok, 4, max_length=48)
        assert ours._packing_ok()
        reqs = _requests(len(tok), 48)
        for (lw, gw), (lg, gg) in zip(stock._loglikelihood_tokens(reqs, disable_tqdm=True),
                                      ours._loglikelihood_tokens(reqs, disable_tqdm=True)):
            assert abs(lw - lg) <= TOL and gw == gg
    finally:
        model.set_attn_implementation(saved)


def test_rolling_loglikelihood_goes_to_stock(tiny_model):
    from lm_eval.api.instance import Instance

    model, tok = tiny_model
    model.float().eval()
    stock, ours = _lms(model, tok, 4, max_length=32)
    text = "The quick brown fox jumps over the lazy dog. " * 6
    inst = [Instance("loglikelihood_rolling", {}, (text,), 0)]
    assert ours.loglikelihood_rolling(inst, disable_tqdm=True) == stock.loglikelihood_rolling(inst, disable_tqdm=True)


def test_prior_key_names_the_scorer(data_dir, tmp_path, monkeypatch):
    """Results of another scorer are never reused: the scorer id is part of every prior key."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    from harness.prior import evaluate as ev
    from harness.prior import scorer

    keys = ev.plan_keys("0" * 16, benchmarks=["arc_easy"], limit=2, data_dir=data_dir)
    monkeypatch.setattr(scorer, "SCORER_ID", "another-scorer")
    assert ev.plan_keys("0" * 16, benchmarks=["arc_easy"], limit=2, data_dir=data_dir) != keys


def test_prior_key_names_stock_hflm_where_the_scorer_steps_aside_for_it(data_dir, tmp_path, monkeypatch):
    """Under a transformers that cannot keep logits by a boolean mask every request runs through
    stock HFLM, so the key must not claim the shared-context scorer's numbers."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    import transformers.modeling_utils as mu

    from harness.prior import evaluate as ev
    from harness.prior import scorer

    assert scorer.scorer_id() == scorer.SCORER_ID
    keys = ev.plan_keys("0" * 16, benchmarks=["arc_easy"], limit=2, data_dir=data_dir)
    monkeypatch.delattr(mu, "slice_logits_to_keep")
    assert scorer.scorer_id() == scorer.STOCK_SCORER_ID
    assert ev.plan_keys("0" * 16, benchmarks=["arc_easy"], limit=2, data_dir=data_dir) != keys


def test_evaluate_prior_uses_the_shared_context_scorer(tiny_model, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    from harness.prior import evaluate_prior, scorer
    from harness.store import Store

    model, tok = tiny_model
    seen = []
    real = scorer.SharedContextScoring._loglikelihood_tokens

    def spy(self, requests, *a, **k):
        seen.append(len(requests))
        return real(self, requests, *a, **k)

    monkeypatch.setattr(scorer.SharedContextScoring, "_loglikelihood_tokens", spy)
    res = evaluate_prior(model, tok, model_label="base", store=Store(tmp_path / "s.db"),
                         benchmarks=["arc_easy"], limit=2, data_dir=data_dir, batch_size=4)
    assert res["arc_easy"]["n"] == 2
    assert seen and sum(seen) >= 2 * 3  # ARC items have 3-5 choices, all scored here


# ----- slow: the default model, real benchmark items ----------------------------------------
SLOW_BENCHES = ["hellaswag", "truthfulqa_mc1", "mmlu", "winogrande", "arc_easy"]
SLOW_ITEMS = 4


# gold choice index per document, as lm-eval's task configs define it
_GOLD = {
    "hellaswag": lambda d: int(d["label"]),
    "truthfulqa_mc1": lambda d: 0,
    "mmlu": lambda d: int(d["answer"]),
    "winogrande": lambda d: int(d["answer"]) - 1,
    "arc_easy": lambda d: "ABCDE".index(d["answerKey"]),
}


@pytest.mark.slow
def test_default_model_matches_stock_hflm_on_real_items(data_dir):
    from harness.models import DEFAULT_MODEL, load_model
    from harness.prior.scorer import benchmark_requests

    model, tok = load_model(DEFAULT_MODEL, dtype="float32")
    model.eval()
    stock, ours = _lms(model, tok, 8)
    report = []
    for name in SLOW_BENCHES:
        pairs = benchmark_requests(name, data_dir, SLOW_ITEMS)
        inst = [i for _, i in pairs]
        assert inst and all(i.request_type == "loglikelihood" for i in inst), name
        want = stock.loglikelihood(inst, disable_tqdm=True)
        got = ours.loglikelihood(inst, disable_tqdm=True)
        by_doc: dict[tuple, list[tuple[int, tuple, tuple]]] = {}
        for (task, i), w, g in zip(pairs, want, got):
            assert abs(w[0] - g[0]) <= TOL, (name, task, i.doc_id, i.idx, w, g)
            by_doc.setdefault((task, i.doc_id), []).append((i.idx, w, g))
        acc_w = acc_g = 0
        ties = 0
        docs = {(t, i.doc_id): i.doc for t, i in pairs}
        for (task, doc_id), rows in by_doc.items():
            rows.sort()
            lw = [w[0] for _, w, _ in rows]
            lg = [g[0] for _, _, g in rows]
            top = sorted(lw, reverse=True)
            tie = len(top) > 1 and top[0] - top[1] < TIE
            ties += tie
            assert [w[1] for _, w, _ in rows] == [g[1] for _, _, g in rows], (name, doc_id)
            if not tie:
                assert lw.index(max(lw)) == lg.index(max(lg)), (name, doc_id)
            gold = _GOLD[name](docs[(task, doc_id)])
            acc_w += lw.index(max(lw)) == gold
            acc_g += lg.index(max(lg)) == gold
        report.append((name, len(by_doc), acc_w, acc_g, ties, max(abs(w[0] - g[0]) for w, g in zip(want, got))))
        assert len(by_doc) >= SLOW_ITEMS, (name, len(by_doc))
        assert abs(acc_w - acc_g) <= ties, (name, acc_w, acc_g, ties)
    print("\nbenchmark docs acc_stock acc_ours near_ties max|dll|")
    for row in report:
        print(*row)


def _gen_requests(texts: list[str], until: list[str], max_gen_toks: int):
    from lm_eval.api.instance import Instance

    kw = {"until": until, "max_gen_toks": max_gen_toks, "do_sample": False}
    return [Instance(request_type="generate_until", doc={}, arguments=(t, dict(kw)), idx=i)
            for i, t in enumerate(texts)]


_PROMPTS = ["The cat", "Once upon a time there was a long prompt that keeps going on", "a b c", "hello world",
            "x", "Numbers: 1 2 3 4 5 6 7 8 9", "zzz yyy", "Question: why? Answer:"]


def test_generate_until_matches_stock_and_refills_slots(tiny_model, monkeypatch):
    """Greedy generate_until: the same texts as stock HFLM, with and without a stop sequence that
    fires mid-generation, while the decoder gets more prompts per call than `batch_size` (so a
    finished row's slot is refilled from the waiting prompts)."""
    import harness.decoding as G

    model, tok = tiny_model
    model.float().eval()
    stock, ours = _lms(model, tok, 2)
    plain = stock.generate_until(_gen_requests(_PROMPTS, [], 24), disable_tqdm=True)
    # a stop string taken from the middle of one stock output, so it fires for at least that row
    longest = max(plain, key=len)
    stop = longest[len(longest) // 2: len(longest) // 2 + 3]
    assert stop.strip(), plain
    calls = []
    real = G.greedy_shared

    def spy(model_, prompts, *a, **k):
        calls.append((len(prompts), k.get("batch_size")))
        return real(model_, prompts, *a, **k)

    monkeypatch.setattr(G, "greedy_shared", spy)
    for until in ([], [stop]):
        want = stock.generate_until(_gen_requests(_PROMPTS, until, 24), disable_tqdm=True)
        got = ours.generate_until(_gen_requests(_PROMPTS, until, 24), disable_tqdm=True)
        assert got == want, until
    assert any(stop in p for p in plain) and any(len(w) < len(p) for w, p in zip(want, plain))
    assert calls and all(n == len(_PROMPTS) and rows == 2 for n, rows in calls)  # all prompts, 2 slots
    assert ours.batch_size == 2  # restored after the call


def test_generate_until_with_a_repetition_penalty_goes_to_stock(tiny_model, monkeypatch):
    import harness.decoding as G

    model, tok = tiny_model
    model.float().eval()
    model.generation_config.repetition_penalty = 1.3
    stock, ours = _lms(model, tok, 2)
    monkeypatch.setattr(G, "greedy_shared", lambda *a, **k: pytest.fail("pruned decoder used"))
    reqs = lambda: _gen_requests(_PROMPTS[:3], [], 12)  # noqa: E731
    assert ours.generate_until(reqs(), disable_tqdm=True) == stock.generate_until(reqs(), disable_tqdm=True)
