"""Divergences and estimators against direct computations on hand-made logits."""

import math

import pytest
import torch

from harness.train.losses import (chunked_divergence, divergence_from_logprobs, masked_sequence_mean,
                                  per_token_divergence, skip_mask)

torch.manual_seed(0)
S = torch.randn(2, 3, 7)
T = torch.randn(2, 3, 7)
Y = torch.randint(0, 7, (2, 3))


def direct(s_logits, t_logits, divergence, beta=0.5, support=None):
    """Plain-python KL sums over each position's support."""
    out = torch.zeros(s_logits.shape[:2], dtype=torch.float64)
    for b in range(s_logits.shape[0]):
        for l in range(s_logits.shape[1]):
            sl, tl = s_logits[b, l].double(), t_logits[b, l].double()
            idx = support[b][l] if support is not None else list(range(sl.numel()))
            ps = [math.exp(sl[i]) for i in idx]
            pt = [math.exp(tl[i]) for i in idx]
            zs, zt = sum(ps), sum(pt)
            ps = [p / zs for p in ps]
            pt = [p / zt for p in pt]
            kl = lambda p, q: sum(a * math.log(a / c) for a, c in zip(p, q))
            if divergence == "forward":
                v = kl(pt, ps)
            elif divergence == "reverse":
                v = kl(ps, pt)
            else:
                m = [beta * a + (1 - beta) * c for a, c in zip(pt, ps)]
                v = beta * kl(pt, m) + (1 - beta) * kl(ps, m)
            out[b, l] = v
    return out


@pytest.mark.parametrize("divergence", ["forward", "reverse", "jsd"])
def test_full_matches_direct(divergence):
    got = per_token_divergence(S, T, Y, divergence, "full", beta=0.3)
    assert torch.allclose(got.double(), direct(S, T, divergence, beta=0.3), atol=1e-5)


@pytest.mark.parametrize("divergence", ["forward", "reverse", "jsd"])
def test_topk_matches_direct_on_student_support(divergence):
    k = 3
    support = S.topk(k, -1).indices.tolist()
    got = per_token_divergence(S, T, Y, divergence, "topk", topk=k)
    assert torch.allclose(got.double(), direct(S, T, divergence, support=support), atol=1e-5)


def test_sampled_value_and_gradient_are_the_reverse_kl_estimator():
    s = S.clone().requires_grad_(True)
    got = per_token_divergence(s, T, Y, "reverse", "sampled")
    ls = torch.log_softmax(S, -1).gather(-1, Y[..., None])[..., 0]
    lt = torch.log_softmax(T, -1).gather(-1, Y[..., None])[..., 0]
    assert torch.allclose(got, (ls - lt) * ls, atol=1e-6)
    got.sum().backward()
    # gradient = sg(ls - lt) * d ls / d logits
    s2 = S.clone().requires_grad_(True)
    ls2 = torch.log_softmax(s2, -1).gather(-1, Y[..., None])[..., 0]
    (ls2 * (ls - lt)).sum().backward()
    assert torch.allclose(s.grad, s2.grad, atol=1e-6)


@pytest.mark.parametrize("divergence", ["forward", "jsd"])
def test_sampled_rejects_non_reverse(divergence):
    with pytest.raises(ValueError):
        per_token_divergence(S, T, Y, divergence, "sampled")


@pytest.mark.parametrize("divergence", ["forward", "reverse", "jsd"])
@pytest.mark.parametrize("estimator", ["full", "topk"])
def test_zero_when_teacher_equals_student(divergence, estimator):
    got = per_token_divergence(S, S.clone(), Y, divergence, estimator, topk=4)
    assert got.abs().max() < 1e-6


def test_no_gradient_reaches_the_teacher():
    s = S.clone().requires_grad_(True)
    t = T.clone().requires_grad_(True)
    per_token_divergence(s, t, Y, "forward", "full").sum().backward()
    assert t.grad is None and s.grad is not None


def test_chunked_equals_unchunked_including_gradients():
    torch.manual_seed(1)
    head = torch.nn.Linear(5, 11, bias=False)
    h = torch.randn(2, 9, 5, requires_grad=True)
    t_logits = torch.randn(2, 9, 11)
    y = torch.randint(0, 11, (2, 9))
    whole = per_token_divergence(head(h), t_logits, y, "forward", "full")
    whole.sum().backward()
    g_whole = h.grad.clone()
    h.grad = None
    chunked = chunked_divergence(h, lambda a, b: t_logits[:, a:b], head, y, "forward", "full", 100, 0.5, chunk=4)
    chunked.sum().backward()
    assert torch.allclose(whole, chunked, atol=1e-6) and torch.allclose(g_whole, h.grad, atol=1e-6)


def test_skipped_tokens_contribute_nothing_and_sequence_mean():
    per_tok = torch.tensor([[5.0, 5.0, 5.0, 1.0, 3.0], [9.0, 9.0, 9.0, 2.0, 0.0]])
    cmask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    m = skip_mask(cmask, 3)
    assert m.tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]]
    # mean over each sequence's tokens, then over sequences: ((1+3)/2 + 2/1) / 2
    assert masked_sequence_mean(per_tok, m).item() == pytest.approx(2.0)
    per_tok2 = per_tok.clone()
    per_tok2[:, :3] = 1000.0
    assert masked_sequence_mean(per_tok2, m).item() == pytest.approx(2.0)


def test_jsd_between_forward_and_reverse():
    # generalised JSD is bounded by log 2 for beta=0.5 and symmetric in (S, T) there
    a = divergence_from_logprobs(torch.log_softmax(S, -1), torch.log_softmax(T, -1), "jsd", 0.5)
    b = divergence_from_logprobs(torch.log_softmax(T, -1), torch.log_softmax(S, -1), "jsd", 0.5)
    assert torch.allclose(a, b, atol=1e-6) and (a <= math.log(2) + 1e-6).all()
