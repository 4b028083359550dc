"""Sequence declarations, `sequence NAME = BASE(...)`: `ppl.autoregressive` bases named NAME, and the rewards
over their tokens that tilt them.

    sequence lm = markov(table, length = 16, eos = 3)                 # table [V + 1, V]: built in
    sequence tri = ngram(table3, order = 3, length = 16, eos = 3)     # table [V + 1, V + 1, V]: built in
    sequence big = autoregressive(gpt, vocab = 50, length = 32, prompt = [1], step = 7)   # gpt: a `use`d model
    sequence chat = served("http://127.0.0.1:8000", step = "\\n", length = 8, prompt = "Q: ...")  # text, served

Tokens count from 1 in the language, as indices do: token t is id t − 1 of the Python API (`eos = 3` is
`eos=2`; a `use`d Python model sees ids from 0). The tables are `stdlib.sequence_tables` (its docstring has the
layout; row 1 of a markov table is the first token's law, row 1 + v the law after token v). Options: `length`
(at most that many generated tokens; required), `eos` (a token that ends a sequence), `step` (a delimiter token
or a vector of them: a step is a chunk of tokens up to one), `prompt` (a vector of tokens the sequence continues;
a table's context), `order` (ngram: the number of axes of its table by default), `vocab` (autoregressive).

A reward over `tokens` (`lm * exp(count(tokens, 2) / 0.5)`) is an expression of the token-pattern built-ins of
`REWARD_CALLS`, numbers, numeric data and the elementwise functions of `ELEMENTWISE`, lowered to one batched,
traceable function `reward(prefixes [N, W], lengths [N]) -> [N]`; `f(tokens)` with `f` a `use`d Python function
is `f` itself (any arity). A served base (`ppl.served`, over text) is rewarded through `text` instead:
`count(text, "ab")` and the other built-ins of `stdlib.text_rewards`, `served_reward("url")`, and `f(text)`,
lowered to `reward(prompt, steps) -> [N]` on the host. Every error is located at the argument it is about.
"""
import numbers

import numpy as np

from .. import math as pm
from ..errors import PPLError
from ..sequence import SITE, autoregressive
from ..stdlib import sequence_tables as tables
from ..stdlib import text_rewards
from ..stdlib.language_models import arity
from ..target import Reward
from . import syntax as S
from .diffusion import base_call
from .interpret import concrete_int, scalar
from .source import suggest

#: the options of a served base (`ppl.served`) and what each is: text, an integer >= its least value, a positive
#: number, true/false
SERVED_OPTIONS = {"model": "text", "step": "text", "prompt": "text", "end": "text", "eos_text": "text",
                  "length": 1, "max_tokens": 1, "concurrency": 1, "retries": 0, "timeout": "number",
                  "lookahead": "bool"}
#: each base: its positional argument and its named options
BASES = {"markov": ("table", ("length", "eos", "step", "prompt")),
         "ngram": ("table", ("order", "length", "eos", "step", "prompt")),
         "autoregressive": ("model", ("vocab", "length", "eos", "step", "prompt")),
         "served": ("url", tuple(SERVED_OPTIONS))}
SPELLING = ("markov(table, length = L), ngram(table, order = k, length = L), "
            "autoregressive(model, vocab = V, length = L) or served(\"http://host:port\", length = L)")
#: the token-pattern built-ins of rewards: name -> whether it takes a pattern after `tokens`
REWARD_CALLS = {name: takes for name, (_, takes) in tables.REWARDS.items()}
#: the elementwise built-ins a reward may apply, with their number of arguments
ELEMENTWISE = {**{f: 1 for f in ("exp", "log", "log1p", "expm1", "sqrt", "abs", "square", "sign", "floor", "ceil",
                                 "tanh", "sin", "cos", "inv_logit", "logit", "log_inv_logit", "softplus")},
               "pow": 2, "maximum": 2, "minimum": 2, "where": 3}
#: the text-pattern built-ins of rewards over a served base's text, and its served reward model
TEXT_CALLS = {name: takes for name, (_, takes) in text_rewards.REWARDS.items()}
SERVED_REWARD = "served_reward"
TEXT = "text"
_TEXT_HINT = ('a reward reads text through count(text, "ab"), contains(text, "yes"), starts_with(text, "A"), '
              'ends_with(text, "."), matches(text, "[0-9]+") and length(text), or served_reward("http://...")')
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
        raise src.error(call, f"{call.func} needs length = L, the most "
                              f"{'steps' if call.func == 'served' else 'tokens'} a sequence generates")
    if call.func == "served":
        return _served(node.name, call, arg, options, src, constant)
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


def _served(name, call, url, options, src, constant):
    """`served("http://host:port", length = L, step = "\\n", ...)`: `ppl.served` with the options as written
    (texts are string literals; see `SERVED_OPTIONS`)."""
    from ..served import served
    if not isinstance(url, S.String):
        raise src.error(url, 'served(...) takes the server\'s base URL as a string: served("http://127.0.0.1:8000", '
                             '...)')
    kw = {}
    for key, e in options.items():
        kind = SERVED_OPTIONS[key]
        if kind == "text":
            if not isinstance(e, S.String):
                raise src.error(e, f"{key} is text: a string literal, {key} = \"...\"")
            kw[key] = e.value
        elif kind == "bool":
            if not (isinstance(e, S.Name) and e.name in ("true", "false")):
                raise src.error(e, f"{key} is true or false")
            kw[key] = e.name == "true"
        elif kind == "number":
            v = scalar(constant(e))
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v > 0:
                raise src.error(e, f"{key} must be a positive number of seconds known before sampling")
            kw[key] = float(v)
        else:
            kw[key] = _integer(e, src, constant, key, kind)
    try:
        return served(url.value, **kw, name=name)
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
    """The `Reward` of a reward expression (see the module docstring). Over tokens (a base with vocabulary
    `vocab`): arity 2 (`reward(prefixes, lengths)`, traceable array code), or 1 where it calls a `use`d Python
    function of one argument (exact prefixes); `f(tokens)` alone is `f` itself. Over text (`vocab` None: a
    served base): `reward(prompt, steps)`, on the host; `f(text)` alone is `f` (of the texts, or of the prompt
    and steps where it takes two arguments), `served_reward(url)` alone the served reward."""
    reads = _Text() if vocab is None else _Tokens(vocab)
    if isinstance(expr, S.Call) and expr.func in functions and _reads_site_only(expr, reads.site):
        fn = functions[expr.func]
        return Reward(fn, reads.parents(arity(fn)), label)
    if isinstance(expr, S.Call) and expr.func == SERVED_REWARD and vocab is None:
        return Reward(_served_reward(expr, src), ("prompt", "steps"), label)
    lowered = _Lowering(src, data, functions, reads)
    lowered.check(expr)
    if vocab is None:
        def reward_text(prompt, steps):
            texts = ["".join(s) for s in steps]
            return np.zeros(len(texts)) + lowered.ev(expr, (texts, prompt, steps))
        return Reward(reward_text, ("prompt", "steps"), label)

    def reward(prefixes, lengths=None):
        if lengths is None:   # exact prefixes [N, t]: every one has t tokens
            lengths = pm.namespace(prefixes).sum(prefixes * 0, axis=1) + prefixes.shape[1]
        value = lowered.ev(expr, (prefixes, lengths))
        return value + tables.length(prefixes, lengths) * 0.0
    if lowered.exact:     # a Python function of exact prefixes: the whole reward is called on them
        def reward_exact(prefixes):
            return reward(prefixes)
        return Reward(reward_exact, ("prefixes",), label)

    def reward_of_prefixes(prefixes, lengths):
        return reward(prefixes, lengths)
    if lowered.builtins and not lowered.python:     # of built-ins only: kept running token by token
        def combine(values):
            return lowered.ev(expr, dict(zip(lowered.builtins, values))) + values[0] * 0.0
        reward_of_prefixes.running = tables.Running(
            tuple(tables.TokenPattern(e.func, lowered.patterns.get(e)) for e in lowered.builtins), combine)
    return Reward(reward_of_prefixes, ("prefixes", "lengths"), label)


def _served_reward(call, src):
    """`served_reward("url")`: the process reward model at that URL (`ppl.served_reward`)."""
    from ..served import served_reward
    args = call.args
    if len(args.positional) != 1 or args.keywords or not isinstance(args.positional[0], S.String):
        raise src.error(call, 'served_reward takes the reward endpoint\'s URL: served_reward("http://host:port/path")')
    return served_reward(args.positional[0].value, name=f"served_reward({args.positional[0].value})")


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


def _reads_site_only(call, site):
    return len(call.args.positional) == 1 and not call.args.keywords and isinstance(call.args.positional[0], S.Name) \
        and call.args.positional[0].name == site


class _Tokens:
    """What a reward over tokens reads: prefixes [N, W] and lengths [N] (batched, traceable), patterns of tokens."""

    site, calls, hint = SITE, REWARD_CALLS, _REWARD_HINT

    def __init__(self, vocab):
        self.vocab = vocab

    def parents(self, n):
        return ("prefixes", "lengths")[:n]

    def pattern(self, e, src, constant):
        """A token or a vector of tokens, known before sampling: a tuple of 0-based ids."""
        if isinstance(e, S.Vector):
            return tuple(_token(x, src, constant, self.vocab, "a pattern token") for x in e.items)
        return _tokens(e, src, constant, self.vocab, "a pattern token")

    def builtin(self, name, args, pattern):
        fn, takes = tables.REWARDS[name]
        return fn(*args, pattern) if takes else fn(*args)

    def python(self, fn, args):
        prefixes, lengths = args
        return fn(prefixes, lengths) if arity(fn) == 2 else fn(prefixes)


class _Text:
    """What a reward over text reads (a served base): the texts, the prompt and each text's steps, on the host;
    patterns are strings."""

    site, calls, hint = TEXT, TEXT_CALLS, _TEXT_HINT
    vocab = None

    def parents(self, n):
        return ("texts",) if n == 1 else ("prompt", "steps")

    def pattern(self, e, src, constant):
        if not isinstance(e, S.String) or not e.value:
            raise src.error(e, 'a text pattern is a non-empty string: count(text, "ab")')
        return e.value

    def builtin(self, name, args, pattern):
        fn, takes = text_rewards.REWARDS[name]
        return fn(args[0], pattern) if takes else fn(args[0])

    def python(self, fn, args):
        texts, prompt, steps = args
        return np.asarray(fn(prompt, steps) if arity(fn) == 2 else fn(texts), dtype=np.float64)


_COMPARE = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b, ">": lambda a, b: a > b,
            "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}
_ARITH = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b,
          "%": lambda a, b: a % b}


def _float(x):
    return float(x) if isinstance(x, (bool, np.bool_)) else x * 1.0


class _Lowering:
    """Checks a reward expression once (names, calls, patterns), then evaluates it on batches: `reads` says what
    the reward reads (`_Tokens` or `_Text`) and `ev`'s `args` are what it gets."""

    def __init__(self, src, data, functions, reads):
        self.src, self.data, self.functions, self.reads = src, data, functions, reads
        self.patterns, self.values, self.served, self.exact = {}, {}, {}, False
        self.builtins, self.python = [], False      # the pattern built-ins' calls; whether it calls Python

    def check(self, e):
        err, site, hint = self.src.error, self.reads.site, self.reads.hint
        if isinstance(e, S.Number):
            return
        if isinstance(e, S.Name):
            if e.name == site:
                raise err(e, f"{site} is not a number: read it through a pattern function", hint=hint)
            if e.name not in self.data:
                raise err(e, f"the reward reads {e.name!r}, which is neither {site} nor data",
                          hint=suggest(e.name, list(self.data) + [site]) or hint)
            v = np.asarray(self.data[e.name])
            if v.ndim != 0 or v.dtype.kind not in "iuf":
                raise err(e, f"a reward over {site} computes with numbers: data {e.name!r} has shape "
                             f"{list(v.shape)}")
            self.values[e] = scalar(v)
            return
        if isinstance(e, (S.BinOp, S.And, S.Or)):
            if isinstance(e, S.BinOp) and e.op == "@":
                raise err(e, f"a reward over {site} is a number per sequence: no matrix products")
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
        raise err(e, f"not a reward over {site}", hint=hint + "; with numbers, data, arithmetic and comparisons")

    def check_call(self, e):
        err, name, args, site, calls = self.src.error, e.func, e.args, self.reads.site, self.reads.calls
        if name == SERVED_REWARD and site == TEXT:
            self.served[e] = _served_reward(e, self.src)
            return
        if args.keywords:
            raise err(args.keywords[0], f"{name}(...) takes no named options")
        if name in calls:
            want = 2 if calls[name] else 1
            spelled = f"{name}({site}, pattern)" if want == 2 else f"{name}({site})"
            if len(args.positional) != want:
                raise err(e, f"{name} takes {want} argument{'s' if want > 1 else ''}: {spelled}",
                          hint=("a pattern is a token or a vector of tokens [t1, t2, ...]" if site == SITE else
                                'a pattern is a string, "ab"') if want == 2 else None)
            first = args.positional[0]
            if not isinstance(first, S.Name) or first.name != site:
                raise err(first, f"the first argument of {name} is {site}, the generated sequence: {spelled}")
            if want == 2:
                self.patterns[e] = self.reads.pattern(args.positional[1], self.src, self.pattern_constant)
            self.builtins.append(e)
            return
        if name in self.functions:
            self.python = True
            if not _reads_site_only(e, site):
                raise err(e, f"{name} is a Python reward: call it on the {site} alone, {name}({site})")
            if arity(self.functions[name]) == 1:
                self.exact = True
            return
        if name in ELEMENTWISE:
            if len(args.positional) != ELEMENTWISE[name]:
                raise err(e, f"{name} takes {ELEMENTWISE[name]} argument(s)")
            for a in args.positional:
                self.check(a)
            return
        known = list(calls) + list(ELEMENTWISE) + list(self.functions) + [SERVED_REWARD] * (site == TEXT)
        hint = {"max": "maximum(a, b) is the larger of two numbers", "min": "minimum(a, b) is the smaller of two "
                "numbers"}.get(name) or suggest(name, known) or self.reads.hint
        raise err(e, f"unknown function {name!r} in a reward over {site}", hint=hint)

    def pattern_constant(self, x):
        """The value of a pattern's part known before sampling: a number, data, or minus one."""
        if isinstance(x, S.Number):
            return x.value
        if isinstance(x, S.Name) and x.name in self.data:
            return self.data[x.name]
        if isinstance(x, S.Neg):
            return -np.asarray(self.pattern_constant(x.operand))
        raise self.src.error(x, "a token pattern is a token or a vector of tokens, numbers or data known before "
                                "sampling")

    def ev(self, e, args):
        if isinstance(e, S.Number):
            return float(e.value)
        if isinstance(e, S.Name):
            return self.values[e]
        if isinstance(e, S.BinOp):
            a, b = self.ev(e.left, args), self.ev(e.right, args)
            return _float(_COMPARE[e.op](a, b)) if e.op in _COMPARE else _ARITH[e.op](a, b)
        if isinstance(e, S.And):
            a, b = self.ev(e.left, args), self.ev(e.right, args)
            return _float(a != 0) * _float(b != 0)
        if isinstance(e, S.Or):
            a, b = self.ev(e.left, args), self.ev(e.right, args)
            return 1.0 - _float(a == 0) * _float(b == 0)
        if isinstance(e, S.Not):
            return _float(self.ev(e.operand, args) == 0)
        if isinstance(e, S.Neg):
            return -self.ev(e.operand, args)
        if isinstance(e, S.Pow):
            return self.ev(e.base, args) ** self.ev(e.exponent, args)
        name = e.func
        if e in self.served:
            return np.asarray(self.served[e](*args[1:]), dtype=np.float64)
        if name in self.reads.calls:      # args: what the reward reads, or each built-in's running value
            return args[e] if isinstance(args, dict) else self.reads.builtin(name, args, self.patterns.get(e))
        if name in self.functions:
            return self.reads.python(self.functions[name], args)
        values = [self.ev(a, args) for a in e.args.positional]
        if name == "where":
            c, a, b = values
            like = next((v for v in values if hasattr(v, "shape")), None)
            if like is None:
                return a if c else b
            xp = pm.namespace(like)
            return xp.where(c != 0 if hasattr(c, "shape") else bool(c), a + like * 0.0, b + like * 0.0)
        return pm.BUILTINS[name](*values)
