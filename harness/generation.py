"""Text generation behind one small interface.

Callers hand a backend chat-formatted prompts and get texts back; they never touch
`model.generate` directly, so a vLLM backend (GPU machines) plugs in without changing callers.

    backend = HFBackend(model, tokenizer, batch_size=8)
    outs = backend.generate(["Hello"], GenerationSettings(max_new_tokens=64))
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Protocol, Sequence


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 1024
    temperature: float = 0.0        # 0 = greedy (the paper's evaluation)
    top_p: float = 1.0
    seed: int = 0
    chat_template: bool = True      # wrap each prompt as one user turn, no system message

    def key(self) -> dict:
        return asdict(self)


@dataclass
class Generation:
    text: str
    n_prompt_tokens: int
    n_new_tokens: int


class Backend(Protocol):
    name: str

    def generate(self, prompts: Sequence[str], settings: GenerationSettings,
                 on_batch: Callable[[int, list[Generation]], None] | None = None) -> list[Generation]:
        """Generate one completion per prompt; `on_batch(start_index, outputs)` after each batch."""


def render_chat(tokenizer, prompt: str, use_template: bool = True) -> str:
    """The single-user-turn chat rendering used by evaluation and training alike."""
    if not use_template:
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        from .errors import ModelError

        raise ModelError("the tokenizer has no chat template; pass chat_template=False for a base model")
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


class HFBackend:
    """transformers `generate`, batched with left padding, sorted by length to cut padding."""

    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 8, autocast_bf16: bool = False):
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size
        self.autocast_bf16 = autocast_bf16
        self.tok.padding_side = "left"

    def generate(self, prompts, settings, on_batch=None):
        import torch

        texts = [render_chat(self.tok, p, settings.chat_template) for p in prompts]
        enc = [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -len(enc[i]))
        out: list[Generation | None] = [None] * len(texts)
        device = next(self.model.parameters()).device
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        for b in range(0, len(order), self.batch_size):
            idx = order[b:b + self.batch_size]
            batch = self.tok.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt").to(device)
            kwargs = dict(max_new_tokens=settings.max_new_tokens, pad_token_id=self.tok.pad_token_id)
            if eos is not None:
                kwargs["eos_token_id"] = eos
            if settings.temperature > 0:
                torch.manual_seed(settings.seed + b)
                kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                 enabled=self.autocast_bf16):
                gen = self.model.generate(**batch, **kwargs)
            new = gen[:, batch["input_ids"].shape[1]:]
            res = []
            for row, i in zip(new, idx):
                ids = row.tolist()
                n = len(ids)
                while n and ids[n - 1] == self.tok.pad_token_id:
                    n -= 1
                text = self.tok.decode(ids[:n], skip_special_tokens=True)
                res.append(Generation(text, len(enc[i]), n))
                out[i] = res[-1]
            if on_batch:
                on_batch(b, res)
        return out  # type: ignore[return-value]


class VLLMBackend:
    """vLLM generation for GPU machines (needs a model *path*; install `vllm` separately)."""

    name = "vllm"

    def __init__(self, model_path: str, tokenizer, **engine_kwargs):
        try:
            from vllm import LLM
        except ImportError:
            from .errors import ModelError

            raise ModelError("backend 'vllm' requested but vllm is not installed (pip install vllm)") from None
        self.llm = LLM(model=model_path, **engine_kwargs)
        self.tok = tokenizer

    def generate(self, prompts, settings, on_batch=None):
        from vllm import SamplingParams

        texts = [render_chat(self.tok, p, settings.chat_template) for p in prompts]
        sp = SamplingParams(max_tokens=settings.max_new_tokens, temperature=settings.temperature,
                            top_p=settings.top_p, seed=settings.seed)
        res = self.llm.generate(texts, sp)
        out = [Generation(r.outputs[0].text, len(r.prompt_token_ids), len(r.outputs[0].token_ids))
               for r in res]
        if on_batch:
            on_batch(0, out)
        return out


def timed(fn, *a, **kw):
    t = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t
