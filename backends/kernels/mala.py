"""Metropolis-adjusted Langevin: y' = y + (h²/2) g + h ε with g = L' ∇log π(z), Metropolis–Hastings corrected."""
from . import Particles, accept, kernel, log_target


def draw(rt, key, z):
    """ε [N, D] and the acceptance uniforms [N]."""
    k1, k2 = rt.split(key, 2)
    return rt.normal(k1, z.shape), rt.uniform(k2, (z.shape[0],))


@kernel(needs_grad=True, target_accept=0.574, initial_step=lambda d: 1.65 / d ** (1 / 6), draw=draw)
def mala(rt, draws, p, beta, h, chol, density):
    """MALA in y: forward residual h ε, reverse residual −(h ε + (h²/2)(g + g'))."""
    xp = rt.xp
    eps, u_accept = draws
    g = p.grad @ chol
    dy = 0.5 * h * h * g + h * eps
    z = p.z + dy @ chol.T
    ref, rest, grad = density(z, beta)
    new = Particles(z, ref, rest, grad)
    back = h * eps + 0.5 * h * h * (g + grad @ chol)
    log_q = (xp.sum(h * h * eps * eps, axis=-1) - xp.sum(back * back, axis=-1)) / (2 * h * h)
    return accept(rt, u_accept, log_target(new, beta) - log_target(p, beta) + log_q, new, p)
