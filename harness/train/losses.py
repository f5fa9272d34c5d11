"""Per-token divergences between student and teacher next-token distributions.

Conventions (method.md): S = student, T = teacher (stop-gradient).
- `forward`:  KL(T‖S) = Σ_v p_T (log p_T − log p_S)   — what the paper's released code optimises;
- `reverse`:  KL(S‖T) = Σ_v p_S (log p_S − log p_T)   — what the paper's text describes;
- `jsd`:      generalised JSD with mixing weight β:  M = β·T + (1−β)·S,
              β·KL(T‖M) + (1−β)·KL(S‖M)  (β→0 behaves like forward, β→1 like reverse after scaling;
              same convention as TRL's `distillation_alpha`).
Estimators:
- `full`:     exact sum over the whole vocabulary (the paper);
- `topk`:     restricted to the student's top-k tokens at each position, both renormalised on that
              support (TRL's default, k=100);
- `sampled`:  the realised token only — a REINFORCE-style estimator of *reverse* KL whose gradient is
              sg(log p_S(y) − log p_T(y)) ∇ log p_S(y); forward KL and JSD have no unbiased
              on-policy single-token estimator, so they are rejected.

Memory: logits are (tokens × vocab). For Qwen (V≈152k) a batch of 4×512 completion tokens is 1.2 GB
per fp32 logits tensor, and log-softmax/KL intermediates multiply that. `chunked_divergence` computes
student and teacher logits from hidden states a slice of positions at a time and recomputes both in
the backward pass (activation checkpointing), so memory grows with `chunk × V`, not `tokens × V`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

DIVERGENCES = ("forward", "reverse", "jsd")
ESTIMATORS = ("full", "topk", "sampled")


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(P‖Q) summed over the last dim, from log-probabilities."""
    return (logp.exp() * (logp - logq)).sum(-1)


def divergence_from_logprobs(s: torch.Tensor, t: torch.Tensor, divergence: str, beta: float = 0.5) -> torch.Tensor:
    """Per-position divergence from student/teacher log-probs over the same support (…, V)."""
    if divergence == "forward":
        return _kl(t, s)
    if divergence == "reverse":
        return _kl(s, t)
    if divergence == "jsd":
        if not 0.0 < beta < 1.0:
            raise ValueError("jsd mixing weight must be in (0, 1)")
        m = torch.logsumexp(torch.stack([t + math.log(beta), s + math.log(1 - beta)]), dim=0)
        return beta * _kl(t, m) + (1 - beta) * _kl(s, m)
    raise ValueError(f"unknown divergence '{divergence}'")


def per_token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor | None,
                         divergence: str = "forward", estimator: str = "full", topk: int = 100,
                         beta: float = 0.5) -> torch.Tensor:
    """Divergence at each position (…, ) from raw logits (…, V). The teacher is detached here."""
    teacher_logits = teacher_logits.detach()
    s = F.log_softmax(student_logits.float(), dim=-1)
    t = F.log_softmax(teacher_logits.float(), dim=-1)
    if estimator == "full":
        return divergence_from_logprobs(s, t, divergence, beta)
    if estimator == "topk":
        k = min(topk, s.shape[-1])
        idx = student_logits.detach().topk(k, dim=-1).indices
        s_k, t_k = s.gather(-1, idx), t.gather(-1, idx)
        s_k = s_k - torch.logsumexp(s_k, -1, keepdim=True)
        t_k = t_k - torch.logsumexp(t_k, -1, keepdim=True)
        return divergence_from_logprobs(s_k, t_k, divergence, beta)
    if estimator == "sampled":
        if divergence != "reverse":
            raise ValueError("estimator 'sampled' estimates reverse KL only (on-policy samples come from the student)")
        if targets is None:
            raise ValueError("estimator 'sampled' needs the sampled tokens")
        ls = s.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        lt = t.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return (ls - lt).detach() * ls  # value is not the KL; its gradient is the reverse-KL gradient
    raise ValueError(f"unknown estimator '{estimator}'")


def chunked_divergence(student_hidden: torch.Tensor, teacher_logits_fn, lm_head, targets: torch.Tensor,
                       divergence: str, estimator: str, topk: int, beta: float, chunk: int = 64,
                       temperature: float = 1.0) -> torch.Tensor:
    """Per-token divergence (B, L) from the student's final hidden states (B, L, H).

    `teacher_logits_fn(start, end)` returns the teacher logits for completion positions
    [start, end) (B, end-start, V), computed without gradients. Each slice's student *and* teacher
    logits are recomputed during backward instead of being stored: a teacher slice held from the
    forward to the backward pass would keep B×L×V floats alive in total (1.2 GB at 2×1024 rollout
    tokens), where recomputing it costs one more head matmul per slice. So `teacher_logits_fn`
    must be deterministic (a fixed module in eval mode), and it runs twice per slice with gradients.
    """
    out = []
    L = student_hidden.shape[1]
    for a in range(0, L, chunk):
        b = min(L, a + chunk)

        def piece(h, a=a, b=b):
            s_logits = lm_head(h) / temperature
            return per_token_divergence(s_logits, teacher_logits_fn(a, b) / temperature, targets[:, a:b],
                                        divergence, estimator, topk, beta)

        h = student_hidden[:, a:b]
        out.append(checkpoint(piece, h, use_reentrant=False) if h.requires_grad else piece(h))
    return torch.cat(out, dim=1)


def masked_sequence_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's unmasked tokens, then mean over sequences (the authors' averaging).
    Sequences with no unmasked token contribute zero (but still count in the batch mean)."""
    mask = mask.to(per_token.dtype)
    per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_seq.mean()


def skip_mask(completion_mask: torch.Tensor, skip: int) -> torch.Tensor:
    """Zero the first `skip` completion positions (the paper skips 3)."""
    m = completion_mask.clone()
    if skip > 0:
        m[:, :skip] = 0
    return m
