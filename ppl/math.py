"""Math for user functions (rewards, energies, deterministic sites) that runs on both runtimes.

Each function dispatches on the types of its array arguments: torch tensors go to
torch, JAX arrays (and tracers) to jax.numpy, anything else (Python numbers,
numpy arrays) to numpy, so constant expressions fold to plain numbers. User code
is written for one particle; the runtime vmaps it over particles.
"""

import functools
import math as _math

import numpy as _np


def framework(*xs):
    """'torch', 'jax' or 'numpy': the library owning the first array among `xs` (nested lists/dicts searched)."""
    for x in xs:
        mod = type(x).__module__
        if mod.startswith("torch"):
            return "torch"
        if mod.startswith("jax") or mod.startswith("jaxlib"):
            return "jax"
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
    """'torch' for a torch `nn.Module` (or any torch object), 'jax' for a flax module, None otherwise: the
    framework a user's model object computes in."""
    for cls in type(obj).__mro__:
        if cls.__module__.startswith("torch.nn"):
            return "torch"
        if cls.__module__.startswith("flax"):
            return "jax"
    return "torch" if type(obj).__module__.startswith("torch") else None


@functools.lru_cache(maxsize=None)
def _xp(framework, device="cpu"):
    """The numpy-like namespace of the runtime that computes in `framework` (through the runtime registry)."""
    from .backends.runtime import get_runtime, runtime_of
    return get_runtime(runtime_of(framework), device).xp


class _NumpyXP:
    """numpy with the few names the runtimes' namespaces add."""

    def __getattr__(self, name):
        return getattr(_np, name)

    @staticmethod
    def logsumexp(x, axis=None, keepdims=False):
        from scipy.special import logsumexp
        return logsumexp(x, axis=axis, keepdims=keepdims)


_NUMPY = _NumpyXP()


def namespace(*xs):
    """The numpy-like namespace of the runtime owning `xs` (torch shim, jax.numpy, or numpy for constants)."""
    fw = framework(*xs)
    if fw == "torch":
        return _xp(fw, next(str(x.device) for x in _leaves(xs) if type(x).__module__.startswith("torch")))
    if fw == "jax":
        return _xp(fw)
    return _NUMPY


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


exp, log, log1p, expm1, sqrt, abs, sin, cos, tan, tanh, floor, ceil, sign = (
    _unary(n) for n in ("exp", "log", "log1p", "expm1", "sqrt", "abs", "sin", "cos", "tan", "tanh", "floor",
                        "ceil", "sign"))


def square(x):
    return x * x


def pow(x, y):
    return x ** y


def sum(x, axis=None):
    return namespace(x).sum(x, axis=axis)


def mean(x, axis=None):
    return namespace(x).mean(x, axis=axis)


def prod(x, axis=None):
    fw = framework(x)
    if fw == "torch":
        return x.prod() if axis is None else x.prod(dim=axis)
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


def inv_logit(x):
    """1 / (1 + exp(−x))."""
    fw = framework(x)
    if fw == "torch":
        import torch
        return torch.sigmoid(x)
    if fw == "jax":
        import jax
        return jax.nn.sigmoid(x)
    return 1.0 / (1.0 + _np.exp(-x))


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


def lgamma(x):
    fw = framework(x)
    if fw == "torch":
        import torch
        return torch.lgamma(x)
    if fw == "jax":
        import jax
        return jax.scipy.special.gammaln(x)
    from scipy.special import gammaln
    return gammaln(x)


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
    """The matrix transpose (the last two axes swapped)."""
    return x.T if x.ndim <= 2 else x.swapaxes(-1, -2) if framework(x) != "torch" else x.transpose(-1, -2)


def cholesky(a):
    """The lower Cholesky factor L of a symmetric positive-definite a = L Lᵀ. On both runtimes a matrix that is not
    positive-definite gives NaN entries (JAX's behaviour; torch would raise and stop a whole batch of particles
    for one proposal outside the domain)."""
    fw = framework(a)
    if fw == "torch":
        import torch
        factor, info = torch.linalg.cholesky_ex(a)
        return torch.where((info == 0)[..., None, None], factor, torch.nan)
    return namespace(a).linalg.cholesky(a)


def diag(x):
    """A diagonal matrix from a vector, or the diagonal of a matrix."""
    fw = framework(x)
    if fw == "torch":
        import torch
        return torch.diag_embed(x) if x.ndim == 1 else torch.diagonal(x, dim1=-2, dim2=-1)
    return namespace(x).diag(x)


def asarray(a, like):
    """The constant `a` (numpy array, list, number) as an array of the runtime and device of `like`.

    numpy and torch do not mix (`ndarray * Tensor` fails), so a user function that captures numpy
    constants converts them with this to run on both runtimes: `(x * ppl.math.asarray(a, like=x)).sum()`."""
    fw = framework(like)
    if fw == "torch":
        import torch
        return torch.as_tensor(_np.asarray(a, dtype=_np.float32), device=like.device)
    if fw == "jax":
        import jax.numpy as jnp
        return jnp.asarray(_np.asarray(a, dtype=_np.float32))
    return _np.asarray(a)


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
    fw = framework(like)
    if fw == "numpy":
        return _np.full(shape, value, dtype=_np.float32)
    return namespace(like).full(shape, value) if fw == "torch" else namespace(like).full(shape, value, dtype="float32")


def scan(f, init, xs, like=None):
    """carry, ys = scan(f, init, xs): the recursion carry, y_i = f(carry, xs[i]) over the leading axis of `xs`.

    jax.lax.scan on JAX (compiled once, not unrolled); a Python loop on torch and numpy,
    where `xs` may also be a range (its items are then Python ints).
    """
    fw = framework(init, like)
    if fw == "jax":
        import jax
        import jax.numpy as jnp
        if isinstance(xs, range):
            xs = jnp.arange(xs.start, xs.stop, xs.step, dtype=jnp.int32)
        return jax.lax.scan(f, init, xs)
    carry, ys = init, []
    for x in xs:
        carry, y = f(carry, x)
        ys.append(y)
    if ys and all(y is not None for y in ys):
        ys = namespace(*ys).stack(ys) if fw == "torch" else _np.stack(ys)
    else:
        ys = None
    return carry, ys


pi = _np.pi
e = _math.e
inf = _math.inf

#: the names the `.ppl` language can call (also its reference list of built-ins)
BUILTINS = {n: globals()[n] for n in (
    "exp", "log", "log1p", "expm1", "sqrt", "abs", "sin", "cos", "tan", "tanh", "floor", "ceil", "sign",
    "square", "pow", "sum", "mean", "prod", "max", "min", "maximum", "minimum", "variance", "sd", "logsumexp",
    "log_sum_exp", "softmax", "log_softmax", "inv_logit", "logit", "log_inv_logit", "log1m_inv_logit",
    "softplus", "log_mix", "lgamma", "where", "cumsum", "dot", "matmul", "transpose", "cholesky", "diag")}

