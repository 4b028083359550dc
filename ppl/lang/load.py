"""Loading a `.ppl` program: data, `use`d functions, models, targets and `sample` statements.

`load_ppl(path_or_text, data=None)` returns a `PPLFile` (`runner`, which compiles and samples its targets) whose
`.models` are `ppl.model(...)` objects, whose `.diffusions` are `ppl.diffusion(...)` bases, whose `.sequences`
are `ppl.autoregressive(...)` bases, and whose `.targets` are the same `Power`, `Product`, `Geometric` and `Tilt`
trees the Python API builds: one compiler, two front ends. Errors the compiler raises about a site are located at
the site's statement.
"""
import contextlib
import importlib
import json
import os
import sys

import numpy as np

from .. import math as pm
from ..backends import runtime as runtimes
from ..compiler.diffusion_plan import DiffusionPlan, agree
from ..diffusion import SITE
from ..errors import PPLError, SourceError
from ..target import Reward, geometric
from . import syntax as S
from .diffusion import build_diffusion
from .sequence import build_sequence, is_sequence, sequence_bases, sequence_reward
from .sequence import text as reward_text
from .interpret import Interpreter, scalar
from .functions import define_functions
from .lower import ModelBuilder, type_parts
from .names import reads
from .parser import parse
from .runner import PPLFile, RunSpec, diffusions
from ..collector import collector_paused
from .source import Source, suggest
from .symbolic import NeedsData, Symbolic


@contextlib.contextmanager
def _beside(filename):
    """The folder of the program file `filename` first on the import path (a `use`d module next to its program
    is found from any working directory), for the duration of an import."""
    folder = os.path.dirname(os.path.abspath(filename)) if filename and os.path.isfile(filename) else None
    if folder is None or folder in sys.path:
        yield
        return
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)


def _read_data(data, filename):
    if data is None:
        return {}
    if isinstance(data, (str, os.PathLike)):
        try:
            with open(data, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise SourceError(f"cannot read data file: {e}", filename=str(data)) from None
        except RecursionError:
            raise SourceError("cannot read data file: nested too deeply", filename=str(data)) from None
    if not isinstance(data, dict):
        raise SourceError(f"data must be a JSON object (name -> value), got {type(data).__name__}",
                          filename=filename)
    return dict(data)


class Loader:
    """Reads a program's items in order into a `PPLFile`, checking names, data and options."""

    def __init__(self, text, filename, data, allow_python, symbolic=False):
        self.src = Source(text, filename)
        self.out = PPLFile(self.src)
        self.given = data
        self.allow_python = allow_python
        self.symbolic = symbolic
        self.defined = {}
        self.constants = Interpreter(self.src)

    def define(self, name, node):
        if name in self.defined:
            raise self.src.error(node, f"{name!r} is already defined at line {self.defined[name].line}")
        self.defined[name] = node

    def load(self):
        items = parse(self.src.text, self.src.filename).items
        defs = [item for item in items if isinstance(item, S.FunctionDef)]
        for d in defs:
            self.define(d.name, d)
        define_functions(defs, self.src, self.out.functions)
        for item in items:   # _data for a Data item, ...
            try:
                getattr(self, "_" + type(item).__name__.lower())(item)
            except NeedsData as e:   # only with symbolic data: this model or target is checked no further
                self.out.unbuilt[getattr(item, "name", None) or item.target] = e.name
        return self.out

    def constant(self, e):
        """The value of an expression of data and constants."""
        return self.constants.ev(e, dict(self.out.data), "numpy")

    def _data(self, node):
        name, typ = node.name, node.type
        self.define(name, node)
        if name not in self.given and self.symbolic:
            type_parts(typ, self.src)
            self.out.symbolic.append(name)
            self.out.data[name] = Symbolic(name)
            return
        if name not in self.given:
            raise self.src.error(node, f"data {name!r} is declared but no value was given",
                                 hint="pass it in the JSON file (--data data.json) or as a keyword argument")
        tname, bounds, dims = type_parts(typ, self.src)
        if tname not in ("int", "real"):
            raise self.src.error(typ, f"data must be int or real (with dimensions), not {tname}")
        value = self.given[name]
        try:
            dtype_kind = np.asarray(value).dtype.kind
        except (TypeError, ValueError):
            dtype_kind = "O"
        if dtype_kind not in "iuf":   # no strings ("3"), booleans (true) or ragged lists, even where numpy converts
            what = {"b": "booleans", "U": "strings", "S": "strings"}.get(dtype_kind, "not numbers")
            raise self.src.error(node, f"data {name!r} is declared {tname} but its value is {what}: {value!r:.60}")
        arr = np.asarray(value, dtype=np.float64)
        shape = self.constants.shape(dims, dict(self.out.data), "numpy") if dims else ()
        if arr.shape != shape:
            raise self.src.error(typ, f"data {name!r} has shape {arr.shape}, but its declaration says {shape}")
        if not np.all(np.isfinite(arr)):
            raise self.src.error(node, f"data {name!r} has non-finite values")
        if tname == "int" and not np.all(arr == np.round(arr)):
            raise self.src.error(typ, f"data {name!r} is declared int but has non-integer values")
        for key, b in bounds.items():
            limit = self.constant(b.value)
            bad = arr < limit if key == "lower" else arr > limit
            if np.any(bad):
                raise self.src.error(b, f"data {name!r} violates {key}={limit}")
        if tname == "int":
            self.out.data[name] = int(arr) if arr.ndim == 0 else arr.astype(np.int64)
        else:
            self.out.data[name] = float(arr) if arr.ndim == 0 else arr.astype(np.float32)

    def _use(self, node):
        name, spec = node.name, node.spec
        self.define(name, node)
        module, _, attr = spec.partition(":")
        if not self.allow_python:
            raise self.src.error(node, f"refusing to import Python module {module!r}: `use` runs Python code",
                                 hint="run with --allow-python (API: allow_python=True) if you trust it")
        if not module or not attr:
            raise self.src.error(node, f"expected \"module:attribute\", got {spec!r}")
        try:
            with _beside(self.src.filename):
                fn = getattr(importlib.import_module(module), attr)
        except Exception as e:  # noqa: BLE001 (an import failure of the user's module)
            raise self.src.error(node, f"cannot import {spec!r}: {type(e).__name__}: {e}") from None
        if not callable(fn) and not (hasattr(fn, "start") and hasattr(fn, "advance")):
            raise self.src.error(node, f"{spec!r} is not callable (nor a sequence model with start and advance)")
        self.out.functions[name] = fn

    def _functiondef(self, node):
        """Defined before the other items (`define_functions`), so that any item may call it."""

    def _modeldef(self, node):
        self.define(node.name, node)
        self.out.models[node.name] = ModelBuilder(node, self.src, self.out.data, self.out.functions).build()

    def _diffusiondef(self, node):
        self.define(node.name, node)
        self.out.diffusions[node.name] = build_diffusion(node, self.src, self.constant, self.out.functions)

    def _sequencedef(self, node):
        self.define(node.name, node)
        self.out.sequences[node.name] = build_sequence(node, self.src, self.constant, self.out.functions)

    def _targetdef(self, node):
        self.define(node.name, node)
        t = self.target_expr(node.expr)
        if is_sequence(t):
            if node.bindings:
                raise self.src.error(node.bindings[0], "a sequence target cannot be conditioned: its one site is "
                                                       "the generated tokens",
                                     hint="to favour some sequences, tilt by a reward: "
                                          "lm * exp(count(tokens, 2) / lam)")
            from ..compiler.sequence_plan import SequencePlan
            try:
                SequencePlan(t)   # what only the whole target shows: every base's exponent 0, a reward's arity
            except PPLError as e:
                raise self.src.relocate(node.expr, e) from None
        if diffusions(t):
            if node.bindings:
                raise self.src.error(node.bindings[0], "a diffusion target cannot be conditioned: FKC samples "
                                                       "products of powers of diffusions, tilted by rewards",
                                     hint="to favour values near an observation, tilt by a reward: "
                                          "q * exp(-sum(square(x - y)) / lam)")
            try:
                DiffusionPlan(t)   # what only the whole target shows: exponents summing to <= 0, a reward's reads
            except PPLError as e:
                raise self.src.relocate(node.expr, e) from None
        if node.bindings:
            obs = {b.name: self.constant(b.value) for b in node.bindings}
            try:
                t = t.condition(**obs)
            except PPLError as e:
                raise self.src.relocate(node.bindings[0], e) from None
        self.out.targets[node.name] = t

    def target_expr(self, e):
        err = self.src.error
        if isinstance(e, S.Name):
            if e.name in self.out.unbuilt:
                raise NeedsData(self.out.unbuilt[e.name])
            if e.name in self.out.named():
                return self.out.named()[e.name]
            raise err(e, f"{e.name!r} is not a model, diffusion or target" + (" (nor a sequence)" if self.out.sequences
                                                                                else ""),
                      hint=suggest(e.name, list(self.out.named())))
        if isinstance(e, S.Pow):
            return self.algebra(e.exponent, lambda: self.target_expr(e.base) ** self.number(e.exponent))
        if isinstance(e, S.BinOp) and e.op == "*":
            a, b = e.left, e.right
            if _is_exp(b) or _is_exp(a):
                base, ex = (a, b) if _is_exp(b) else (b, a)
                return self.tilt(self.target_expr(base), ex.args.positional[0])
            return self.algebra(e, lambda: self.target_expr(a) * self.target_expr(b))
        if isinstance(e, S.Call) and e.func == "geometric":
            args = e.args.positional
            if len(args) != 3 or e.args.keywords:
                raise err(e, "geometric takes three arguments: geometric(p, q, w)")
            return self.algebra(e, lambda: geometric(self.target_expr(args[0]), self.target_expr(args[1]),
                                                     self.number(args[2])))
        raise err(e, "not a target expression", hint="targets combine models (or diffusions, or sequences) with ^ "
                                                     "(power), * (product), geometric(p, q, w) and p * exp(r / lam) "
                                                     "(tilt)")

    def algebra(self, node, build):
        """`build()`, its errors located at `node`; diffusions are combined only with diffusions of one dimension
        and SDE."""
        try:
            t = build()
            bases = diffusions(t)
            if bases:
                agree(bases)
        except SourceError:
            raise
        except PPLError as e:
            raise self.src.relocate(node, e) from None
        models = [leaf.name for leaf, _ in t.linear() if leaf.kind == "model"]
        if bases and models:
            raise self.src.error(node, f"the target combines the diffusion {bases[0].name} with the model "
                                       f"{models[0]}; FKC needs a score for every factor",
                                 hint="combine diffusions only with diffusions (^, *, geometric, exp tilts); "
                                      "sample a model in a target of its own")
        seqs = sequence_bases(t)
        if seqs and (models or bases):
            other = f"the model {models[0]}" if models else f"the diffusion {bases[0].name}"
            raise self.src.error(node, f"the target combines the sequence {seqs[0].name} with {other}; a sequence "
                                       f"target is a law over token sequences only",
                                 hint="combine sequences only with sequences (^, *, geometric, exp tilts by rewards "
                                      "over tokens)")
        for b in seqs[1:]:
            for key, value in seqs[0].signature.items():
                if b.signature[key] != value:
                    show = {"eos": _token_text, "step": _token_text, "pad": _token_text}.get(key, repr)
                    raise self.src.error(node, f"sequences {seqs[0].name} and {b.name} combined here must agree in "
                                               f"{key}: {show(value)} against {show(b.signature[key])}",
                                         hint="the bases of a sequence target share their vocabulary, length, eos, "
                                              "steps and prompt length")
        return t

    def number(self, e):
        v = scalar(self.constant(e))
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.src.error(e, "expected a number known before sampling")
        return float(v)

    def tilt(self, base, expr):
        """p * exp(r / lam): a reward tilt; r reads sites of the target by name, lam > 0 is a constant."""
        lam = 1.0
        if isinstance(expr, S.BinOp) and expr.op == "/" and not reads(expr.right):
            lam, expr = self.number(expr.right), expr.left
        if is_sequence(base):
            label = reward_text(expr)
            r = sequence_reward(expr, self.src, self.out.data, self.out.functions, sequence_bases(base)[0].vocab,
                                label)
            return self.algebra(expr, lambda: base.tilt(r, lam))
        own = {n for m in base.models() for n in m.sites} | {q.site for q in diffusions(base)}
        sites = own | set(self.out.data)
        parents = []
        for n, where in reads(expr):
            if n not in sites:
                hint = suggest(n, sorted(sites)) or (f"the site of a diffusion is {SITE}" if diffusions(base) else None)
                raise self.src.error(where, f"the reward reads {n!r}, which is not a site of the tilted target",
                                     hint=hint)
            if n not in parents:
                parents.append(n)
        interp, data = Interpreter(self.src, self.out.functions), self.out.data
        label = (self.src.line(expr.line) or "")[expr.column - 1:].strip()[:40] or "reward"
        reads_sites = [p for p in parents if p in own]   # the others are data

        def reward(*args, **env):   # sites by name (models), or positionally in `reads_sites` order (FKC: r(x))
            env = {**data, **dict(zip(reads_sites, args)), **env}
            return interp.ev(expr, env, pm.framework(list(env.values())))
        r = Reward(reward, reads_sites, label)
        return self.algebra(expr, lambda: base.tilt(r, lam))

    def _sample(self, node):
        if node.target not in self.out.named() and node.target not in self.out.unbuilt:
            raise self.src.error(node, f"sample: {node.target!r} is not a model, diffusion, sequence or target"
                                       if self.out.sequences else f"sample: {node.target!r} is not a model, "
                                                                  f"diffusion or target",
                                 hint=suggest(node.target, list(self.out.named())))
        if node.options.positional:
            raise self.src.error(node.options.positional[0], "method options are named: smc(particles = 4096)")
        options = {k.name: self.option(k.value) for k in node.options.keywords}
        runtime = node.runtime
        if runtime is not None and runtime.name not in runtimes.names():
            raise self.src.error(runtime, f"unknown runtime {runtime.name!r}; choose {' or '.join(runtimes.names())}")
        self.out.runs.append(RunSpec(node.target, node.method, options, runtime and runtime.name, node))

    def option(self, e):
        if isinstance(e, S.String):
            return e.value
        if isinstance(e, S.Name) and e.name in self.out.unbuilt:
            raise NeedsData(self.out.unbuilt[e.name])
        if isinstance(e, S.Name) and e.name in self.out.models:
            return self.out.models[e.name]
        if isinstance(e, S.Name) and e.name in self.out.functions:   # answer = f: a `use`d Python function
            return self.out.functions[e.name]
        if isinstance(e, S.Name) and e.name in ("true", "false", "True", "False"):
            return e.name.lower() == "true"
        if isinstance(e, S.Call) and e.func not in pm.BUILTINS:
            if e.args.positional:
                raise self.src.error(e, "options are named: hmc(steps = 5)")
            return {"name": e.func, **{k.name: self.option(k.value) for k in e.args.keywords}}
        return scalar(self.constant(e))


def _token_text(v):
    """Token ids as the language writes them (from 1)."""
    if v is None:
        return "none"
    return str(v + 1) if isinstance(v, int) else "[" + ", ".join(str(t + 1) for t in v) + "]"


def _is_exp(e):
    return isinstance(e, S.Call) and e.func == "exp" and len(e.args.positional) == 1 and not e.args.keywords


def load_ppl(path_or_text, data=None, allow_python=False, filename=None, symbolic=False, **values):
    """Load a `.ppl` program (a path or the text itself) with `data` (a dict or a JSON path) and keyword values.

    With `symbolic=True` a datum without a value is a placeholder (`.symbolic` lists them): whatever needs its
    value is not built (`.unbuilt`: name -> the datum), and everything else is checked as usual.

    Returns a `PPLFile`: `.targets`, `.models`, `.target(name)`, `.compile(name)`, `.sample(name, **options)`.
    `use NAME from "module:attr"` is refused unless `allow_python=True`.
    """
    from ..backends import flag
    flag(allow_python, "allow_python")
    flag(symbolic, "symbolic")
    text = path_or_text
    if isinstance(path_or_text, os.PathLike) or (isinstance(path_or_text, str) and "\n" not in path_or_text
                                                 and path_or_text.endswith(".ppl")):
        try:
            with open(path_or_text, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise SourceError(f"cannot read program: {e.strerror}", filename=str(path_or_text)) from None
        except UnicodeDecodeError:
            raise SourceError("cannot read program: not a UTF-8 text file", filename=str(path_or_text)) from None
        filename = filename or str(path_or_text)
    filename = filename or "<string>"
    given = _read_data(data, filename)
    given.update(values)
    try:
        with collector_paused():
            return Loader(text, filename, given, allow_python, symbolic).load()
    except RecursionError:
        raise SourceError("the program nests too deeply", filename=filename) from None
