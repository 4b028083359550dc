"""Math for user functions (rewards, energies, deterministic sites) that runs on both runtimes.

Each function dispatches on the type of its first array argument: torch tensors go
to torch, everything else to jax.numpy. User code is written for one particle;
the runtime vmaps it over particles.
"""
import numpy as _np


def _is_torch(x):
    return type(x).__module__.startswith("torch")


def namespace(*xs):
    """The numpy-like namespace of the runtime owning `xs` (torch shim or jax.numpy)."""
    for x in xs:
        if _is_torch(x):
            from .backends.pyro_runtime import PyroRuntime
            return PyroRuntime(str(x.device)).xp
    from .backends.numpyro_runtime import NumPyroRuntime
    return NumPyroRuntime.xp


def _unary(name):
    def f(x):
        return getattr(namespace(x), name)(x)
    f.__name__ = name
    return f


exp, log, log1p, expm1, sqrt, abs, sin, cos, tanh = (
    _unary(n) for n in ("exp", "log", "log1p", "expm1", "sqrt", "abs", "sin", "cos", "tanh"))


def square(x):
    return x * x


def sum(x, axis=None):
    return namespace(x).sum(x, axis=axis)


def mean(x, axis=None):
    return namespace(x).mean(x, axis=axis)


def logsumexp(x, axis=None):
    return namespace(x).logsumexp(x, axis=axis)


def dot(a, b):
    return (a * b).sum(-1)


pi = _np.pi
