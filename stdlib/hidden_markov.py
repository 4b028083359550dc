"""Discrete latent states summed out: the forward algorithm (a Markov path) and enumeration (independent sites).

A path z_0..z_{T−1} of states in {0..K−1} (values v_k = offset + k) with z_0 ~ π0, z_t | z_{t−1} = j ~ Γ_t[j, ·]
and observations that read z_t only, e[t, k] = log p(y_t | z_t = k), has in log space

    log α_0 = log π0 + e_0,   log α_t[k] = logsumexp_j (log α_{t−1}[j] + log Γ_t[j, k]) + e_t[k],
    log p(y) = logsumexp_k log α_{T−1}[k];

the backward pass log β_{T−1} = 0, log β_t[j] = logsumexp_k (log Γ_{t+1}[j, k] + e_{t+1}[k] + log β_{t+1}[k])
gives p(z_t = k | y) ∝ α_t[k] β_t[k], and forward filtering, backward sampling draws the path:
z_{T−1} ~ α_{T−1}, z_t | z_{t+1} ~ α_t[·] Γ_{t+1}[·, z_{t+1}] (by Gumbel-max, the Gumbels passed in: keys cannot
be vmapped on torch). Independent sites (a mixture) are the same sum with no transitions: for z_i ~ π_i read
by y_i only, log p(y) = Σ_i logsumexp_k (log π_i[k] + e[i, k]); a scalar z is the case of one i whose e sums
every element of y. `compiler/discrete.py` finds these structures in a model as written and puts
`ChainMarginal` or `EnumeratedMarginal` where the discrete site and its observation were. Everything is for one
particle on the runtime's arrays; a run vmaps it.
"""
import numpy as np

from .distributions import Distribution

#: families whose support is finite, by the number of states they give a law (`states`)
FINITE = ("Categorical", "Bernoulli")


def states(d):
    """The number of values of a finite discrete `Distribution` (Categorical: its last parameter axis)."""
    if d.family == "Bernoulli":
        return 2
    probs = d.params.get("probs", d.params.get("logits"))
    return int(np.shape(probs)[-1])


def categories(rt, d, k):
    """0..k−1 as values of `d` on `rt` (indices for a categorical, reals for a bernoulli)."""
    return rt.asindex(np.arange(k)) if d.family == "Categorical" else rt.asarray(np.arange(k, dtype=float))


def forward(rt, log_init, log_trans, log_emit):
    """log α [T, K] from log π0 [K], log Γ [T−1, K, K] (row: the previous state) and e [T, K]."""
    xp = rt.xp
    a0 = log_init + log_emit[0]
    if log_emit.shape[0] == 1:
        return a0[None]

    def step(a, s):
        a = xp.logsumexp(a[:, None] + s["G"], axis=0) + s["e"]
        return a, a
    _, rest = rt.scan(step, a0, {"G": log_trans, "e": log_emit[1:]})
    return xp.concatenate([a0[None], rest])


def backward(rt, log_trans, log_emit):
    """log β [T, K] (log β_{T−1} = 0)."""
    xp = rt.xp
    last = xp.zeros(tuple(log_emit.shape[1:]))
    if log_emit.shape[0] == 1:
        return last[None]

    def step(b, s):
        b = xp.logsumexp(s["G"] + (s["e"] + b)[None, :], axis=1)
        return b, b
    _, rest = rt.scan(step, last, {"G": xp.flip(log_trans, 0), "e": xp.flip(log_emit[1:], 0)})
    return xp.concatenate([xp.flip(rest, 0), last[None]])


def log_marginal(rt, log_init, log_trans, log_emit):
    """log p(y) by the forward algorithm."""
    return rt.xp.logsumexp(forward(rt, log_init, log_trans, log_emit)[-1], axis=0)


def smoothed(rt, log_init, log_trans, log_emit):
    """p(z_t = k | y) [T, K] by forward–backward."""
    xp = rt.xp
    s = forward(rt, log_init, log_trans, log_emit) + backward(rt, log_trans, log_emit)
    return xp.exp(s - xp.logsumexp(s, axis=1, keepdims=True))


def _pick(rt, logw, gumbel):
    """argmax_k (log w_k + g_k) along the last axis: a draw from w ∝ exp(log w) given standard Gumbels g."""
    return rt.xp.argmax(logw + gumbel, axis=-1)


def ffbs(rt, log_init, log_trans, log_emit, gumbels):
    """A path of state indices [T] from p(z | y), given standard Gumbels [T, K]."""
    xp = rt.xp
    alpha = forward(rt, log_init, log_trans, log_emit)
    k = alpha.shape[-1]
    ks = rt.asindex(np.arange(k))
    last = _pick(rt, alpha[-1], gumbels[-1])
    if alpha.shape[0] == 1:
        return last[None]

    def back(z1, s):
        column = xp.sum(xp.where(ks[None, :] == z1, s["G"], 0.0), axis=1)   # log Γ_{t+1}[·, z_{t+1}]
        z = _pick(rt, s["a"] + column, s["g"])
        return z, z
    rev = {"a": xp.flip(alpha[:-1], 0), "G": xp.flip(log_trans, 0), "g": xp.flip(gumbels[:-1], 0)}
    _, zs = rt.scan(back, last, rev)
    return xp.concatenate([xp.flip(zs, 0), last[None]])


def enumerated(rt, log_prior, log_emit):
    """log p(y) = Σ_i logsumexp_k (log π_i[k] + e[i, k]) for independent sites ([n, K] each)."""
    return rt.xp.logsumexp(log_prior + log_emit, axis=1).sum()


def enumerated_posterior(rt, log_prior, log_emit):
    """p(z_i = k | y) [n, K]."""
    xp = rt.xp
    s = log_prior + log_emit
    return xp.exp(s - xp.logsumexp(s, axis=1, keepdims=True))


class DiscreteMarginal(Distribution):
    """The distribution of an observation y [L, *Y] whose discrete latent parent z was summed out.

    `observe(z)` is y's law given z's value (an integer array of z's shape), `length` the size of y's leading
    axis that z's elements align with (None: z is one scalar read by all of y), `offset` the value of z's first
    state, `site` y's name, `latent` z's, `k` the number of states, `y_shape` y's shape."""

    def __init__(self, family, observe, length, offset, site, latent, k, y_shape):
        super().__init__(family, {})
        self.observe, self.length, self.offset, self.site, self.k = observe, length, offset, site, k
        self.latent, self.y_shape = latent, tuple(y_shape)

    def lower(self, rt, params=None):
        return self.lowered(self, rt)

    def __repr__(self):
        return f"{self.family}({self.site}, K={self.k})"


class _Lowered:
    """A `DiscreteMarginal` on runtime `rt` for one particle: log_prob(y) sums z out."""

    def __init__(self, spec, rt):
        self.spec, self.rt = spec, rt
        self.batch_shape, self.event_shape = (), spec.y_shape
        self.support = rt.constraint("real")

    def emissions(self, y):
        """e [L, K]: log p(y | z = v_k everywhere), summed over y's trailing axes (L = 1 for a scalar z)."""
        rt, xp, spec = self.rt, self.rt.xp, self.spec
        n = spec.length or 1
        cols = []
        for k in range(spec.k):
            z = rt.asindex(np.full((spec.length,) if spec.length else (), spec.offset + k))
            lp = spec.observe(z).lower(rt).log_prob(y)
            cols.append(lp.reshape(n, -1).sum(-1) if spec.length else lp.sum()[None])
        return xp.stack(cols, axis=1)

    def log_prob(self, y):
        if self.rt.traces_shapes:
            return np.zeros(())
        return self.total(y)

    def noise(self, y):
        """What one draw of z needs (`backends/marginals.py`): uniforms [L, K], made Gumbels."""
        return "uniform", (self.spec.length or 1, self.spec.k)

    def draw(self, y, u):
        """{z: a draw of z's values from p(z | y)}, given uniforms u [L, K]."""
        xp = self.rt.xp
        z = self.sample(y, -xp.log(-xp.log(xp.clip(u, 1e-30, 1.0 - 1e-7)))) + self.spec.offset
        return {self.spec.latent: z if self.spec.length else z[0]}


class ChainMarginal(DiscreteMarginal):
    """y [T, *Y] of a discrete Markov path z (its `MarkovChain` `chain`), summed out by the forward algorithm."""

    def __init__(self, chain, observe, offset, site, k, y_shape):
        super().__init__("ChainMarginal", observe, chain.length, offset, site, chain.site, k, y_shape)
        self.chain = chain

    class lowered(_Lowered):
        def laws(self):
            """(log π0 [K], log Γ [T−1, K, K]) read off the chain's laws at this particle's values."""
            rt, xp, spec = self.rt, self.rt.xp, self.spec
            chain, k, T = spec.chain, spec.k, spec.chain.length
            init = chain.init_dist(chain.params)
            cats = categories(rt, init, k)
            log_init = init.lower(rt).log_prob(cats)

            def transition(t):
                return xp.stack([chain.step_dist(spec.offset + j, t, chain.params).lower(rt)
                                 .log_prob(cats) for j in range(k)])
            if T == 1:
                return log_init, xp.zeros((0, k, k))
            ts = rt.asindex(np.arange(1, T))
            if chain.spec.reads_t:
                return log_init, rt.vmap(transition)(ts)
            return log_init, xp.broadcast_to(transition(ts[0]), (T - 1, k, k))

        def total(self, y):
            return log_marginal(self.rt, *self.laws(), self.emissions(y))

        def marginals(self, y):
            """p(z_t = v_k | y) [T, K] by forward–backward."""
            return smoothed(self.rt, *self.laws(), self.emissions(y))

        def sample(self, y, gumbels):
            """A path of state indices [T] from p(z | y) (FFBS), given standard Gumbels [T, K]."""
            return ffbs(self.rt, *self.laws(), self.emissions(y), gumbels)


class EnumeratedMarginal(DiscreteMarginal):
    """y [L, *Y] (or any shape, for a scalar z) of independent discrete sites z ~ `prior` (batch [L] or ()),
    summed out by enumeration."""

    def __init__(self, prior, observe, length, offset, site, latent, k, y_shape):
        super().__init__("EnumeratedMarginal", observe, length, offset, site, latent, k, y_shape)
        self.prior = prior

    class lowered(_Lowered):
        def log_prior(self):
            """log π [L, K] (L = 1 for a scalar z)."""
            rt, spec = self.rt, self.spec
            cats = categories(rt, spec.prior, spec.k)
            d = spec.prior.lower(rt)
            n = spec.length or 1
            lp = d.log_prob(cats.reshape((spec.k,) + (1,) * len(d.batch_shape)))   # [K, *batch]
            return rt.xp.broadcast_to(lp.reshape(spec.k, -1).T, (n, spec.k))

        def total(self, y):
            return enumerated(self.rt, self.log_prior(), self.emissions(y))

        def marginals(self, y):
            """p(z_i = v_k | y) [L, K]."""
            return enumerated_posterior(self.rt, self.log_prior(), self.emissions(y))

        def sample(self, y, gumbels):
            """State indices [L] from p(z | y), given standard Gumbels [L, K]."""
            return _pick(self.rt, self.log_prior() + self.emissions(y), gumbels)
