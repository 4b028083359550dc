"""Proposal densities q(z) on the unconstrained space R^D, fitted to weighted draws.

A proposal is an immutable value: numpy float64 parameters, `sample(rt, key, n) -> z [n, D]` and
`log_prob(rt, z) -> [n]` on any runtime (batched, with the runtime's own arrays), and `fit(z, w)`, the
cross-entropy update: the member of the family closest in KL(π‖q) to the weighted draws (z_i, w_i), i.e.
the maximizer of Σ_i w_i log q(z_i):

    Gaussian        weighted mean and covariance;
    StudentT        the EM fixed point of the weighted multivariate t with its df fixed (Liu & Rubin 1995);
    Mixture         weighted EM steps from the current components (Cappé et al. 2008, M-PMC);
    flows           a few gradient steps on Σ w_i log q(z_i) (`backends/flows.py`).

A fitted proposal knows the latent layout it was fitted on (`sites`), so it can serve as `reference=` of
another run of the same target (`ppl.sample(target, method="is", reference=r.proposal)`).
"""
import math

import numpy as np

from ..errors import PPLError, ShapeError

#: the compiled draws, by (runtime, structure)
_DRAWS = {}
#: covariance floor relative to the largest variance (keeps fits positive definite from few effective draws)
JITTER = 1e-6


def _cov(z, w, mean):
    d = z - mean
    c = (w[:, None] * d).T @ d
    c = 0.5 * (c + c.T)
    return c + (JITTER * max(float(np.max(np.diag(c))), 1e-12) + 1e-12) * np.eye(len(mean))


def _weights(w, n):
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise PPLError("a proposal is fitted to finite non-negative weights, one per draw, not all zero")
    return w / w.sum()


class Proposal:
    """Base class: a density on R^D with `sample`, `log_prob` and the weighted fit `fit`."""

    family = "proposal"
    sites = None    # ((name, shape), ...) of the latent layout it was fitted on; None when unbound

    @property
    def dim(self):
        raise NotImplementedError

    def bound(self, sites):
        """This proposal, recorded as a density over the latent layout `sites`."""
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.sites = tuple(sites)
        return out

    def arrays(self):
        """The parameters `draw` reads (a tuple of numpy arrays, nested for mixtures)."""
        raise NotImplementedError

    def structure(self):
        """What, besides `arrays()`, `draw` depends on: one compiled draw per structure and runtime."""
        return self.family

    def drawer(self):
        """The pure draw `(rt, arrays, key, n) -> z [n, D]` of this family."""
        raise NotImplementedError

    def sample(self, rt, key, n):
        """n draws z [n, D] (one compiled draw per runtime, structure and n: its parameters are arguments)."""
        cache = (repr(rt), self.structure())
        if cache not in _DRAWS:
            draw = self.drawer()
            _DRAWS[cache] = rt.jit(lambda key, arrays, n: draw(rt, arrays, key, n), static_argnames=("n",))
        return _DRAWS[cache](key, rt.tree_map(rt.asarray, self.arrays()), n=n)

    def check(self, program):
        """A ShapeError unless this proposal is a density over `program`'s unconstrained space."""
        sites = layout_of(program.layout)
        if self.dim != program.dim or (self.sites is not None and self.sites != sites):
            have = self.sites if self.sites is not None else f"dimension {self.dim}"
            raise ShapeError(f"the proposal is a density over {have}; the target's unconstrained latent space is "
                             f"{sites} (dimension {program.dim}): fit it on this target")

    def __repr__(self):
        return f"{self.family}(dim={self.dim})"


class Gaussian(Proposal):
    """N(mean, cov): z = mean + L ε with L L' = cov."""

    family = "gaussian"

    def __init__(self, mean, cov):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.cov = np.asarray(cov, dtype=np.float64).reshape(len(self.mean), len(self.mean))
        try:
            self.chol = np.linalg.cholesky(self.cov)
        except np.linalg.LinAlgError:
            raise PPLError("the proposal's covariance is not positive definite") from None
        self.prec_chol = np.linalg.inv(self.chol)     # L⁻¹: log q = -|L⁻¹(z - m)|²/2 - Σ log L_ii - D/2 log 2π
        self.log_norm = -np.log(np.diag(self.chol)).sum() - 0.5 * len(self.mean) * math.log(2 * math.pi)

    @property
    def dim(self):
        return len(self.mean)

    @classmethod
    def fit(cls, z, w, previous=None):
        z = np.asarray(z, dtype=np.float64)
        w = _weights(w, len(z))
        mean = w @ z
        return cls(mean, _cov(z, w, mean))

    def _std(self, rt, z):
        return rt.xp.einsum("ij,nj->ni", rt.asarray(self.prec_chol), z - rt.asarray(self.mean))

    def arrays(self):
        return self.mean, self.chol

    @staticmethod
    def drawer():
        def draw(rt, arrays, key, n):
            mean, chol = arrays
            return mean + rt.xp.einsum("ij,nj->ni", chol, rt.normal(key, (n, mean.shape[0])))
        return draw

    def log_prob(self, rt, z):
        u = self._std(rt, z)
        return -0.5 * (u * u).sum(axis=-1) + float(self.log_norm)

    def log_density(self, z):
        """log q(z) in numpy float64."""
        u = (np.asarray(z, np.float64) - self.mean) @ self.prec_chol.T
        return self.log_norm - 0.5 * (u * u).sum(-1)


class StudentT(Gaussian):
    """Multivariate t with `df` degrees of freedom, location `mean`, scale matrix `cov`:
    z = mean + L ε sqrt(df / χ²_df)."""

    family = "student_t"

    def __init__(self, mean, cov, df=5.0):
        super().__init__(mean, cov)
        self.df = float(df)
        d, v = self.dim, self.df
        self.log_norm = (math.lgamma((v + d) / 2) - math.lgamma(v / 2) - 0.5 * d * math.log(v * math.pi)
                         - np.log(np.diag(self.chol)).sum())

    @classmethod
    def fit(cls, z, w, previous=None, df=None, steps=20):
        z = np.asarray(z, dtype=np.float64)
        w = _weights(w, len(z))
        v = df if df is not None else (previous.df if isinstance(previous, StudentT) else 5.0)
        g = Gaussian.fit(z, w)
        mean, cov = g.mean, g.cov * (v - 2) / v if v > 2 else g.cov
        for _ in range(steps):    # EM: u_i = (v + D) / (v + Mahalanobis²), mean = Σ w u z / Σ w u, cov = Σ w u dd'
            try:
                u2 = np.sum(np.linalg.solve(np.linalg.cholesky(cov), (z - mean).T) ** 2, axis=0)
            except np.linalg.LinAlgError:
                break
            u = (v + len(mean)) / (v + u2)
            wu = w * u
            mean = wu @ z / wu.sum()
            cov = _cov(z, wu, mean)
        return cls(mean, cov, v)

    def arrays(self):
        return self.mean, self.chol, np.asarray(self.df)

    @staticmethod
    def drawer():
        def draw(rt, arrays, key, n):
            mean, chol, df = arrays
            k1, k2 = rt.split(key, 2)
            chi2 = rt.sample(rt.distributions.Chi2(df * rt.xp.ones(n)), k2)
            eps = rt.normal(k1, (n, mean.shape[0])) * rt.xp.sqrt(df / chi2)[:, None]
            return mean + rt.xp.einsum("ij,nj->ni", chol, eps)
        return draw

    def log_prob(self, rt, z):
        u = self._std(rt, z)
        return float(self.log_norm) - 0.5 * (self.df + self.dim) * rt.xp.log(1 + (u * u).sum(axis=-1) / self.df)

    def log_density(self, z):
        u = (np.asarray(z, np.float64) - self.mean) @ self.prec_chol.T
        return self.log_norm - 0.5 * (self.df + self.dim) * np.log1p((u * u).sum(-1) / self.df)


class Mixture(Proposal):
    """Σ_k α_k N(m_k, C_k) (`components` Gaussians, or StudentTs)."""

    family = "mixture"

    def __init__(self, weights, components):
        self.weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.components = tuple(components)
        if len({c.dim for c in self.components}) != 1 or len(self.weights) != len(self.components):
            raise ShapeError("a mixture's components must share their dimension, with one weight each")

    @property
    def dim(self):
        return self.components[0].dim

    @classmethod
    def start(cls, z, w, u, component=Gaussian):
        """len(u) components from weighted draws: means at draws picked by weight (inverse CDF at the
        uniforms u), each with the weighted covariance."""
        z = np.asarray(z, dtype=np.float64)
        w = _weights(w, len(z))
        whole = Gaussian.fit(z, w)
        picks = np.minimum(np.searchsorted(np.cumsum(w), np.asarray(u) * w.sum()), len(z) - 1)
        return cls(np.full(len(picks), 1.0 / len(picks)), [component(z[i], whole.cov) for i in picks])

    def component_log_probs(self, rt, z):
        """[K, n]: log α_k + log q_k(z)."""
        return rt.xp.stack([c.log_prob(rt, z) + math.log(max(a, 1e-300))
                            for a, c in zip(self.weights, self.components)])

    def log_prob(self, rt, z):
        return rt.xp.logsumexp(self.component_log_probs(rt, z), axis=0)

    def component_log_densities(self, z):
        """[K, n]: log α_k + log q_k(z) in numpy float64."""
        return np.stack([np.log(max(a, 1e-300)) + c.log_density(z) for a, c in zip(self.weights, self.components)])

    def log_density(self, z):
        return logsumexp(self.component_log_densities(z), axis=0)

    def arrays(self):
        return np.cumsum(self.weights), tuple(c.arrays() for c in self.components)

    def structure(self):
        return self.family, tuple(c.structure() for c in self.components)

    def drawer(self):
        draws = [c.drawer() for c in self.components]

        def draw(rt, arrays, key, n):
            cumulative, parts = arrays
            k0, *ks = rt.split(key, len(draws) + 1)
            which = rt.xp.minimum(rt.xp.searchsorted(cumulative, rt.uniform(k0, (n,))), len(draws) - 1)
            z = rt.xp.stack([d(rt, a, k, n) for d, a, k in zip(draws, parts, ks)])   # [K, n, D]
            pick = rt.xp.arange(len(draws))[:, None] == which[None, :]
            return rt.xp.where(pick[:, :, None], z, 0.0 * z).sum(axis=0)
        return draw

    def fit(self, z, w, previous=None, steps=5):
        """Weighted EM from the current components (responsibilities in float64)."""
        z = np.asarray(z, dtype=np.float64)
        w = _weights(w, len(z))
        mix = self
        for _ in range(steps):
            lp = mix.component_log_densities(z)
            r = np.exp(lp - logsumexp(lp, axis=0)) * w       # [K, n]: w_i times responsibility
            mass = r.sum(axis=1)
            comps = []
            for rk, mk, c in zip(r, mass, mix.components):
                comps.append(c if mk < 1e-8 else type(c).fit(z, rk / mk, c) if isinstance(c, StudentT)
                             else Gaussian.fit(z, rk / mk))
            mix = Mixture(np.maximum(mass, 1e-8), comps)
        return mix


def layout_of(layout):
    """((site, unconstrained shape, support), ...) of a plan's layout: what a proposal is a density over."""
    return tuple((name, tuple(e["ushape"]), e["support"]) for name, e in layout.items())


def logsumexp(a, axis=0):
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


class Pool:
    """Draws from several proposals and their balance-heuristic (deterministic-mixture) weights γ / q̄,
    q̄ = Σ_t (n_t / n) q_t (Veach & Guibas 1995; Owen & Zhou 2000): all draws, their log γ and log π0
    (+ log|J|), and each proposal's log density on every draw (the proposal None is the reference π0)."""

    def __init__(self, rt):
        self.rt, self.z, self.log_target, self.log_ref = rt, None, None, None
        self.proposals, self.log_q, self.sizes = [], [], []

    def _log_q(self, q, z, log_ref):
        """log q on the draws: π0's from the run; in numpy float64 where the family has it (no compilation
        for each new pool size), else on the runtime (flows)."""
        if q is None:
            return log_ref
        if hasattr(q, "log_density"):
            return q.log_density(z)
        return np.asarray(self.rt.to_numpy(q.log_prob(self.rt, self.rt.asarray(z))), dtype=np.float64)

    def add(self, q, z, log_target, log_ref):
        """n draws z from q, with their log γ and log π0 + log|J|."""
        self.log_q = [np.concatenate([lq, self._log_q(old, z, log_ref)])
                      for lq, old in zip(self.log_q, self.proposals)]
        cat = (lambda a, b: b if a is None else np.concatenate([a, b]))
        self.z, self.log_target, self.log_ref = cat(self.z, z), cat(self.log_target, log_target), \
            cat(self.log_ref, log_ref)
        self.proposals.append(q)
        self.log_q.append(self._log_q(q, self.z, self.log_ref))
        self.sizes.append(len(z))

    def own_log_weights(self):
        """log γ − log q_t on the newest batch (q_t's plain importance weights)."""
        n = self.sizes[-1]
        lw = self.log_target[-n:] - self.log_q[-1][-n:]
        return np.where(np.isfinite(lw), lw, -np.inf)

    def log_weights(self):
        """log γ − log q̄ on every draw (−inf where γ vanishes)."""
        n = np.asarray(self.sizes, dtype=np.float64)
        log_mix = logsumexp(np.stack(self.log_q) + np.log(n / n.sum())[:, None], axis=0)
        lw = self.log_target - log_mix
        return np.where(np.isfinite(lw), lw, -np.inf)


FAMILIES = {"gaussian": Gaussian, "student_t": StudentT, "mixture": Mixture}
