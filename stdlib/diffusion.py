"""Forward SDEs of score-based models and the analytic Gaussian-mixture diffusion.

A linear forward SDE dx = f_t(x) dt + g_t dW on t ∈ [0, T] has Gaussian transitions
x_t | x_0 ~ N(α_t x_0, σ_t² I), with

    f_t(x) = (d/dt log α_t) x,    g_t² = d/dt σ_t² − 2 (d/dt log α_t) σ_t²,    ∇·f = d · d/dt log α_t.

VP: β(t) = β_min + t (β_max − β_min), α_t = exp(−½ ∫_0^t β), σ_t² = 1 − α_t² (so g² = β(t)).
VE: α_t = 1, σ_t² = σ_min² ((σ_max / σ_min)^{2t} − 1) (geometric σ schedule, σ_0 = 0 exactly).

A Gaussian mixture p_0 = Σ π_k N(μ_k, Σ_k) noised by such an SDE stays a mixture:
q_t = Σ π_k N(α_t μ_k, α_t² Σ_k + σ_t² I), so its score and log density are closed form,
and integer powers and products of mixtures are mixtures (exact FKC targets for tests).
SDE methods take arrays of any runtime (`xp` is the runtime's numpy-like namespace).
"""
import math

import numpy as np

from ..errors import ShapeError, ValueRangeError


class SDE:
    """A linear forward SDE given by log α_t and σ_t²; `T` is the final time, `prior_var` = α_T² + σ_T²."""

    T = 1.0

    def f(self, x, t):
        """Drift f_t(x) = (d/dt log α_t) x."""
        return self.dlog_alpha(t) * x

    def g2(self, t, xp=np):
        """Squared diffusion coefficient g_t²."""
        return self.dsigma2(t, xp) - 2.0 * self.dlog_alpha(t) * self.sigma2(t, xp)

    def div_f(self, t, dim):
        """∇·f_t = d · d/dt log α_t."""
        return dim * self.dlog_alpha(t)

    def alpha(self, t, xp=np):
        return xp.exp(self.log_alpha(t))

    @property
    def prior_var(self):
        """Per-dimension variance of the starting distribution N(0, (α_T² + σ_T²) I) (unit-variance data)."""
        return float(self.alpha(self.T) ** 2 + self.sigma2(self.T))

    def marginal(self, t):
        """(α_t, σ_t²) as floats."""
        return float(self.alpha(t)), float(self.sigma2(t))


class VPSDE(SDE):
    """Variance preserving: dx = −½ β(t) x dt + √β(t) dW, β linear from β_min to β_max."""

    def __init__(self, beta_min=0.1, beta_max=20.0):
        if not 0 < beta_min <= beta_max:
            raise ValueRangeError(f"VPSDE needs 0 < beta_min <= beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t):
        return -0.5 * (self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t)

    def dlog_alpha(self, t):
        return -0.5 * self.beta(t)

    def sigma2(self, t, xp=np):
        return -xp.expm1(2.0 * self.log_alpha(t))

    def dsigma2(self, t, xp=np):
        return self.beta(t) * xp.exp(2.0 * self.log_alpha(t))

    def g2(self, t, xp=np):
        return self.beta(t)

    def __repr__(self):
        return f"VPSDE(beta_min={self.beta_min:g}, beta_max={self.beta_max:g})"


class VESDE(SDE):
    """Variance exploding: dx = g_t dW, σ_t² = σ_min² ((σ_max/σ_min)^{2t} − 1), g_t² = 2 log(σ_max/σ_min) σ_min² (σ_max/σ_min)^{2t}."""

    def __init__(self, sigma_min=0.01, sigma_max=10.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueRangeError(f"VESDE needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def log_alpha(self, t):
        return 0.0 * t

    def dlog_alpha(self, t):
        return 0.0 * t

    def sigma2(self, t, xp=np):
        return self.sigma_min ** 2 * xp.expm1(2.0 * self._log_ratio * t)

    def dsigma2(self, t, xp=np):
        return 2.0 * self._log_ratio * self.sigma_min ** 2 * xp.exp(2.0 * self._log_ratio * t)

    def __repr__(self):
        return f"VESDE(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"


def _gauss_product(m1, c1, m2, c2):
    """N(x; m1, C1) N(x; m2, C2) = N(m1; m2, C1 + C2) · N(x; m, C), batched over leading axes: (log c, m, C)."""
    s = c1 + c2
    diff = m1 - m2
    _, logdet = np.linalg.slogdet(s)
    solve = lambda a, b: np.linalg.solve(a, b[..., None])[..., 0]  # noqa: E731
    log_c = -0.5 * (np.sum(diff * solve(s, diff), -1) + logdet + m1.shape[-1] * math.log(2 * math.pi))
    c = c1 @ np.linalg.solve(s, c2)
    m = np.einsum("...ij,...j->...i", c2, solve(s, m1)) + np.einsum("...ij,...j->...i", c1, solve(s, m2))
    return log_c, m, 0.5 * (c + np.swapaxes(c, -1, -2))


class DensityScore:
    """A data law p_0 whose noised law q_t is closed form: subclasses give `dim` and `density_fn(rt, sde)`,
    (log q_t(x) [N], ∇ log q_t(x) [N, d]) = density(x [N, d], t [N]); the score follows."""

    def score_fn(self, rt, sde):
        """score(x [N, d], t [N]) = ∇ log q_t(x) on runtime `rt` (jit-compatible)."""
        density = self.density_fn(rt, sde)
        return lambda x, t: density(x, t)[1]


class GaussianMixture(DensityScore):
    """p_0 = Σ π_k N(μ_k, Σ_k): `means` [K, d]; `sd` (scalar, [K] or [K, d]) or `cov` [K, d, d]; `weights` [K].

    Used as the score of `ppl.diffusion`: the score of the noised mixture q_t is exact.
    """

    def __init__(self, means, sd=None, cov=None, weights=None):
        self.means = np.atleast_2d(np.asarray(means, dtype=np.float64))
        k, d = self.means.shape
        if cov is not None:
            cov = np.asarray(cov, dtype=np.float64)
            cov = np.broadcast_to(cov, (k, d, d)).copy()
        else:
            sd = np.asarray(1.0 if sd is None else sd, dtype=np.float64)
            sd = np.broadcast_to(sd[:, None] if sd.ndim == 1 else sd, (k, d))
            cov = np.stack([np.diag(s ** 2) for s in sd])
        w = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (k,) or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
            raise ValueRangeError(f"mixture weights must be {k} non-negative numbers summing to 1, got {w}")
        lam, u = np.linalg.eigh(cov)
        if np.any(lam <= 0):
            raise ValueRangeError("mixture covariances must be positive definite")
        self.cov, self.weights, self.lam, self.u = cov, w, lam, u
        self._lowered = {}

    @property
    def dim(self):
        return self.means.shape[1]

    def __len__(self):
        return len(self.weights)

    # --- exact algebra of mixtures (numpy) ---------------------------------
    def noised(self, sde, t):
        """The mixture q_t: means α_t μ_k, covariances α_t² Σ_k + σ_t² I."""
        a, s2 = sde.marginal(t)
        return GaussianMixture(a * self.means, cov=a * a * self.cov + s2 * np.eye(self.dim), weights=self.weights)

    def product(self, other):
        """(p · q) normalized, and log ∫ p q: a mixture over all pairs of components."""
        if other.dim != self.dim:
            raise ShapeError(f"cannot multiply mixtures of dimension {self.dim} and {other.dim}")
        i, j = (a.ravel() for a in np.meshgrid(np.arange(len(self)), np.arange(len(other)), indexing="ij"))
        log_c, means, covs = _gauss_product(self.means[i], self.cov[i], other.means[j], other.cov[j])
        logw = np.log(self.weights[i]) + np.log(other.weights[j]) + log_c
        log_z = float(np.logaddexp.reduce(logw))
        return GaussianMixture(means, cov=covs, weights=np.exp(logw - log_z)), log_z

    def power(self, n):
        """p^n normalized (integer n >= 1) and log ∫ p^n."""
        if int(n) != n or n < 1:
            raise ValueRangeError(f"only integer powers >= 1 of a mixture are mixtures, got {n}")
        out, log_z = self, 0.0
        for _ in range(int(n) - 1):
            out, lz = out.product(self)
            log_z += lz
        return out, log_z

    def sample(self, n, rng):
        """n exact draws (numpy) with a numpy Generator."""
        k = rng.choice(len(self), size=n, p=self.weights)
        eps = rng.standard_normal((n, self.dim))
        return self.means[k] + np.einsum("nde,ne->nd", self.u[k] * np.sqrt(self.lam[k])[:, None, :], eps)

    def log_prob(self, x):
        """log p(x) for numpy x [N, d]."""
        return self._log_components(np, np.asarray(x, dtype=np.float64), self.means, self.lam, self.u,
                                    np.log(self.weights), 1.0, 0.0)[0]

    # --- runtime side: batched score of q_t ---------------------------------
    @staticmethod
    def _log_components(xp, x, means, lam, u, log_w, a, s2):
        """log q_t(x) [N] and per-component (responsibility logits [N, K], whitened residuals proj/var [.., K, d])."""
        diff = x[:, None, :] - a * means[None]
        proj = xp.einsum("kde,nkd->nke", u, diff)
        var = a * a * lam + s2
        quad = xp.sum(proj * proj / var, axis=-1)
        logits = log_w - 0.5 * (quad + xp.sum(xp.log(var), axis=-1) + means.shape[1] * math.log(2 * math.pi))
        top = xp.max(logits, axis=-1, keepdims=True)
        lq = top[..., 0] + xp.log(xp.sum(xp.exp(logits - top), axis=-1))
        return lq, logits, proj / var

    def density_fn(self, rt, sde):
        """(log q_t(x) [N], ∇ log q_t(x) [N, d]) = density(x [N, d], t [N]) on runtime `rt`, in one pass
        (jit-compatible)."""
        key = rt.name
        if key not in self._lowered:
            self._lowered[key] = tuple(rt.asarray(v) for v in (self.means, self.lam, self.u, np.log(self.weights)))
        means, lam, u, log_w = self._lowered[key]
        xp = rt.xp

        def density(x, t):
            a = sde.alpha(t, xp)[:, None, None]
            s2 = sde.sigma2(t, xp)[:, None, None]
            lq, logits, white = self._log_components(xp, x, means, lam, u, log_w, a, s2)
            resp = xp.exp(logits - lq[:, None])
            return lq, -xp.einsum("nk,kde,nke->nd", resp, u, white)
        return density

    def __repr__(self):
        return f"GaussianMixture(K={len(self)}, d={self.dim})"


class DoubleWells(DensityScore):
    """p(x) ∝ exp(−E(x)/T) on R^d, E(x) = Σ_i a (x_i² − 1)² + c x_i: independent tilted double wells.

    Each coordinate's law is the 1-d mixture Σ_j w_j N(y_j, h²) on `nodes` nodes y_j of [−lim, lim] with
    spacing h, w_j ∝ exp(−E(y_j)/T) (within O(h²) of the wells), which makes every use exact: as the score of
    `ppl.diffusion`, the noised law q_t(x) = Π_i Σ_j w_j N(x_i; α_t y_j, α_t² h² + σ_t²) has a closed-form score
    and log density; its tempered law q_t^β / ∫ q_t^β (≈ the wells at T/β) is a product of 1-d laws, so its
    draws (inverse CDF) and normalizer (quadrature) are exact on a fine grid.
    """

    GRID = np.linspace(-12.0, 12.0, 24001)

    def __init__(self, dim=8, a=2.0, c=0.5, temperature=2.0, lim=3.0, nodes=241):
        if temperature <= 0 or a <= 0 or lim <= 1:
            raise ValueRangeError(f"DoubleWells needs temperature > 0, a > 0, lim > 1; got {temperature}, {a}, {lim}")
        self.dim, self.a, self.c, self.temperature = int(dim), float(a), float(c), float(temperature)
        self.nodes = np.linspace(-lim, lim, int(nodes))
        self.h = float(self.nodes[1] - self.nodes[0])
        e = self.energy(self.nodes[:, None])
        self.log_w = -(e - e.min()) / self.temperature
        self.log_w -= np.logaddexp.reduce(self.log_w)
        self._lowered = {}

    def energy(self, x):
        """E(x) [N] for numpy x [N, d]."""
        x = np.asarray(x, dtype=np.float64)
        return np.sum(self.a * (x * x - 1.0) ** 2 + self.c * x, axis=-1)

    def _log_q1(self, sde=None, t=0.0, beta=1.0):
        """β log q_t of one coordinate on `GRID` (t = 0: the mixture itself)."""
        a, s2 = (1.0, 0.0) if sde is None else sde.marginal(t)
        v = a * a * self.h ** 2 + s2
        logits = self.log_w[None] - 0.5 * (self.GRID[:, None] - a * self.nodes[None]) ** 2 / v
        return beta * (np.logaddexp.reduce(logits, axis=1) - 0.5 * math.log(2 * math.pi * v))

    def log_norm(self, sde, t, beta=1.0):
        """log ∫ q_t(x)^β dx over R^d (quadrature); log Z of q_{t_min}^β against q_T^β is a difference."""
        return self.dim * float(np.logaddexp.reduce(self._log_q1(sde, t, beta)) + math.log(self.GRID[1] - self.GRID[0]))

    def sample(self, n, rng, beta=1.0):
        """n exact draws [n, d] of p^β / ∫ p^β (numpy, inverse CDF on `GRID`) with a numpy Generator."""
        lq = self._log_q1(beta=beta)
        cdf = np.cumsum(np.exp(lq - lq.max()))
        return np.interp(rng.uniform(size=(n, self.dim)), cdf / cdf[-1], self.GRID)

    def density_fn(self, rt, sde):
        """(log q_t(x) [N], ∇ log q_t(x) [N, d]) = density(x [N, d], t [N]) on runtime `rt` (jit-compatible)."""
        if rt.name not in self._lowered:
            self._lowered[rt.name] = (rt.asarray(self.nodes), rt.asarray(self.log_w))
        nodes, log_w = self._lowered[rt.name]
        xp, h2 = rt.xp, self.h ** 2

        def density(x, t):
            a = sde.alpha(t, xp)[:, None, None]
            v = a * a * h2 + sde.sigma2(t, xp)[:, None, None]
            r = x[:, :, None] - a * nodes
            logits = log_w - 0.5 * (r * r / v + xp.log(2 * math.pi * v))
            lq = xp.logsumexp(logits, axis=-1)
            resp = xp.exp(logits - lq[..., None])
            return xp.sum(lq, axis=-1), -xp.sum(resp * r, axis=-1) / v[..., 0]
        return density

    def __repr__(self):
        return f"DoubleWells(d={self.dim}, a={self.a:g}, c={self.c:g}, T={self.temperature:g})"


def gmm40(scale=50.0):
    """The 40-mode mixture of the FKC paper's annealing benchmark (Skreta et al. 2025; FAB's and DEM's `GMM`):
    means (U(0, 1)² − ½) · 80 drawn with torch seed 0, sd softplus(2) = 2.13, uniform weights, all divided by
    `scale`."""
    import torch
    gen = torch.Generator().manual_seed(0)
    means = ((torch.rand((40, 2), generator=gen, dtype=torch.float64) - 0.5) * 2 * 40).numpy()
    return GaussianMixture(means / scale, sd=math.log1p(math.exp(2.0)) / scale)
