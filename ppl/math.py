"""Math for user functions (rewards, energies, deterministic sites) that runs on every runtime.

Each function dispatches on the types of its array arguments through the runtime registry
(`backends.runtime.KNOWN`): an array of a runtime's framework (a torch tensor, a JAX array or tracer) is
computed by that runtime's numpy-like namespace `xp` and members, anything else (Python numbers, numpy
arrays) by numpy, so constant expressions fold to plain numbers. User code is written for one particle; the
runtime vmaps it over particles.
"""

import functools
import importlib
import math as _math

import numpy as _np

from .backends import runtime as _runtimes
from .errors import ValueRangeError

_ARRAYS = _runtimes.ARRAYS


def framework(*xs):
    """The framework of the first runtime array among `xs` ('torch', 'jax'; nested lists/dicts searched), or
    'numpy' for constants."""
    for x in xs:
        fw = _ARRAYS.get(type(x).__module__.partition(".")[0])
        if fw is not None:
            return fw
        if isinstance(x, (list, tuple)):
            f = framework(*x)
            if f != "numpy":
                return f
        elif isinstance(x, dict):
            f = framework(*x.values())
            if f != "numpy":
                return f
    return "numpy"


def module_framework(obj):
    """The framework a user's model object computes in ('torch' for a torch `nn.Module` or any torch object,
    'jax' for a flax module; `backends.runtime.module_owner`), None for anything else."""
    owner = _runtimes.module_owner(obj)
    return None if owner is None else _runtimes.KNOWN[owner].framework


@functools.lru_cache(maxsize=None)
def _runtime_at(framework, device):
    return _runtimes.get_runtime(_runtimes.runtime_of(framework), device)


@functools.lru_cache(maxsize=None)
def _device_of(framework):
    return _runtimes.runtime_class(_runtimes.runtime_of(framework)).device_of


def runtime(*xs):
    """The runtime computing on the first runtime array among `xs` (nested lists/dicts searched; on its device),
    or None for constants."""
    for x in xs:
        fw = _ARRAYS.get(type(x).__module__.partition(".")[0])
        if fw is not None:
            return _runtime_at(fw, _device_of(fw)(x))
        if isinstance(x, (list, tuple, dict)):
            rt = runtime(*(x.values() if isinstance(x, dict) else x))
            if rt is not None:
                return rt
    return None


def framework_runtime(fw):
    """The runtime of the framework `fw` on its default device, or None for 'numpy'."""
    return None if fw == "numpy" else _runtime_at(fw, "cpu")


class _NumpyXP:
    """numpy with the few names the runtimes' namespaces add."""

    def __getattr__(self, name):
        return getattr(_np, name)

    @staticmethod
    def logsumexp(x, axis=None, keepdims=False):
        from scipy.special import logsumexp
        return logsumexp(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def cholesky(a):
        return _np.linalg.cholesky(a)

    @staticmethod
    def solve_triangular(a, b, lower=False):
        from scipy.linalg import solve_triangular
        return solve_triangular(a, b, lower=lower)


_NUMPY = _NumpyXP()


def namespace(*xs):
    """The numpy-like namespace of the runtime owning `xs` (its `xp`), or numpy for constants."""
    rt = runtime(*xs)
    return _NUMPY if rt is None else rt.xp


def _leaves(xs):
    for x in xs:
        if isinstance(x, (list, tuple)):
            yield from _leaves(x)
        elif isinstance(x, dict):
            yield from _leaves(list(x.values()))
        else:
            yield x


def _unary(name):
    def f(x):
        return getattr(namespace(x), name)(x)
    f.__name__ = name
    f.__doc__ = f"Elementwise {name}(x)."
    return f


exp, log, log1p, expm1, sqrt, abs, sin, cos, tan, tanh, floor, ceil, sign, exp2 = (
    _unary(n) for n in ("exp", "log", "log1p", "expm1", "sqrt", "abs", "sin", "cos", "tan", "tanh", "floor",
                        "ceil", "sign", "exp2"))


def _log_base(name, base):
    def f(x=None):
        return _math.log(base) if x is None else getattr(namespace(x), name)(x)
    f.__name__ = name
    f.__doc__ = f"Base-{base} logarithm of x; {name}() with no argument is log {base} (Stan)."
    return f


log2, log10 = _log_base("log2", 2), _log_base("log10", 10)

#: Stan name -> the function's name in scipy.special and in each runtime's `special_functions`
SPECIAL = {"erf": "erf", "erfc": "erfc", "Phi": "ndtr", "inv_Phi": "ndtri", "digamma": "digamma",
           "lgamma": "gammaln", "inv_logit": "expit"}


def _special(name):
    def f(x):
        rt = runtime(x)
        return getattr(importlib.import_module("scipy.special") if rt is None else rt.special_functions,
                       SPECIAL[name])(x)
    f.__name__ = name
    f.__doc__ = f"Elementwise {name}(x) (the special function {SPECIAL[name]})."
    return f


erf, erfc, Phi, inv_Phi, digamma, lgamma, inv_logit = (_special(n) for n in SPECIAL)


def _lift(*xs):
    """`xs` with the constants among them (numbers, numpy arrays) as arrays of the runtime, dtype and device of
    their first runtime array (torch's binary functions and concatenation take no numpy arrays or numbers)."""
    like = next((x for x in _leaves(xs) if framework(x) != "numpy"), None)
    if like is None:
        return xs
    rt = runtime(like)
    return tuple(x if framework(x) != "numpy" else rt.full_like(like, x) for x in xs)


def _binary(name):
    def f(a, b):
        a, b = _lift(a, b)
        return getattr(namespace(a, b), name)(a, b)
    f.__name__ = name
    f.__doc__ = f"Elementwise {name}(a, b)."
    return f


hypot, fmin, fmax = _binary("hypot"), _binary("fmin"), _binary("fmax")


def square(x):
    return x * x


def pow(x, y):
    return x ** y


def sum(x, axis=None):
    return namespace(x).sum(x, axis=axis)


def mean(x, axis=None):
    return namespace(x).mean(x, axis=axis)


def prod(x, axis=None):
    return namespace(x).prod(x, axis=axis)


def max(x, axis=None):
    return namespace(x).max(x, axis=axis)


def min(x, axis=None):
    return namespace(x).min(x, axis=axis)


def maximum(a, b):
    return namespace(a, b).maximum(a, b)


def minimum(a, b):
    return namespace(a, b).minimum(a, b)


def variance(x, axis=None):
    """Sample variance (denominator n − 1, as Stan's `variance`)."""
    return namespace(x).var(x, axis=axis, ddof=1)


def sd(x, axis=None):
    return sqrt(variance(x, axis))


def logsumexp(x, axis=None):
    return namespace(x).logsumexp(x, axis=axis)


def log_sum_exp(a, b=None):
    """logsumexp of a vector, or log(exp(a) + exp(b)) of two values."""
    if b is None:
        return logsumexp(a)
    m = maximum(a, b)
    return m + log(exp(a - m) + exp(b - m))


def softmax(x):
    """exp(x) / Σ exp(x) over the last axis."""
    return exp(log_softmax(x))


def log_softmax(x):
    return x - namespace(x).logsumexp(x, axis=-1, keepdims=True)


def logit(p):
    return log(p) - log1p(-p)


def log_inv_logit(x):
    """log σ(x) = −softplus(−x)."""
    return -softplus(-x)


def log1m_inv_logit(x):
    """log(1 − σ(x)) = −softplus(x)."""
    return -softplus(x)


def softplus(x):
    """log(1 + exp(x)), stably."""
    return maximum(x, 0.0 * x) + log1p(exp(-abs(x)))


def log_mix(theta, lp1, lp2):
    """log(θ exp(lp1) + (1 − θ) exp(lp2)): a two-component mixture density, elementwise."""
    return log_sum_exp(log(theta) + lp1, log1p(-theta) + lp2)


def where(cond, a, b):
    return namespace(cond, a, b).where(cond, a, b)


def cumsum(x, axis=0):
    return namespace(x).cumsum(x, axis=axis)


def dot(a, b):
    """Σ_i a_i b_i over the last axis."""
    return (a * b).sum(-1)


def matmul(a, b):
    return a @ b


def transpose(x):
    """The matrix transpose (the last two axes swapped); a vector or a number as it is."""
    if _np.ndim(x) < 2:
        return x
    return x.T if x.ndim == 2 else x.swapaxes(-1, -2)


def cholesky(a):
    """The lower Cholesky factor L of a symmetric positive-definite a = L Lᵀ. On both runtimes a matrix that is not
    positive-definite gives NaN entries (JAX's behaviour; torch would raise and stop a whole batch of particles
    for one proposal outside the domain)."""
    return namespace(a).cholesky(a)


def diag(x):
    """A diagonal matrix from a vector, or the diagonal of a matrix."""
    return namespace(x).diag(x)


def _defined(name, fn, doc):
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return fn


# Stan's functions that are one expression of the ones above: (name, function, what it computes)
(inv, inv_sqrt, inv_square, fma, log1m, log1m_exp, log_diff_exp, lmultiply, cbrt, Phi_approx, tgamma, lbeta,
 binomial_coefficient_log, sort_asc, sort_desc, dot_self, crossprod, tcrossprod, add_diag) = (
    _defined(*row) for row in (
        ("inv", lambda x: 1.0 / x, "1 / x."),
        ("inv_sqrt", lambda x: 1.0 / sqrt(x), "1 / √x."),
        ("inv_square", lambda x: 1.0 / (x * x), "1 / x²."),
        ("fma", lambda x, y, z: x * y + z, "x y + z."),
        ("log1m", lambda x: log1p(-x), "log(1 − x)."),
        ("log1m_exp", lambda x: where(x > -_math.log(2), log(-expm1(x)), log1p(-exp(x))),
         "log(1 − exp(x)) for x ≤ 0, stably (NaN for x > 0)."),
        ("log_diff_exp", lambda a, b: a + log1m_exp(b - a), "log(exp(a) − exp(b)) for a ≥ b, stably."),
        ("lmultiply", lambda a, b: where((a == 0) & (b == 0), 0.0 * a, a * log(b)), "a log b, 0 where a = b = 0."),
        ("cbrt", lambda x: sign(x) * abs(x) ** (1 / 3), "The real cube root x^(1/3)."),
        ("Phi_approx", lambda x: inv_logit(0.07056 * x ** 3 + 1.5976 * x),
         "The logistic approximation σ(0.07056 x³ + 1.5976 x) of the standard normal CDF."),
        ("tgamma", lambda x: exp(lgamma(x)) * where(x > 0, 1.0, 1.0 - 2.0 * (floor(x) % 2)),
         "Γ(x) = ±exp(log|Γ(x)|), the sign (−1)^⌈−x⌉ for x < 0."),
        ("lbeta", lambda a, b: lgamma(a) + lgamma(b) - lgamma(a + b),
         "log B(a, b) = log Γ(a) + log Γ(b) − log Γ(a + b)."),
        ("binomial_coefficient_log", lambda n, k: lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1),
         "log C(n, k) = log Γ(n + 1) − log Γ(k + 1) − log Γ(n − k + 1), for real n ≥ k ≥ 0."),
        ("sort_asc", lambda x: namespace(x).sort(x), "The elements of a vector in ascending order."),
        ("sort_desc", lambda x: -sort_asc(-x), "The elements of a vector in descending order."),
        ("dot_self", lambda x: dot(x, x), "Σ_i x_i²."),
        ("crossprod", lambda x: transpose(x) @ x, "xᵀ x."),
        ("tcrossprod", lambda x: x @ transpose(x), "x xᵀ."),
        ("add_diag", lambda m, d: m + diag(namespace(m).ones_like(diag(m)) * d),
         "m with d (a number or a vector) added to its diagonal."),
    ))
lchoose, cumulative_sum, diag_matrix, diagonal, cholesky_decompose = (binomial_coefficient_log, cumsum, diag, diag,
                                                                      cholesky)


def quad_form(a, b):
    """bᵀ a b: a matrix for a matrix b, a number for a vector b."""
    a, b = _lift(a, b)
    return transpose(b) @ a @ b


def diag_pre_multiply(v, m):
    """diag(v) m: row i of m times v_i."""
    v, m = _lift(v, m)
    return v[:, None] * m


def diag_post_multiply(m, v):
    """m diag(v): column j of m times v_j."""
    m, v = _lift(m, v)
    return m * v


def mdivide_left_tri_low(tri, b):
    """L⁻¹ b for the lower-triangular part L of `tri`, by forward substitution (b a vector or a matrix)."""
    tri, b = _lift(tri, b)
    return namespace(tri, b).solve_triangular(tri, b, lower=True)


def inverse(a):
    """The inverse of a square matrix."""
    return namespace(a).linalg.inv(a)


def log_determinant(a):
    """log |det a|."""
    return namespace(a).linalg.slogdet(a)[1]


def append_row(x, y):
    """x on top of y: two vectors (or numbers) joined; a matrix and a matrix or vector stacked as rows."""
    x, y = _lift(x, y)
    rank = 2 if 2 in (_np.ndim(x), _np.ndim(y)) else 1
    x, y = (v.reshape((1,) * (rank - _np.ndim(v)) + tuple(v.shape)) for v in (x, y))
    return namespace(x, y).concatenate([x, y], axis=0)


def append_col(x, y):
    """x beside y, columns joined: a vector is a column (Stan's `vector`), so two vectors of n give an n x 2
    matrix and a matrix n x m with a vector gives n x (m + 1)."""
    x, y = _lift(x, y)
    x, y = (v.reshape(tuple(v.shape) + (1,)) if _np.ndim(v) == 1 else v for v in (x, y))
    return namespace(x, y).concatenate([x, y], axis=-1)


def rep_vector(x, n, like=None):
    """A vector of n copies of the number x."""
    return rep(x, n, like=like)


def rep_matrix(x, m, n=None, like=None):
    """An m x n matrix of the number x; rep_matrix(v, n) of a vector v: n copies of v as columns."""
    if n is not None:
        return rep(x, m, n, like=like)
    v = _lift(x, like)[0] if like is not None else x
    return namespace(v).broadcast_to(v[:, None], (v.shape[0], int(m)))


def segment(x, i, n):
    """The n elements of x from the i-th (1-based, as Stan's segment): x[i], ..., x[i + n − 1]."""
    start, n = _concrete_int(i), int(n)
    if start is None:   # a traced index (a compiled loop's variable) or one per particle (under vmap)
        rt = runtime(i)
        return rt.dynamic_slice(x, rt.asindex(i) - 1, n)
    if start < 1 or n < 0 or start + n - 1 > x.shape[0]:
        raise ValueRangeError(f"segment(x, {start}, {n}) reaches outside x of size {x.shape[0]}: "
                              f"it needs 1 <= i and i + n - 1 <= {x.shape[0]}")
    return x[start - 1:start - 1 + n]


def _concrete_int(v):
    """`v` as a Python int where it is known (a number, a numpy or concrete array), None for a tracer."""
    rt = runtime(v)
    return None if rt is not None and not rt.is_concrete(v) else int(v)


def rows(x):
    """The number of rows (the size of a vector)."""
    return int(_np.shape(x)[0])


def cols(x):
    """The number of columns of a matrix (1 for a vector, Stan's column vector)."""
    return int(_np.shape(x)[1]) if _np.ndim(x) >= 2 else 1


def num_elements(x):
    """The number of elements."""
    return int(_np.prod(_np.shape(x), dtype=int))


def _points(x):
    """Points as rows: a vector of n reals is n points in one dimension."""
    return x[:, None] if _np.ndim(x) == 1 else x


def _gp(name, kernel, formula):
    def f(*args):
        if len(args) not in (3, 4):
            raise ValueRangeError(f"{name} takes (x, alpha, rho) or (x1, x2, alpha, rho), got {len(args)} arguments")
        x1, x2, alpha, rho = _lift(*(args if len(args) == 4 else (args[0],) + args))
        d2 = ((_points(x1)[:, None, :] - _points(x2)[None, :, :]) / rho) ** 2
        r2 = d2.sum(-1)
        return alpha ** 2 * kernel(r2, where(r2 > 0, sqrt(where(r2 > 0, r2, 1.0)), 0.0))
    f.__name__ = name
    f.__doc__ = (f"K_ij = α² {formula}, r = |x_i − x'_j| / ρ, of points x (a vector of reals, or a matrix whose "
                 f"rows are points; ρ a number or one length scale per dimension) with themselves, {name}(x, α, "
                 f"ρ), or with the points x', {name}(x, x', α, ρ) (Stan's arguments: sigma = α, length_scale = "
                 f"ρ). r is differentiable at r = 0 (its gradient there taken as 0).")
    return f


gp_exp_quad_cov, gp_matern32_cov, gp_matern52_cov, gp_exponential_cov = (_gp(*row) for row in (
    ("gp_exp_quad_cov", lambda r2, r: exp(-0.5 * r2), "exp(−r² / 2)"),
    ("gp_matern32_cov", lambda r2, r: (1 + _math.sqrt(3) * r) * exp(-_math.sqrt(3) * r), "(1 + √3 r) exp(−√3 r)"),
    ("gp_matern52_cov", lambda r2, r: (1 + _math.sqrt(5) * r + 5 / 3 * r2) * exp(-_math.sqrt(5) * r),
     "(1 + √5 r + 5 r² / 3) exp(−√5 r)"),
    ("gp_exponential_cov", lambda r2, r: exp(-r), "exp(−r)")))


def asarray(a, like):
    """The constant `a` (numpy array, list, number) as an array of the runtime and device of `like`.

    numpy and torch do not mix (`ndarray * Tensor` fails), so a user function that captures numpy
    constants converts them with this to run on both runtimes: `(x * ppl.math.asarray(a, like=x)).sum()`."""
    rt = runtime(like)
    return _np.asarray(a) if rt is None else rt.full_like(like, a, _np.float32)


def zeros(*shape, like=None):
    """An array of zeros of `shape` on the runtime of `like` (numpy when None)."""
    return _full(shape, 0.0, like)


def ones(*shape, like=None):
    return _full(shape, 1.0, like)


def rep(value, *shape, like=None):
    """An array of `shape` filled with `value` (Stan's rep_vector / rep_array)."""
    if framework(value) != "numpy":
        return namespace(value).broadcast_to(value, tuple(int(s) for s in shape))
    return _full(shape, float(value), like)


def _full(shape, value, like):
    shape = tuple(int(s) for s in shape)
    rt = runtime(like)     # (made in float32, its `dtype`)
    return _np.full(shape, value, dtype=_np.float32) if rt is None else rt.xp.full(shape, value, dtype=rt.dtype)


def scan(f, init, xs, like=None):
    """carry, ys = scan(f, init, xs): the recursion carry, y_i = f(carry, xs[i]) over the leading axis of `xs`.

    The runtime's scan where it compiles loops (`compiles_loops`: JAX's, compiled once, not unrolled); else a
    Python loop, where `xs` may also be a range (its items are then Python ints).
    """
    rt = runtime(init, like)
    if rt is not None and rt.compiles_loops:
        if isinstance(xs, range):
            xs = rt.xp.asarray(_np.arange(xs.start, xs.stop, xs.step, dtype=_np.int32))
        return rt.scan(f, init, xs)
    carry, ys = init, []
    for x in xs:
        carry, y = f(carry, x)
        ys.append(y)
    return carry, namespace(*ys).stack(ys) if ys and all(y is not None for y in ys) else None


pi = _np.pi
e = _math.e
inf = _math.inf
#: Stan's constants, called with no arguments in the language: pi(), e(), ...
CONSTANTS = {"pi": pi, "e": e, "sqrt2": _math.sqrt(2), "not_a_number": _math.nan, "positive_infinity": inf,
             "negative_infinity": -inf, "machine_precision": float(_np.finfo(_np.float64).eps)}


def _constant(name, value):
    def f():
        return value
    f.__name__ = name
    f.__doc__ = f"The constant {name} = {value!r}."
    return f


#: the names the `.ppl` language can call (also its reference list of built-ins)
BUILTINS = {n: globals()[n] for n in (
    "exp", "log", "log1p", "expm1", "sqrt", "abs", "sin", "cos", "tan", "tanh", "floor", "ceil", "sign",
    "square", "pow", "sum", "mean", "prod", "max", "min", "maximum", "minimum", "variance", "sd", "logsumexp",
    "log_sum_exp", "softmax", "log_softmax", "inv_logit", "logit", "log_inv_logit", "log1m_inv_logit",
    "softplus", "log_mix", "lgamma", "where", "cumsum", "dot", "matmul", "transpose", "cholesky", "diag",
    "exp2", "log2", "log10", "erf", "erfc", "Phi", "inv_Phi", "digamma", "hypot", "fmin", "fmax", "inv", "inv_sqrt",
    "inv_square", "fma", "log1m", "log1m_exp", "log_diff_exp", "lmultiply", "cbrt", "Phi_approx", "tgamma", "lbeta",
    "binomial_coefficient_log", "lchoose", "sort_asc", "sort_desc", "dot_self", "crossprod", "tcrossprod",
    "add_diag", "cumulative_sum", "diag_matrix", "diagonal", "cholesky_decompose", "quad_form",
    "diag_pre_multiply", "diag_post_multiply", "mdivide_left_tri_low", "inverse", "log_determinant", "append_row",
    "append_col", "rep_vector", "rep_matrix", "segment", "rows", "cols", "num_elements", "gp_exp_quad_cov",
    "gp_matern32_cov", "gp_matern52_cov", "gp_exponential_cov")} | {n: _constant(n, v) for n, v in CONSTANTS.items()}

