"""MCMC moves that leave the tempered density π_β(z) ∝ exp(log_ref(z) + β log_rest(z)) invariant.

All kernels work in whitened coordinates y = L⁻¹ z, where L L' = Σ is the (weighted) covariance of the
particle cloud: a proposal increment dy in y is the increment L dy in z, so no triangular solve is needed
and the Jacobian of the linear map cancels in every acceptance ratio.

    rwm   y' = y + h ε                                         accept with π(z') / π(z)
    mala  y' = y + (h²/2) g + h ε,  g = L' ∇log π(z)           Metropolis–Hastings with the Langevin proposal
    hmc   `n_leapfrog` leapfrog steps of size h, momentum ~ N(0, I) in y

Each kernel is `kernel(rt, key, particles, beta, h, chol, density, **params) -> (particles, accepted [N])`
with `particles = Particles(z, log_ref, log_rest, grad)`; `density(z, beta)` returns (log_ref, log_rest, grad of
the tempered log density) and `grad` is the gradient at β (zeros of shape [N, 0] for gradient-free kernels).
"""
from collections import namedtuple

Particles = namedtuple("Particles", "z log_ref log_rest grad")

#: name -> (kernel, needs gradient, target acceptance rate, initial step size as a function of D)
KERNELS = {}


def kernel(name, needs_grad, target_accept, initial_step):
    def deco(fn):
        KERNELS[name] = (fn, needs_grad, target_accept, initial_step)
        return fn
    return deco


def _log_target(p, beta):
    return p.log_ref + beta * p.log_rest


def _accept(rt, key, log_ratio, new, old):
    """Metropolis–Hastings selection per particle; NaN ratios (non-finite proposals) are rejections."""
    xp = rt.xp
    log_ratio = xp.where(xp.isnan(log_ratio), -float("inf"), log_ratio)
    u = rt.uniform(key, log_ratio.shape)
    ok = xp.log(u) < log_ratio
    pick = lambda a, b: xp.where(ok.reshape(ok.shape + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
    return Particles(*(pick(a, b) for a, b in zip(new, old))), ok


@kernel("rwm", needs_grad=False, target_accept=0.3, initial_step=lambda d: 2.38 / d ** 0.5)
def rwm(rt, key, p, beta, h, chol, density):
    """Random-walk Metropolis with proposal covariance h² Σ."""
    k1, k2 = rt.split(key, 2)
    dy = h * rt.normal(k1, p.z.shape)
    z = p.z + dy @ chol.T
    ref, rest, _ = density(z, beta)
    new = Particles(z, ref, rest, p.grad)
    return _accept(rt, k2, _log_target(new, beta) - _log_target(p, beta), new, p)


@kernel("mala", needs_grad=True, target_accept=0.574, initial_step=lambda d: 1.65 / d ** (1 / 6))
def mala(rt, key, p, beta, h, chol, density):
    """Metropolis-adjusted Langevin in y: forward residual h ε, reverse residual −(h ε + (h²/2)(g + g'))."""
    xp = rt.xp
    k1, k2 = rt.split(key, 2)
    eps = rt.normal(k1, p.z.shape)
    g = p.grad @ chol
    dy = 0.5 * h * h * g + h * eps
    z = p.z + dy @ chol.T
    ref, rest, grad = density(z, beta)
    new = Particles(z, ref, rest, grad)
    back = h * eps + 0.5 * h * h * (g + grad @ chol)
    log_q = (xp.sum(h * h * eps * eps, axis=-1) - xp.sum(back * back, axis=-1)) / (2 * h * h)
    return _accept(rt, k2, _log_target(new, beta) - _log_target(p, beta) + log_q, new, p)


@kernel("hmc", needs_grad=True, target_accept=0.7, initial_step=lambda d: 1.0 / d ** 0.25)
def hmc(rt, key, p, beta, h, chol, density, n_leapfrog=5, step_jitter=10.0):
    """Hamiltonian Monte Carlo with identity mass in y, `n_leapfrog` leapfrog steps of size h · J^u per particle,
    u ~ U(−1, 1), J = `step_jitter`. A random step size breaks the periodicity of fixed-length trajectories
    (Neal 2011, §5.4.2.2) and lets particles in narrow and in wide regions of one cloud both move (a
    funnel: the regression coefficients of sblrc-blr narrow tenfold with σ along the tempering path)."""
    xp = rt.xp
    k0, k1, k2 = rt.split(key, 3)
    h = h * step_jitter ** (2.0 * rt.uniform(k0, (p.z.shape[0], 1)) - 1.0)
    m0 = rt.normal(k1, p.z.shape)

    def leapfrog(_, s):
        q, m = s
        m = m + 0.5 * h * (q.grad @ chol)
        z = q.z + (h * m) @ chol.T
        ref, rest, grad = density(z, beta)
        q = Particles(z, ref, rest, grad)
        return q, m + 0.5 * h * (grad @ chol)

    q, m = rt.fori_loop(0, n_leapfrog, leapfrog, (p, m0))
    log_ratio = (_log_target(q, beta) - 0.5 * xp.sum(m * m, axis=-1)) \
        - (_log_target(p, beta) - 0.5 * xp.sum(m0 * m0, axis=-1))
    return _accept(rt, k2, log_ratio, q, p)


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
