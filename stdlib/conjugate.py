"""Conjugate pairs, the parameter integrated out: the exact marginal of the observations as a distribution.

θ is a latent site (of any shape, k its size, flattened) read only by the observed y (n its size, flattened);
`compiler/conjugate.py` finds the pair in a model as written and puts one of these where θ and y were.

* normal–normal: θ ~ N(m, diag s²), y ~ N(M θ + c, D), D = diag σ² (M, c read off y's mean at θ = 0 and the
  unit vectors, exact for an affine mean): y ~ N(M m + c, D + M diag s² Mᵀ), computed in O(n k² + k³) by the
  matrix determinant lemma and Woodbury's identity,
      log p(y) = −½ [n log 2π + Σ log σ² + Σ log s² + log |Λ| + rᵀ D⁻¹ r − bᵀ Λ⁻¹ b],
  r = y − c − M m, b = Mᵀ D⁻¹ r, Λ = diag s⁻² + Mᵀ D⁻¹ M;  θ | y ~ N(m + Λ⁻¹ b, Λ⁻¹).
* gamma–poisson: θ_j ~ Gamma(a_j, b_j), y_i ~ Poisson(e_i θ_g(i)) (exposures e_i > 0, groups g):
      log p(y) = Σ_j [a_j log b_j − log Γ(a_j) + log Γ(a_j + S_j) − (a_j + S_j) log(b_j + E_j)]
                 + Σ_i [y_i log e_i − log y_i!],   S_j = Σ_{g(i)=j} y_i, E_j = Σ_{g(i)=j} e_i;
  θ_j | y ~ Gamma(a_j + S_j, b_j + E_j).
* beta–binomial (beta–bernoulli: t_i = 1): θ_j ~ Beta(α_j, β_j), y_i ~ Binomial(t_i, θ_g(i)):
      log p(y) = Σ_j [log B(α_j + S_j, β_j + F_j) − log B(α_j, β_j)] + Σ_i log C(t_i, y_i),
  F_j = Σ_{g(i)=j} (t_i − y_i);  θ_j | y ~ Beta(α_j + S_j, β_j + F_j).
* dirichlet–categorical: θ ~ Dirichlet(α) [K], y_i ~ Categorical(θ) (Pólya):
      log p(y) = log Γ(A) − log Γ(A + n) + Σ_k [log Γ(α_k + c_k) − log Γ(α_k)],   A = Σ α_k, c_k = #{i: y_i = k};
  θ | y ~ Dirichlet(α + c).

The groups are a one-hot matrix G [n, k] (a numpy constant the compiler found), so S = Gᵀ y and E = Gᵀ e.
Everything is for one particle (one value of the other sites) on the runtime's arrays; a run vmaps it. A
lowered marginal also draws θ | y exactly from standard noise (`noise`, `draw`): normals for the Gaussian,
uniforms through the gamma quantile (bisected on the regularized incomplete gamma function) for the others,
a beta as G₁ / (G₁ + G₂) and a Dirichlet as normalized gammas.
"""
import math

import numpy as np

from .. import math as pm
from .distributions import Beta, Dirichlet, Distribution, Gamma, MultivariateNormal, Normal

LOG_2PI = math.log(2 * math.pi)
#: the gamma quantile is bisected over log x in [−QUANTILE_RANGE, QUANTILE_RANGE] in QUANTILE_STEPS halvings
QUANTILE_RANGE, QUANTILE_STEPS = 80.0, 64


def _flat(rt, value, shape):
    """`value` broadcast to `shape` and flattened, on the runtime."""
    return rt.xp.broadcast_to(rt.asarray(value), tuple(shape)).reshape(-1)


def gamma_quantile(rt, a, u):
    """x with P(a, x) = u (the regularized lower incomplete gamma function), elementwise, by bisection on log x."""
    xp = rt.xp

    def halve(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        above = rt.special.gammainc(a, xp.exp(mid)) < u       # the root is above mid
        return xp.where(above, mid, lo), xp.where(above, hi, mid)
    lo, hi = rt.fori_loop(0, QUANTILE_STEPS, halve, (u * 0.0 - QUANTILE_RANGE, u * 0.0 + QUANTILE_RANGE))
    return xp.exp(0.5 * (lo + hi))


class Conjugate(Distribution):
    """The distribution of the observed y [*y_shape] with the conjugate θ integrated out: `prior` is θ's
    `Distribution` (θ of `shape`), `observe(θ)` y's `Distribution` given θ, `groups` the one-hot G [n, k] (the
    discrete pairs), `site` θ's name. Subclasses give the pair's `log_evidence(rt, y)` and `posterior(rt, y)`
    (θ | y as a `Distribution` of θ), `noise_shape` and `draw_flat(rt, y, noise)`."""

    pair = None

    def __init__(self, prior, observe, shape, y_shape, site, groups=None):
        super().__init__(f"Conjugate({self.pair})", {})
        self.prior, self.observe, self.theta_shape, self.y_shape = prior, observe, tuple(shape), tuple(y_shape)
        self.site, self.groups = site, groups
        self.k = math.prod(self.theta_shape)

    def lower(self, rt, params=None):
        return LoweredConjugate(self, rt)

    def prior_params(self, rt, *names):
        """θ's prior parameters, each broadcast to θ's shape and flattened [k]."""
        return tuple(_flat(rt, self.prior.params[n], self.theta_shape) for n in names)

    def observation(self, rt, theta, name):
        """The parameter `name` of y's law at θ (flat [k]), broadcast to y's shape and flattened [n]."""
        return _flat(rt, self.observe(rt.asarray(theta).reshape(self.theta_shape)).params[name], self.y_shape)

    def group_sums(self, rt, v):
        """Gᵀ v [k] of a flat v [n]."""
        return rt.asarray(self.groups).T @ v

    def mean(self, rt):
        """A point of θ's support (its prior mean, flat), where y's support is read."""
        raise NotImplementedError

    def __repr__(self):
        return f"Conjugate({self.pair}: {self.site} out of y{list(self.y_shape)})"


class NormalNormal(Conjugate):
    pair = "normal-normal"

    def _posterior(self, rt, y):
        """(log p(y), posterior mean [k], posterior covariance [k, k])."""
        xp = rt.xp
        m, s = self.prior_params(rt, "loc", "scale")
        probes = xp.concatenate([xp.zeros((1, self.k)), xp.diag(xp.ones((self.k,)))])
        means = rt.vmap(lambda p: self.observation(rt, p, "loc"))(probes)
        c, M = means[0], (means[1:] - means[:1]).T
        var = self.observation(rt, xp.zeros((self.k,)), "scale") ** 2
        r = y.reshape(-1) - c - M @ m
        b = M.T @ (r / var)
        eye = xp.diag(xp.ones((self.k,)))
        lam = xp.diag(1.0 / (s * s)) + M.T @ (M / var[:, None])
        ok = xp.sum(xp.isfinite(lam) * 1.0) == self.k * self.k    # else (a scale 0 or inf) NaN, not a raise
        lam = xp.where(ok, lam, eye)
        chol = xp.cholesky(lam)
        lam_inv_b = xp.solve(lam, b)
        # rᵀV⁻¹r − bᵀΛ⁻¹b as the residual at the posterior mean (δ = Λ⁻¹b) plus its prior term: a sum of
        # squares, where the difference of two large numbers lost 0.4 nats of sblrc's log Z to float32 rounding
        fit = r - M @ lam_inv_b
        quad = xp.sum(fit * fit / var) + xp.sum((lam_inv_b / s) ** 2)
        log_p = -0.5 * (r.shape[0] * LOG_2PI + xp.sum(xp.log(var)) + 2.0 * xp.sum(xp.log(s))
                        + 2.0 * xp.sum(xp.log(xp.diag(chol))) + quad)
        return xp.where(ok, log_p, math.nan), m + lam_inv_b, xp.solve(lam, eye)

    def log_evidence(self, rt, y):
        return self._posterior(rt, y)[0]

    def posterior(self, rt, y):
        _, mean, cov = self._posterior(rt, y)
        if self.theta_shape == ():
            return Normal(mean.reshape(()), rt.xp.sqrt(cov.reshape(())))
        return MultivariateNormal(mean, covariance_matrix=cov)

    def mean(self, rt):
        return self.prior_params(rt, "loc")[0]

    noise_kind = "normal"

    def noise_shape(self):
        return (self.k,)

    def draw_flat(self, rt, y, e):
        _, mean, cov = self._posterior(rt, y)
        cov = 0.5 * (cov + cov.T)
        return mean + rt.xp.cholesky(cov) @ e


class GammaPoisson(Conjugate):
    pair = "gamma-poisson"

    def _parts(self, rt, y):
        """(a + S, b + E, the terms of log p(y) outside the posterior's normalizer) at the flat y [n]."""
        a, b = self.prior_params(rt, "concentration", "rate")
        e = self.observation(rt, rt.xp.ones((self.k,)), "rate")
        return a + self.group_sums(rt, y), b + self.group_sums(rt, e), a, b, e

    def log_evidence(self, rt, y):
        xp = rt.xp
        y = y.reshape(-1)
        a1, b1, a, b, e = self._parts(rt, y)
        return (xp.sum(a * xp.log(b) - pm.lgamma(a) + pm.lgamma(a1) - a1 * xp.log(b1))
                + xp.sum(y * xp.log(e) - pm.lgamma(y + 1.0)))

    def posterior(self, rt, y):
        a1, b1 = self._parts(rt, y.reshape(-1))[:2]
        return Gamma(a1.reshape(self.theta_shape), b1.reshape(self.theta_shape))

    def mean(self, rt):
        a, b = self.prior_params(rt, "concentration", "rate")
        return a / b

    noise_kind = "uniform"

    def noise_shape(self):
        return (self.k,)

    def draw_flat(self, rt, y, u):
        a1, b1 = self._parts(rt, y.reshape(-1))[:2]
        return gamma_quantile(rt, a1, u) / b1


class BetaBinomial(Conjugate):
    pair = "beta-binomial"

    def _parts(self, rt, y):
        """(α + S, β + F, α, β, t) at the flat y [n]."""
        al, be = self.prior_params(rt, "concentration1", "concentration0")
        law = self.observe(rt.asarray(self.mean(rt)).reshape(self.theta_shape))
        t = _flat(rt, law.params.get("total_count", 1.0), self.y_shape)
        return al + self.group_sums(rt, y), be + self.group_sums(rt, t - y), al, be, t

    def log_evidence(self, rt, y):
        xp = rt.xp
        y = y.reshape(-1)
        a1, b1, al, be, t = self._parts(rt, y)

        def log_beta(p, q):
            return pm.lgamma(p) + pm.lgamma(q) - pm.lgamma(p + q)
        return (xp.sum(log_beta(a1, b1) - log_beta(al, be))
                + xp.sum(pm.lgamma(t + 1.0) - pm.lgamma(y + 1.0) - pm.lgamma(t - y + 1.0)))

    def posterior(self, rt, y):
        a1, b1 = self._parts(rt, y.reshape(-1))[:2]
        return Beta(a1.reshape(self.theta_shape), b1.reshape(self.theta_shape))

    def mean(self, rt):
        al, be = self.prior_params(rt, "concentration1", "concentration0")
        return al / (al + be)

    noise_kind = "uniform"

    def noise_shape(self):
        return (2, self.k)

    def draw_flat(self, rt, y, u):
        a1, b1 = self._parts(rt, y.reshape(-1))[:2]
        g1, g2 = gamma_quantile(rt, a1, u[0]), gamma_quantile(rt, b1, u[1])
        return g1 / (g1 + g2)


class DirichletCategorical(Conjugate):
    pair = "dirichlet-categorical"

    def _counts(self, rt, y):
        xp = rt.xp
        ks = rt.asarray(np.arange(self.k, dtype=float))
        return xp.sum((rt.asarray(y).reshape(-1)[:, None] == ks[None, :]) * 1.0, axis=0)

    def log_evidence(self, rt, y):
        xp = rt.xp
        (alpha,) = self.prior_params(rt, "concentration")
        c = self._counts(rt, y)
        total = xp.sum(alpha)
        return (pm.lgamma(total) - pm.lgamma(total + xp.sum(c))
                + xp.sum(pm.lgamma(alpha + c) - pm.lgamma(alpha)))

    def posterior(self, rt, y):
        (alpha,) = self.prior_params(rt, "concentration")
        return Dirichlet(alpha + self._counts(rt, y))

    def mean(self, rt):
        (alpha,) = self.prior_params(rt, "concentration")
        return alpha / rt.xp.sum(alpha)

    noise_kind = "uniform"

    def noise_shape(self):
        return (self.k,)

    def draw_flat(self, rt, y, u):
        (alpha,) = self.prior_params(rt, "concentration")
        g = gamma_quantile(rt, alpha + self._counts(rt, y), u)
        return g / rt.xp.sum(g)


#: the pair of each (prior family, observation family)
PAIRS = {("Normal", "Normal"): NormalNormal, ("Gamma", "Poisson"): GammaPoisson,
         ("Beta", "Binomial"): BetaBinomial, ("Beta", "Bernoulli"): BetaBinomial,
         ("Dirichlet", "Categorical"): DirichletCategorical}


class LoweredConjugate:
    """A `Conjugate` marginal on runtime `rt`, for one particle: log_prob(y) the exact evidence; `noise(y)` and
    `draw(y, noise)` an exact draw of θ | y (the protocol of `backends/marginals.py`)."""

    def __init__(self, spec, rt):
        self.spec, self.rt = spec, rt
        self.batch_shape, self.event_shape = (), spec.y_shape
        self.support = spec.observe(rt.asarray(spec.mean(rt)).reshape(spec.theta_shape)).lower(rt).support

    def log_prob(self, y):
        if self.rt.traces_shapes:
            return np.zeros(())
        return self.spec.log_evidence(self.rt, self.rt.asarray(y))

    def noise(self, y):
        return self.spec.noise_kind, self.spec.noise_shape()

    def draw(self, y, noise):
        return {self.spec.site: self.spec.draw_flat(self.rt, self.rt.asarray(y), noise).reshape(self.spec.theta_shape)}
