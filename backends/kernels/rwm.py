"""Random-walk Metropolis: y' = y + h ε, accepted with π(z') / π(z)."""
from . import accept, at, kernel, unwhiten


def draw(rt, key, z):
    """ε [N, D] and the acceptance uniforms [N]."""
    k1, k2 = rt.split(key, 2)
    return rt.normal(k1, z.shape), rt.uniform(k2, (z.shape[0],))


@kernel(needs_grad=False, target_accept=0.3, initial_step=lambda d: 2.38 / d ** 0.5, draw=draw)
def rwm(rt, draws, s, logdensity, h, chol):
    """Random-walk Metropolis with proposal covariance h² L L'. The current state's log p is kept, never
    evaluated again: with a density that is a random unbiased estimate (PMMH) the chain stays exact."""
    eps, u_accept = draws
    new = at(logdensity, s.z + unwhiten(h * eps, chol))
    return accept(rt, u_accept, new.log_p - s.log_p, new, s)
