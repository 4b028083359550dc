"""Random-walk Metropolis: y' = y + h ε, accepted with π(z') / π(z)."""
from . import Particles, accept, kernel, log_target


def draw(rt, key, z):
    """ε [N, D] and the acceptance uniforms [N]."""
    k1, k2 = rt.split(key, 2)
    return rt.normal(k1, z.shape), rt.uniform(k2, (z.shape[0],))


@kernel(needs_grad=False, target_accept=0.3, initial_step=lambda d: 2.38 / d ** 0.5, draw=draw)
def rwm(rt, draws, p, beta, h, chol, density):
    """Random-walk Metropolis with proposal covariance h² Σ."""
    eps, u_accept = draws
    z = p.z + (h * eps) @ chol.T
    ref, rest, _ = density(z, beta)
    new = Particles(z, ref, rest, p.grad)
    return accept(rt, u_accept, log_target(new, beta) - log_target(p, beta), new, p)
