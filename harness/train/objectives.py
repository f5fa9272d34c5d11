"""The objectives a step trains: SFT's cross-entropy on demonstrations and SDFT's divergence to the
demonstration-conditioned teacher on the student's own rollouts, plus the drift probe.

Both run the student through the same path (decoder hidden states, then the output head a chunk
of positions at a time), so SFT and SDFT differ in the loss and nothing else. `Objectives` is a
mixin of `loop.Run`: it reads the run's model, teacher, config and device."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from .accounting import Phases
from .batches import left_pad, right_pad
from .losses import chunked_divergence, masked_sequence_mean, skip_mask


class HiddenStates(torch.nn.Module):
    """Wraps a causal LM so the (DDP-wrapped) forward returns final hidden states, not logits:
    the head is applied later in chunks (see losses.chunked_divergence).

    With `complete`, the input is the prompts alone and the forward also samples their completions
    (`share_rollout_prefill`): the prompts run once into a KV cache, with gradients; `complete(last
    hidden state, cache)` samples from a detached copy of that cache and returns (completion ids,
    mask); the completions then run through the same cache. So the rollout needs no prefill of its
    own, and the loss still differentiates through the prompt's keys and values, exactly as the
    single forward over prompt + completion does. Returns (hidden states at the positions that
    predict each completion token, completion ids, mask). One module call, so DDP sees one forward."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, positions, complete=None):
        dec = self.model.get_decoder()
        if complete is None:
            return dec(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                       use_cache=False).last_hidden_state
        from transformers import DynamicCache

        from ..decoding import cache_kwarg

        cache = DynamicCache(config=self.model.config)
        kw = cache_kwarg(dec)
        h = dec(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True,
                **{kw: cache}).last_hidden_state[:, -1:]
        comp, cmask = complete(h, cache)
        att = torch.cat([attention_mask, cmask], 1)
        pos = position_ids(att)[:, input_ids.shape[1]:]
        hc = dec(input_ids=comp, attention_mask=att, position_ids=pos, use_cache=True,
                 **{kw: cache}).last_hidden_state
        return torch.cat([h, hc[:, :-1]], 1), comp, cmask


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as `generate` and the greedy decoder compute them.

    Without them a left-padded row starts at position `n_pad` instead of 0: harmless up to rounding
    for RoPE (relative), wrong for models with absolute position embeddings."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def check_prefill_sharing(model) -> None:
    """Refuse `share_rollout_prefill` for a model it would get wrong: with dropout or other train-mode
    noise of its own (the student's prompt forward runs in train mode, sampling must not see it),
    with logits scaled or capped after the head (the first token is drawn from the head's raw
    output), or with a cache that is not plain per-layer (sliding-window layers drop keys the
    completions' forward needs)."""
    from ..decoding import shares_per_layer_cache
    from ..errors import ConfigError

    hint = "; set train.share_rollout_prefill: false"
    noisy = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    settings = model.config.to_dict()
    noisy += [k for k, v in settings.items() if any(w in k for w in ("dropout", "pdrop", "jitter"))
              and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0]
    if noisy:
        raise ConfigError(f"train.share_rollout_prefill: the model has dropout or train-mode noise ({noisy[0]}){hint}")
    scaled = [k for k in ("logit_scale", "logits_scaling", "final_logit_softcapping", "output_multiplier_scale")
              if settings.get(k) not in (None, 1, 1.0)]
    if scaled:
        raise ConfigError(f"train.share_rollout_prefill: the model scales its logits after the head ({scaled[0]}){hint}")
    if not shares_per_layer_cache(model):
        raise ConfigError(f"train.share_rollout_prefill: the model's cache has sliding-window layers{hint}")


@contextmanager
def eval_mode(module):
    """Forward-only passes (teacher, drift probe) run without dropout, so they are deterministic
    functions of the weights; the previous mode is restored after."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


def lm_head(model):
    return model.get_output_embeddings()



class Objectives:
    """Losses of one micro-batch, as methods of the run (`loop.Run`)."""

    def _hidden(self, prompts: list[list[int]], comp: torch.Tensor, cmask: torch.Tensor, module=None):
        """Final hidden states at the positions that predict each completion token. With
        `module=None` the forward goes through the accelerate-wrapped student (gradients, DDP);
        otherwise through `module`'s decoder. Both get positions counted from the attention mask."""
        pids, pmask = left_pad(prompts, self.tok.pad_token_id)
        ids = torch.cat([pids, comp], 1).to(self.device)
        att = torch.cat([pmask, cmask], 1).to(self.device)
        pos = position_ids(att)
        with self.autocast():
            if module is None:
                h = self.wrapped(ids, att, pos)
            else:
                h = module.get_decoder()(input_ids=ids, attention_mask=att, position_ids=pos,
                                         use_cache=False).last_hidden_state
        P = pids.shape[1]
        return h[:, P - 1:P - 1 + comp.shape[1]]

    def _logits_fn(self, head, hidden):
        def fn(a, b):
            with self.autocast():
                return head(hidden[:, a:b]).float()
        return fn

    def divergence_loss(self, exs, comp, cmask, phases: Phases | None = None, rollout_logprobs=None):
        """SDFT: per-token divergence between student (student prompt) and teacher (teacher prompt)
        on the same rollout tokens; teacher under stop-gradient, in eval mode (no dropout).
        With `vllm_is_cap`, each token's divergence is weighted by the clipped ratio of the
        student's to the engine's probability of it (`rollout_logprobs`, from the rollouts)."""
        ph = phases or Phases(self.device)
        t_logits = self._teacher_logits(exs, comp, cmask, ph)
        with ph("student_fwd_s"):
            s_hidden = self._hidden([e.student_ids for e in exs], comp, cmask)
        return self._divergence(s_hidden, t_logits, comp, cmask, ph, rollout_logprobs)

    def sampling_divergence_loss(self, exs, seeds: list[int], phases: Phases | None = None):
        """SDFT with the rollouts sampled inside the student's forward (`share_rollout_prefill`, see
        `HiddenStates`): row i from its own generator seeded `seeds[i]`. Returns (loss, per-token
        divergence, loss mask, completion ids, completion mask)."""
        ph = phases or Phases(self.device)
        pids, pmask = left_pad([e.student_ids for e in exs], self.tok.pad_token_id)
        pids, pmask = pids.to(self.device), pmask.to(self.device)

        def complete(last_hidden, cache):
            with ph("gen_s"):
                return self.rollouts_from_prefill(pmask, last_hidden, cache, seeds)

        with ph("student_fwd_s"), self.autocast():
            s_hidden, comp, cmask = self.wrapped(pids, pmask, position_ids(pmask), complete=complete)
        t_logits = self._teacher_logits(exs, comp, cmask, ph)
        return (*self._divergence(s_hidden, t_logits, comp, cmask, ph, None), comp, cmask)

    def _teacher_logits(self, exs, comp, cmask, ph: Phases):
        """The teacher's logits over the completion positions [a, b), as a function computed chunk by
        chunk: only its hidden states (B×L×H) are kept, and the logits are recomputed when backward
        recomputes the student's chunk, so no B×L×V tensor exists at once. The output head is never
        a LoRA target (checked at start-up), so the teacher's head is usable outside its adapter
        context."""
        with ph("teacher_s"), self.teacher.teacher_weights() as tmod, eval_mode(tmod):
            t_hidden = self._hidden([e.teacher_ids for e in exs], comp, cmask, module=tmod).detach()
            fn = self._logits_fn(lm_head(tmod), t_hidden)

        def teacher_logits(a, b):
            with torch.no_grad(), ph("teacher_s"):
                return fn(a, b)
        return teacher_logits

    def _divergence(self, s_hidden, teacher_logits, comp, cmask, ph: Phases, rollout_logprobs):
        cfg = self.cfg
        with ph("student_fwd_s"):
            per_tok = chunked_divergence(
                s_hidden, teacher_logits, lm_head(self.model), comp.to(self.device),
                cfg.divergence, cfg.estimator, cfg.topk, cfg.jsd_beta, cfg.chunk_tokens, cfg.temperature)
            if cfg.vllm_is_cap is not None:
                from .vllm_rollouts import clipped_importance_weights

                if rollout_logprobs is None:
                    raise ValueError("divergence_loss: vllm_is_cap is set but the rollouts carry no engine log-probs")
                per_tok = per_tok * clipped_importance_weights(self._token_logprobs(s_hidden, comp),
                                                               rollout_logprobs.to(self.device), cfg.vllm_is_cap)
            mask = skip_mask(cmask, cfg.skip_tokens).to(self.device)
            return masked_sequence_mean(per_tok, mask), per_tok.detach(), mask

    @torch.no_grad()
    def _token_logprobs(self, hidden: torch.Tensor, comp: torch.Tensor) -> torch.Tensor:
        """The student's raw log-softmax at each completion token (B x L), a chunk of positions at a
        time from its hidden states, without gradients."""
        head, targets, out = lm_head(self.model), comp.to(self.device), []
        for a in range(0, comp.shape[1], self.cfg.chunk_tokens):
            b = min(comp.shape[1], a + self.cfg.chunk_tokens)
            logits = head(hidden[:, a:b].detach()).float()  # as the divergence computes it: no autocast
            out.append(torch.log_softmax(logits, -1).gather(-1, targets[:, a:b].unsqueeze(-1)).squeeze(-1))
        return torch.cat(out, 1)

    def sft_loss(self, exs, phases: Phases | None = None):
        """SFT: next-token cross-entropy on the demonstration tokens only (prompt masked).

        The same path as the SDFT student: hidden states from the wrapped decoder, then the head a
        chunk of positions at a time, recomputed in backward, so no B×L×V tensor is kept."""
        ph = phases or Phases(self.device)
        with ph("student_fwd_s"):
            comp, cmask = right_pad([e.demo_ids for e in exs], self.tok.pad_token_id)
            h = self._hidden([e.student_ids for e in exs], comp, cmask)
            head = lm_head(self.model)
            targets = comp.to(self.device)
            losses = []
            for a in range(0, comp.shape[1], self.cfg.chunk_tokens):
                b = min(comp.shape[1], a + self.cfg.chunk_tokens)

                def piece(hh, a=a, b=b):
                    with self.autocast():
                        logits = head(hh).float()
                    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets[:, a:b].flatten(),
                                                             reduction="none").view(logits.shape[:2])

                chunk = h[:, a:b]
                losses.append(torch.utils.checkpoint.checkpoint(piece, chunk, use_reentrant=False)
                              if chunk.requires_grad else piece(chunk))
            per_tok = torch.cat(losses, 1)
            mask = cmask.to(self.device)
            return masked_sequence_mean(per_tok, mask), comp, cmask

    @torch.no_grad()
    def drift_kl(self, exs, comp, cmask) -> float:
        """Mean per-token KL(student ‖ initial model) on the student's own rollouts (full vocab),
        both forwards in eval mode (no dropout)."""
        with eval_mode(self.model):
            s_h = self._hidden([e.student_ids for e in exs], comp, cmask, module=self.model)
            s_fn = self._logits_fn(lm_head(self.model), s_h)
            with self.teacher.initial_weights() as imod, eval_mode(imod):
                i_h = self._hidden([e.student_ids for e in exs], comp, cmask, module=imod)
                i_fn = self._logits_fn(lm_head(imod), i_h)
                vals = []
                for a in range(0, comp.shape[1], self.cfg.chunk_tokens):
                    b = min(comp.shape[1], a + self.cfg.chunk_tokens)
                    s = torch.log_softmax(s_fn(a, b), -1)
                    i = torch.log_softmax(i_fn(a, b), -1)
                    vals.append((s.exp() * (s - i)).sum(-1))
        kl = torch.cat(vals, 1)
        return float(masked_sequence_mean(kl, cmask.to(self.device)))
