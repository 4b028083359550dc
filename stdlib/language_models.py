"""The next-token law of a language model, batched over particles, for the three forms `ppl.autoregressive`
takes (a prefix callable, a stateful model, a Hugging Face causal LM). `next_token(lm, rt)` gives one interface:

    start(n) -> (log_probs [n, V], state)                the law of the first generated token
    advance(tokens [N], live [N], state, on_prefixes) -> (log_probs [N, V], state)
                                                         after feeding `tokens` to the `live` particles; the others
                                                         keep their state (they wait, or have ended);
                                                         `on_prefixes(fn, arity)` applies a function of the prompt +
                                                         tokens so far (see `arity`) to the live particles
    reorder(state, idx) -> state                         the state of particles idx (after resampling)

Log-probabilities may come unnormalized (logits); the caller normalizes them. A model whose arrays must live on
the runtime it is sampled on (it makes arrays in `start(n)`, which receives none) defines `bind(rt)`, returning
the model on runtime `rt`; `next_token` calls it.
"""
import inspect

import numpy as np

from ..backends.runtime import module_owner
from ..errors import PlanError


def arity(fn):
    """How a function of prefixes is called: 1 — `fn(prefixes)` on exact prefixes [n, t], once per distinct
    length; 2 — `fn(prefixes, lengths)` once on left-padded prefixes and their lengths."""
    params = inspect.signature(fn.forward if hasattr(fn, "forward") else fn).parameters.values()
    required = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.default is inspect.Parameter.empty]
    return 2 if len(required) >= 2 else 1


class PrefixModel:
    """`f(prefixes) -> [N, V]` (or `f(prefixes, lengths)`) on the whole prefix at every step; no state."""

    def __init__(self, fn, prompt, rt):
        self.fn, self.rt, self.arity = fn, rt, arity(fn)
        self.prompt = rt.asindex(list(prompt)).reshape(1, len(prompt))

    def start(self, n):
        prompt = self.rt.xp.broadcast_to(self.prompt, (n, self.prompt.shape[1]))
        if self.arity == 2:
            return self.fn(prompt, self.rt.asindex([self.prompt.shape[1]] * n)), None
        return self.fn(prompt), None

    def advance(self, tokens, live, state, on_prefixes):
        return on_prefixes(self.fn, self.arity), None

    def reorder(self, state, idx):
        return None


class StatefulModel:
    """An object with `start(n)` and `advance(tokens, state)`; its state is a tensor or a tuple/list of them with
    leading axis N: the particles that do not advance keep theirs, resampling takes rows."""

    def __init__(self, obj, rt):
        self.obj, self.rt = obj, rt

    def start(self, n):
        return self.obj.start(n)

    def advance(self, tokens, live, state, on_prefixes):
        xp = self.rt.xp
        log_probs, new = self.obj.advance(tokens, state)
        keep = self.rt.tree_map(lambda a, b: xp.where(live.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, state)
        return log_probs, keep

    def reorder(self, state, idx):
        return self.rt.tree_map(lambda a: self.rt.xp.take(a, idx, axis=0), state)


class CausalLM:
    """A Hugging Face causal LM: the prompt is encoded once, then one token per particle and step with the key/value
    cache. Waiting particles are fed `pad` with attention mask 0 (their positions do not advance), so ragged
    chunks share one forward pass; `reorder` permutes the cache (`Cache.reorder_cache`) with the mask.
    `lockstep` (one-token steps): the particles not live at a call have ended and are never read again, so
    every particle is fed its newest token and the cache's length is every live particle's position: no mask,
    no positions (the same logits for the live ones, with a third less work around a small model's forward)."""

    def __init__(self, model, prompt, pad, rt, lockstep=False):
        if not prompt:
            raise PlanError("a causal LM needs a prompt of at least one token (e.g. its BOS token): "
                            "ppl.autoregressive(model, ..., prompt=[bos])")
        self.model, self.rt, self.pad, self.lockstep = model, rt, pad, lockstep
        self.prompt = np.asarray(prompt).reshape(1, len(prompt))
        # the cache's name: `cache` from transformers 5.x on, `past_key_values` before
        self.cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def _forward(self, cache=None, **kw):
        if cache is not None:
            kw[self.cache_name] = cache
        with self.rt.no_grad():
            out = self.model(use_cache=True, **kw)
        return out.logits[:, -1], out[self.cache_name]

    def start(self, n):
        rt = self.rt
        ids = rt.asindex(np.repeat(self.prompt, n, axis=0))
        if self.lockstep:
            return self._forward(input_ids=ids)
        mask = rt.asindex(rt.xp.ones(ids.shape))
        logits, cache = self._forward(input_ids=ids, attention_mask=mask)
        return logits, (cache, mask, rt.asindex(rt.xp.full((n,), ids.shape[1])))

    def advance(self, tokens, live, state, on_prefixes):
        rt = self.rt
        if self.lockstep:
            return self._forward(state, input_ids=tokens.reshape(-1, 1))
        cache, mask, pos = state
        ids = rt.xp.where(live, tokens, self.pad).reshape(-1, 1)
        mask = rt.xp.concatenate([mask, rt.asindex(live.reshape(-1, 1))], axis=1)
        logits, cache = self._forward(cache, input_ids=ids, attention_mask=mask, position_ids=pos.reshape(-1, 1))
        return logits, (cache, mask, pos + rt.asindex(live))

    def reorder(self, state, idx):
        if self.lockstep:
            state.reorder_cache(idx)
            return state
        cache, mask, pos = state
        cache.reorder_cache(idx)
        return cache, self.rt.xp.take(mask, idx, axis=0), self.rt.xp.take(pos, idx, axis=0)


def is_causal_lm(obj):
    """A Hugging Face causal LM (a torch module with a config that generates)."""
    return hasattr(obj, "config") and hasattr(obj, "generate") and hasattr(obj, "forward")


def next_token(lm, rt, lockstep=False):
    """The `next_token` interface of the sequence model `lm` on runtime `rt` (see the module docstring);
    `lockstep`: every particle is live at every call but those that have ended (`CausalLM`)."""
    if not rt.owns(lm.next_logprobs):
        raise PlanError(f"the sequence model {lm.name} is a {lm.framework} module; sample it with "
                        f"runtime={module_owner(lm.next_logprobs)!r}")
    obj = lm.next_logprobs
    if hasattr(obj, "bind") and not is_causal_lm(obj):
        obj = obj.bind(rt)
    if is_causal_lm(obj):
        return CausalLM(obj, lm.prompt, lm.pad, rt, lockstep)
    if hasattr(obj, "start") and hasattr(obj, "advance"):
        return StatefulModel(obj, rt)
    return PrefixModel(obj, lm.prompt, rt)
