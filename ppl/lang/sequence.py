"""Sequence declarations, `sequence NAME = BASE(...)`: `ppl.autoregressive` bases named NAME, and the rewards
over their tokens that tilt them.

    sequence lm = markov(table, length = 16, eos = 3)                 # table [V + 1, V]: built in
    sequence tri = ngram(table3, order = 3, length = 16, eos = 3)     # table [V + 1, V + 1, V]: built in
    sequence big = autoregressive(gpt, vocab = 50, length = 32, prompt = [1], step = 7)   # gpt: a `use`d model

Tokens count from 1 in the language, as indices do: token t is id t − 1 of the Python API (`eos = 3` is
`eos=2`; a `use`d Python model sees ids from 0). The tables are `stdlib.sequence_tables` (its docstring has the
layout; row 1 of a markov table is the first token's law, row 1 + v the law after token v). Options: `length`
(at most that many generated tokens; required), `eos` (a token that ends a sequence), `step` (a delimiter token
or a vector of them: a step is a chunk of tokens up to one), `prompt` (a vector of tokens the sequence continues;
a table's context), `order` (ngram: the number of axes of its table by default), `vocab` (autoregressive).

A reward over `tokens` (`lm * exp(count(tokens, 2) / 0.5)`) is an expression of the token-pattern built-ins of
`REWARD_CALLS`, numbers, numeric data and the elementwise functions of `ELEMENTWISE`, lowered to one batched,
traceable function `reward(prefixes [N, W], lengths [N]) -> [N]`; `f(tokens)` with `f` a `use`d Python function
is `f` itself (any arity). Every error is located at the argument it is about.
"""
import numbers

import numpy as np

from .. import math as pm
from ..errors import PPLError
from ..sequence import SITE, autoregressive
from ..stdlib import sequence_tables as tables
from ..stdlib.language_models import arity
from ..target import Reward
from . import syntax as S
from .diffusion import base_call
from .interpret import concrete_int, scalar
from .source import suggest

#: each base: its positional argument and its named options
BASES = {"markov": ("table", ("length", "eos", "step", "prompt")),
         "ngram": ("table", ("order", "length", "eos", "step", "prompt")),
         "autoregressive": ("model", ("vocab", "length", "eos", "step", "prompt"))}
SPELLING = ("markov(table, length = L), ngram(table, order = k, length = L) or "
            "autoregressive(model, vocab = V, length = L)")
#: the token-pattern built-ins of rewards: name -> whether it takes a pattern after `tokens`
REWARD_CALLS = {name: takes for name, (_, takes) in tables.REWARDS.items()}
#: the elementwise built-ins a reward may apply, with their number of arguments
ELEMENTWISE = {**{f: 1 for f in ("exp", "log", "log1p", "expm1", "sqrt", "abs", "square", "sign", "floor", "ceil",
                                 "tanh", "sin", "cos", "inv_logit", "logit", "log_inv_logit", "softplus")},
               "pow": 2, "maximum": 2, "minimum": 2, "where": 3}
_REWARD_HINT = ("a reward reads tokens through count(tokens, t), contains(tokens, [t1, t2]), starts_with(tokens, t), "
                "ends_with(tokens, t) and length(tokens)")


def is_sequence(target):
    """Whether `target` has sequence bases."""
    return bool(sequence_bases(target))


def sequence_bases(target):
    return [leaf for leaf, _ in target.linear() if leaf.kind == "sequence"]


#: why a table base has no such option
HINTS = {"vocab": "a table's vocabulary is the size of its last axis",
         "order": "order is an option of ngram; markov is order 2"}


def build_sequence(node, src, constant, functions):
    """The `SequenceModel` of `node` (a `SequenceDef`); `constant(expr)` evaluates data and constants,
    `functions` are the `use`d Python objects."""
    call = node.base
    arg, options = base_call(call, src, "sequence", BASES, SPELLING, lambda func, name: None if func == "autoregressive"
                             else HINTS.get(name))
    if "length" not in options:
        raise src.error(call, f"{call.func} needs length = L, the most tokens a sequence generates")
    length = _integer(options["length"], src, constant, "length", 1)
    if call.func == "autoregressive":
        if not isinstance(arg, S.Name) or arg.name not in functions:
            raise src.error(arg, "autoregressive(model, ...) takes a Python sequence model imported by "
                                 "`use model from \"module:attr\"`", hint="run with --allow-python (API: "
                                                                          "allow_python=True) to import it; "
                                                                          "markov(table, ...) needs no Python")
        if "vocab" not in options:
            raise src.error(call, "autoregressive(...) needs vocab = V, the number of tokens of the model")
        vocab, model, order = _integer(options["vocab"], src, constant, "vocab", 2), functions[arg.name], None
    else:
        order = None
        if call.func == "markov":
            order = 2
        elif "order" in options:
            order = _integer(options["order"], src, constant, "order", 1)
        table = np.asarray(constant(arg))
        if table.dtype.kind not in "iuf":
            raise src.error(arg, "a token table is an array of probabilities known before sampling (data)")
        if call.func == "markov" and table.ndim != 2:
            raise src.error(arg, f"a markov table is a matrix [V + 1, V] (row 1 the first token's law, row v + 1 the "
                                 f"law after token v), got shape {list(table.shape)}",
                            hint="ngram(table, order = k, ...) reads longer contexts")
        if "order" in options and table.ndim != order:
            raise src.error(options["order"], f"an ngram table of order {order} has {order} axes ([V + 1] * "
                                              f"{order - 1} + [V]); the table has {table.ndim}",
                            hint="leave order out: it is the number of axes of the table")
        try:
            _, vocab, order = tables.check_table(table, order, one_based=True)
        except PPLError as e:
            raise src.relocate(arg, e) from None
    eos = _token(options["eos"], src, constant, vocab, "eos") if "eos" in options else None
    step = _tokens(options["step"], src, constant, vocab, "a step delimiter") if "step" in options else None
    prompt = _tokens(options["prompt"], src, constant, vocab, "a prompt token") if "prompt" in options else None
    if call.func != "autoregressive":
        model = tables.NGram(table, order, prompt or ())
    try:
        return autoregressive(model, vocab, length, eos=eos, step=step, prompt=prompt, name=node.name)
    except PPLError as e:
        raise src.relocate(call, e) from None


def _integer(e, src, constant, what, low):
    v = concrete_int(constant(e))
    if v is None or v < low:
        raise src.error(e, f"{what} must be an integer >= {low} known before sampling")
    return v


def _token(e, src, constant, vocab, what):
    """A token of the language (1..vocab) as a 0-based id."""
    v = scalar(constant(e))
    t = concrete_int(v)
    if t is None or isinstance(v, bool) or not 1 <= t <= vocab:
        raise src.error(e, f"{what} must be a token in 1..{vocab}, got {_show(v)}",
                        hint="tokens count from 1, as indices do")
    return t - 1


def _tokens(e, src, constant, vocab, what):
    """A token or a vector of tokens (1..vocab) as a tuple of 0-based ids."""
    if isinstance(e, S.Vector):
        return tuple(_token(x, src, constant, vocab, what) for x in e.items)
    v = np.asarray(constant(e))
    if v.ndim == 0:
        return (_token(e, src, constant, vocab, what),)
    if v.ndim != 1 or v.dtype.kind not in "iuf" or np.any(v != np.round(v)) or np.any((v < 1) | (v > vocab)):
        raise src.error(e, f"{what}s must be tokens in 1..{vocab}, got {_show(v)}",
                        hint="tokens count from 1, as indices do")
    return tuple(int(t) - 1 for t in v)


def _show(v):
    if isinstance(v, np.ndarray):
        return "[" + ", ".join(f"{x:g}" for x in v.ravel()[:8]) + (", ..." if v.size > 8 else "") + "]"
    return f"{v:g}" if isinstance(v, numbers.Real) and not isinstance(v, bool) else repr(v)


# ---- rewards over tokens ----------------------------------------------------------------------------------

def sequence_reward(expr, src, data, functions, vocab, label):
    """The `Reward` of a reward expression over `tokens` (see the module docstring), checked against the vocabulary
    `vocab`: arity 2 (`reward(prefixes, lengths)`, traceable array code), or 1 where it calls a `use`d Python
    function of one argument (exact prefixes); `f(tokens)` alone is `f` itself."""
    if isinstance(expr, S.Call) and expr.func in functions and _reads_tokens_only(expr):
        fn = functions[expr.func]
        return Reward(fn, ("prefixes", "lengths")[:arity(fn)], label)
    lowered = _Lowering(src, data, functions, vocab)
    lowered.check(expr)
    exact = lowered.exact     # a Python function of exact prefixes: the whole reward is called on them

    def reward(prefixes, lengths=None):
        if lengths is None:   # exact prefixes [N, t]: every one has t tokens
            lengths = pm.namespace(prefixes).sum(prefixes * 0, axis=1) + prefixes.shape[1]
        value = lowered.ev(expr, prefixes, lengths)
        return value + tables.length(prefixes, lengths) * 0.0
    if exact:
        def reward_exact(prefixes):
            return reward(prefixes)
        return Reward(reward_exact, ("prefixes",), label)
    return Reward(lambda prefixes, lengths: reward(prefixes, lengths), ("prefixes", "lengths"), label)


_POWER = {"or": 1, "and": 2, "==": 4, "!=": 4, "<": 4, ">": 4, "<=": 4, ">=": 4, "+": 5, "-": 5, "*": 6, "/": 6,
          "%": 6, "@": 6}


def text(e, least=0):
    """The source spelling of a reward expression (its label): operators spaced, parentheses only where the
    precedence needs them (`least`: the power the place needs)."""
    if isinstance(e, S.Number):
        return f"{e.value:g}" if isinstance(e.value, float) else str(e.value)
    if isinstance(e, S.Name):
        return e.name
    if isinstance(e, S.String):
        return f'"{e.value}"'
    if isinstance(e, S.Vector):
        return "[" + ", ".join(text(x) for x in e.items) + "]"
    if isinstance(e, S.Call):
        args = [text(a) for a in e.args.positional] + [f"{k.name} = {text(k.value)}" for k in e.args.keywords]
        return f"{e.func}({', '.join(args)})"
    if isinstance(e, S.Pow):
        out, power = f"{text(e.base, 9)} ^ {text(e.exponent, 8)}", 8
    elif isinstance(e, (S.BinOp, S.And, S.Or)):
        op = {S.And: "and", S.Or: "or"}.get(type(e)) or e.op
        power = _POWER[op]
        out = f"{text(e.left, power)} {op} {text(e.right, power + 1)}"
    elif isinstance(e, S.Neg):
        out, power = f"-{text(e.operand, 7)}", 7
    elif isinstance(e, S.Not):
        out, power = f"not {text(e.operand, 3)}", 3
    else:
        return type(e).__name__
    return f"({out})" if power < least else out


def _reads_tokens_only(call):
    return len(call.args.positional) == 1 and not call.args.keywords and isinstance(call.args.positional[0], S.Name) \
        and call.args.positional[0].name == SITE


_COMPARE = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b, ">": lambda a, b: a > b,
            "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}
_ARITH = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b,
          "%": lambda a, b: a % b}


def _float(x):
    return float(x) if isinstance(x, (bool, np.bool_)) else x * 1.0


class _Lowering:
    """Checks a reward expression once (names, calls, patterns, token ranges), then evaluates it on batches."""

    def __init__(self, src, data, functions, vocab):
        self.src, self.data, self.functions, self.vocab = src, data, functions, vocab
        self.patterns, self.values, self.exact = {}, {}, False

    def check(self, e):
        err = self.src.error
        if isinstance(e, S.Number):
            return
        if isinstance(e, S.Name):
            if e.name == SITE:
                raise err(e, "tokens is not a number: read it through a token-pattern function",
                          hint=_REWARD_HINT)
            if e.name not in self.data:
                raise err(e, f"the reward reads {e.name!r}, which is neither {SITE} nor data",
                          hint=suggest(e.name, list(self.data) + [SITE]) or _REWARD_HINT)
            v = np.asarray(self.data[e.name])
            if v.ndim != 0 or v.dtype.kind not in "iuf":
                raise err(e, f"a reward over tokens computes with numbers: data {e.name!r} has shape {list(v.shape)}")
            self.values[e] = scalar(v)
            return
        if isinstance(e, (S.BinOp, S.And, S.Or)):
            if isinstance(e, S.BinOp) and e.op == "@":
                raise err(e, "a reward over tokens is a number per sequence: no matrix products")
            self.check(e.left)
            self.check(e.right)
            return
        if isinstance(e, S.Pow):
            self.check(e.base)
            self.check(e.exponent)
            return
        if isinstance(e, (S.Neg, S.Not)):
            self.check(e.operand)
            return
        if isinstance(e, S.Call):
            return self.check_call(e)
        raise err(e, "not a reward over tokens", hint=_REWARD_HINT + "; with numbers, data, arithmetic and "
                                                                     "comparisons")

    def check_call(self, e):
        err, name, args = self.src.error, e.func, e.args
        if args.keywords:
            raise err(args.keywords[0], f"{name}(...) takes no named options")
        if name in REWARD_CALLS:
            want = 2 if REWARD_CALLS[name] else 1
            spelled = f"{name}(tokens, t)" if want == 2 else f"{name}(tokens)"
            if len(args.positional) != want:
                raise err(e, f"{name} takes {want} argument{'s' if want > 1 else ''}: {spelled}",
                          hint="t is a token or a vector of tokens [t1, t2, ...]" if want == 2 else None)
            first = args.positional[0]
            if not isinstance(first, S.Name) or first.name != SITE:
                raise err(first, f"the first argument of {name} is {SITE}, the generated sequence: {spelled}")
            if want == 2:
                self.patterns[e] = self.pattern(args.positional[1])
            return
        if name in self.functions:
            if not _reads_tokens_only(e):
                raise err(e, f"{name} is a Python reward: call it on the tokens alone, {name}(tokens)")
            if arity(self.functions[name]) == 1:
                self.exact = True
            return
        if name in ELEMENTWISE:
            if len(args.positional) != ELEMENTWISE[name]:
                raise err(e, f"{name} takes {ELEMENTWISE[name]} argument(s)")
            for a in args.positional:
                self.check(a)
            return
        known = list(REWARD_CALLS) + list(ELEMENTWISE) + list(self.functions)
        hint = {"max": "maximum(a, b) is the larger of two numbers", "min": "minimum(a, b) is the smaller of two "
                "numbers"}.get(name) or suggest(name, known) or _REWARD_HINT
        raise err(e, f"unknown function {name!r} in a reward over tokens", hint=hint)

    def pattern(self, e):
        """A token or a vector of tokens, known before sampling: a tuple of 0-based ids."""
        def constant(x):
            if isinstance(x, S.Number):
                return x.value
            if isinstance(x, S.Name) and x.name in self.data:
                return self.data[x.name]
            if isinstance(x, S.Neg):
                return -np.asarray(constant(x.operand))
            raise self.src.error(x, "a token pattern is a token or a vector of tokens, numbers or data known "
                                    "before sampling")
        if isinstance(e, S.Vector):
            return tuple(_token(x, self.src, constant, self.vocab, "a pattern token") for x in e.items)
        return _tokens(e, self.src, constant, self.vocab, "a pattern token")

    def ev(self, e, prefixes, lengths):
        if isinstance(e, S.Number):
            return float(e.value)
        if isinstance(e, S.Name):
            return self.values[e]
        if isinstance(e, S.BinOp):
            a, b = self.ev(e.left, prefixes, lengths), self.ev(e.right, prefixes, lengths)
            return _float(_COMPARE[e.op](a, b)) if e.op in _COMPARE else _ARITH[e.op](a, b)
        if isinstance(e, S.And):
            a, b = self.ev(e.left, prefixes, lengths), self.ev(e.right, prefixes, lengths)
            return _float(a != 0) * _float(b != 0)
        if isinstance(e, S.Or):
            a, b = self.ev(e.left, prefixes, lengths), self.ev(e.right, prefixes, lengths)
            return 1.0 - _float(a == 0) * _float(b == 0)
        if isinstance(e, S.Not):
            return _float(self.ev(e.operand, prefixes, lengths) == 0)
        if isinstance(e, S.Neg):
            return -self.ev(e.operand, prefixes, lengths)
        if isinstance(e, S.Pow):
            return self.ev(e.base, prefixes, lengths) ** self.ev(e.exponent, prefixes, lengths)
        name, args = e.func, e.args.positional
        if name in REWARD_CALLS:
            fn = tables.REWARDS[name][0]
            return fn(prefixes, lengths, self.patterns[e]) if REWARD_CALLS[name] else fn(prefixes, lengths)
        if name in self.functions:
            fn = self.functions[name]
            return fn(prefixes, lengths) if arity(fn) == 2 else fn(prefixes)
        values = [self.ev(a, prefixes, lengths) for a in args]
        if name == "where":
            c, a, b = values
            like = next((v for v in values if hasattr(v, "shape")), None)
            if like is None:
                return a if c else b
            xp = pm.namespace(like)
            return xp.where(c != 0 if hasattr(c, "shape") else bool(c), a + like * 0.0, b + like * 0.0)
        return pm.BUILTINS[name](*values)
