"""Resampling schemes: `scheme(rt, key, weights, num_samples=None) -> indices`, M = `num_samples` offspring
(default N) from normalized weights [N].

Each is unbiased: E[#offspring of i] = M · w_i. Written against the runtime interface, batched and
jit-compatible (static shapes). M < N is what waste-free SMC resamples (N/P chain starts).
"""
RESAMPLERS = {}


def resampler(fn):
    RESAMPLERS[fn.__name__] = fn
    return fn


def _inverse_cdf(rt, weights, u):
    """Indices i with CDF_{i-1} <= u_j < CDF_i for sorted uniforms u [M]."""
    xp = rt.xp
    cdf = xp.cumsum(weights, axis=0)
    idx = xp.searchsorted(cdf / cdf[-1], u, side="right")
    return xp.clip(idx, 0, weights.shape[0] - 1)


@resampler
def multinomial(rt, key, weights, num_samples=None):
    """M independent draws from Categorical(w) (sorted uniforms: same law, one searchsorted)."""
    m = num_samples or weights.shape[0]
    u = rt.xp.sort(rt.uniform(key, (m,)))
    return _inverse_cdf(rt, weights, u)


@resampler
def stratified(rt, key, weights, num_samples=None):
    """One uniform in each stratum [j/M, (j+1)/M)."""
    m = num_samples or weights.shape[0]
    return _inverse_cdf(rt, weights, (rt.xp.arange(m) + rt.uniform(key, (m,))) / m)


@resampler
def systematic(rt, key, weights, num_samples=None):
    """One uniform U shared by all strata: u_j = (j + U) / M. Without a search: K_i = ceil(M CDF_i − U) is the
    number of u_j below CDF_i (K_{N−1} = M, as CDF_{N−1} = 1 exactly), and the ancestor of slot j is
    #{i : K_i <= j}, a histogram of K and its cumulative sum (O(N); the same indices as the inverse CDF)."""
    xp = rt.xp
    n = weights.shape[0]
    m = num_samples or n
    cdf = xp.cumsum(weights, axis=0)
    k = xp.clip(xp.ceil(m * (cdf / cdf[-1]) - rt.uniform(key, (1,))), 0, m)
    counts = xp.index_add(xp.zeros((m + 1,)), rt.asindex(k), xp.ones((n,)))
    return xp.clip(rt.asindex(xp.cumsum(counts[:m], axis=0)), 0, n - 1)


@resampler
def residual(rt, key, weights, num_samples=None):
    """floor(M w_i) deterministic copies of i, the remaining R = M − Σ floor(M w) drawn multinomially from the
    residuals M w_i − floor(M w_i). Static shapes: slot j < Σ floor takes the deterministic copy, slot j ≥ it
    the (j − Σ floor)-th of M i.i.d. residual draws."""
    xp = rt.xp
    n = weights.shape[0]
    m = num_samples or n
    mw = m * weights / xp.sum(weights)
    copies = xp.floor(mw)
    ends = xp.cumsum(copies, axis=0)
    slots = xp.arange(m)
    det = xp.clip(xp.searchsorted(ends, slots * 1.0, side="right"), 0, n - 1)
    res = _inverse_cdf(rt, mw - copies + 1e-30, rt.uniform(key, (m,)))  # i.i.d., unsorted: any R of them will do
    deterministic = slots < ends[-1]
    j = xp.clip(slots - xp.sum(deterministic), 0, m - 1)
    return xp.where(deterministic, det, xp.take(res, j))
