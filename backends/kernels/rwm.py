"""Random-walk Metropolis: y' = y + h ε, accepted with π(z') / π(z)."""
from . import Particles, accept, kernel, log_target


@kernel(needs_grad=False, target_accept=0.3, initial_step=lambda d: 2.38 / d ** 0.5)
def rwm(rt, key, p, beta, h, chol, density):
    """Random-walk Metropolis with proposal covariance h² Σ."""
    k1, k2 = rt.split(key, 2)
    dy = h * rt.normal(k1, p.z.shape)
    z = p.z + dy @ chol.T
    ref, rest, _ = density(z, beta)
    new = Particles(z, ref, rest, p.grad)
    return accept(rt, k2, log_target(new, beta) - log_target(p, beta), new, p)
