"""Text generation behind one small interface.

Callers hand a backend prompts and get texts back; they never touch `model.generate` directly, so a
vLLM backend (GPU machines) plugs in without changing callers. A prompt is a string (one user turn)
or a list of chat messages (a task's system message and user turn, `tasks.base.Messages`); both
are rendered by `render_prompt`.

    backend = HFBackend(model, tokenizer, batch_size=8)
    outs = backend.generate(["Hello"], GenerationSettings(max_new_tokens=64))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, Sequence

from .decoding import greedy_shared
from .hashing import hash_text


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 1024
    temperature: float = 0.0        # 0 = greedy (the paper's evaluation)
    top_p: float = 1.0
    seed: int = 0
    chat_template: bool = True      # render prompts with the tokenizer's chat template (else plain text)

    def key(self) -> dict:
        return asdict(self)


# Bump when a change to the decoding code can change what a given model generates (as moving greedy
# decoding off `generate`, which applied a model's generation_config, did; see CHANGELOG.md).
# 3: `greedy_shared` (shared prefixes, slot refill). Row by row it computes the same function as
# `greedy_pruned`, in other batch shapes; in float32 that kept outputs identical on the items
# measured, but in bfloat16 15 of 68 paper68 base outputs changed at near-ties (top-2 logit margin
# 0-0.25; benchmarks/bench_decoder.py), so its outputs are not reused for the old decoder's.
DECODER_VERSION = 3


def decoder_id(settings: GenerationSettings, backend: str = "hf") -> str:
    """The decoding implementation behind an output; part of every tool-use evaluation's cache key,
    so outputs cached under an older decoder are recomputed rather than reused as if current."""
    if backend == "hf":
        how = "sample-generate" if settings.temperature > 0 else "greedy-pruned"
    else:
        how = "sample" if settings.temperature > 0 else "greedy"
    return f"{backend}.{how}/{DECODER_VERSION}"


@dataclass
class Generation:
    text: str
    n_prompt_tokens: int
    n_new_tokens: int


class Backend(Protocol):
    name: str

    def generate(self, prompts: Sequence[str | list[dict]], settings: GenerationSettings) -> list[Generation]:
        """Generate one completion per prompt (a string or chat messages), in the prompts' order."""


def render_chat(tokenizer, prompt: str, use_template: bool = True) -> str:
    """The single-user-turn chat rendering used by evaluation and training alike."""
    if not use_template:
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        from .errors import ModelError

        raise ModelError("the tokenizer has no chat template; pass chat_template=False for a base model")
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def render_prompt(tokenizer, prompt: str | list[dict], use_template: bool = True) -> str:
    """A string prompt as `render_chat` renders it; chat messages as `tasks.base.render_messages`
    does (which renders a single user turn identically, so the two forms never diverge)."""
    if isinstance(prompt, str):
        return render_chat(tokenizer, prompt, use_template)
    from .tasks.base import render_messages

    return render_messages(tokenizer, prompt, use_template)


class HFBackend:
    """Transformers generation on this process's device.

    Greedy decoding (the evaluation setting) runs `greedy_shared` over all prompts of a call: shared
    prefixes prefilled once, finished rows dropped and their slots refilled, at most `batch_size`
    rows at a time. Sampling uses transformers `generate` in length-sorted, left-padded batches.
    """

    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 8, autocast_bf16: bool = False):
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size
        self.autocast_bf16 = autocast_bf16
        self.tok.padding_side = "left"

    def _result(self, ids: list[int], n_prompt: int) -> Generation:
        n = len(ids)
        while n and ids[n - 1] == self.tok.pad_token_id:
            n -= 1
        return Generation(self.tok.decode(ids[:n], skip_special_tokens=True), n_prompt, n)

    def generate(self, prompts, settings):
        import torch

        texts = [render_prompt(self.tok, p, settings.chat_template) for p in prompts]
        enc = [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        out: list[Generation | None] = [None] * len(texts)
        device = next(self.model.parameters()).device
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        if settings.temperature <= 0:
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
                rows = greedy_shared(self.model, enc, settings.max_new_tokens, eos, batch_size=self.batch_size)
            return [self._result(r, len(e)) for r, e in zip(rows, enc)]
        order = sorted(range(len(texts)), key=lambda i: -len(enc[i]))
        for b in range(0, len(order), self.batch_size):
            idx = order[b:b + self.batch_size]
            batch = self.tok.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt").to(device)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                 enabled=self.autocast_bf16):
                # seeded by the batch's own prompts, so a sample does not depend on which call
                # or offset the batch arrived in
                torch.manual_seed(settings.seed + int(hash_text("\x00".join(texts[i] for i in idx))[:8], 16))
                gen = self.model.generate(**batch, max_new_tokens=settings.max_new_tokens,
                                          pad_token_id=self.tok.pad_token_id, eos_token_id=eos,
                                          do_sample=True, temperature=settings.temperature,
                                          top_p=settings.top_p)
                rows = [r.tolist() for r in gen[:, batch["input_ids"].shape[1]:]]
            for ids, i in zip(rows, idx):
                out[i] = self._result(ids, len(enc[i]))
        return out  # type: ignore[return-value]
