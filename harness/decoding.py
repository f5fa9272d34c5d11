"""The decode loops under `generation.HFBackend` and SDFT's rollouts, on token ids.

- `greedy_pruned` / `sample_pruned`: one batch, each row dropped (with its KV cache) once it ends;
  sampling draws from the policy itself, each row from its own generator if given.
- `greedy_shared`: many prompts, shared prefixes prefilled once, finished rows' slots refilled.
Why hand-written loops and not `model.generate`: `generate` keeps finished rows in the batch until
the longest is done, applies the model's own generation_config (repetition penalty, top-k) that
would make rollouts off-policy, and cannot share a prefix's prefill across rows.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Callable, Sequence


def _cache_kw(model) -> str:
    """transformers renamed `past_key_values` to `cache` within 5.x; an unknown name would be swallowed by
    **kwargs and silently decode without the cache, so pick the name the model declares."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return cache_kwarg(inner)


def cache_kwarg(module) -> str:
    """The name under which `module.forward` takes its KV cache (see `_cache_kw`)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _eos_set(eos_token_id) -> set[int]:
    return set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))


def _pruned_decode(model, input_ids, attention_mask, max_new_tokens: int, eos_token_id, pick,
                   prefilled=None) -> list[list[int]]:
    """The row-pruning loop shared by greedy and sampled decoding; `pick(logits [alive, vocab], alive)`
    chooses the next token of each alive row (`alive` holds their indices in the input batch).

    `prefilled` = (cache, logits) starts from prompts already run into `cache` (the attention mask's
    length), with `logits` the last position's; `input_ids` is then not read. The loop replaces the
    cache's tensors as it appends and drops rows, never writes into them."""
    import torch
    from transformers import DynamicCache

    eos = _eos_set(eos_token_id)
    n = attention_mask.shape[0]
    out: list[list[int]] = [[] for _ in range(n)]
    if max_new_tokens <= 0:
        return out
    alive = list(range(n))
    mask = attention_mask
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    cache_kw = _cache_kw(model)
    if prefilled is None:
        cache = DynamicCache(config=model.config)
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=True,
                       **{cache_kw: cache}, logits_to_keep=1).logits[:, -1]
    else:
        cache, logits = prefilled
    next_pos = pos[:, -1:] + 1
    for step in range(max_new_tokens):
        tok = pick(logits, alive)
        keep = []
        for j, (r, t) in enumerate(zip(alive, tok.tolist())):
            out[r].append(t)
            if t not in eos:
                keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(alive):
            sel = torch.tensor(keep, device=tok.device)
            cache.batch_select_indices(sel)
            alive = [alive[j] for j in keep]
            tok, mask, next_pos = tok[sel], mask[sel], next_pos[sel]
        mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        logits = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos,
                       use_cache=True, logits_to_keep=1, **{cache_kw: cache}).logits[:, -1]
        next_pos = next_pos + 1
    return out


def greedy_pruned(model, input_ids, attention_mask, max_new_tokens: int, eos_token_id) -> list[list[int]]:
    """Greedy decoding that drops each row from the batch (and its KV cache) once it emits EOS.

    Why not `model.generate`: it keeps finished rows in the batch until the longest one ends, so at
    the paper's 1024-token budget one long "Thought" makes every row of its batch pay for 1024 steps.
    vLLM fixes this with continuous batching on GPUs; on CPUs this loop is the cheap equivalent.
    The per-row computation is the one `generate` does (left padding, positions from the attention
    mask, last-position logits, argmax), so outputs match it (tested against `generate`). It is pure
    greedy, as the paper evaluates: no repetition penalty or other processors from a model's
    generation_config. `greedy_shared` is the faster equivalent the evaluation backend uses; this one
    stays as its reference.
    Returns each row's new token ids, EOS included when it was produced.
    """
    return _pruned_decode(model, input_ids, attention_mask, max_new_tokens, eos_token_id,
                          lambda logits, alive: logits.argmax(-1))


def sample_pruned(model, input_ids, attention_mask, max_new_tokens: int, eos_token_id, *, temperature: float,
                  top_p: float, top_k: int | None = None, generator=None,
                  row_generators=None, prefilled=None) -> list[list[int]]:
    """Ancestral sampling from the policy itself, dropping each row once it emits EOS (as `greedy_pruned`).

    Only temperature, top-k and top-p shape the distribution (transformers' own warpers, in the order
    `generate` applies them); nothing from a model's generation_config (a hub model's
    `repetition_penalty`, its default `top_k`) is applied, because SDFT rollouts must be samples of
    the policy whose log-probabilities the loss uses. `top_k` None or 0 and `top_p` 1 mean no cut.
    Each step samples all alive rows with one `torch.multinomial` call on float32 probabilities, as
    `generate` does, so with the global RNG (`generator=None`) seeded the same way the samples equal
    `generate`'s while no row has finished; after a row finishes `generate` keeps drawing for it and
    this loop does not, so the random streams (and later tokens) diverge from there.
    `row_generators` (one `torch.Generator` per input row) gives each row its own random stream
    instead: a row's samples then depend on its prompt and its generator only, not on which other
    rows share its batch or when they finish, so SDFT can sample a whole step's rollouts in one
    batch and still draw what one micro-batch at a time, or another process split, would draw.
    Returns each row's new token ids, EOS included when it was produced.
    """
    import torch
    from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)

    if not temperature or temperature <= 0:
        raise ValueError(f"sample_pruned: temperature must be > 0 (got {temperature}); use greedy_pruned for 0")
    if not 0 < top_p <= 1:
        raise ValueError(f"sample_pruned: top_p must be in (0, 1] (got {top_p})")
    warpers = []
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))

    if row_generators is not None:
        if generator is not None:
            raise ValueError("sample_pruned: pass generator or row_generators, not both")
        if len(row_generators) != attention_mask.shape[0]:
            raise ValueError(f"sample_pruned: {len(row_generators)} row generators for {attention_mask.shape[0]} rows")

    def pick(logits, alive):
        scores = logits.to(dtype=torch.float32, copy=True)
        for w in warpers:
            scores = w(None, scores)
        probs = torch.nn.functional.softmax(scores, dim=-1)
        if row_generators is None:
            return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
        return torch.cat([torch.multinomial(probs[j:j + 1], num_samples=1, generator=row_generators[r]).squeeze(1)
                          for j, r in enumerate(alive)])

    return _pruned_decode(model, input_ids, attention_mask, max_new_tokens, eos_token_id, pick, prefilled)


def prefix_groups(prompts: Sequence[Sequence[int]], min_shared: int) -> list[tuple[int, list[int]]]:
    """Group prompt indices by a shared leading run of token ids: [(prefix_len, indices)], in order.

    Prompts are visited in lexicographic token order, so prompts sharing a long prefix are
    neighbours. A prompt joins the current group when the group's prefill saving, (members - 1) x
    prefix, does not shrink by it and the shared run is at least `min_shared` tokens; so one API's
    documentation is a group, and a shorter template head common to all APIs does not merge them.
    A prefix always leaves every member at least one token of its own (the row's last-position logits
    come from its own forward)."""
    def lcp(a, b, limit):
        n = min(len(a), len(b), limit)
        for k in range(n):
            if a[k] != b[k]:
                return k
        return n

    order = sorted(range(len(prompts)), key=lambda i: tuple(prompts[i]))
    groups: list[tuple[int, list[int]]] = []
    for i in order:
        if groups:
            p, members = groups[-1]
            shared = lcp(prompts[members[0]], prompts[i], p)
            shared = min(shared, len(prompts[i]) - 1)
            if shared >= min_shared and len(members) * shared >= (len(members) - 1) * p:
                groups[-1] = (shared, members + [i])
                continue
        groups.append((len(prompts[i]) - 1, [i]))
    return [(p if len(m) > 1 else 0, m) for p, m in groups]


@lru_cache(maxsize=None)
def _appending_layer():
    """A `DynamicLayer` whose `update` writes new keys/values into spare capacity at the end of a
    preallocated buffer and returns views of it.

    Why: `DynamicLayer.update` concatenates, so every decode step copies the whole cache of every
    layer (rows x heads x length x dim, twice) to append one column; at 32 rows of ~1.5k tokens that
    is ~0.6 GB of memory traffic per step on a CPU whose decode is already memory-bound. Here the
    buffer grows by half its length when full (amortised O(1) per token). The values are the same
    tensors' contents, so outputs do not change. A layer whose `keys` was replaced from outside
    (`batch_select_indices`, `_set_kv`, trimming) no longer views the buffer; its next update copies
    it into a fresh one.
    """
    from transformers.cache_utils import DynamicLayer

    class AppendingLayer(DynamicLayer):
        _buf = None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = self.keys.shape[-2] if self.keys.numel() else 0
            m = key_states.shape[-2]
            kb, vb = self._buf or (None, None)
            if (kb is None or kb.shape[0] != key_states.shape[0] or n + m > kb.shape[-2]
                    or (n and (self.keys.data_ptr() != kb.data_ptr() or self.keys.stride() != kb.stride()
                               or self.values.data_ptr() != vb.data_ptr()))):
                cap = n + m + max(64, (n + m) // 2)
                kb = key_states.new_empty(*key_states.shape[:2], cap, key_states.shape[-1])
                vb = value_states.new_empty(*value_states.shape[:2], cap, value_states.shape[-1])
                if n:
                    kb[:, :, :n].copy_(self.keys)
                    vb[:, :, :n].copy_(self.values)
                self._buf = (kb, vb)
            kb[:, :, n:n + m].copy_(key_states)
            vb[:, :, n:n + m].copy_(value_states)
            self.keys, self.values = kb[:, :, :n + m], vb[:, :, :n + m]
            return self.keys, self.values

    return AppendingLayer


def _appending(cache):
    """`cache` with its per-layer DynamicLayers appending in place (`_appending_layer`)."""
    cls = _appending_layer()
    for layer in cache.layers:
        if type(layer).__name__ == "DynamicLayer":
            layer.__class__ = cls
    return cache


def _layers_kv(cache):
    return [(layer.keys, layer.values) for layer in cache.layers]


def _set_kv(cache, kv) -> None:
    for layer, (k, v) in zip(cache.layers, kv):
        layer.keys, layer.values = k, v


def _new_cache(model, kv):
    """A DynamicCache holding the given per-layer (keys, values), each [rows, heads, length, dim]."""
    from transformers import DynamicCache

    cache = _appending(DynamicCache(config=model.config))
    for i, (k, v) in enumerate(kv):
        cache.update(k, v, i)
    return cache


def detached_cache(model, cache):
    """A cache for decoding on from `cache`'s prompts without touching it or its autograd graph:
    detached copies of its keys and values, appending in place. SDFT samples rollouts from the
    student's prompt forward this way and then runs the completions through the original."""
    return _new_cache(model, [(k.detach(), v.detach()) for k, v in _layers_kv(cache)])


def shares_per_layer_cache(model) -> bool:
    """Whether `model`'s cache is a plain per-layer DynamicCache (no sliding-window layers), which
    the prefix-sharing decoders need."""
    from transformers import DynamicCache

    return all(type(layer).__name__ == "DynamicLayer" for layer in DynamicCache(config=model.config).layers)


def _left_pad(x, length: int, dim: int):
    """Zero-pad `x` on the left of `dim` up to `length` (zeros: padded key/value slots are masked out)."""
    import torch

    extra = length - x.shape[dim]
    if extra <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def greedy_shared(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos_token_id,
                  batch_size: int = 8, min_shared: int = 32,
                  stop: Callable[[list[int]], bool] | None = None) -> list[list[int]]:
    """Greedy decoding of many prompts with prefix-shared prefill and slot refill; same tokens as
    `greedy_pruned` on the same prompts (up to floating-point reordering: tested on the tiny models,
    measured on the real ones by benchmarks/bench_decoder.py).

    Why: tool-use prompts of one API repeat its whole documentation (the 68 paper items come from 10
    APIs), and under `greedy_pruned` a batch holds its slots until its longest row is done. Here
      - prompts are grouped by their shared leading token ids (`prefix_groups`); each group's prefix
        runs once at batch 1 and its KV cache is copied into every row of the group, whose own suffix
        is then prefilled on top of it;
      - at most `batch_size` rows decode together; a row that emits EOS or reaches the budget leaves,
        and the next waiting prompt is prefilled and joins, so decode steps track the sum of the
        output lengths rather than batches x the longest.
    Rows of different lengths share one cache tensor [rows, heads, length, dim] aligned on the right
    (every row's newest token in the last column). A row's unused columns, on its left and between
    its prefix and suffix, are zero and masked out by the 2-D attention mask; each row's positions are
    its own token count, so what a row attends to is exactly its own tokens, as in `greedy_pruned`.
    Models whose cache is not a plain per-layer DynamicCache (sliding-window layers) fall back to
    `greedy_pruned` in length-sorted batches.
    `stop(new_ids) -> bool`, when given, ends a row early as EOS does (lm-eval's stop sequences:
    a caller whose text is cut at the stop string anyway need not decode past it).
    Returns each prompt's new token ids, EOS included when it was produced.
    """
    import torch

    eos = _eos_set(eos_token_id)
    out: list[list[int]] = [[] for _ in prompts]
    if max_new_tokens <= 0 or not prompts:
        return out
    device = next(model.parameters()).device
    if not shares_per_layer_cache(model):
        if stop is not None:
            raise NotImplementedError("greedy_shared: stop callbacks need a per-layer DynamicCache model")
        return _greedy_batches(model, prompts, max_new_tokens, eos_token_id, batch_size)
    cache_kw = _cache_kw(model)
    groups = prefix_groups(prompts, min_shared)
    queue = [(g, i) for g, (_, members) in enumerate(groups) for i in members]
    remaining = [len(m) for _, m in groups]
    prefix_kv: dict[int, list] = {}

    def forward(ids, mask, pos, cache):
        return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                     **{cache_kw: cache}).logits[:, -1]

    def prefix_of(g):
        if g not in prefix_kv:
            p = groups[g][0]
            ids = torch.tensor([list(prompts[groups[g][1][0]][:p])], device=device)
            cache = _new_cache(model, [])
            forward(ids, torch.ones_like(ids), torch.arange(p, device=device)[None], cache)
            prefix_kv[g] = _layers_kv(cache)
        return prefix_kv[g]

    def prefill(batch):
        """Prefill the waiting prompts `batch` [(group, index)]: their own suffixes on top of their
        groups' prefix caches. Returns last-position logits, their cache, mask and next positions."""
        plen = [groups[g][0] for g, _ in batch]
        suffix = [list(prompts[i][p:]) for (_, i), p in zip(batch, plen)]
        P, S = max(plen), max(len(s) for s in suffix)
        ids = torch.tensor([[0] * (S - len(s)) + s for s in suffix], device=device)
        mask = torch.tensor([[0] * (P - p) + [1] * p + [0] * (S - len(s)) + [1] * len(s)
                             for p, s in zip(plen, suffix)], device=device)
        pos = torch.tensor([[0] * (S - len(s)) + list(range(p, p + len(s))) for p, s in zip(plen, suffix)],
                           device=device)
        kv = []
        if P:
            per_row = []
            for g, _ in batch:
                per_row.append(prefix_of(g) if groups[g][0] else None)
            first = next(r for r in per_row if r is not None)
            for layer in range(len(first)):
                ref = first[layer]
                ks, vs = [], []
                for r in per_row:
                    k, v = r[layer] if r is not None else (ref[0][:, :, :0], ref[1][:, :, :0])
                    ks.append(_left_pad(k, P, 2))
                    vs.append(_left_pad(v, P, 2))
                kv.append((torch.cat(ks), torch.cat(vs)))
        cache = _new_cache(model, kv)
        logits = forward(ids, mask, pos, cache)
        for g, _ in batch:
            remaining[g] -= 1
            if remaining[g] == 0:
                prefix_kv.pop(g, None)
        return logits, cache, mask, pos[:, -1] + 1

    def merge(a, b):
        """Two row sets' (logits, cache, mask, next positions) as one, b's rows after a's: both
        caches left-padded to the longer (padding is masked out), rows concatenated."""
        (la, ca, ma, pa), (lb, cb, mb, pb) = a, b
        L = max(ma.shape[1], mb.shape[1])
        _set_kv(ca, [(torch.cat([_left_pad(k, L, 2), _left_pad(k2, L, 2)]),
                      torch.cat([_left_pad(v, L, 2), _left_pad(v2, L, 2)]))
                     for (k, v), (k2, v2) in zip(_layers_kv(ca), _layers_kv(cb))])
        return torch.cat([la, lb]), ca, torch.cat([_left_pad(ma, L, 1), _left_pad(mb, L, 1)]), torch.cat([pa, pb])

    def prefill_joining(batch):
        """`prefill` of the rows joining now, in sub-batches of similar suffix length (a batch pads
        every suffix to its longest: teacher demonstrations run from tens to hundreds of tokens),
        merged into one row set. Returns it and the prompt index of each of its rows."""
        parts = _similar_lengths(batch, [len(prompts[i]) - groups[g][0] for g, i in batch])
        joined = None
        for part in parts:
            one = prefill(part)
            joined = one if joined is None else merge(joined, one)
        return joined, [i for part in parts for _, i in part]

    rows: list[int] = []            # prompt index of each running row
    cache = None                    # their KV cache
    mask = pos = tok = None
    while queue or rows:
        logits_new = None
        if queue and len(rows) < batch_size:
            batch, queue = queue[:batch_size - len(rows)], queue[batch_size - len(rows):]
            (logits_new, cache_new, mask_new, pos_new), new_rows = prefill_joining(batch)
        if rows:
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            logits = forward(tok[:, None], mask, pos[:, None], cache)
            pos = pos + 1
        if logits_new is not None:
            if rows:
                logits, cache, mask, pos = merge((logits, cache, mask, pos), (logits_new, cache_new, mask_new, pos_new))
            else:
                cache, mask, pos, logits = cache_new, mask_new, pos_new, logits_new
            rows = rows + new_rows
        tok = logits.argmax(-1)
        keep = []
        for j, (r, t) in enumerate(zip(rows, tok.tolist())):
            out[r].append(t)
            if t not in eos and len(out[r]) < max_new_tokens and not (stop is not None and stop(out[r])):
                keep.append(j)
        if len(keep) < len(rows):
            sel = torch.tensor(keep, dtype=torch.long, device=device)
            rows = [rows[j] for j in keep]
            mask, pos, tok = mask[sel], pos[sel], tok[sel]
            if rows:
                cache.batch_select_indices(sel)
                first = int(mask.any(0).nonzero()[0])
                if first:  # drop leading columns no remaining row uses
                    mask = mask[:, first:]
                    _set_kv(cache, [(k[:, :, first:], v[:, :, first:]) for k, v in _layers_kv(cache)])
    return out


# A prefill sub-batch may compute at most this many suffix tokens (padding included) per real one.
PREFILL_PAD_SLACK = 1.25


def _similar_lengths(items: list, lengths: list[int], slack: float | None = None) -> list[list]:
    """`items` split into runs of similar `lengths`, longest first, so that padding each run to its
    longest costs at most `slack` (default `PREFILL_PAD_SLACK`) x its real tokens (a run of one
    never pads)."""
    slack = PREFILL_PAD_SLACK if slack is None else slack
    order = sorted(range(len(items)), key=lambda j: -lengths[j])
    parts: list[list] = []
    run: list[int] = []
    for j in order:
        if run and lengths[run[0]] * (len(run) + 1) > slack * (sum(lengths[r] for r in run) + lengths[j]):
            parts.append([items[r] for r in run])
            run = []
        run.append(j)
    if run:
        parts.append([items[r] for r in run])
    return parts


def _greedy_batches(model, prompts, max_new_tokens, eos_token_id, batch_size) -> list[list[int]]:
    """`greedy_pruned` over length-sorted, left-padded batches (the decoder before `greedy_shared`)."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        L = max(len(prompts[i]) for i in idx)
        ids = torch.tensor([[0] * (L - len(prompts[i])) + list(prompts[i]) for i in idx], device=device)
        mask = torch.tensor([[0] * (L - len(prompts[i])) + [1] * len(prompts[i]) for i in idx], device=device)
        for i, r in zip(idx, greedy_pruned(model, ids, mask, max_new_tokens, eos_token_id)):
            out[i] = r
    return out
