"""Resampling schemes: `scheme(rt, key, weights) -> indices`, N offspring from normalized weights [N].

Each is unbiased: E[#offspring of i] = N · w_i. Written against the runtime interface,
batched and jit-compatible (static shapes).
"""
RESAMPLERS = {}


def resampler(fn):
    RESAMPLERS[fn.__name__] = fn
    return fn


def _inverse_cdf(rt, weights, u):
    """Indices i with CDF_{i-1} <= u_j < CDF_i for sorted uniforms u [N]."""
    xp = rt.xp
    cdf = xp.cumsum(weights, axis=0)
    idx = xp.searchsorted(cdf / cdf[-1], u, side="right")
    return xp.clip(idx, 0, weights.shape[0] - 1)


@resampler
def multinomial(rt, key, weights):
    """N independent draws from Categorical(w) (sorted uniforms: same law, one searchsorted)."""
    n = weights.shape[0]
    u = rt.xp.sort(rt.uniform(key, (n,)))
    return _inverse_cdf(rt, weights, u)


@resampler
def stratified(rt, key, weights):
    """One uniform in each stratum [j/N, (j+1)/N)."""
    n = weights.shape[0]
    return _inverse_cdf(rt, weights, (rt.xp.arange(n) + rt.uniform(key, (n,))) / n)


@resampler
def systematic(rt, key, weights):
    """One uniform U shared by all strata: u_j = (j + U) / N."""
    n = weights.shape[0]
    return _inverse_cdf(rt, weights, (rt.xp.arange(n) + rt.uniform(key, (1,))) / n)


@resampler
def residual(rt, key, weights):
    """floor(N w_i) deterministic copies of i, the remaining R = N − Σ floor(N w) drawn multinomially from the
    residuals N w_i − floor(N w_i). Static shapes: slot j < Σ floor takes the deterministic copy, slot j ≥ it
    the (j − Σ floor)-th of N i.i.d. residual draws."""
    xp = rt.xp
    n = weights.shape[0]
    nw = n * weights / xp.sum(weights)
    copies = xp.floor(nw)
    ends = xp.cumsum(copies, axis=0)
    slots = xp.arange(n)
    det = xp.clip(xp.searchsorted(ends, slots * 1.0, side="right"), 0, n - 1)
    res = _inverse_cdf(rt, nw - copies + 1e-30, rt.uniform(key, (n,)))  # i.i.d., unsorted: any R of them will do
    deterministic = slots < ends[-1]
    j = xp.clip(slots - xp.sum(deterministic), 0, n - 1)
    return xp.where(deterministic, det, xp.take(res, j))
