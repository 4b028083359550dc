"""MCMC kernels that leave a density π(z) ∝ exp(log p(z)) invariant; they see only that density.

As in BlackJAX, a kernel is `step(rt, key, state, logdensity, step_size, chol, **options) -> (state, info)`
over a `State(z, log_p, grad, aux)` [N particles]: `logdensity(z) -> (log p, ∇ log p, aux)` is batched over
particles, `grad` is zeros of shape [N, 0] for gradient-free kernels (their caller's density need not compute
it), and `aux` is whatever else the caller's density returns, carried opaquely with the particle it belongs to
(JAX's `has_aux`: SMC keeps log π0 and log L there, so that its weights need no second evaluation; () for
none). A kernel never sees a temperature or a time: the caller builds the density it targets (SMC
log π0 + β log L, FKC log γ at the next time, PMMH its particle filter's estimate).

The preconditioner `chol` is a matrix L (None: the identity); kernels work in whitened coordinates y = L⁻¹ z,
so a proposal increment dy is the increment L dy in z (no triangular solve) and the Jacobian of the linear
map cancels in every acceptance ratio. SMC passes the Cholesky factor of the cloud's weighted covariance
(`cloud_cholesky`), as BlackJAX's inverse mass matrix.

A kernel is a `Kernel` record: its step function, whether it needs gradients, its target acceptance rate, its
initial step size as a function of the dimension D, and its own options (the keyword defaults of its step
function). Each lives in one file of this package and registers itself with `@kernel(...)`; SMC forwards
`kernel_options` to it untouched. A step is two parts: `draw(rt, key, z)`, the step's random numbers, and the
deterministic `propose(rt, draws, state, logdensity, step_size, chol, **options)`, a pure function of arrays
that SMC compiles once (`rt.jit_pure`: on torch one fused graph for a move's density evaluations and
arithmetic, which eager torch dispatches op by op; inlined into the jitted step on JAX). `info` is the
per-particle acceptance [N] (booleans).
"""
import importlib
import inspect
import pkgutil
from collections import namedtuple
from typing import Callable, NamedTuple

from ...errors import UnknownNameError, ValueRangeError

State = namedtuple("State", "z log_p grad aux")


class Kernel(NamedTuple):
    name: str
    step: Callable
    needs_grad: bool
    target_accept: float
    initial_step: Callable
    defaults: dict
    draw: Callable
    propose: Callable

    def options(self, given):
        """The kernel's options: its defaults updated by `given` (a dict; unknown names are an error)."""
        if not isinstance(given, (dict, type(None))):
            raise ValueRangeError(f"kernel_options must be a dict of option -> value, got {given!r:.60}")
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise UnknownNameError(f"kernel {self.name!r} has no option {', '.join(map(repr, unknown))} "
                                   f"(its options: {known})")
        return {**self.defaults, **given}


KERNELS = {}


def kernel(needs_grad, target_accept, initial_step, draw):
    """Register a kernel's `propose` function as the kernel named after it, with its random draws `draw`; its
    keyword defaults are its options."""
    def deco(propose):
        params = inspect.signature(propose).parameters.values()
        defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

        def step(rt, key, state, logdensity, step_size, chol=None, **options):
            return propose(rt, draw(rt, key, state.z), state, logdensity, step_size, chol, **options)
        step.__name__ = propose.__name__
        KERNELS[propose.__name__] = Kernel(propose.__name__, step, needs_grad, target_accept, initial_step,
                                           defaults, draw, propose)
        return propose
    return deco


def get_kernel(name):
    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")
    if name not in KERNELS:
        raise UnknownNameError(f"unknown SMC kernel {name!r}; choose one of {', '.join(sorted(KERNELS))}")
    return KERNELS[name]


def at(logdensity, z):
    """The state at positions z [N, D]: one evaluation of the density."""
    return State(z, *logdensity(z))


def unwhiten(dy, chol):
    """The increment L dy in z of an increment dy [N, D] in y."""
    return dy if chol is None else dy @ chol.T


def whiten_grad(grad, chol):
    """The gradient L' ∇ in y of a gradient ∇ [N, D] in z."""
    return grad if chol is None else grad @ chol


def accept(rt, u, log_ratio, new, old):
    """Metropolis–Hastings selection per particle with uniform draws u [N]: (state, accepted [N]); NaN ratios
    (non-finite proposals) are rejections."""
    xp = rt.xp
    log_ratio = xp.where(xp.isnan(log_ratio), -float("inf"), log_ratio)
    ok = xp.log(u) < log_ratio
    pick = lambda a, b: xp.where(ok.reshape(ok.shape + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
    return rt.tree_map(pick, new, old), ok


def cloud_cholesky(rt, z, log_w):
    """Cholesky factor of the weighted covariance of z [N, D] (weights exp(log_w), normalized), with jitter."""
    xp = rt.xp
    w = xp.exp(log_w - xp.logsumexp(log_w))
    w = xp.where(xp.isnan(w), 1.0 / z.shape[0], w)  # every weight vanished: the caller reports it
    mean = xp.sum(w[:, None] * z, axis=0)
    c = z - mean
    cov = xp.einsum("n,ni,nj->ij", w, c, c)
    d = z.shape[-1]
    jitter = 1e-6 * xp.sum(xp.diag(cov)) / d + 1e-8
    return xp.cholesky(cov + jitter * xp.diag(xp.ones((d,))))
