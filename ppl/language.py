"""The `.ppl` language: semantic checks and lowering of the AST to the Python target objects.

`load_ppl(path_or_text, data=None)` returns a `PPLFile` whose `.models` are
`ppl.model(...)` objects and whose `.targets` are the same `Power`, `Product`,
`Geometric` and `Tilt` trees the Python API builds: one compiler, two front ends.
Every site function is a small interpreter over the AST (user text is never
evaluated as Python); it computes with the runtime of its input arrays through
`ppl.math`, for one particle (the runtime vmaps it). Indices are 1-based and
slices `a:b` include both ends, as in Stan.
"""
import importlib
import json
import math as _pymath
import os

import numpy as np

from . import math as pm
from .errors import PPLError, SourceError
from .parser import Node, parse, source_line
from .stdlib import distributions as D
from .stdlib.markov import markov
from .target import Geometric, Model, Power, Product, Reward, Site, Target, Tilt

#: loops with at most this many iterations are unrolled; longer ones become a runtime scan
UNROLL = 8
_POSITIVE = {"half_normal", "half_cauchy", "lognormal", "exponential", "gamma", "inverse_gamma"}
_REAL = {"normal", "cauchy", "student_t", "laplace"}
_UNIT = {"beta"}
_HALF_HINT = {"normal": "half_normal(scale)", "cauchy": "half_cauchy(scale)"}
_SPECIAL_CALLS = {"zeros", "ones", "rep", "size", "logpdf"}
#: the name under which a Markov step reads the previous state x[t - 1]
_PREV = "__prev"


# ---------------------------------------------------------------------------
# errors located in the source
# ---------------------------------------------------------------------------
class _Src:
    def __init__(self, text, filename):
        self.text, self.filename = text, filename

    def error(self, node, message, hint=None, cls=SourceError):
        line, col = (node.line, node.column) if isinstance(node, Node) else (getattr(node, "line", None),
                                                                            getattr(node, "column", None))
        return SourceError(message, filename=self.filename, line=line, column=col,
                           source_line=source_line(self.text, line), hint=hint)


# ---------------------------------------------------------------------------
# the expression and statement interpreter (for one particle)
# ---------------------------------------------------------------------------
def _scalar(v):
    """numpy 0-d values become Python numbers, so constants mix with torch and JAX arrays."""
    if isinstance(v, np.ndarray) and v.ndim == 0 or isinstance(v, np.generic):
        return v.item()
    return v


def _concrete_int(v):
    """A Python int from a value known before sampling (data or a constant), else None."""
    v = _scalar(v)
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    try:
        a = np.asarray(v)
    except Exception:  # a tracer or a tensor under vmap
        return None
    if a.ndim == 0 and a.dtype.kind in "iuf" and float(a) == int(a):
        return int(a)
    return None


def _as_index(v, fw, node, src, size=None):
    """0-based index from a 1-based value: a Python int, or an integer array on the runtime."""
    i = _concrete_int(v)
    if i is not None:
        if i < 1 or (size is not None and i > size):
            raise src.error(node, f"index {i} is out of range" + (f" 1..{size}" if size is not None else ""),
                            hint="indices start at 1")
        return i - 1
    if fw == "torch":
        return (v - 1).long()
    if fw == "jax":
        return (v - 1).astype("int32")
    return (np.asarray(v) - 1).astype(int)


class Interpreter:
    """Evaluates expressions and statements of one model (or target) against an environment dict."""

    def __init__(self, src, functions, data_names=()):
        self.src, self.functions, self.data_names = src, functions, set(data_names)

    # -- expressions --------------------------------------------------------
    def ev(self, node, env, fw):
        op = node.op
        if op == "number":
            return node.args[0]
        if op == "name":
            name = node.args[0]
            if name not in env:
                raise self.src.error(node, f"unknown name {name!r}", cls=SourceError)
            return env[name]
        try:
            return getattr(self, "_" + op)(node, env, fw)
        except SourceError:
            raise
        except PPLError as e:
            raise self.src.error(node, str(e)) from None
        except Exception as e:  # noqa: BLE001 (a runtime's own error, located and wrapped)
            raise self.src.error(node, _describe(e), hint=_hint(e)) from None

    def _string(self, node, env, fw):
        raise self.src.error(node, "a string is not a value here")

    def _binop(self, node, env, fw):
        o, a, b = node.args[0], self.ev(node.args[1], env, fw), self.ev(node.args[2], env, fw)
        if o == "@":
            return a @ b
        return _scalar(_BINOPS[o](a, b))

    def _pow(self, node, env, fw):
        return _scalar(self.ev(node.args[0], env, fw) ** self.ev(node.args[1], env, fw))

    def _neg(self, node, env, fw):
        return -self.ev(node.args[0], env, fw)

    def _and_(self, node, env, fw):
        a, b = (self.ev(x, env, fw) for x in node.args)
        return a and b if fw == "numpy" else pm.namespace(a, b).logical_and(a, b)

    def _or_(self, node, env, fw):
        a, b = (self.ev(x, env, fw) for x in node.args)
        return a or b if fw == "numpy" else pm.namespace(a, b).logical_or(a, b)

    def _not_(self, node, env, fw):
        a = self.ev(node.args[0], env, fw)
        return (not a) if fw == "numpy" else pm.namespace(a).logical_not(a)

    def _vector(self, node, env, fw):
        xs = [self.ev(x, env, fw) for x in node.args[0]]
        if fw == "numpy" and pm.framework(*xs) == "numpy":
            return np.asarray(xs, dtype=np.float32)
        xp = pm.namespace(*xs)
        like = next(x for x in xs if pm.framework(x) != "numpy")
        return xp.stack([x if pm.framework(x) != "numpy" else _full_like(like, x) for x in xs])

    def _index(self, node, env, fw):
        x = self.ev(node.args[0], env, fw)
        return x[self.indices(node.args[1], x, env, fw)]

    def indices(self, items, x, env, fw):
        shape = tuple(getattr(x, "shape", ()))
        if len(items) > len(shape):
            raise self.src.error(items[0], f"{len(items)} indices for a value with {len(shape)} dimension(s)")
        out = []
        for k, it in enumerate(items):
            size = int(shape[k]) if shape else None
            if it.op == "slice":
                lo, hi = (None if e is None else _concrete_int(self.ev(e, env, fw)) for e in it.args)
                for e, v in zip(it.args, (lo, hi)):
                    if e is not None and v is None:
                        raise self.src.error(e, "slice bounds must be integers known before sampling "
                                                "(data or constants)")
                if (lo is not None and lo < 1) or (hi is not None and size is not None and hi > size):
                    raise self.src.error(it, f"slice {lo}:{hi} is out of range 1..{size}",
                                         hint="indices start at 1 and a:b includes b")
                out.append(slice(None if lo is None else lo - 1, hi))
            else:
                out.append(_as_index(self.ev(it, env, fw), fw, it, self.src, size))
        return tuple(out)

    def _call(self, node, env, fw):
        name, args = node.args
        if name in D.FAMILIES:
            raise self.src.error(node, f"the distribution {name}(...) is not a value",
                                 hint=f"use it after ~, or as logpdf({name}(...), x)")
        if name == "logpdf":
            return self.logpdf(node, env, fw)
        pos = [self.ev(a, env, fw) for a in args.args[0]]
        kw = {str(k.args[0]): self.ev(k.args[1], env, fw) for k in args.args[1]}
        if name in ("zeros", "ones"):
            return _scalar(getattr(pm, name)(*pos, like=_like(env)))
        if name == "rep":
            return pm.rep(*pos, like=_like(env))
        if name == "size":
            if len(pos) != 1:
                raise self.src.error(node, "size(x) takes one argument")
            return int(getattr(pos[0], "shape", (1,))[0]) if getattr(pos[0], "shape", ()) else 1
        fn = pm.BUILTINS.get(name) or self.functions.get(name)
        if fn is None:
            raise self.src.error(node, f"unknown function {name!r}", hint=_suggest(name, list(pm.BUILTINS)))
        return _scalar(fn(*pos, **kw))

    def distribution(self, node, env, fw, shape=None):
        """The `Distribution` of a call `normal(mu, sigma)` (a `dist` node or a call node)."""
        name, args = str(node.args[0]), node.args[1]
        if name not in D.FAMILIES:
            raise self.src.error(node, f"unknown distribution {name!r}",
                                 hint=_suggest(name, list(D.FAMILIES)) or f"known: {', '.join(sorted(D.FAMILIES))}")
        pos = [self.ev(a, env, fw) for a in args.args[0]]
        kw = {str(k.args[0]): self.ev(k.args[1], env, fw) for k in args.args[1]}
        if shape is None and len(node.args) > 2 and node.args[2]:
            shape = self.shape(node.args[2], env, fw)
        try:
            return D.make(name, *pos, shape=shape or (), **kw)
        except PPLError as e:
            raise self.src.error(node, str(e)) from None

    def shape(self, exprs, env, fw):
        out = []
        for e in exprs:
            n = _concrete_int(self.ev(e, env, fw))
            if n is None or n < 0:
                raise self.src.error(e, "a dimension must be a non-negative integer known before sampling")
            out.append(n)
        return tuple(out)

    def logpdf(self, node, env, fw):
        args = node.args[1].args[0]
        if len(args) != 2 or args[0].op != "call" or args[0].args[0] not in D.FAMILIES:
            raise self.src.error(node, "logpdf takes a distribution and a value: logpdf(normal(mu, sigma), y)")
        d = self.distribution(args[0], env, fw)
        return log_density(d, self.ev(args[1], env, fw), env)

    # -- statements ----------------------------------------------------------
    def run(self, stmts, env, fw):
        """Execute statements in order, mutating `env`; observations add to env['__logp']."""
        for s in stmts:
            getattr(self, "_s_" + s.op)(s, env, fw)

    def _s_assign(self, s, env, fw):
        self.store(s.args[0], self.ev(s.args[1], env, fw), env, fw)

    def _s_augassign(self, s, env, fw):
        lv, op, rhs = s.args
        old = self.ev(_lvalue_expr(lv), env, fw)
        self.store(lv, _scalar(_BINOPS[str(op)[0]](old, self.ev(rhs, env, fw))), env, fw)

    def store(self, lv, value, env, fw):
        name, idx = str(lv.args[0]), lv.args[1]
        if idx is None:
            env[name] = value
            return
        x = env[name]
        try:
            env[name] = _set_index(x, self.indices(idx, x, env, fw), value, fw)
        except SourceError:
            raise
        except Exception as e:  # noqa: BLE001
            raise self.src.error(lv, _describe(e), hint=_hint(e)) from None

    def _s_tilde(self, s, env, fw):
        lv, dist = s.args
        value = self.ev(_lvalue_expr(lv), env, fw)
        d = self.distribution(dist, env, fw)
        env["__logp"] = env["__logp"] + pm.sum(log_density(d, value, env))

    def _s_factor(self, s, env, fw):
        env["__logp"] = env["__logp"] + self.ev(s.args[0], env, fw)

    def _s_for(self, s, env, fw):
        var, lo_n, hi_n, body = s.args
        lo, hi = (_concrete_int(self.ev(n, env, fw)) for n in (lo_n, hi_n))
        if lo is None or hi is None:
            raise self.src.error(lo_n if lo is None else hi_n,
                                 "loop bounds must be integers known before sampling (data or constants)")
        before = set(env)
        carried = [n for n in sorted(_assigned(body) | {"__logp"}) if n in env]
        if hi - lo + 1 <= UNROLL or fw == "numpy":
            for t in range(lo, hi + 1):
                env[str(var)] = t
                self.run(body, env, fw)
        else:
            like = _like(env)

            def step(carry, t):
                local = dict(env)
                local.update(carry)
                local[str(var)] = t
                self.run(body, local, fw)
                return {n: local[n] for n in carried}, None
            init = {n: _full_like(like, env[n]) if pm.framework(env[n]) == "numpy" else env[n] for n in carried}
            try:
                final, _ = pm.scan(step, init, range(lo, hi + 1), like=like)
            except SourceError:
                raise
            except Exception as e:  # noqa: BLE001
                raise self.src.error(s, f"this loop cannot be compiled to a scan: {_describe(e)}",
                                     hint="each variable the loop updates must keep its shape and type; "
                                          "initialize it with real numbers (0.0, zeros(T))") from None
            env.update(final)
        for n in set(env) - before:
            del env[n]


def log_density(d, value, env):
    """Elementwise log density of the `Distribution` d at `value`, on the runtime of the arrays in `env`."""
    from .backends.runtime import get_runtime
    like = _like(env, value)
    fw = pm.framework(like)
    if fw == "numpy":   # constants: on the runtime already in use (NumPyro if none is)
        import sys
        fw = "torch" if "torch" in sys.modules and "jax" not in sys.modules else "jax"
    rt = get_runtime("pyro", str(getattr(like, "device", "cpu"))) if fw == "torch" else get_runtime("numpyro")
    return d.lower(rt).log_prob(rt.asarray(value))


_BINOPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b,
           "%": lambda a, b: a % b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
           "<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}


def _like(env, *more):
    """An array of the runtime in use (the first torch/JAX array found), or None for constants."""
    for v in list(more) + list(env.values()):
        if pm.framework(v) != "numpy" and hasattr(v, "shape"):
            return v
    return None


def _full_like(like, value):
    if like is None:
        return np.asarray(value, dtype=np.float32)
    xp = pm.namespace(like)
    value = np.asarray(value, dtype=np.float32)
    if pm.framework(like) == "torch":
        import torch
        return torch.as_tensor(value, device=like.device)
    return xp.asarray(value)


def _set_index(x, idx, value, fw):
    """x with x[idx] = value, out of place (JAX `.at[].set`; torch: an updated copy, or `index_put`)."""
    if fw == "jax" or pm.framework(x, value) == "jax":
        import jax.numpy as jnp
        return jnp.asarray(x).at[idx].set(value)
    if pm.framework(x, value) == "torch":
        import torch
        like = value if isinstance(value, torch.Tensor) else x
        x = x if isinstance(x, torch.Tensor) else _full_like(like, x)
        value = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=x.dtype, device=x.device)
        try:  # a copy updated in place: fast, but vmap refuses it while x is unbatched and value batched
            y = x.clone()
            y[idx] = value
            return y
        except RuntimeError:
            pass
        if not any(isinstance(i, slice) for i in idx):
            return x.index_put(tuple(i if isinstance(i, torch.Tensor) else torch.tensor(i, device=x.device)
                                     for i in idx), value)
        axes = [torch.arange(x.shape[k], device=x.device)[i] if isinstance(i, slice) else
                torch.as_tensor(i, device=x.device).reshape(1) for k, i in enumerate(idx)]
        grid = torch.meshgrid(*axes, indexing="ij")
        keep = [len(a) if isinstance(i, slice) else 1 for a, i in zip(axes, idx)]
        return x.index_put(grid, value.reshape(tuple(keep)))
    y = np.array(x, dtype=np.float32, copy=True)
    y[idx] = value
    return y


def _describe(e):
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "Concretization" in type(e).__name__ or "concrete" in msg.lower():
        return "a value that depends on the parameters is used where a constant is needed"
    return f"{type(e).__name__}: {msg[:300]}"


def _hint(e):
    text = str(e)
    if "shape" in text or "size" in text or "broadcast" in text:
        return "check the shapes of the operands (declared dims, [J] suffixes, 1-based indices)"
    if "Concretization" in type(e).__name__:
        return "loop bounds, slice bounds and shapes must come from data or constants"
    return None


def _suggest(name, known):
    import difflib
    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean {close[0]!r}?" if close else None


def _lvalue_expr(lv):
    name = Node("name", [str(lv.args[0])], lv.line, lv.column)
    return name if lv.args[1] is None else Node("index", [name, lv.args[1]], lv.line, lv.column)


# ---------------------------------------------------------------------------
# static analysis: names read and written
# ---------------------------------------------------------------------------
def _reads(node, out):
    """Append (name, node) for every variable an expression reads."""
    if isinstance(node, list):
        for x in node:
            _reads(x, out)
    elif isinstance(node, Node):
        if node.op == "name":
            out.append((node.args[0], node))
        elif node.op == "call":
            _reads(node.args[1].args[0], out)
            _reads([k.args[1] for k in node.args[1].args[1]], out)
        elif node.op == "kwarg":
            _reads(node.args[1], out)
        else:
            _reads([a for a in node.args if isinstance(a, (Node, list))], out)
    return out


def _free(stmts, defined=()):
    """Variables a statement list reads before it defines them: [(name, node)]."""
    defined, out = set(defined), []

    def need(expr):
        out.extend((n, x) for n, x in _reads(expr, []) if n not in defined)

    for s in stmts:
        if s.op in ("assign", "augassign"):
            lv = s.args[0]
            need([s.args[-1], lv.args[1] or []])
            if s.op == "augassign" or lv.args[1] is not None:
                need(Node("name", [str(lv.args[0])], lv.line, lv.column))
            defined.add(str(lv.args[0]))
        elif s.op == "tilde":
            need([_lvalue_expr(s.args[0]), s.args[1].args[1], s.args[1].args[2] or []])
        elif s.op == "factor":
            need(s.args[0])
        elif s.op == "for":
            need([s.args[1], s.args[2]])
            out.extend(_free(s.args[3], defined | {str(s.args[0])}))
            defined |= _assigned(s.args[3]) & defined
    return out


def _assigned(stmts):
    out = set()
    for s in stmts:
        if s.op in ("assign", "augassign"):
            out.add(str(s.args[0].args[0]))
        elif s.op == "for":
            out |= _assigned(s.args[3])
    return out


def _walk(stmts):
    for s in stmts:
        yield s
        if s.op == "for":
            yield from _walk(s.args[3])


# ---------------------------------------------------------------------------
# latent states (Markov chains) drawn element by element
# ---------------------------------------------------------------------------
class _State:
    """What a model says about a state x: its declaration, x[1] ~ ..., and the loop drawing x[2:T]."""

    def __init__(self, decl=None, dims=None, shape=None):
        self.decl, self.dims, self.shape = decl, dims, shape
        self.init = self.loop = None
        self.init_parents, self.step_parents, self.reads_t = [], [], False


def _state_names(stmts):
    """Names declared without a distribution (x : real[T]) and drawn by element (x[...] ~ ...) somewhere."""
    flat = {str(s.args[0]) for s in stmts if s.op == "declare" and s.args[2] is None}
    return {str(b.args[0].args[0]): _State() for b in _walk(stmts)
            if b.op == "tilde" and b.args[0].args[1] is not None and str(b.args[0].args[0]) in flat}


def _lag(e, var):
    """k for an index expression `var + k` / `var - k` / `var` (k a number literal), else None."""
    if e.op == "name" and e.args[0] == var:
        return 0
    if e.op == "binop" and e.args[0] in "+-" and e.args[1].op == "name" and e.args[1].args[0] == var \
            and e.args[2].op == "number":
        return e.args[2].args[0] if e.args[0] == "+" else -e.args[2].args[0]
    return None


def _markov_reads(node, state, var, src):
    """`node` with each read x[t - 1, ...] of the state x replaced by _PREV[...]; any other read is an error."""
    if isinstance(node, list):
        return [_markov_reads(a, state, var, src) for a in node]
    if not isinstance(node, Node):
        return node
    hint = f"{state}[{var}] may read only the previous state {state}[{var} - 1]; keep a longer history in a vector " \
           f"state ({state} : real[T, D])"
    if node.op == "name" and node.args[0] == state:
        raise src.error(node, f"not a Markov chain: {state}[{var}] reads the whole path {state}", hint=hint)
    if node.op == "index" and node.args[0].op == "name" and node.args[0].args[0] == state:
        first, rest = node.args[1][0], node.args[1][1:]
        lag = None if first.op == "slice" else _lag(first, var)
        shown = f"{state}[{_source_index(first, var)}]"
        if lag is not None and lag >= 0:
            raise src.error(node, f"{state}[{var}] depends on the future: it reads {shown}" if lag else
                            f"{state}[{var}] reads itself", hint=hint)
        if lag != -1:
            raise src.error(node, f"not a Markov chain: {state}[{var}] reads {shown}", hint=hint)
        prev = Node("name", [_PREV], node.line, node.column)
        return Node("index", [prev, _markov_reads(rest, state, var, src)], node.line, node.column) if rest else prev
    return Node(node.op, _markov_reads(node.args, state, var, src), node.line, node.column)


def _source_index(e, var):
    lag = None if e.op == "slice" else _lag(e, var)
    if lag is None:
        return "..."
    return var if lag == 0 else f"{var} {'+' if lag > 0 else '-'} {abs(lag)}"


def _state_dist(d, shape):
    """A one-state distribution expanded to the state's shape (families with scalar events only)."""
    vector_family = any(f == d.family for f, _ in D.PARAM_EVENT_DIMS)
    return D.Distribution(d.family, d.params, shape) if shape and not d.shape and not vector_family else d


# ---------------------------------------------------------------------------
# lowering a model block
# ---------------------------------------------------------------------------
class _Group:
    """Deterministic values computed by several statements (a definition, indexed updates, loops)."""

    def __init__(self):
        self.names, self.stmts, self.logp, self.loop = [], [], False, None


class ModelBuilder:
    def __init__(self, node, src, data, functions):
        self.node, self.src, self.data, self.functions = node, src, data, functions
        self.name = str(node.args[0])
        self.interp = Interpreter(src, functions, data)
        self.sites, self.observed, self.positions = {}, {}, {}
        self.kinds = {}  # name -> 'latent' | 'observed' | 'det'

    def build(self):
        groups, owner = [], {}
        self.states = _state_names(self.node.args[1])
        for i, s in enumerate(self.node.args[1]):
            op = s.op
            if op == "declare" and str(s.args[0]) in self.states:
                self.state_declare(s)
            elif op == "declare":
                self.declare(s)
            elif op == "tilde" and str(s.args[0].args[0]) in self.states:
                self.state_init(s)
            elif op == "tilde":
                self.tilde(s)
            elif op == "for" and any(b.op == "tilde" and str(b.args[0].args[0]) in self.states
                                     for b in _walk(s.args[3])):
                self.state_loop(s)
            elif op == "factor":
                self.factor(s)
            elif op in ("assign", "augassign"):
                lv = s.args[0]
                name = str(lv.args[0])
                self._writable(name, lv, first=(op == "assign" and lv.args[1] is None))
                if name not in owner:
                    g = _Group()
                    g.names.append(name)
                    groups.append(g)
                    owner[name] = g
                    self.kinds[name] = "det"
                    self.positions[name] = lv
                owner[name].stmts.append((i, s))
            elif op == "for":
                self.check_loop(s)
                written = [n for n in sorted(_assigned(s.args[3])) if n in owner]
                for n in _assigned(s.args[3]):
                    if n in self.kinds and self.kinds[n] != "det" or n in self.data:
                        raise self.src.error(s, f"the loop assigns to {n!r}, which is "
                                                f"{'data' if n in self.data else 'a ' + self.kinds[n] + ' site'}")
                merged = list(dict.fromkeys(owner[n] for n in written))
                g = merged[0] if merged else _Group()
                for other in merged[1:]:
                    g.names += other.names
                    g.stmts += other.stmts
                    g.logp = g.logp or other.logp
                    groups.remove(other)
                    for n in other.names:
                        owner[n] = g
                if not merged:
                    groups.append(g)
                g.stmts.append((i, s))
                g.stmts.sort(key=lambda x: x[0])
                if any(b.op in ("tilde", "factor") for b in _walk(s.args[3])):
                    g.logp = True
                    g.loop = g.loop or s
                elif not written:
                    raise self.src.error(s, "this loop has no effect: it neither updates a value defined before "
                                            "it nor observes data",
                                         hint="define the value first (x = zeros(T)) and assign x[t] in the loop")
        for g in groups:
            self.group_sites(g)
        for st in self.states.values():
            self.state_site(st)
        self.check_reads_after_writes(groups)
        data = {k: v for k, v in self.data.items() if k not in self.observed}
        try:
            return Model(self.sites, data=data, observed=self.observed, name=self.name)
        except PPLError as e:
            raise self.src.error(self.node, str(e)) from None

    # -- statements ----------------------------------------------------------
    def _writable(self, name, node, first):
        if name in self.data:
            raise self.src.error(node, f"{name!r} is data and cannot be assigned")
        kind = self.kinds.get(name)
        if kind in ("latent", "observed"):
            raise self.src.error(node, f"{name!r} is already a {kind} site (line {self.positions[name].line})")
        if kind is None and not first:
            raise self.src.error(node, f"{name!r} is updated before it is defined",
                                 hint=f"define it first, e.g. {name} = zeros(T)")

    def _new(self, name, node, kind):
        if name in self.kinds:
            raise self.src.error(node, f"{name!r} is already defined at line {self.positions[name].line}")
        self.kinds[name], self.positions[name] = kind, node

    def site(self, name, kind, fn, parents, node, constant=None):
        if constant is not None:
            self.sites[name] = Site(kind, constant)
        else:
            self.sites[name] = Site(kind, fn, parents)
        self.sites[name].source = (self.src.filename, node.line, node.column)

    def parents(self, reads, node):
        out = []
        for name, where in reads:
            if name in self.kinds or name in self.data:
                if name not in out:
                    out.append(name)
            else:
                raise self.src.error(where, f"unknown name {name!r} in model {self.name}",
                                     hint=_suggest(name, list(self.kinds) + list(self.data))
                                     or "declare data with `data NAME : type`; define values before using them")
        return out

    def declare(self, s):
        name, typ, dist = str(s.args[0]), s.args[1], s.args[2]
        if name in self.data:
            raise self.src.error(s, f"{name!r} is data; its type is given by its data declaration",
                                 hint=f"observe it with `{name} ~ ...`")
        self._new(name, s, "latent")
        tname, bounds, dims = _type_parts(typ)
        reads = _reads([b[1] for b in bounds.values()] + (dims or []), [])
        if dist is not None:
            reads += _reads([dist.args[1], dist.args[2] or []], [])
        parents = self.parents(reads, s)
        interp, src = self.interp, self.src

        def shape_of(env, fw):
            shape = interp.shape(dims, env, fw) if dims else ()
            if tname in ("simplex", "ordered", "positive_ordered"):
                if len(shape) != 1:
                    raise src.error(typ, f"{tname} takes one dimension: {tname}[K]")
            return shape

        if dist is None:
            fn, factor = self.flat(name, typ, tname, bounds, shape_of)
        else:
            factor = None

            def fn(**env):
                fw = pm.framework(list(env.values()))
                return self.constrained(dist, typ, tname, bounds, shape_of(env, fw), env, fw)
        self.add_latent(name, fn, parents, s)
        if factor is not None:
            fname = f"{name}:flat"
            self.kinds[fname], self.positions[fname] = "factor", s
            self.site(fname, "factor", factor, parents + ([] if name in parents else []), s)

    def add_latent(self, name, fn, parents, node):
        """A latent site; one that reads only data is a constant distribution, as in the Python API."""
        constant = fn(**{p: self.data[p] for p in parents}) if all(p in self.data for p in parents) else None
        self.site(name, "latent", fn, parents, node, constant=constant)

    def flat(self, name, typ, tname, bounds, shape_of):
        """A site without a distribution: flat on its type's support (see docs/language.md)."""
        interp, src = self.interp, self.src
        if tname == "int":
            raise src.error(typ, "an integer parameter cannot be sampled; declare it as data")
        if tname in ("ordered", "positive_ordered") or (tname == "real" and set(bounds) <= {"lower"}):
            if "lower" in bounds:
                lo = bounds["lower"][1]
                if lo.op != "number" or lo.args[0] != 0:
                    raise src.error(lo, "a one-sided bound must be lower=0 (the positive reals)",
                                    hint="reparameterize: x = a + y with y : real<lower=0>")
            support = {"real": "positive" if bounds else "real"}.get(tname, tname)
            return (lambda **env: D.flat(shape=shape_of(env, pm.framework(list(env.values()))), support=support)), None
        if tname == "simplex":
            def fn(**env):
                k = shape_of(env, "numpy")[0]
                return D.make("dirichlet", np.ones(k, dtype=np.float32))

            def factor(**env):
                return -_pymath.lgamma(shape_of(env, "numpy")[0])
            return fn, factor
        if tname == "real" and set(bounds) == {"lower", "upper"} or set(bounds) == {"upper"}:
            if "lower" not in bounds:
                raise src.error(typ, "a one-sided bound must be lower=0", hint="use real<lower=a, upper=b>")

            def ends(env):
                fw = pm.framework(list(env.values()))
                return interp.ev(bounds["lower"][1], env, fw), interp.ev(bounds["upper"][1], env, fw), fw

            def fn(**env):
                lo, hi, fw = ends(env)
                return D.make("uniform", lo, hi, shape=shape_of(env, fw))

            def factor(**env):
                lo, hi, fw = ends(env)
                n = int(np.prod(shape_of(env, fw), dtype=int))
                return n * pm.log(hi - lo)
            return fn, factor
        raise src.error(typ, f"cannot declare a flat {tname} parameter here")

    def constrained(self, dist, typ, tname, bounds, shape, env, fw):
        """The distribution of `x : type ~ dist`, checked against the type's support."""
        fam = str(dist.args[0])
        src = self.src
        if tname in ("ordered", "positive_ordered"):
            base_ok = _POSITIVE if tname == "positive_ordered" else _REAL
            if fam not in base_ok:
                raise src.error(dist, f"{tname}[K] ~ {fam}(...): the elements need a "
                                      f"{'positive' if tname == 'positive_ordered' else 'real'} distribution",
                                hint=f"one of {', '.join(sorted(base_ok))}")
            return SortedIID(self.interp.distribution(dist, env, fw, shape=shape),
                             "positive_ordered" if tname == "positive_ordered" else "ordered")
        if tname == "simplex" and fam != "dirichlet":
            raise src.error(dist, f"simplex[K] ~ {fam}(...): a simplex needs dirichlet(alpha)")
        if tname == "int":
            raise src.error(typ, "an integer parameter cannot be sampled; declare it as data")
        if tname == "real" and bounds:
            if set(bounds) == {"lower"} and fam not in _POSITIVE:
                raise src.error(dist, f"real<lower=0> ~ {fam}(...): {fam} is not a distribution on the positive "
                                      f"reals and the language does not truncate",
                                hint=f"write {_HALF_HINT[fam]}" if fam in _HALF_HINT else
                                f"one of {', '.join(sorted(_POSITIVE))}")
            if set(bounds) == {"lower", "upper"} and fam not in _UNIT | {"uniform"}:
                raise src.error(dist, f"real<lower=..., upper=...> ~ {fam}(...): use uniform(lower, upper) or "
                                      f"beta(a, b) on (0, 1); the language does not truncate")
        d = self.interp.distribution(dist, env, fw)
        if shape and tname != "simplex":
            d = D.Distribution(d.family, d.params, shape)
        return d

    def tilde(self, s):
        lv, dist = s.args
        name, idx = str(lv.args[0]), lv.args[1]
        reads = _reads([dist.args[1], dist.args[2] or []], [])
        if name in self.data:
            site = name
            value = self.data[name]
            if idx is not None:
                ix = self.interp.indices(idx, np.asarray(value), dict(self.data), "numpy")
                value = np.asarray(value)[ix]
                site = f"{name}[{', '.join(_fmt_index(i) for i in ix)}]"
            if site in self.observed:
                raise self.src.error(lv, f"{site} is observed twice (line {self.positions[site].line})")
            self.kinds[site], self.positions[site] = "observed", s
            self.observed[site] = np.asarray(value)
        else:
            if idx is not None:
                raise self.src.error(lv, f"{name!r} is not data; a latent site is declared whole",
                                     hint=f"write {name} ~ normal(0, 1) [J] and index {name}[j] where you use it")
            self._new(name, lv, "latent")
            site = name
        parents = self.parents(reads, s)
        interp = self.interp
        fn = lambda **env: interp.distribution(dist, env, pm.framework(list(env.values())))  # noqa: E731
        self.add_latent(site, fn, parents, s)

    def factor(self, s):
        name = f"factor@{s.line}"
        self.kinds[name], self.positions[name] = "factor", s
        interp = self.interp
        self.site(name, "factor", lambda **env: interp.ev(s.args[0], env, pm.framework(list(env.values()))),
                  self.parents(_reads(s.args[0], []), s), s)

    # -- latent states: x : real[T], x[1] ~ p0, for t in 2:T { x[t] ~ p(. | x[t - 1]) } ----------------
    def state_declare(self, s):
        name, typ = str(s.args[0]), s.args[1]
        if name in self.data:
            raise self.src.error(s, f"{name!r} is data; its type is given by its data declaration")
        self._new(name, s, "latent")
        tname, bounds, dims = _type_parts(typ)
        if tname != "real" or bounds or not dims or len(dims) > 2:
            raise self.src.error(typ, f"a latent state drawn element by element is declared real[T] (or real[T, D] "
                                      f"for a vector state)", hint=f"write {name} : real[T]")
        self.states[name] = _State(s, dims, self.interp.shape(dims, dict(self.data), "numpy"))

    def _state(self, name, node):
        st = self.states[name]
        if st.decl is None:
            raise self.src.error(node, f"the state {name!r} is drawn before its declaration",
                                 hint=f"declare it first: {name} : real[T]")
        return st

    def state_init(self, s):
        """`x[1] ~ dist`: the initial state; it reads no element of x."""
        lv, dist = s.args
        name, idx = str(lv.args[0]), lv.args[1]
        st = self._state(name, lv)
        if idx is None or len(idx) != 1 or idx[0].op == "slice":
            raise self.src.error(lv, f"a state is drawn one time step at a time",
                                 hint=f"draw {name}[1] ~ ... and then {name}[t] ~ ... in a loop over t")
        k = _concrete_int(self.interp.ev(idx[0], dict(self.data), "numpy"))
        if k != 1:
            raise self.src.error(lv, f"{name}[{k}] is drawn outside the loop; only the initial state {name}[1] is",
                                 hint=f"draw {name}[2:{st.shape[0]}] in one loop: for t in 2:{st.shape[0]} "
                                      f"{{ {name}[t] ~ ... }}")
        if st.init is not None:
            raise self.src.error(lv, f"{name}[1] is drawn twice (first at line {st.init.line})",
                                 hint="each element of a state has one distribution")
        reads = _reads([dist.args[1], dist.args[2] or []], [])
        for n, where in reads:
            if n == name:
                raise self.src.error(where, f"the initial state {name}[1] cannot read {name}",
                                     hint="its distribution reads parameters and data only")
        st.init, st.init_parents = s, self.parents(reads, s)

    def state_loop(self, s):
        """`for t in 2:T { locals; x[t] ~ dist }`: the transition, reading x[t - 1] (as _PREV) and t."""
        var, lo_n, hi_n, body = str(s.args[0]), s.args[1], s.args[2], s.args[3]
        tildes = [b for b in body if b.op == "tilde"]
        name = str(tildes[0].args[0].args[0]) if tildes else None
        st = self._state(name, s) if name in self.states else None
        bad = [b for b in body if b.op not in ("tilde", "assign", "augassign")] + tildes[1:]
        if st is None or bad or body[-1] is not tildes[0]:
            raise self.src.error(bad[0] if bad else s, "a loop that draws a latent state holds local assignments "
                                                       "and, last, the one draw x[t] ~ ...",
                                 hint="observe data after the loop (y ~ normal(0, exp(x / 2))) or in a loop of "
                                      "its own")
        if st.loop is not None:
            raise self.src.error(s, f"{name}[{var}] is drawn twice: by this loop and by the loop at line "
                                    f"{st.loop.line}", hint=f"one loop draws {name}[2:{st.shape[0]}]")
        lv = tildes[0].args[0]
        if lv.args[1] is None or len(lv.args[1]) != 1 or _lag(lv.args[1][0], var) != 0:
            raise self.src.error(lv, f"the loop must draw {name}[{var}], the state at its own time step",
                                 hint=f"for {var} in 2:{st.shape[0]} {{ {name}[{var}] ~ normal({name}[{var} - 1], "
                                      f"1) }}")
        for b in body[:-1]:
            local = str(b.args[0].args[0])
            if local in self.kinds or local in self.data:
                raise self.src.error(b, f"a loop that draws a latent state only defines values local to one step; "
                                        f"{local!r} is defined outside it", hint=f"rename the local value {local}")
        lo, hi = (_concrete_int(self.interp.ev(n, dict(self.data), "numpy")) for n in (lo_n, hi_n))
        if lo != 2:
            raise self.src.error(lo_n, f"the loop must start right after the initial state {name}[1]: "
                                       f"for {var} in 2:{st.shape[0]}, not {lo}",
                                 hint=f"only {name}[1] is drawn outside the loop")
        if hi != st.shape[0]:
            raise self.src.error(hi_n, f"the loop must run to the last state {name}[{st.shape[0]}], not {hi}",
                                 hint=f"the declaration {name} : real[...] says how many states there are")
        assigns = [_markov_reads(b, name, var, self.src) for b in body[:-1]]
        dist = _markov_reads(tildes[0].args[1], name, var, self.src)
        defined = _assigned(assigns)
        reads = _free(assigns) + [r for r in _reads([dist.args[1], dist.args[2] or []], []) if r[0] not in defined]
        st.reads_t = any(n == var for n, _ in reads)
        reads = [r for r in reads if r[0] not in (_PREV, var)]
        for n, where in reads:
            if n in ("prev", "t"):
                raise self.src.error(where, f"a latent state's step cannot read a value named {n!r}",
                                     hint=f"rename {n}")
        st.loop, st.var, st.assigns, st.dist = s, var, assigns, dist
        st.step_parents = self.parents(reads, s)

    def state_site(self, st):
        """The `ppl.markov` site of a state: x[1] ~ init, x[t] ~ step(x[t - 1], t) (0-based t in ppl.markov)."""
        name, length = str(st.decl.args[0]), st.shape[0]
        if st.init is None:
            raise self.src.error(st.loop or st.decl, f"the initial state {name}[1] has no distribution",
                                 hint=f"draw it before the loop: {name}[1] ~ normal(0, 1)")
        if st.loop is None and length > 1:
            raise self.src.error(st.decl, f"{name}[2:{length}] have no distribution",
                                 hint=f"draw them in a loop: for t in 2:{length} {{ {name}[t] ~ normal({name}[t - 1], "
                                      f"1) }}")
        interp, shape, init_dist = self.interp, st.shape[1:], st.init.args[1]

        def init(**env):
            return _state_dist(interp.distribution(init_dist, env, pm.framework(list(env.values()))), shape)

        def step(prev, t=None, **env):
            env = {**env, _PREV: prev}
            if st.reads_t:
                env[st.var] = t + 1
            fw = pm.framework(list(env.values()))
            interp.run(st.assigns, env, fw)
            return _state_dist(interp.distribution(st.dist, env, fw), shape)

        dim = st.dims[0]
        by_name = dim.op == "name" and dim.args[0] in self.data
        self.sites[name] = markov(init, step, dim.args[0] if by_name else length, init_parents=st.init_parents,
                                  step_parents=["prev"] + (["t"] if st.reads_t else []) + st.step_parents
                                  if st.loop else ["prev"])
        self.sites[name].source = (self.src.filename, st.decl.line, st.decl.column)

    def check_loop(self, s):
        for b in _walk(s.args[3]):
            if b.op == "declare":
                raise self.src.error(b, "parameters cannot be declared inside a loop",
                                     hint="declare a vector before the loop (x ~ normal(0, 1) [T]) and index it")
            if b.op == "tilde" and str(b.args[0].args[0]) not in self.data:
                raise self.src.error(b, f"{str(b.args[0].args[0])!r} is not data: only data and latent states "
                                        f"can be drawn inside a loop",
                                     hint="declare latent vectors before the loop: x ~ normal(0, 1) [T]; or a "
                                          "latent state x : real[T] drawn by x[1] ~ ... and "
                                          "for t in 2:T { x[t] ~ ... }")

    def group_sites(self, g):
        stmts = [s for _, s in g.stmts]
        parents = self.parents(_free(stmts), g)
        interp = self.interp

        def run(env):
            env = dict(env)
            env["__logp"] = 0.0
            interp.run(stmts, env, pm.framework(list(env.values())))
            return env

        for n in g.names:
            self.site(n, "deterministic", lambda n=n, **env: run(env)[n], parents, self.positions[n])
        if g.logp:
            name = f"loop@{g.loop.line}"
            self.kinds[name], self.positions[name] = "factor", g.loop
            self.site(name, "factor", lambda **env: run(env)["__logp"], parents, g.loop)

    def check_reads_after_writes(self, groups):
        stmts = self.node.args[1]
        for g in groups:
            idx = [i for i, _ in g.stmts]
            first, last = min(idx), max(idx)
            for i in range(first + 1, last):
                if i in idx:
                    continue
                for n, where in _free([stmts[i]]):
                    if n in g.names:
                        raise self.src.error(where, f"{n!r} is read here before its last update at line "
                                                    f"{stmts[last].line}", hint=f"finish computing {n} first")


def _fmt_index(i):
    if isinstance(i, slice):
        return f"{'' if i.start is None else i.start + 1}:{'' if i.stop is None else i.stop}"
    return str(np.asarray(i) + 1) if not isinstance(i, int) else str(i + 1)


def _type_parts(typ):
    tname, bnode, dims = str(typ.args[0]), typ.args[1], typ.args[2]
    bounds = {}
    for b in (bnode.args if bnode is not None else []):
        key = str(b.args[0])
        if key not in ("lower", "upper"):
            raise SourceError(f"unknown bound {key!r}; use lower= and upper=")
        bounds[key] = (b, b.args[1])
    return tname, bounds, dims


# ---------------------------------------------------------------------------
# a sorted-iid distribution: ordered[K] ~ normal(...)
# ---------------------------------------------------------------------------
class SortedIID(D.Distribution):
    """K iid draws of a scalar family, sorted: density K! Π_k p(x_k) on the ordered cone (normalized).

    Stan's `ordered[K] x; x ~ normal(0, 2)` has the same posterior (its density lacks the K!).
    """

    def __init__(self, base, support):
        super().__init__(base.family, base.params, base.shape)
        self.base_family, self.support = base.family, support
        self.family = f"Sorted{base.family}"

    def _base(self):
        return D.Distribution(self.base_family, self.params, self.shape)

    def broadcast_params(self, rt):
        base = self._base()
        batch = tuple(base.lower(rt).batch_shape)
        return {k: rt.xp.broadcast_to(rt.asarray(v), batch) for k, v in self.params.items()}

    def lower(self, rt, params=None):
        base = self._base().lower(rt, params)
        return _sorted_class(rt.name, self.support)(base)


_SORTED = {}


def _sorted_class(runtime, support_name):
    """The runtime's distribution class of sorted iid draws (built once per runtime and support)."""
    key = (runtime, support_name)
    if key in _SORTED:
        return _SORTED[key]
    if runtime == "shapes":
        from .compiler.shapes import AbstractDistribution, Support

        class Sorted(AbstractDistribution):
            def __init__(self, base):
                self.base = base
                name = {"ordered": "OrderedVector", "positive_ordered": "PositiveOrderedVector"}[support_name]
                super().__init__(base.batch_shape[:-1], base.batch_shape[-1:], Support(name, 1))
    elif runtime == "numpyro":
        import jax.numpy as jnp
        from jax.scipy.special import gammaln
        import numpyro.distributions as nd
        cons = {"ordered": nd.constraints.ordered_vector, "positive_ordered": nd.constraints.positive_ordered_vector}

        class Sorted(nd.Distribution):
            support = cons[support_name]

            def __init__(self, base):
                self.base = base
                super().__init__(batch_shape=tuple(base.batch_shape[:-1]), event_shape=tuple(base.batch_shape[-1:]))

            def sample(self, key, sample_shape=()):
                return jnp.sort(self.base.sample(key, sample_shape), axis=-1)

            def log_prob(self, x):
                return self.base.log_prob(x).sum(-1) + gammaln(self.event_shape[0] + 1.0)
    else:
        import torch
        import pyro.distributions as pd
        cons = {"ordered": pd.constraints.ordered_vector, "positive_ordered": pd.constraints.positive_ordered_vector}

        class Sorted(pd.TorchDistribution):
            arg_constraints = {}
            support = cons[support_name]

            def __init__(self, base):
                self.base = base
                super().__init__(base.batch_shape[:-1], base.batch_shape[-1:], validate_args=False)

            def sample(self, sample_shape=torch.Size()):
                return torch.sort(self.base.sample(sample_shape), dim=-1).values

            def log_prob(self, x):
                return self.base.log_prob(x).sum(-1) + _pymath.lgamma(self.event_shape[0] + 1.0)
    _SORTED[key] = Sorted
    return Sorted


# ---------------------------------------------------------------------------
# a whole file
# ---------------------------------------------------------------------------
class RunSpec:
    """`sample NAME with METHOD(options) on RUNTIME`."""

    def __init__(self, target, method, options, runtime, node):
        self.target, self.method, self.options, self.runtime, self.node = target, method, options, runtime, node

    def __repr__(self):
        return f"sample {self.target} with {self.method}({self.options}) on {self.runtime}"


class PPLFile:
    """A loaded `.ppl` program: `.data`, `.models`, `.targets` (Python target objects) and `.runs`."""

    def __init__(self, filename, text):
        self.filename, self.text = filename, text
        self.data, self.models, self.targets, self.runs, self.functions = {}, {}, {}, [], {}
        self.positions = {}

    def target(self, name=None):
        """The target called `name`; by default the one the first `sample` statement names, else the last."""
        if name is None:
            if self.runs:
                name = self.runs[0].target
            elif self.targets:
                name = list(self.targets)[-1]
            elif self.models:
                name = list(self.models)[-1]
            else:
                raise SourceError("the program defines no model or target", filename=self.filename)
        if name in self.targets:
            return self.targets[name]
        if name in self.models:
            return self.models[name]
        raise SourceError(f"no target or model named {name!r}; defined: "
                          f"{', '.join(list(self.targets) + list(self.models)) or 'none'}", filename=self.filename)

    def run_spec(self, name=None):
        name = name or self.default_name()
        return next((r for r in self.runs if r.target == name), None)

    def default_name(self):
        if self.runs:
            return self.runs[0].target
        return (list(self.targets) or list(self.models) or [None])[-1]

    def compile(self, name=None, reference=None, fold=None):
        """`ppl.compile` of a target (with the `reference` and `fold` of its `sample` statement by default);
        errors about a site are located at its statement."""
        from .compiler import compile as compile_target
        options = self.run_spec(name).options if self.run_spec(name) else {}
        reference = options.get("reference") if reference is None else reference
        fold = options.get("fold", True) if fold is None else fold
        try:
            return compile_target(self.target(name), reference=reference, fold=fold)
        except SourceError:
            raise
        except PPLError as e:
            raise self.locate(e) from None

    def locate(self, e):
        """A `SourceError` at the statement of the first site the message of `e` names."""
        import re
        for m in re.finditer(r"'([^']+)'", str(e)):
            node = self.positions.get(m.group(1))
            if node is not None:
                return SourceError(str(e), filename=self.filename, line=node.line, column=node.column,
                                   source_line=source_line(self.text, node.line))
        return SourceError(str(e), filename=self.filename)

    def sample(self, name=None, **overrides):
        """Run `ppl.sample` on a target with the options of its `sample` statement, updated by `overrides`."""
        from .api import sample
        name = name or self.default_name()
        spec = self.run_spec(name)
        kw = dict(spec.options) if spec else {}
        if spec and spec.runtime:
            kw.setdefault("runtime", spec.runtime)
        if spec:
            kw.setdefault("method", spec.method)
        kw.update({k: v for k, v in overrides.items() if v is not None})
        compiled = self.compile(name, reference=kw.pop("reference", None), fold=kw.pop("fold", None))
        try:
            return sample(compiled, **kw)
        except SourceError:
            raise
        except TypeError as e:
            where = spec.node if spec else None
            raise SourceError(f"bad option for method {kw.get('method', 'is')!r}: {e}", filename=self.filename,
                              line=getattr(where, "line", None), column=getattr(where, "column", None),
                              source_line=source_line(self.text, getattr(where, "line", None))) from None


def _read_data(data, filename):
    if data is None:
        return {}
    if isinstance(data, (str, os.PathLike)):
        try:
            with open(data) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise SourceError(f"cannot read data file: {e}", filename=str(data)) from None
    if not isinstance(data, dict):
        raise SourceError(f"data must be a JSON object (name -> value), got {type(data).__name__}",
                          filename=filename)
    return dict(data)


class Loader:
    def __init__(self, text, filename, data, allow_python):
        self.src = _Src(text, filename)
        self.out = PPLFile(filename, text)
        self.given = data
        self.allow_python = allow_python
        self.defined = {}

    def define(self, name, node, what):
        if name in self.defined:
            raise self.src.error(node, f"{name!r} is already defined at line {self.defined[name].line}")
        self.defined[name] = node

    def load(self):
        prog = parse(self.src.text, self.src.filename)
        for item in prog.args:
            getattr(self, "_" + item.op)(item)
        return self.out

    def _data_decl(self, node):
        name, typ = str(node.args[0]), node.args[1]
        self.define(name, node, "data")
        if name not in self.given:
            raise self.src.error(node, f"data {name!r} is declared but no value was given",
                                 hint="pass it in the JSON file (--data data.json) or as a keyword argument")
        tname, bounds, dims = _type_parts(typ)
        if tname not in ("int", "real"):
            raise self.src.error(typ, f"data must be int or real (with dimensions), not {tname}")
        value = self.given[name]
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise self.src.error(node, f"data {name!r} is not numeric") from None
        interp = Interpreter(self.src, {}, self.out.data)
        shape = interp.shape(dims, dict(self.out.data), "numpy") if dims else ()
        if arr.shape != shape:
            raise self.src.error(typ, f"data {name!r} has shape {arr.shape}, but its declaration says {shape}")
        if not np.all(np.isfinite(arr)):
            raise self.src.error(node, f"data {name!r} has non-finite values")
        if tname == "int" and not np.all(arr == np.round(arr)):
            raise self.src.error(typ, f"data {name!r} is declared int but has non-integer values")
        for key, (b, expr) in bounds.items():
            limit = interp.ev(expr, dict(self.out.data), "numpy")
            bad = arr < limit if key == "lower" else arr > limit
            if np.any(bad):
                raise self.src.error(b, f"data {name!r} violates {key}={limit}")
        if tname == "int":
            self.out.data[name] = int(arr) if arr.ndim == 0 else arr.astype(np.int64)
        else:
            self.out.data[name] = float(arr) if arr.ndim == 0 else arr.astype(np.float32)

    def _use_stmt(self, node):
        name, spec = str(node.args[0]), str(node.args[1])[1:-1]
        self.define(name, node, "function")
        module, _, attr = spec.partition(":")
        if not self.allow_python:
            raise self.src.error(node, f"refusing to import Python module {module!r}: `use` runs Python code",
                                 hint="run with --allow-python (API: allow_python=True) if you trust it")
        if not module or not attr:
            raise self.src.error(node, f"expected \"module:attribute\", got {spec!r}")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except Exception as e:  # noqa: BLE001 (an import failure of the user's module)
            raise self.src.error(node, f"cannot import {spec!r}: {type(e).__name__}: {e}") from None
        if not callable(fn):
            raise self.src.error(node, f"{spec!r} is not callable")
        self.out.functions[name] = fn

    def _model(self, node):
        name = str(node.args[0])
        self.define(name, node, "model")
        b = ModelBuilder(node, self.src, self.out.data, self.out.functions)
        self.out.models[name] = b.build()
        for k, v in b.positions.items():
            self.out.positions.setdefault(k, v)

    def _target(self, node):
        name, expr, bindings = str(node.args[0]), node.args[1], node.args[2]
        self.define(name, node, "target")
        t = self.target_expr(expr)
        if bindings:
            obs = {}
            for b in bindings:
                key = str(b.args[0])
                obs[key] = Interpreter(self.src, {}, self.out.data).ev(b.args[1], dict(self.out.data), "numpy")
            try:
                t = t.condition(**obs)
            except PPLError as e:
                raise self.src.error(bindings[0], str(e)) from None
        self.out.targets[name] = t

    def target_expr(self, e):
        err = self.src.error
        if e.op == "name":
            n = e.args[0]
            if n in self.out.targets:
                return self.out.targets[n]
            if n in self.out.models:
                return self.out.models[n]
            raise err(e, f"{n!r} is not a model or target",
                      hint=_suggest(n, list(self.out.models) + list(self.out.targets)))
        if e.op == "pow":
            return self.algebra(e.args[1], lambda: self.target_expr(e.args[0]) ** self.number(e.args[1]))
        if e.op == "binop" and e.args[0] == "*":
            a, b = e.args[1], e.args[2]
            if _is_exp(b) or _is_exp(a):
                base, ex = (a, b) if _is_exp(b) else (b, a)
                return self.tilt(self.target_expr(base), ex.args[1].args[0][0])
            return self.algebra(e, lambda: self.target_expr(a) * self.target_expr(b))
        if e.op == "call" and e.args[0] == "geometric":
            args = e.args[1].args[0]
            if len(args) != 3 or e.args[1].args[1]:
                raise err(e, "geometric takes three arguments: geometric(p, q, w)")
            from .target import geometric
            return self.algebra(e, lambda: geometric(self.target_expr(args[0]), self.target_expr(args[1]),
                                                     self.number(args[2])))
        raise err(e, "not a target expression", hint="targets combine models with ^ (power), * (product), "
                                                     "geometric(p, q, w) and p * exp(r / lam) (tilt)")

    def algebra(self, node, build):
        try:
            return build()
        except SourceError:
            raise
        except PPLError as e:
            raise self.src.error(node, str(e)) from None

    def number(self, e):
        v = Interpreter(self.src, {}, self.out.data).ev(e, dict(self.out.data), "numpy")
        v = _scalar(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.src.error(e, "expected a number known before sampling")
        return float(v)

    def tilt(self, base, expr):
        """p * exp(r / lam): a reward tilt; r reads sites of the target by name, lam > 0 is a constant."""
        lam = 1.0
        if expr.op == "binop" and expr.args[0] == "/" and not _reads(expr.args[2], []):
            lam, expr = self.number(expr.args[2]), expr.args[1]
        sites = {n for m in base.models() for n in m.sites} | set(self.out.data)
        parents = []
        for n, where in _reads(expr, []):
            if n not in sites:
                raise self.src.error(where, f"the reward reads {n!r}, which is not a site of the tilted target",
                                     hint=_suggest(n, sorted(sites)))
            if n not in parents:
                parents.append(n)
        interp, data = Interpreter(self.src, self.out.functions, self.out.data), self.out.data
        label = _label(expr, self.src.text)

        def reward(**env):
            env = {**data, **env}
            return interp.ev(expr, env, pm.framework(list(env.values())))
        data_reads = [p for p in parents if p in data and not any(p in m.sites for m in base.models())]
        r = Reward(lambda **env: reward(**env), [p for p in parents if p not in data_reads], label)
        return self.algebra(expr, lambda: base.tilt(r, lam))

    def _sample(self, node):
        target, method, args, runtime = node.args
        target = str(target)
        if target not in self.out.targets and target not in self.out.models:
            raise self.src.error(node, f"sample: {target!r} is not a model or target")
        if args.args[0]:
            raise self.src.error(args.args[0][0], "method options are named: smc(particles = 4096)")
        options = {}
        for kw in args.args[1]:
            options[str(kw.args[0])] = self.option(kw.args[1])
        if runtime is not None and str(runtime) not in ("numpyro", "pyro"):
            raise self.src.error(runtime, f"unknown runtime {str(runtime)!r}; choose numpyro or pyro")
        self.out.runs.append(RunSpec(target, str(method), options, str(runtime) if runtime else None, node))

    def option(self, e):
        if e.op == "string":
            return e.args[0]
        if e.op == "name" and e.args[0] in self.out.models:
            return self.out.models[e.args[0]]
        if e.op == "name" and e.args[0] in ("true", "false", "True", "False"):
            return e.args[0].lower() == "true"
        if e.op == "call" and e.args[0] not in pm.BUILTINS:
            if e.args[1].args[0]:
                raise self.src.error(e, "options are named: hmc(steps = 5)")
            return {"name": e.args[0], **{str(k.args[0]): self.option(k.args[1]) for k in e.args[1].args[1]}}
        return _scalar(Interpreter(self.src, {}, self.out.data).ev(e, dict(self.out.data), "numpy"))


def _is_exp(e):
    return e.op == "call" and e.args[0] == "exp" and len(e.args[1].args[0]) == 1 and not e.args[1].args[1]


def _label(expr, text):
    line = source_line(text, expr.line) or ""
    return line[expr.column - 1:].strip()[:40] or "reward"


def load_ppl(path_or_text, data=None, allow_python=False, filename=None, **values):
    """Load a `.ppl` program (a path or the text itself) with `data` (a dict or a JSON path) and keyword values.

    Returns a `PPLFile`: `.targets`, `.models`, `.target(name)`, `.compile(name)`, `.sample(name, **options)`.
    `use NAME from "module:attr"` is refused unless `allow_python=True`.
    """
    text = path_or_text
    if isinstance(path_or_text, os.PathLike) or (isinstance(path_or_text, str) and "\n" not in path_or_text
                                                 and path_or_text.endswith(".ppl")):
        try:
            with open(path_or_text) as f:
                text = f.read()
        except OSError as e:
            raise SourceError(f"cannot read program: {e.strerror}", filename=str(path_or_text)) from None
        filename = filename or str(path_or_text)
    filename = filename or "<string>"
    given = _read_data(data, filename)
    given.update(values)
    try:
        return Loader(text, filename, given, allow_python).load()
    except RecursionError:
        raise SourceError("the program nests too deeply", filename=filename) from None


__all__ = ["load_ppl", "parse", "PPLFile", "SortedIID", "Target", "Power", "Product", "Geometric", "Tilt"]
