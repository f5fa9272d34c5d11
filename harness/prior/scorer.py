"""Log-likelihood scoring for lm-eval with one forward per shared context.

Why: lm-eval's `HFLM` scores a multiple-choice item by running the whole context once per choice
(TruthfulQA mc1 repeats its 6-shot primer for about 8 choices, HellaSwag its context for 4 endings)
and projects every position of every row onto the full vocabulary, although only the continuation
positions are read. `SharedContextHFLM` is an `HFLM` whose `_loglikelihood_tokens` instead

1. groups requests by their (left-truncated) context token ids — lm-eval's own ids, so the
   tokenisation is exactly stock `HFLM`'s;
2. lays contexts out in packed rows (`_plan_rows`, `_row_layout`): each distinct context once,
   followed by each of its distinct multi-token continuations, and contexts that begin with the
   same run of tokens (TruthfulQA's 6-shot primer on every item, Winogrande's sentence up to the
   blank in both options, a prompt header common to many items) share one row in which that run
   appears once. A 4D attention mask and per-segment position ids give every token exactly the context it
   has in stock `HFLM`'s row `context + continuation`, so several rows of such trees run as one
   batch of one forward;
3. projects onto the vocabulary only the positions that are read (`logits_to_keep` as a boolean
   mask): each context's last position, which scores the first token of every continuation (so
   single-token choices, MMLU's " A"/" B"/..., cost one context each, as with lm-eval's one-token
   logits cache), and each continuation's own positions.

Models that cannot take such a mask (flash/flex attention, sliding-window layers) score one
context at a time instead: the context once into a KV cache (last-position logits only), then its
multi-token continuations as one right-padded batch on a copy of the cache repeated per row
(right padding needs no mask: causal attention never lets a real position see the padding after
it).

Everything else is `HFLM`'s: model and tokenizer handling, `max_length`, autocast
(`mixed_precision_dtype`), `softmax_dtype` and the caching hook (`cache_hook.add_partial("loglikelihood", ...)`). The result is what `HFLM` returns,
`(sum of continuation log-probs, is_greedy)` per request in the original order; it equals stock
`HFLM`'s up to float rounding (other matmul shapes: ~1e-6 nats per token in float32, a few 1e-5
summed over a long continuation), which is why results are keyed by `SCORER_ID`. A context
longer than the window is left-truncated exactly as `HFLM` does: the last `max_length + 1` tokens
of context+continuation, minus the last, are the model input, so choices of different lengths can
see different context starts and then simply form different groups.

Greedy `generate_until` requests (IFEval, HumanEval) run through `decoding.greedy_shared`: a row
leaves the batch at EOS or once its text holds one of lm-eval's stop sequences, and the next
prompt takes its slot, instead of `generate` decoding every row of a batch until the longest is
done. lm-eval still builds the prompts, truncates, and cuts the text at the stop sequences, so
outputs equal stock `HFLM`'s wherever greedy argmax agrees under the other batch shapes.

The rolling (perplexity) path and seq2seq models go to stock `HFLM`, as do models whose forward
takes no `logits_to_keep`, sampling requests, and models whose generation_config changes greedy
decoding (a repetition penalty, ...).

Importing this module does not import lm-eval (which must come after `offline_env`); the class is
built on first access of `SharedContextHFLM`.
"""

from __future__ import annotations

import copy
import inspect
import logging
from functools import lru_cache
from typing import Any

SCORER_ID = "shared-context-5"  # part of every prior evaluation key; bump when scores could change
STOCK_SCORER_ID = "stock-hflm"   # the key's scorer where this scorer steps aside for stock HFLM
MIN_SHARED_TOKENS = 8    # contexts sharing a leading run this long share one row (and run it once)
MAX_ROW_TOKENS = 2048    # a packed row of contexts sharing a run is split beyond this width
GEN_CHUNK = 64  # greedy generate_until prompts per decoder call (the decoder refills its slots from them)

log = logging.getLogger(__name__)

Request = tuple[Any, list[int], list[int]]  # ((context str, continuation str) | None, ctx ids, cont ids)


class SharedContextScoring:
    """The scoring method, as a mixin over lm-eval's `HFLM` (see the module docstring)."""

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        if self.backend != "causal" or override_bs is not None or not self._accepts_logits_to_keep():
            # override_bs: loglikelihood_rolling's disjoint windows share no context
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        from tqdm import tqdm

        groups = self._group_by_context(requests)
        rows = self.batch_size if isinstance(self.batch_size, int) and self.batch_size > 0 else None
        res: list[tuple[float, bool] | None] = [None] * len(requests)
        pbar = tqdm(total=len(requests), disable=(disable_tqdm or self.rank != 0),
                    desc="Running loglikelihood requests (shared context)")

        def emit(scored):
            for i, answer in scored:
                res[i] = answer
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
                pbar.update(1)

        if self._packing_ok():
            for batch in self._pack_batches(self._plan_rows(groups, requests), requests, rows or 8):
                emit(self._score_packed(batch, requests))
        else:
            for prefix, members in groups:
                emit(self._score_group(prefix, [requests[i][2] for i in members], members, rows))
        pbar.close()
        return res  # type: ignore[return-value]

    # ----- packed scoring: several contexts per forward, each with all its continuations ------
    def _packing_ok(self) -> bool:
        """Whether this model honours a custom 4D attention mask with explicit position ids:
        transformers' eager and SDPA attention use such a mask as given; flash/flex kernels and
        sliding-window layers build their own, so those models score group by group."""
        if "position_ids" not in self._forward_params():
            return False
        cfg = self.model.config
        impl = getattr(cfg, "_attn_implementation", None)
        sliding = bool(getattr(cfg, "use_sliding_window", False)) or \
            "sliding_attention" in (getattr(cfg, "layer_types", None) or ())
        return impl in ("sdpa", "eager") and not sliding

    @staticmethod
    def _plan_rows(groups, requests, max_width: int | None = None) -> list[tuple[int, list]]:
        """Context groups as packed rows: [(shared, [(context, members), ...])].

        Contexts that begin with the same run of at least `MIN_SHARED_TOKENS` token ids
        (TruthfulQA's 6-shot primer, Winogrande's sentence up to the blank, a prompt header or
        few-shot examples common to many items) go in one row whose first `shared` tokens run once for all of them
        (`decoding.prefix_groups`, the tool-use decoder's grouping rule; every context keeps at
        least its last token of its own). A group wider than `max_width` tokens is split greedily
        into rows of about equal width (rows of one batch are padded to the widest), as few as
        the widths allow, each holding the shared run (a single context wider than that gets a row
        of its own). Other contexts get a row each (shared 0)."""
        import math

        from ..decoding import prefix_groups

        max_width = max_width or MAX_ROW_TOKENS
        plans = []
        for shared, idx in prefix_groups([ctx for ctx, _ in groups], MIN_SHARED_TOKENS):
            own = [_row_width(0, [(groups[g][0], [requests[i][2] for i in groups[g][1]])]) - shared for g in idx]
            room = max(max_width - shared, max(own))  # a context wider than the room gets a row of its own
            target = sum(own) / math.ceil(sum(own) / room)  # the width each row aims at, beyond the run
            rows, width = [[]], 0
            for g, w in zip(idx, own):
                if rows[-1] and (width + w > room or width + w / 2 > target):
                    rows.append([])
                    width = 0
                rows[-1].append(groups[g])
                width += w
            plans += [(shared if len(row) > 1 else 0, row) for row in rows]
        return plans

    @staticmethod
    def _row_layout(shared: int, plan: list) -> dict:
        """Token layout of one packed row for `plan` [(context, continuations)]: the first
        `shared` context tokens (segment 0), then per context its remaining tokens (a segment,
        child of 0), each followed by its distinct multi-token continuations minus their last
        token (a segment each, child of the context's; token t predicts t+1). Positions restart
        where the parent segment ends, so every token has the position it has in stock `HFLM`'s
        row `context + continuation`. Returns ids, pos, seg (per token), parent (per segment),
        per context the row index of its last token (`last`) and per continuation the (start,
        segment) of its tokens (`spans`; start -1: a single-token continuation), and the row
        indices whose logits are read (`read`)."""
        ids, pos, seg, parent = list(plan[0][0][:shared]), list(range(shared)), [0] * shared, [-1]
        last, spans, read = [], [], []
        for ctx, conts in plan:
            own = len(parent)
            parent.append(0)
            ids += ctx[shared:]
            pos += range(shared, len(ctx))
            seg += [own] * (len(ctx) - shared)
            last.append(len(ids) - 1)
            read.append(len(ids) - 1)
            seen, sp = {}, []
            for cont in conts:
                if len(cont) == 1:
                    sp.append((-1, 0))
                    continue
                key = tuple(cont)
                if key not in seen:
                    seen[key] = (len(ids), len(parent))
                    read += range(len(ids), len(ids) + len(cont) - 1)
                    parent.append(own)
                    ids += cont[:-1]
                    pos += range(len(ctx), len(ctx) + len(cont) - 1)
                    seg += [seen[key][1]] * (len(cont) - 1)
                sp.append(seen[key])
            spans.append(sp)
        return {"ids": ids, "pos": pos, "seg": seg, "parent": parent, "last": last, "spans": spans, "read": read}

    @staticmethod
    def _pack_batches(plans, requests, rows: int, tokens_per_row: int = 512):
        """Row plans in batches, widest first, of at most `rows` rows and at most
        `rows * tokens_per_row` padded tokens (wide rows go in smaller batches: the 4D mask grows
        with the square of the width)."""
        sized = sorted(((_row_width(shared, [(ctx, [requests[i][2] for i in m]) for ctx, m in plan]), shared, plan)
                        for shared, plan in plans), key=lambda t: -t[0])
        batch, width = [], 0
        for n, shared, plan in sized:
            if batch and (len(batch) >= rows or max(width, n) * (len(batch) + 1) > rows * tokens_per_row):
                yield batch
                batch, width = [], 0
            batch.append((shared, plan))
            width = max(width, n)
        if batch:
            yield batch

    def _score_packed(self, batch, requests):
        """Score every request of the row plans in `batch` in one forward.

        Each plan is one row (`_row_layout`): its shared context run once, each context's own
        tokens, each context's distinct multi-token continuations. A 4D mask lets a token see
        the earlier tokens of its own segment and of the segments above it only (the shared run,
        its context), and position ids restart each segment where its parent ends, so every
        token sees exactly what it sees in stock `HFLM`'s row `context + continuation`. Logits
        are projected only where they are read: each context's last position (every
        continuation's first token) and each continuation's own positions."""
        import torch
        import torch.nn.functional as F

        layouts = [self._row_layout(shared, [(ctx, [requests[i][2] for i in m]) for ctx, m in plan])
                   for shared, plan in batch]
        width = max(len(lay["ids"]) for lay in layouts)
        n = len(batch)
        dtype = self.model.dtype if self.mixed_precision_dtype is None else self.mixed_precision_dtype
        ids = torch.zeros((n, width), dtype=torch.long)
        pos = torch.zeros((n, width), dtype=torch.long)
        segs = sum(len(lay["parent"]) for lay in layouts)
        seg = torch.full((n, width), segs, dtype=torch.long)  # segment ids over the batch; `segs`: padding
        keep = torch.zeros((n, width), dtype=torch.bool)
        sees = torch.zeros((segs + 1, segs + 1), dtype=torch.bool)  # sees[a, b]: b is a or above a
        base = 0
        for r, lay in enumerate(layouts):
            m = len(lay["ids"])
            ids[r, :m] = torch.tensor(lay["ids"])
            pos[r, :m] = torch.tensor(lay["pos"])
            seg[r, :m] = torch.tensor(lay["seg"]) + base
            keep[r, lay["read"]] = True
            for k in range(len(lay["parent"])):
                a = k
                while a >= 0:
                    sees[base + k, base + a] = True
                    a = lay["parent"][a]
            base += len(lay["parent"])
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        allowed = causal & sees[seg[:, :, None], seg[:, None, :]]
        allowed |= torch.eye(width, dtype=torch.bool)  # padding attends to itself: no empty softmax row
        mask = torch.zeros((n, 1, width, width), dtype=dtype)
        mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
        dev = self.device
        with torch.no_grad(), torch.autocast(device_type=dev.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            logits = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                                use_cache=False, logits_to_keep=keep.to(dev)).logits
        if logits.shape[:-1] != (int(keep.sum()),):
            raise RuntimeError(f"{type(self.model).__name__}: logits_to_keep as a boolean mask returned "
                               f"shape {tuple(logits.shape)}; this scorer needs transformers' "
                               "slice_logits_to_keep semantics")
        lps = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
        index = torch.full((n, width), -1, dtype=torch.long)  # row position -> row of `lps`
        index[keep] = torch.arange(int(keep.sum()))
        for r, ((_, plan), lay) in enumerate(zip(batch, layouts)):
            for (_, members), end, spans in zip(plan, lay["last"], lay["spans"]):
                last = lps[int(index[r, end])]
                first_greedy = int(last.argmax())
                for (start, _), i in zip(spans, members):
                    cont = requests[i][2]
                    total = last[cont[0]]
                    greedy = first_greedy == cont[0]
                    if start >= 0:
                        part = lps[index[r, start:start + len(cont) - 1]]
                        target = torch.tensor(cont[1:], dtype=torch.long, device=part.device)
                        total = total + part.gather(1, target[:, None])[:, 0].sum()
                        greedy = greedy and bool((part.argmax(dim=-1) == target).all())
                    yield i, (float(total), bool(greedy))

    def _group_by_context(self, requests: list[Request]) -> list[tuple[list[int], list[int]]]:
        """[(context ids as the model sees them, request indices)], longest work first (as HFLM:
        memory errors surface at once)."""
        window = self.max_length
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (_, ctx, cont) in enumerate(requests):
            if not ctx or not cont or len(cont) > window:
                raise ValueError(f"loglikelihood request {i}: needs a non-empty context and a continuation "
                                 f"of 1..{window} tokens (got {len(ctx)} and {len(cont)})")
            total = len(ctx) + len(cont)
            if total > window + 1:
                log.warning("Combined length of context (%d) and continuation (%d) exceeds the model's "
                            "maximum length (%d). Truncating %d tokens from the left.",
                            len(ctx), len(cont), window, total - window + 1)
            seq = (ctx + cont)[-(window + 1):]
            groups.setdefault(tuple(seq[: len(seq) - len(cont)]), []).append(i)
        work = lambda kv: -(len(kv[0]) + max(len(requests[i][2]) for i in kv[1]))  # noqa: E731
        return [(list(p), m) for p, m in sorted(groups.items(), key=work)]

    def _score_group(self, prefix: list[int], conts: list[list[int]], members: list[int],
                     rows: int | None):
        """Yield (request index, (logprob sum, is_greedy)) for continuations `conts` of `prefix`."""
        import torch
        import torch.nn.functional as F

        # one row per distinct multi-token continuation (duplicates reuse its scores)
        first_of = {tuple(cont): k for k, cont in reversed(list(enumerate(conts)))}
        multi = [k for k, cont in enumerate(conts) if len(cont) > 1 and first_of[tuple(cont)] == k]
        ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
        out = self._forward(ids, None, 1, use_cache=bool(multi))
        first = F.log_softmax(out.logits[0, -1], dim=-1, dtype=self.softmax_dtype)  # [vocab]
        first_greedy = int(first.argmax())
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        # per request: log-probs of its tokens (first from the context's last position)
        token_lps: dict[int, list[torch.Tensor]] = {}
        greedy: dict[int, bool] = {}
        for k, cont in enumerate(conts):
            token_lps[k] = [first[cont[0]].reshape(1)]
            greedy[k] = first_greedy == cont[0]
        step = rows or len(multi) or 1
        for start in range(0, len(multi), step):
            chunk = multi[start:start + step]
            feed = [conts[k][:-1] for k in chunk]  # token t predicts token t+1
            width = max(len(f) for f in feed)
            inp = torch.full((len(chunk), width), int(feed[0][0]), dtype=torch.long, device=self.device)
            keep = torch.zeros((len(chunk), width), dtype=torch.bool, device=self.device)
            for r, f in enumerate(feed):
                inp[r, :len(f)] = torch.tensor(f, dtype=torch.long, device=self.device)
                keep[r, :len(f)] = True
            last = start + step >= len(multi)
            rep = cache if last else copy.deepcopy(cache)  # the forward appends to the cache
            rep.batch_repeat_interleave(len(chunk))
            logits = self._forward(inp, rep, keep, use_cache=True).logits  # [n real positions, vocab]
            del rep
            if logits.shape[:-1] != (int(keep.sum()),):
                raise RuntimeError(f"{type(self.model).__name__}: logits_to_keep as a boolean mask returned "
                                   f"shape {tuple(logits.shape)}; this scorer needs transformers' "
                                   "slice_logits_to_keep semantics")
            lps = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
            offset = 0
            for k, f in zip(chunk, feed):
                part = lps[offset:offset + len(f)]
                offset += len(f)
                target = torch.tensor(conts[k][1:], dtype=torch.long, device=part.device)
                token_lps[k].append(part.gather(1, target[:, None])[:, 0])
                greedy[k] = greedy[k] and bool((part.argmax(dim=-1) == target).all())
        for k, i in enumerate(members):
            u = first_of[tuple(conts[k])]
            yield i, (float(torch.cat(token_lps[u]).sum()), bool(greedy[u]))

    # ----- generate_until: greedy requests through the pruned, slot-refilling decoder -----------
    def generate_until(self, requests, disable_tqdm: bool = False):
        """lm-eval's `generate_until`, handing `_model_generate` up to `GEN_CHUNK` prompts per call
        (instead of `batch_size`), so that `greedy_shared` keeps `batch_size` rows decoding and
        refills a finished row's slot at once, rather than holding a batch until its longest row
        (IFEval's 1280-token budget) is done. Request handling, truncation, stop sequences and
        post-processing stay lm-eval's."""
        saved = self.batch_size_per_gpu
        if isinstance(saved, int) and saved > 0 and self._pruned_generation_ok():
            self.batch_size_per_gpu = max(saved, GEN_CHUNK)
            self._gen_rows = saved
        try:
            return super().generate_until(requests, disable_tqdm=disable_tqdm)
        finally:
            self.batch_size_per_gpu = saved

    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
        """Greedy requests: `decoding.greedy_shared` on each row's own (unpadded) tokens, a row
        ending at the model's EOS (as `generate`) or once its text contains a stop sequence
        (lm-eval cuts the text there anyway); returns `generate`'s layout, [context | new | pad].
        Sampling requests, and models whose generation_config would alter greedy decoding
        (a repetition penalty, ...), go to stock `HFLM`."""
        import torch

        from ..decoding import greedy_shared

        sampling = bool(generation_kwargs.get("do_sample")) or float(generation_kwargs.get("temperature") or 0) > 0
        if sampling or not self._pruned_generation_ok():
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        mask = generation_kwargs.get("attention_mask")
        prompts = ([row[m.bool()].tolist() for row, m in zip(context, mask)] if mask is not None
                   else context.tolist())
        tok = self.tokenizer
        stops = [t for t in (stop or []) if t]

        def hit(new_ids: list[int]) -> bool:  # the text lm-eval's post-processing splits
            text = tok.decode(new_ids, skip_special_tokens=True)
            return any(t in text for t in stops)

        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            new = greedy_shared(self.model, prompts, max_length - context.shape[1], self._generate_eos(),
                                batch_size=getattr(self, "_gen_rows", None) or 8, stop=hit if stops else None)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        width = max((len(n) for n in new), default=0)
        tail = torch.full((len(new), width), pad, dtype=context.dtype, device=context.device)
        for r, n in enumerate(new):
            tail[r, :len(n)] = torch.tensor(n, dtype=context.dtype, device=context.device)
        return torch.cat([context, tail], dim=1)

    def _generate_eos(self) -> list[int]:
        """The ids `generate` stops a row at: the generation_config's eos_token_id (else the
        tokenizer's)."""
        gc = getattr(self.model, "generation_config", None)
        eos = getattr(gc, "eos_token_id", None) if gc is not None else None
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [])

    def _pruned_generation_ok(self) -> bool:
        """Whether greedy `generate` on this model is plain argmax decoding, which the pruned
        decoder reproduces: a causal model taking `logits_to_keep` and no generation_config
        processor that changes greedy choices."""
        if self.backend != "causal" or not self._accepts_logits_to_keep():
            return False
        gc = getattr(self.model, "generation_config", None)
        if gc is None:
            return True
        neutral = {"repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0),
                   "encoder_repetition_penalty": (None, 1.0), "bad_words_ids": (None,),
                   "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "forced_bos_token_id": (None,),
                   "forced_eos_token_id": (None,), "sequence_bias": (None,), "min_new_tokens": (None, 0),
                   "min_length": (None, 0), "exponential_decay_length_penalty": (None,),
                   "renormalize_logits": (None, False)}
        bad = [k for k, ok in neutral.items() if getattr(gc, k, None) not in ok]
        if bad and not getattr(self, "_warned_gc", False):
            log.warning("generation_config sets %s: generate_until runs through stock HFLM", ", ".join(bad))
            self._warned_gc = True
        return not bad

    def _forward(self, input_ids, cache, logits_to_keep, use_cache: bool):
        """One model call under HFLM's no-grad/autocast settings (as its `_model_call`)."""
        import torch

        cache_kw = "cache" if "cache" in self._forward_params() else "past_key_values"  # renamed in 5.x
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            return self.model(input_ids=input_ids, use_cache=use_cache, logits_to_keep=logits_to_keep,
                              **{cache_kw: cache})

    def _forward_params(self) -> frozenset[str]:
        model = self.model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
        return _params(type(base))

    def _accepts_logits_to_keep(self) -> bool:
        """Whether the forward takes `logits_to_keep` as a boolean mask: the parameter, and a
        transformers that slices by a mask (`modeling_utils.slice_logits_to_keep`; older releases,
        such as the one vLLM pins, accept only an int or 1-D indices)."""
        import transformers.modeling_utils as mu

        ok = "logits_to_keep" in self._forward_params()
        why = f"{type(self.model).__name__}.forward takes no logits_to_keep"
        if ok and not hasattr(mu, "slice_logits_to_keep"):
            ok, why = False, f"transformers {transformers_version()} cannot keep logits by a boolean mask"
        if not ok and not getattr(self, "_warned_no_keep", False):
            log.warning("%s: scoring with stock HFLM", why)
            self._warned_no_keep = True
        return ok


def _row_width(shared: int, plan: list) -> int:
    """Tokens in the packed row of `plan` [(context, continuations)] whose contexts share their
    first `shared` tokens: the length `SharedContextScoring._row_layout` gives it."""
    return len(SharedContextScoring._row_layout(shared, plan)["ids"])


def scorer_id() -> str:
    """The scorer a prior key names: `SCORER_ID`, or `STOCK_SCORER_ID` under a transformers that
    cannot keep logits by a boolean mask, where every request of this class runs through stock
    HFLM (`_accepts_logits_to_keep`), whose last digits differ. The other reasons to step aside (a
    model class without `logits_to_keep`, a generation_config processor) are fixed by the model,
    whose hash is in the key too."""
    import transformers.modeling_utils as mu

    return SCORER_ID if hasattr(mu, "slice_logits_to_keep") else STOCK_SCORER_ID


def transformers_version() -> str:
    import transformers

    return transformers.__version__


@lru_cache(maxsize=None)
def _params(model_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_class.forward).parameters)


@lru_cache(maxsize=None)
def _build_class() -> type:
    from lm_eval.models.huggingface import HFLM

    return type("SharedContextHFLM", (SharedContextScoring, HFLM),
                {"__module__": __name__, "__doc__": "lm-eval `HFLM` with one forward per shared context "
                 "for log-likelihood requests (see `harness.prior.scorer`)."})


def __getattr__(name: str):
    if name == "SharedContextHFLM":
        return _build_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_lm(model, tokenizer, batch_size: int = 8, **kwargs):
    """The harness's lm-eval model for an in-memory model: `SharedContextHFLM`."""
    return _build_class()(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **kwargs)


def benchmark_requests(benchmark: str, data_dir, limit: int | None, suite_path=None, lm=None) -> list[tuple[str, Any]]:
    """[(lm-eval task name, Instance)]: the requests lm-eval builds for the harness's own task
    bundle of `benchmark` (suite settings, the seeded subset of `limit` items), as `evaluate_prior`
    would run them; for parity tests and benchmarks of scorers. `lm` supplies the chat template
    when the suite asks for one."""
    from ..paths import data_dir as resolve_data_dir
    from . import tasks as task_mod
    from .data import prepare
    from .evaluate import offline_env
    from .suite import load_suite

    ddir = resolve_data_dir(data_dir)
    offline_env(ddir)
    from lm_eval.tasks import TaskManager

    suite = load_suite(suite_path)
    settings = suite.settings(benchmark)
    chat = bool(settings.get("chat_template", False))
    if chat and lm is None:
        raise ValueError(f"{benchmark}: the suite applies a chat template; pass the lm that renders it")
    bundle = task_mod.build(task_mod.BENCHMARKS[benchmark], prepare(benchmark, ddir, limit, suite.seed), settings)
    tm = TaskManager(include_path=[str(p) for p in bundle.include_paths], include_defaults=False)
    out = []
    for name, task in tm.load([bundle.task_name])["tasks"].items():
        task.build_all_requests(limit=None, rank=0, world_size=1, apply_chat_template=chat,
                                chat_template=lm.apply_chat_template if chat else None,
                                tokenizer_name=lm.tokenizer_name if chat else "")
        out += [(name, inst) for inst in task.instances]
    return out
