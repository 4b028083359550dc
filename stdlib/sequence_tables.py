"""Token tables as sequence models, and token-pattern rewards, for `ppl.autoregressive` (and the `.ppl` bases
`markov` / `ngram`, whose tokens count from 1; here, as in the Python API, they count from 0).

**Table layout.** An n-gram table of order k over V tokens is an array of probabilities of shape
[V + 1] * (k − 1) + [V]:

    table[h_1, ..., h_{k−1}, v] = p(next token = v | the last k − 1 tokens)

where h_1 is the oldest of the last k − 1 tokens and h_{k−1} the newest, index 0 meaning "no token yet" and
index 1 + u token u. So `markov` (k = 2) is [V + 1, V]: row 0 the first token's law, row 1 + u the law after
token u; k = 3 reads the last two tokens ([V + 1, V + 1, V]; table[0, 0] is the first token's law, table[0, 1 + u]
the second's after u); k = 1 is [V], independent tokens. A prompt fills the context (its last k − 1 tokens).
Every row is a probability vector: non-negative, summing to 1 within `TOL` (rows are then renormalized), except
the rows of contexts that cannot occur ("no token yet" after a token, k >= 3), which are never read and may
hold anything non-negative (zeros, say).

**The model** (`NGram`) is a stateful model of `ppl.autoregressive`: `start(n) -> (log_probs [n, V], state)`,
`advance(tokens [N], state) -> (log_probs [N, V], state)`, the state an integer array [N, k − 1] of the table
indices of the last k − 1 tokens (1 + token, 0 for none), oldest first. Both are pure array code of fixed
shapes (a shift, a dot with the strides and one gather from the flattened table): no host reads and no Python
branches on array values, so JAX can trace them (jit, `lax.scan`) and torch runs them as they are. Its arrays
live on the runtime it is bound to: `bind(runtime)` returns the model on that runtime, which the sampler calls
with the run's runtime (`start(n)` receives no array to take the runtime from).

**Rewards** (`count`, `contains`, `starts_with`, `ends_with`, `length`): batched process rewards of arity 2,
`f(prefixes [N, W], lengths [N]) -> [N]`, the form `generation.Generator.apply` calls once per step: prefixes
are the generated tokens right-aligned and left-padded (with the pad token, which may be a real token, so every
count is masked by `lengths`). Patterns are tuples of token ids known before sampling. `TokenPattern` is one of
them as an object that a sampler also keeps running token by token (`Running`: the language's rewards of
built-ins only are that too).
"""
import copy
import numbers
from typing import Any, NamedTuple

import numpy as np

from ..errors import PPLError, ShapeError, ValueRangeError
from ..math import framework, namespace
from ..sequence import autoregressive

#: how far a row of a table may sum from 1 (rows are renormalized)
TOL = 1e-3


def _shape_spelling(vocab, order):
    dims = [f"{vocab} + 1"] * (order - 1) + [str(vocab)]
    return "[" + ", ".join(dims) + "]"


def check_table(table, order=None, one_based=False):
    """(probabilities as float64, V, k) of an n-gram table, checked: its shape [V + 1] * (k − 1) + [V] (k = `order`,
    by default the number of axes), finite non-negative entries, rows summing to 1 within `TOL` (rows of
    contexts that cannot occur excepted). Errors are `ShapeError` / `ValueRangeError`; they count rows and
    tokens from 1 with `one_based` (the language's messages)."""
    try:
        p = np.asarray(table, dtype=np.float64)
    except (TypeError, ValueError):
        raise ShapeError(f"a token table is an array of probabilities, got {type(table).__name__}") from None
    k = p.ndim if order is None else order
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueRangeError(f"order must be an integer >= 1 (1: independent tokens, 2: markov), got {order!r}")
    if p.ndim == 0:
        raise ShapeError("a token table is an array [V + 1, ..., V + 1, V] of probabilities, got a number")
    v = p.shape[-1]
    if v < 2:
        raise ShapeError(f"a token table's last axis is the vocabulary: at least 2 tokens, got shape {list(p.shape)}")
    if p.shape != (v + 1,) * (k - 1) + (v,):
        if p.ndim != k:
            what = f"order {k} needs {k} axes" if order is not None else "its axes"
            raise ShapeError(f"a token table of order {k} has shape [V + 1] * {k - 1} + [V]; {what}, got shape "
                             f"{list(p.shape)}", hint=f"a markov table over V tokens is [V + 1, V]: row "
                                                      f"{1 if one_based else 0} the first token's law, row "
                                                      f"{'v + 1' if one_based else '1 + v'} the law after token v")
        raise ShapeError(f"a token table of order {k} over V = {v} tokens (its last axis) has shape "
                         f"{_shape_spelling(v, k)} = {[v + 1] * (k - 1) + [v]}, got {list(p.shape)}",
                         hint="each context axis has V + 1 entries: 'no token yet', then the V tokens")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        bad = np.argwhere(~np.isfinite(p) | (p < 0))[0]
        raise ValueRangeError(f"a token table holds probabilities: entry {_at(bad, one_based)} is {p[tuple(bad)]:g}")
    sums = p.sum(axis=-1)
    off = np.abs(sums - 1.0) > TOL
    off &= reachable(v, k)
    if np.any(off):
        bad = np.argwhere(off)[0]
        row = _at(bad, one_based) if k > 1 else "the table"
        raise ValueRangeError(f"each row of a token table is a probability vector summing to 1; row {row} sums to "
                              f"{sums[tuple(bad)]:.6g}", hint=f"rows may be off by at most {TOL:g} (they are "
                                                              f"renormalized)")
    return p, v, k


def _at(index, one_based):
    return "[" + ", ".join(str(int(i) + (1 if one_based else 0)) for i in index) + "]"


def reachable(vocab, order):
    """Which contexts [V + 1] * (k − 1) can occur: no 'no token yet' (index 0) after a token."""
    if order == 1:
        return np.ones((), dtype=bool)
    grids = np.meshgrid(*[np.arange(vocab + 1)] * (order - 1), indexing="ij")
    ok = np.ones(grids[0].shape, dtype=bool)
    for a, b in zip(grids, grids[1:]):
        ok &= ~((a > 0) & (b == 0))
    return ok


class NGram:
    """An n-gram table as a stateful sequence model (see the module docstring): `vocab`, `order`, `prompt` (token
    ids, 0-based), `log_table` [(V + 1)^(k − 1), V] (flattened contexts, rows normalized)."""

    def __init__(self, table, order=None, prompt=()):
        p, self.vocab, self.order = check_table(table, order)
        ok = reachable(self.vocab, self.order)
        p = np.where(ok[..., None], p, 1.0)           # unreadable rows: anything finite
        p = p / p.sum(axis=-1, keepdims=True)
        with np.errstate(divide="ignore"):
            self.log_table = np.log(p).reshape(-1, self.vocab)
        self.prompt = tuple(int(t) for t in prompt)
        if any(not 0 <= t < self.vocab for t in self.prompt):
            raise ValueRangeError(f"prompt tokens are ids in [0, {self.vocab}), got {list(self.prompt)}")
        k = self.order - 1
        context = [0] * k + [t + 1 for t in self.prompt]
        self.context = np.asarray(context[len(context) - k:] if k else [], dtype=np.int64)
        self.strides = (self.vocab + 1) ** np.arange(k - 1, -1, -1, dtype=np.int64)
        self.rt = None
        self._flat = self._strides = self._start = None

    def bind(self, runtime="numpyro"):
        """This model with its table on `runtime` (a name, 'numpyro' or 'pyro', or a runtime object): the arrays
        `start` makes are that runtime's (a copy; self when already there)."""
        from ..backends.runtime import get_runtime
        rt = runtime if hasattr(runtime, "xp") else get_runtime(runtime)
        if self.rt is rt:
            return self
        bound = copy.copy(self)
        bound.rt = rt
        bound._flat = rt.asarray(self.log_table)                         # [(V + 1)^(k − 1), V]
        bound._strides = rt.asindex(self.strides).reshape(1, -1)        # [1, k − 1]
        bound._start = rt.asindex(self.context).reshape(1, -1)          # [1, k − 1]
        return bound

    def _bound(self):
        if self.rt is None:
            raise PPLError("this token table is not bound to a runtime: sample it (the sampler binds it) or call "
                           ".bind(runtime) first")
        return self.rt

    def _rows(self, state):
        """The log-probabilities of the next token after each context of `state` [N, k − 1]: [N, V]."""
        xp = self._xp(state)
        if self.order == 1:
            return self._flat[0].reshape(1, -1) + xp.zeros((state.shape[0], 1), dtype=self._flat.dtype)
        return xp.take(self._flat, xp.sum(state * self._strides, axis=1), axis=0)

    def _xp(self, x):
        rt = self._bound()
        if not rt.holds(x):
            raise PPLError(f"this token table is bound to runtime {rt.name!r} but is given {framework(x)} arrays: "
                           f"bind it to the runtime it is sampled on (.bind(...))")
        return rt.xp

    def start(self, n):
        """(the first token's law [n, V], the state [n, k − 1]: the prompt's context)."""
        rt = self._bound()
        state = rt.xp.broadcast_to(self._start, (n, self.order - 1)) + 0
        return self._rows(state), state

    def advance(self, tokens, state):
        """(the next token's law after `tokens` [N], the state shifted by them)."""
        if self.order > 1:
            xp = self._xp(tokens)
            new = _cast(tokens, state).reshape(-1, 1) + 1
            state = xp.concatenate([state[:, 1:], new], axis=1)
        return self._rows(state), state

    def log_prob(self, tokens):
        """log p(tokens | prompt) of one sequence of token ids (numpy; for checks and enumeration)."""
        context, total = list(self.context), 0.0
        for t in tokens:
            row = int(np.dot(context, self.strides)) if self.order > 1 else 0
            total += float(self.log_table[row, int(t)])
            context = (context + [int(t) + 1])[1:] if self.order > 1 else context
        return total


def _cast(x, like):
    """x with the integer type of `like` (same framework)."""
    return namespace(like).asarray(x, dtype=like.dtype)


def ngram(table, length, order=None, eos=None, step=None, prompt=None, decode=None, name=None):
    """`ppl.autoregressive` over an n-gram table (layout: the module docstring), at most `length` generated tokens,
    ending at `eos`; `prompt` (token ids) fills the context."""
    model = NGram(table, order, prompt or ())
    return autoregressive(model, model.vocab, length, eos=eos, step=step, prompt=prompt, decode=decode, name=name)


def markov(table, length, eos=None, step=None, prompt=None, decode=None, name=None):
    """A first-order chain: `table` [V + 1, V], row 0 the first token's law, row 1 + v the law after token v."""
    if np.ndim(table) != 2:
        raise ShapeError(f"a markov table is a matrix [V + 1, V] (row 0 the first token's law, row 1 + v the law "
                         f"after token v), got shape {list(np.shape(table))}", hint="ngram(table, order=k) reads "
                                                                                     "longer contexts")
    return ngram(table, length, 2, eos, step, prompt, decode, name)


# ---- token-pattern rewards: f(prefixes [N, W], lengths [N]) -> [N] ----------------------------------------------

def _float(b):
    return b * 1.0


def _matches(prefixes, lengths, pattern):
    """(hits [N, W − m + 1]: the pattern starts at that column inside the generated part, the columns, the first
    generated column [N]); None where no prefix is long enough."""
    xp = namespace(prefixes)
    n, w = prefixes.shape
    m = len(pattern)
    if m == 0 or w < m:
        return None
    hit = None
    for k, t in enumerate(pattern):
        h = prefixes[:, k:w - m + 1 + k] == int(t)
        hit = h if hit is None else hit & h
    cols = xp.arange(w - m + 1).reshape(1, -1)
    first = (w - lengths).reshape(-1, 1)
    return hit & (cols >= first), cols, first


def _zeros(lengths):
    return _float(lengths) * 0.0


def _pattern(pattern):
    return (pattern,) if isinstance(pattern, numbers.Integral) else tuple(pattern)


def count(prefixes, lengths, pattern):
    """How many times `pattern` (a token id or a tuple of them) occurs in each prefix (overlaps counted)."""
    found = _matches(prefixes, lengths, _pattern(pattern))
    if found is None:
        return _zeros(lengths)
    return namespace(prefixes).sum(_float(found[0]), axis=1)


def contains(prefixes, lengths, pattern):
    """1.0 where `pattern` occurs in the prefix, else 0.0."""
    found = _matches(prefixes, lengths, _pattern(pattern))
    if found is None:
        return _zeros(lengths)
    return _float(namespace(prefixes).sum(_float(found[0]), axis=1) > 0)


def starts_with(prefixes, lengths, pattern):
    """1.0 where the prefix starts with `pattern`, else 0.0."""
    found = _matches(prefixes, lengths, _pattern(pattern))
    if found is None:
        return _zeros(lengths)
    hits, cols, first = found
    return _float(namespace(prefixes).sum(_float(hits & (cols == first)), axis=1) > 0)


def ends_with(prefixes, lengths, pattern):
    """1.0 where the prefix ends with `pattern`, else 0.0."""
    found = _matches(prefixes, lengths, _pattern(pattern))
    if found is None:
        return _zeros(lengths)
    return _float(found[0][:, -1])


def length(prefixes, lengths):
    """The number of generated tokens of each prefix."""
    return _float(lengths)


#: the token-pattern rewards by name: (function, whether it takes a pattern)
REWARDS = {"count": (count, True), "contains": (contains, True), "starts_with": (starts_with, True),
           "ends_with": (ends_with, True), "length": (length, False)}


class Running(NamedTuple):
    """A reward kept running token by token: its `leaves` (`TokenPattern`s), each updated after every generated
    token, and `combine(values) -> [N]`, the reward from the leaves' values ([N] each)."""
    leaves: tuple
    combine: Any


def _first(values):
    return values[0]


class TokenPattern:
    """The built-in reward `kind` (a name of `REWARDS`) of `pattern`: a function of (prefixes, lengths), and a
    value kept running token by token (`running`). After each generated token, with g the number of generated
    tokens, m the pattern's length and hit = (the newest m tokens are the pattern, all of them generated: g >= m):

        count        v + hit             contains     max(v, hit)           ends_with   hit
        starts_with  hit where g = m, else v                                length      g

    from v = 0 before any token: a sampler then reads m tokens a step instead of the whole prefix."""

    def __init__(self, kind, pattern=None):
        if kind not in REWARDS:
            raise ValueRangeError(f"unknown token reward {kind!r}; choose one of {', '.join(REWARDS)}")
        if REWARDS[kind][1] == (pattern is None):
            raise ValueRangeError(f"token reward {kind!r} takes " + ("a pattern (a token or a tuple of tokens)"
                                                                     if pattern is None else "no pattern"))
        self.kind, self.pattern = kind, () if pattern is None else _pattern(pattern)
        self.__name__ = kind + (str(list(self.pattern)) if self.pattern else "")

    @property
    def width(self):
        """How many of the newest tokens an update reads."""
        return len(self.pattern)

    @property
    def running(self):
        return Running((self,), _first)

    def __call__(self, prefixes, lengths):
        fn, takes = REWARDS[self.kind]
        return fn(prefixes, lengths, self.pattern) if takes else fn(prefixes, lengths)

    def update(self, value, window, generated):
        """The value after a token: from the value before [N], the newest `width` tokens [N, width] and the
        number of generated tokens [N]."""
        if self.kind == "length":
            return _float(generated)
        xp, m = namespace(window), self.width
        match = generated >= m
        for k, t in enumerate(self.pattern):
            match = match & (window[:, k] == int(t))
        hit = _float(match)
        return {"count": lambda: value + hit, "contains": lambda: xp.maximum(value, hit), "ends_with": lambda: hit,
                "starts_with": lambda: xp.where(generated == m, hit, value)}[self.kind]()
