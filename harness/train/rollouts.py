"""SDFT's rollouts: one sampled completion per prompt from the student itself, every row from its
own random stream, so what is drawn is a function of (seed, step, row) and not of how the step is
split into micro-batches or processes. `Rollouts` is a mixin of `loop.Run`."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..hashing import hash_obj
from .batches import Example, left_pad, right_pad
from .objectives import eval_mode, lm_head


class Rollouts:
    """Sampling from the student, as methods of the run (`loop.Run`)."""

    @torch.no_grad()
    def rollouts(self, exs: list[Example], seeds: list[int], with_logprobs: bool = False):
        """One sampled completion per prompt from the student: (right-padded ids, mask), and with
        `with_logprobs` a third item, the sampler's per-token log-probs (B x L float32) where it
        reports them (`rollout_backend: vllm`), else None.

        `rollout_backend: vllm` samples in the run's colocated vLLM engine, serving the student's
        current adapter, row i with seed `seeds[i]` (`vllm_rollouts.VLLMRollouts`); what follows
        is the 'hf' sampler.

        The samples must come from the policy itself: `decoding.sample_pruned` applies
        temperature, top-p and top-k exactly as configured and nothing from the model's own
        generation_config (hub Qwen2.5-Instruct ships repetition_penalty 1.05 and top_k 20, which
        `generate` would apply, making the rollouts off-policy for the divergence they train). It
        also drops each row once it ends, so a long rollout does not make finished ones pay for
        its length. Each row draws from its own generator seeded with `seeds[i]`, so a rollout is a
        function of (seed, step, row): a resumed run samples what an uninterrupted one would, and a
        step's rows can be sampled in one batch however they are split into micro-batches and
        processes (`row_seeds`)."""
        if self.cfg.rollout_backend == "vllm":
            b = self.vllm_rollouts().sample(self.model, self.step, [e.student_ids for e in exs], seeds)
            return (b.ids, b.mask, b.logprobs) if with_logprobs else (b.ids, b.mask)
        ids, mask = left_pad([e.student_ids for e in exs], self.tok.pad_token_id)
        ids, mask = self._sample(mask.to(self.device), seeds, ids=ids.to(self.device))
        return (ids, mask, None) if with_logprobs else (ids, mask)

    def rollouts_from_prefill(self, mask, last_hidden, cache, seeds: list[int]):
        """`rollouts` for prompts the student's own forward already ran into `cache`
        (`share_rollout_prefill`; `objectives.HiddenStates`): the same sampler, started from the
        last prompt position's hidden state through the same head, on a detached copy of the cache
        so the forward's graph is untouched. Returns right-padded (ids, mask) on the run's device."""
        from ..decoding import detached_cache

        def start(m):
            return detached_cache(m, cache), lm_head(m)(last_hidden.detach())[:, -1]

        ids, cmask = self._sample(mask, seeds, start=start)
        return ids.to(self.device), cmask.to(self.device)

    @torch.no_grad()
    def _sample(self, mask, seeds: list[int], ids=None, start=None):
        """The 'hf' sampler over left-padded prompts (`mask`), from their ids or from `start(model)`
        = (cache, last-position logits); row i from a generator seeded `seeds[i]`. Right-padded
        (ids, mask): each row stops at its first EOS (kept), so the length mask is the completion mask."""
        from ..decoding import sample_pruned

        cfg = self.cfg
        gens = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        with eval_mode(self.model) as m, self.autocast(), self._bf16_head(m):
            rows = sample_pruned(m, ids, mask, cfg.max_rollout_tokens or cfg.max_completion_tokens,
                                 sorted(self.eos_ids), temperature=cfg.temperature, top_p=cfg.top_p,
                                 top_k=cfg.top_k, row_generators=gens, prefilled=start(m) if start else None)
        return right_pad(rows, self.tok.pad_token_id)

    def vllm_rollouts(self):
        """The run's colocated vLLM sampler, created at first use (its engine starts at the first
        rollout); stopped by `close_rollouts`, which `Run.run` calls however it ends."""
        if self._vllm is None:
            from .vllm_rollouts import VLLMRollouts

            self._vllm = VLLMRollouts(self.cfg, self.tok, self.out / f".vllm-adapters-rank{self.rank}", self.eos_ids)
        return self._vllm

    def close_rollouts(self) -> None:
        if self._vllm is not None:
            self._vllm.close()
            self._vllm = None

    @contextmanager
    def _bf16_head(self, model):
        """Sample through a bf16 copy of the output head under bf16 autocast.

        The head stays fp32 for the chunked losses (`frozen` explains why), so autocast would cast
        all of it (136M parameters for Qwen2.5-0.5B) to bf16 at every decode step: measured, that
        cast was a fifth of rollout time. The copy is made with the same rounding autocast uses,
        so the logits are bit-identical; it is kept while the head is frozen (LoRA) and re-made per
        call when the head trains."""
        head = lm_head(model)
        w = getattr(head, "weight", None)
        if not self.cfg.bf16 or w is None or w.dtype != torch.float32 or not isinstance(head, torch.nn.Linear):
            yield
            return
        if w.requires_grad or self._head16 is None:
            b = head.bias
            self._head16 = (w.detach().to(torch.bfloat16), None if b is None else b.detach().to(torch.bfloat16))
        w16, b16 = self._head16
        head.forward = lambda x: torch.nn.functional.linear(x, w16, b16)
        try:
            yield
        finally:
            del head.forward
            if w.requires_grad:
                self._head16 = None

    def row_seeds(self, step: int, micro: list[tuple[int, list[Example]]]) -> list[list[int]]:
        """The rollout seed of every row of `micro` (this process's micro-batches of `step`): a
        function of (seed, step, the row's position in the step's batch) only."""
        mb = self.cfg.micro_batch_size
        return [[int(hash_obj([self.cfg.seed, step, j * mb + i], n=8), 16) for i in range(len(exs))]
                for j, exs in micro]

    def step_rollouts(self, micro: list[tuple[int, list[Example]]], seeds: list[list[int]]):
        """Every rollout of this process's micro-batches sampled in one batch (decoding is memory-bound
        on a CPU: one step at batch 4 costs far less than two at batch 2), then split back per
        micro-batch, each trimmed to its own longest row: a list of (ids, mask, sampler log-probs or
        None) per micro-batch."""
        comp, cmask, lps = self.rollouts([e for _, exs in micro for e in exs], [s for row in seeds for s in row],
                                         with_logprobs=True)
        out, a = [], 0
        for _, exs in micro:
            c, m = comp[a:a + len(exs)], cmask[a:a + len(exs)]
            n = int(m.sum(1).max()) if m.numel() else 0
            out.append((c[:, :n], m[:, :n], None if lps is None else lps[a:a + len(exs), :n]))
            a += len(exs)
        return out
