"""A loop that observes a data vector element by element, `for t in 1:N { y[t] ~ F(args) }`, as the one
observation of the whole vector `y ~ F(args') [N]`: the same site `y` (so that the compiler's rules see it as
the vector form, e.g. the forward algorithm for `y[t] ~ normal(mu[z[t]], 1)`), with the same density.

args' is args with each read `v[t]` replaced by `v`. Per step each argument is one number, and
Σ_t log F(y_t | args(t)) = log F(y | args') holds when args' is the stack over t of args(t): the arguments
are built from `v[t]` (v a vector of N values), `a[i]` (a a vector, i such an expression), numbers, values
that do not read t and are numbers, + − * / ^, unary minus and the elementwise built-ins of `ELEMENTWISE`;
the family has scalar parameters (not categorical, dirichlet, multivariate_normal). The shapes of values
that read parameters are checked when the site is evaluated (`check`), those of data here. Any other loop
is left as it is (a factor `loop@LINE`).
"""
import dataclasses

import numpy as np

from ..stdlib import distributions as D
from . import syntax as S
from .names import reads
from .sequence import ELEMENTWISE
from .symbolic import Symbolic

_VECTOR_CLASSES = {cls for cls, _ in D.PARAM_EVENT_DIMS}


def whole_observation(loop, data, interp, src):
    """(`y ~ F(args') [N]`, check) for a loop as in the module docstring, else None; `check(env, fw)` raises a
    located error where a value read by a step is not the one number per step the loop needs."""
    body, var = loop.body, loop.var
    if len(body) != 1 or not isinstance(body[0], S.Tilde):
        return None
    s = body[0]
    lv, dist = s.target, s.dist
    y = data.get(lv.name)
    if y is None or isinstance(y, Symbolic) or lv.indices is None or len(lv.indices) != 1 \
            or not _is(lv.indices[0], var) or np.ndim(y) != 1:
        return None
    n = len(y)
    try:
        bounds = [interp.ev(e, dict(data), "numpy") for e in (loop.lo, loop.hi)]
    except Exception:  # noqa: BLE001 -- bounds that read parameters or missing data: left to the loop
        return None
    if any(isinstance(b, Symbolic) for b in bounds) or [np.ndim(b) for b in bounds] != [0, 0] \
            or [float(b) for b in bounds] != [1.0, float(n)]:
        return None
    if not isinstance(dist, S.Dist) or dist.shape or dist.truncation is not None or dist.family not in D.FAMILIES \
            or D.FAMILIES[dist.family][0] in _VECTOR_CLASSES:
        return None
    checks = []
    args = _elementwise(dist.args, var, n, checks)
    if args is None or not all(_data_check(c, data, interp) for c in checks):
        return None
    whole = dataclasses.replace(dist, args=args, shape=(S.Number(n, line=dist.line, column=dist.column),))
    tilde = S.Tilde(S.LValue(lv.name, line=lv.line, column=lv.column), whole, line=s.line, column=s.column)
    runtime = [c for c in checks if not _reads_data_only(c[0], data)]

    def check(env, fw):
        for node, length in runtime:
            _check_shape(node, length, interp.ev(node, env, fw), lv.name, var, src)
    return tilde, check


def _is(e, var):
    return isinstance(e, S.Name) and e.name == var


def _reads(e, var):
    return any(name == var for name, _ in reads(e))


def _elementwise(e, var, n, checks):
    """`e` with each `v[var]` read as `v`, or None where its value per step may not be one number; `checks`
    gets (node, length): the value of node must be a number (length 0), or a vector of `length` values (None:
    any)."""
    def each(items):
        out = [_elementwise(x, var, n, checks) for x in items]
        return None if any(x is None for x in out) else tuple(out)

    if isinstance(e, S.Args):
        pos, kws = each(e.positional), each(k.value for k in e.keywords)
        if pos is None or kws is None:
            return None
        return dataclasses.replace(e, positional=pos, keywords=tuple(dataclasses.replace(k, value=v)
                                                                       for k, v in zip(e.keywords, kws)))
    if not _reads(e, var):
        checks.append((e, 0))
        return e
    if isinstance(e, S.Index) and len(e.indices) == 1 and not _reads(e.value, var):
        if _is(e.indices[0], var):
            checks.append((e.value, n))
            return e.value
        index = _elementwise(e.indices[0], var, n, checks)
        if index is None or isinstance(index, S.Slice):
            return None
        checks.append((e.value, None))
        return dataclasses.replace(e, indices=(index,))
    if isinstance(e, S.BinOp) and e.op in ("+", "-", "*", "/"):
        both = each((e.left, e.right))
        return None if both is None else dataclasses.replace(e, left=both[0], right=both[1])
    if isinstance(e, S.Pow):
        both = each((e.base, e.exponent))
        return None if both is None else dataclasses.replace(e, base=both[0], exponent=both[1])
    if isinstance(e, S.Neg):
        operand = _elementwise(e.operand, var, n, checks)
        return None if operand is None else dataclasses.replace(e, operand=operand)
    if isinstance(e, S.Call) and e.func in ELEMENTWISE and not e.args.keywords \
            and len(e.args.positional) == ELEMENTWISE[e.func]:
        args = each(e.args.positional)
        return None if args is None else dataclasses.replace(e, args=dataclasses.replace(e.args, positional=args))
    return None


def _reads_data_only(node, data):
    return all(name in data and not isinstance(data[name], Symbolic) for name, _ in reads(node))


def _fits(value, length):
    shape = tuple(getattr(value, "shape", ()))
    return shape == () if length == 0 else len(shape) == 1 and (length is None or shape[0] == length)


def _data_check(c, data, interp):
    """False where a check on a value of data alone fails (the loop is then left as it is)."""
    node, length = c
    if not _reads_data_only(node, data):
        return True
    try:
        return _fits(np.asarray(interp.ev(node, dict(data), "numpy")), length)
    except Exception:  # noqa: BLE001 -- an error of the expression is the loop's to report
        return False


def _check_shape(node, length, value, y, var, src):
    if _fits(value, length):
        return
    what = "a number" if length == 0 else f"a vector of {length} values" if length else "a vector"
    raise src.error(node, f"the loop observes {y}[{var}] one number at a time: this value must be {what}, got "
                          f"shape {list(getattr(value, 'shape', ()))}",
                    hint=f"index it by {var} for one value per step, or observe the whole vector in one "
                         f"statement, {y} ~ ...")
