"""The interpreter of expressions and statements, for one particle.

User text is never evaluated as Python: a site function walks the syntax tree. It computes with the
runtime of its input arrays through `ppl.math` (`fw` is "numpy" for data and constants, "jax" or "torch"
inside a runtime, which vmaps it over particles). Indices are 1-based and slices `a:b` include both
ends, as in Stan. Loops of more than `UNROLL` iterations become a runtime scan; a loop runs at most
`MAX_ITERATIONS` times, and the compiler's shape trace runs a longer loop's first `UNROLL` iterations and its
last (which check indices affine in the loop variable at both ends) rather than all of them.
"""
import math

import numpy as np

from .. import math as pm
from ..backends import runtime as runtimes
from ..compiler.shapes import ShapeRuntime, tracing_shapes
from ..errors import PPLError, SourceError
from ..stdlib import distributions as D
from . import syntax as S
from .names import assigned
from .source import suggest

#: loops with at most this many iterations are unrolled; longer ones become a runtime scan
UNROLL = 8
#: the most iterations of one loop (a longer one is an error at its bounds: Python would run it for minutes)
MAX_ITERATIONS = 10 ** 6

_BINOPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b,
           "%": lambda a, b: a % b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
           "<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}


def scalar(v):
    """numpy 0-d values become Python numbers, so constants mix with torch and JAX arrays."""
    if isinstance(v, np.ndarray) and v.ndim == 0 or isinstance(v, np.generic):
        return v.item()
    return v


def concrete_int(v):
    """A Python int from a value known before sampling (data or a constant), else None."""
    v = scalar(v)
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    try:
        a = np.asarray(v)
    except Exception:  # a tracer or a tensor under vmap
        return None
    if a.ndim == 0 and a.dtype.kind in "iuf" and math.isfinite(float(a)) and float(a) == int(a):
        return int(a)
    return None


def _as_index(v, fw, node, src, size=None):
    """0-based index from a 1-based value: a Python int, or an integer array on the runtime."""
    i = concrete_int(v)
    if i is not None:
        if i < 1 or (size is not None and i > size):
            raise src.error(node, f"index {i} is out of range" + (f" 1..{size}" if size is not None else ""),
                            hint="indices start at 1")
        return i - 1
    rt = pm.runtime(v)
    return (np.asarray(v) - 1).astype(int) if rt is None else rt.asindex(v - 1)


class Interpreter:
    """Evaluates expressions and statements of one model (or target) against an environment dict.

    `src` (a `Source`) locates errors; `functions` are the `use`d Python callables by name."""

    def __init__(self, src, functions=None):
        self.src, self.functions = src, {} if functions is None else functions

    # -- expressions --------------------------------------------------------
    def ev(self, node, env, fw):
        if isinstance(node, S.Number):   # an integer past int32 is a real (JAX's integers are 32-bit)
            return float(node.value) if isinstance(node.value, int) and abs(node.value) >= 2 ** 31 else node.value
        if isinstance(node, S.Name):
            if node.name not in env:
                raise self.src.error(node, f"unknown name {node.name!r}")
            return env[node.name]
        try:   # by the node's class: _binop for a BinOp, ...
            return getattr(self, "_" + type(node).__name__.lower())(node, env, fw)
        except SourceError:
            raise
        except PPLError as e:
            raise self.src.relocate(node, e) from None
        except Exception as e:  # noqa: BLE001 (a runtime's own error, located and wrapped)
            raise self.src.error(node, _describe(e), hint=_hint(e)) from None

    def _string(self, node, env, fw):
        raise self.src.error(node, "a string is not a value here")

    def _binop(self, node, env, fw):
        a, b = self.ev(node.left, env, fw), self.ev(node.right, env, fw)
        if node.op == "@":
            return a @ b
        return scalar(_BINOPS[node.op](a, b))

    def _pow(self, node, env, fw):
        return scalar(self.ev(node.base, env, fw) ** self.ev(node.exponent, env, fw))

    def _neg(self, node, env, fw):
        return -self.ev(node.operand, env, fw)

    def _conditional(self, node, env, fw):
        c = self.condition(node.cond, env, fw)
        if isinstance(c, bool):
            return self.ev(node.then if c else node.orelse, env, fw)
        return _select(c, self.ev(node.then, env, fw), self.ev(node.orelse, env, fw))

    def condition(self, node, env, fw):
        """The value of an `if`'s or a `? :`'s condition: a Python bool where it is known before sampling (data,
        constants, the index of an unrolled loop), else a runtime boolean (then both branches are evaluated)."""
        c = scalar(self.ev(node, env, fw))
        if getattr(c, "shape", ()) not in ((), (1,)) and getattr(c, "ndim", 0) > 0:
            raise self.src.error(node, f"a condition is one true/false value, not an array of shape "
                                       f"{tuple(c.shape)}", hint="compare scalars, or use where(c, a, b) elementwise")
        if pm.framework(c) == "numpy":
            return bool(np.asarray(c).reshape(()))
        return c.reshape(()) if getattr(c, "ndim", 0) else c

    def _and(self, node, env, fw):
        a, b = self.ev(node.left, env, fw), self.ev(node.right, env, fw)
        return a and b if fw == "numpy" else pm.namespace(a, b).logical_and(a, b)

    def _or(self, node, env, fw):
        a, b = self.ev(node.left, env, fw), self.ev(node.right, env, fw)
        return a or b if fw == "numpy" else pm.namespace(a, b).logical_or(a, b)

    def _not(self, node, env, fw):
        a = self.ev(node.operand, env, fw)
        return (not a) if fw == "numpy" else pm.namespace(a).logical_not(a)

    def _vector(self, node, env, fw):
        xs = [self.ev(x, env, fw) for x in node.items]
        if pm.framework(*xs) == "numpy":   # constants: on the runtime of the environment's arrays
            return np.asarray(xs, dtype=np.float32) if fw == "numpy" else _full_like(_like(env), xs)
        xp = pm.namespace(*xs)
        like = next(x for x in xs if pm.framework(x) != "numpy")
        return xp.stack([x if pm.framework(x) != "numpy" else _full_like(like, x) for x in xs])

    def _index(self, node, env, fw):
        x = self.ev(node.value, env, fw)
        return x[self.indices(node.indices, x, env, fw)]

    def indices(self, items, x, env, fw):
        shape = tuple(getattr(x, "shape", ()))
        if len(items) > len(shape):
            raise self.src.error(items[0], f"{len(items)} indices for a value with {len(shape)} dimension(s)")
        out = []
        for k, it in enumerate(items):
            size = int(shape[k]) if shape else None
            if isinstance(it, S.Slice):
                lo, hi = (None if e is None else concrete_int(self.ev(e, env, fw)) for e in (it.lo, it.hi))
                for e, v in zip((it.lo, it.hi), (lo, hi)):
                    if e is not None and v is None:
                        raise self.src.error(e, "slice bounds must be integers known before sampling "
                                                "(data or constants)")
                if (lo is not None and lo < 1) or (hi is not None and size is not None and hi > size):
                    raise self.src.error(it, f"slice {lo}:{hi} is out of range 1..{size}",
                                         hint="indices start at 1 and a:b includes b")
                first, last = 1 if lo is None else lo, size if hi is None else hi
                if last is not None and first > last + 1:
                    raise self.src.error(it, f"slice {'' if lo is None else lo}:{'' if hi is None else hi} is "
                                             f"reversed: a:b runs up from a to b",
                                         hint="a:b with b = a - 1 is empty; there is no reversed slice")
                out.append(slice(None if lo is None else lo - 1, hi))
            else:
                out.append(_as_index(self.ev(it, env, fw), fw, it, self.src, size))
        return tuple(out)

    def _arguments(self, args, env, fw):
        return ([self.ev(a, env, fw) for a in args.positional],
                {k.name: self.ev(k.value, env, fw) for k in args.keywords})

    def _call(self, node, env, fw):
        name = node.func
        if name in D.FAMILIES:
            raise self.src.error(node, f"the distribution {name}(...) is not a value",
                                 hint=f"use it after ~, or as logpdf({name}(...), x)")
        if name == "logpdf":
            return self.logpdf(node, env, fw)
        if name == "ode":
            return self.ode(node, env, fw)
        pos, kw = self._arguments(node.args, env, fw)
        if name in ("zeros", "ones"):
            return scalar(getattr(pm, name)(*pos, like=_like(env)))
        if name in ("rep", "rep_vector", "rep_matrix"):
            return getattr(pm, name)(*pos, like=_like(env))
        if name == "size":
            if len(pos) != 1:
                raise self.src.error(node, "size(x) takes one argument")
            return int(getattr(pos[0], "shape", (1,))[0]) if getattr(pos[0], "shape", ()) else 1
        fn = pm.BUILTINS.get(name) or self.functions.get(name)
        if fn is None:
            raise self.src.error(node, f"unknown function {name!r}", hint=suggest(name, list(pm.BUILTINS)))
        if "axis" in kw and name in pm.BUILTINS:
            kw["axis"] = self._axis(next(k for k in node.args.keywords if k.name == "axis"), kw["axis"])
        if isinstance(fn, Function):
            return fn.call(pos, kw, node)
        return scalar(fn(*pos, **kw))

    def _axis(self, node, k):
        """A built-in's `axis = k` counts from 1 as indexing does (k = 1 the first axis); negative k from the
        end; returned 0-based for `ppl.math`."""
        k = concrete_int(k)
        if k is None or k == 0:
            raise self.src.error(node, "axis must be a nonzero integer known before sampling: axes count from 1 "
                                       "as indices do", hint="axis = 1 is the first axis, axis = -1 the last")
        return k - 1 if k > 0 else k

    def distribution(self, node, env, fw, shape=None):
        """The `Distribution` of `normal(mu, sigma) [dims]`: a `Dist`, or a `Call` inside logpdf(...)."""
        name = node.func if isinstance(node, S.Call) else node.family
        if name not in D.FAMILIES:
            raise self.src.error(node, f"unknown distribution {name!r}",
                                 hint=suggest(name, list(D.FAMILIES)) or f"known: {', '.join(sorted(D.FAMILIES))}")
        pos, kw = self._arguments(node.args, env, fw)
        if shape is None and isinstance(node, S.Dist) and node.shape:
            shape = self.shape(node.shape, env, fw)
        try:
            d = D.make(name, *pos, shape=shape or (), **kw)
            truncation = getattr(node, "truncation", None)
            if truncation is not None:
                lower, upper = (None if e is None else self.ev(e, env, fw) for e in truncation)
                d = D.truncated(d, lower, upper)
            return d
        except SourceError:
            raise
        except PPLError as e:
            raise self.src.relocate(node, e) from None

    def shape(self, exprs, env, fw):
        out = []
        for e in exprs:
            n = concrete_int(self.ev(e, env, fw))
            if n is None or n < 0:
                raise self.src.error(e, "a dimension must be a non-negative integer known before sampling")
            out.append(n)
        return tuple(out)

    def ode(self, node, env, fw):
        """`ode(f, y0, t0, ts, args..., method = "dopri5", rtol =, atol =, max_steps =)`: the solution of
        dy/dt = f(t, y, args...) at the times ts (`ppl.ode`); f a function of the program or a `use`d one."""
        args = node.args.positional
        if not args or not isinstance(args[0], S.Name) or not callable(self.functions.get(args[0].name)):
            raise self.src.error(args[0] if args else node, "ode takes the right-hand side's function first: "
                                                             "ode(f, y0, t0, ts, args...)",
                                 hint="define it: function f(t : real, y : vector, k : real) { return -k * y }")
        fn = self.functions[args[0].name]
        pos = [self.ev(a, env, fw) for a in args[1:]]
        kw = {k.name: k.value.value if isinstance(k.value, S.String) else self.ev(k.value, env, fw)
              for k in node.args.keywords}
        from ..ode import ode
        return ode(fn, *pos, **kw)

    def logpdf(self, node, env, fw):
        args = node.args.positional
        if len(args) != 2 or not isinstance(args[0], S.Call) or args[0].func not in D.FAMILIES:
            raise self.src.error(node, "logpdf takes a distribution and a value: logpdf(normal(mu, sigma), y)")
        d = self.distribution(args[0], env, fw)
        return log_density(d, self.ev(args[1], env, fw), env)

    # -- statements ----------------------------------------------------------
    def run(self, stmts, env, fw):
        """Execute statements in order, mutating `env`; observations add to env['__logp']."""
        for s in stmts:   # by the statement's class: _s_assign for an Assign, ...
            getattr(self, "_s_" + type(s).__name__.lower())(s, env, fw)

    def _s_assign(self, s, env, fw):
        self.store(s.target, self.ev(s.value, env, fw), env, fw)

    def _s_augassign(self, s, env, fw):
        old = self.ev(s.target.expr(), env, fw)
        self.store(s.target, scalar(_BINOPS[s.op[0]](old, self.ev(s.value, env, fw))), env, fw)

    def store(self, lv, value, env, fw):
        if lv.indices is None:
            env[lv.name] = value
            return
        x = env[lv.name]
        try:
            env[lv.name] = _set_index(x, self.indices(lv.indices, x, env, fw), value, fw)
        except SourceError:
            raise
        except Exception as e:  # noqa: BLE001
            raise self.src.error(lv, _describe(e), hint=_hint(e)) from None

    def _s_tilde(self, s, env, fw):
        value = self.ev(s.target.expr(), env, fw)
        d = self.distribution(s.dist, env, fw)
        env["__logp"] = env["__logp"] + pm.sum(log_density(d, value, env))

    def _s_observeexpr(self, s, env, fw):
        value = self.ev(s.value, env, fw)
        d = self.distribution(s.dist, env, fw)
        env["__logp"] = env["__logp"] + pm.sum(log_density(d, value, env))

    def _s_factor(self, s, env, fw):
        env["__logp"] = env["__logp"] + self.ev(s.value, env, fw)

    def _s_if(self, s, env, fw):
        """The chosen branch where the condition is known before sampling; else both branches, each value they
        assign (and the log density they add) taken from the branch the condition picks (`where`)."""
        c = self.condition(s.cond, env, fw)
        if isinstance(c, bool):
            self.run(s.then if c else s.orelse, env, fw)
            return
        branches = []
        for body in (s.then, s.orelse):
            branch = dict(env)
            self.run(body, branch, fw)
            branches.append(branch)
        for n in sorted(assigned([s]) | ({"__logp"} & set(env))):
            if n in branches[0] and n in branches[1]:   # else local to the one branch that defines it
                env[n] = _select(c, branches[0][n], branches[1][n])

    def _s_keep(self, s, env, fw):
        raise self.src.error(s, "keep is a statement of a model, outside loops, ifs and functions",
                             hint="list the values to save at the model's top level: keep theta, mu")

    def _s_return(self, s, env, fw):
        raise self.src.error(s, "return is the last statement of a function", hint="a model has no return")

    def _s_for(self, s, env, fw):
        lo, hi = (concrete_int(self.ev(n, env, fw)) for n in (s.lo, s.hi))
        if lo is None or hi is None:
            raise self.src.error(s.lo if lo is None else s.hi,
                                 "loop bounds must be integers known before sampling (data or constants)")
        if hi - lo + 1 > MAX_ITERATIONS:
            raise self.src.error(s.lo, f"this loop runs {hi - lo + 1} times; a loop runs at most {MAX_ITERATIONS:,} "
                                       f"times", hint="use vector operations (sum, cumsum, slices x[a:b])")
        before = set(env)
        carried = [n for n in sorted(assigned(s.body) | {"__logp"}) if n in env]
        if hi - lo + 1 <= UNROLL or fw == "numpy":
            steps = range(lo, hi + 1)
            if hi - lo + 1 > UNROLL and tracing_shapes():   # shapes only: the first iterations and the last
                steps = [*range(lo, lo + UNROLL), hi]
            for t in steps:
                env[s.var] = t
                self.run(s.body, env, fw)
        else:
            like = _like(env)

            def step(carry, t):
                local = dict(env)
                local.update(carry)
                local[s.var] = t
                self.run(s.body, local, fw)
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


class Function:
    """A function of the program, `function name(a : real, y : vector) { ...; return value }`: pure, typed
    arguments (real, int, vector, matrix), evaluated on the runtime of its arguments; also a plain Python callable
    (an ODE's right-hand side)."""

    _RANKS = {"real": 0, "int": 0, "vector": 1, "matrix": 2}

    def __init__(self, node, interp):
        self.node, self.interp = node, interp
        self.__name__ = node.name

    def __call__(self, *args):
        return self.call(list(args), {}, None)

    def call(self, args, keywords, at):
        """The function's value at `args`; `at` is the call's node (None from Python), where argument errors are
        located and which errors inside the function name."""
        node, src = self.node, self.interp.src
        params = ", ".join(f"{p.name} : {p.type.name}" for p in node.params)
        if keywords or len(args) != len(node.params):
            raise src.error(at, f"{node.name}({params}) takes {len(node.params)} argument(s), got "
                                f"{len(args)}{' and keywords' if keywords else ''}",
                            hint=f"defined at line {node.line}")
        env = {}
        for p, v, where in zip(node.params, args, at.args.positional if at is not None else node.params):
            rank = len(getattr(v, "shape", ()))
            integral = concrete_int(v) is not None or getattr(getattr(v, "dtype", None), "is_floating_point", None) \
                is False or str(getattr(v, "dtype", "")).startswith("int")
            if rank != self._RANKS[p.type.name] or (p.type.name == "int" and not integral):
                raise src.error(where, f"argument {p.name} of {node.name} is declared {p.type.name}, got "
                                       f"{'an array of shape ' + str(tuple(v.shape)) if rank else 'a number'}"
                                       f"{'' if rank or p.type.name != 'int' else ' that is not an integer'}",
                                hint=f"{node.name}({params})")
            env[p.name] = v
        fw = pm.framework(list(env.values()))
        try:
            self.interp.run(node.body[:-1], env, fw)
            return self.interp.ev(node.body[-1].value, env, fw)
        except SourceError as e:
            if at is None:
                raise
            note = f"in {node.name}, called at line {at.line}: {(src.line(at.line) or '').strip()}"
            raise SourceError(e.message, filename=e.filename, line=e.line, column=e.column,
                              source_line=e.source_line, hint=f"{e.hint}; {note}" if e.hint else note) from None


def _select(c, a, b):
    """where(c, a, b) for a runtime boolean c, with constant branches put on c's runtime."""
    a, b = (_full_like(c, x) if pm.framework(x) == "numpy" else x for x in (a, b))
    return pm.where(c, a, b)


def log_density(d, value, env):
    """Elementwise log density of the `Distribution` d at `value`, on the runtime of the arrays in `env`, or for
    constants on the runtime whose run is under way (`runtime.in_use`)."""
    rt = pm.runtime(_like(env, value))
    if rt is None and tracing_shapes():   # the compiler's numpy trace: shapes only
        return d.lower(ShapeRuntime()).log_prob(value)
    rt = rt or runtimes.in_use()
    return d.lower(rt).log_prob(rt.asarray(value))


def _like(env, *more):
    """An array of the runtime in use (the first runtime array found), or None for constants."""
    for v in list(more) + list(env.values()):
        if pm.framework(v) != "numpy" and hasattr(v, "shape"):
            return v
    return None


def _full_like(like, value):
    """The constant `value` on the runtime and device of `like`, of like's dtype where that is a float (the run's
    precision), else float32 (numpy float32 where like is None)."""
    if like is None:
        return np.asarray(value, dtype=np.float32)
    return pm.runtime(like).full_like(like, value, None if "float" in str(like.dtype) else np.float32)


def _set_index(x, idx, value, fw):
    """x with x[idx] = value, out of place, on the runtime of x or value; for constants, on the runtime `fw`
    where it compiles the site function (its indices may be traced), else in numpy."""
    rt = pm.runtime(x, value)
    if rt is None:
        rt = pm.framework_runtime(fw)
        rt = rt if rt is not None and rt.compiles_loops else None
    if rt is not None:
        return rt.set_index(x, idx, value)
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
