"""Metropolis-adjusted Langevin: y' = y + (h²/2) g + h ε with g = L' ∇log π(z), Metropolis–Hastings corrected."""
from . import accept, at, kernel, unwhiten, whiten_grad


def draw(rt, key, z):
    """ε [N, D] and the acceptance uniforms [N]."""
    k1, k2 = rt.split(key, 2)
    return rt.normal(k1, z.shape), rt.uniform(k2, (z.shape[0],))


@kernel(needs_grad=True, target_accept=0.574, initial_step=lambda d: 1.65 / d ** (1 / 6), draw=draw)
def mala(rt, draws, s, logdensity, h, chol):
    """MALA in y: forward residual h ε, reverse residual −(h ε + (h²/2)(g + g'))."""
    xp = rt.xp
    eps, u_accept = draws
    g = whiten_grad(s.grad, chol)
    new = at(logdensity, s.z + unwhiten(0.5 * h * h * g + h * eps, chol))
    back = h * eps + 0.5 * h * h * (g + whiten_grad(new.grad, chol))
    log_q = (xp.sum(h * h * eps * eps, axis=-1) - xp.sum(back * back, axis=-1)) / (2 * h * h)
    return accept(rt, u_accept, new.log_p - s.log_p + log_q, new, s)
