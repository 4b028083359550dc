"""What the runtimes' amortized-proposal trainers share (`backends/{numpyro,pyro}_proposals.py`): the default
proposal's density, a diagonal Gaussian N(mean(c), diag σ(c)²) on the unconstrained space, the
standardization of its contexts, and the checks of what a proposal returns."""
import math

import numpy as np

from .errors import InferenceError, ShapeError


def _diag_normal_log_prob(xp, y, mean, log_scale):
    """log N(y; mean, diag σ²) over the last axis, σ = exp(log_scale)."""
    u = (y - mean) * xp.exp(-log_scale)
    return (-0.5 * u * u - log_scale).sum(-1) - 0.5 * y.shape[-1] * math.log(2 * math.pi)


def _standardization(contexts):
    """(shift, scale) of the flattened contexts [M, ...]: their mean and sd per entry (1 where constant)."""
    flat = contexts.reshape(len(contexts), -1).astype(np.float64)
    shift = flat.mean(0)
    scale = flat.std(0)
    return shift, np.where(scale > 1e-8 * (1 + np.abs(shift)), scale, 1.0)


def raise_nonfinite():
    raise InferenceError("the amortized training loss became non-finite (a diverging proposal scale, or target "
                         "densities overflowing): lower lr, or start closer (sampler='prior')")


def _check_gaussian(mean, log_scale, b, dim):
    """Refuse a proposal's (mean, log σ) unless each is [B, D]."""
    for name, a in (("mean", mean), ("log_scale", log_scale)):
        if tuple(a.shape) != (b, dim):
            raise ShapeError(f"the proposal returned {name} of shape {tuple(a.shape)} for {b} contexts; expected "
                             f"({b}, {dim}), the dimension of the targets' unconstrained latent space")


def _check_draws(y, b, n, dim):
    """Refuse a proposal's draws unless [B, n, D]."""
    if tuple(y.shape) != (b, n, dim):
        raise ShapeError(f"the proposal's sample(n, c) returned shape {tuple(y.shape)}; expected [B, n, D] = "
                         f"{(b, n, dim)}")
