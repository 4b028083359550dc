"""The rule that finds a linear-Gaussian state space in a model and integrates its path out (`stdlib/kalman.py`).

A latent `ppl.markov` path x (in a `.ppl` model: x[t] ~ ... in a loop) whose only reader is one observed site y
is linear-Gaussian when, at every probe (`marginalize.probe_environments`):

* init is Normal or MultivariateNormal (unbatched), and so is the step, of the same shape;
* the step's mean is affine in prev and its covariance does not read prev: for random x, x',
  mean(x) − mean(0) = M (x) with M read off the unit vectors, and cov(x) = cov(0) (to 1e-9 relative);
* y[t] given x[t] is Normal or MultivariateNormal with a mean affine in x[t] and a covariance that does not
  read it, at every t (data with a leading time axis are sliced at t, as the particle filter slices them).

Then y's distribution becomes `StateSpaceMarginal` (the Kalman filter) and x leaves the model.
"""
import math
from types import SimpleNamespace

import numpy as np

from ..stdlib.kalman import StateSpaceMarginal, gaussian_moments, law_shape
from ..target import Model, Site
from .marginalize import Marginal, rule

GAUSSIAN = ("Normal", "MultivariateNormal")
#: what the plan says integrated the path out
HOW = "a Kalman filter"


def _paths(model):
    return [n for n, s in model.sites.items()
            if getattr(s, "markov", None) is not None and s.role == "latent" and n not in model.observed]


#: numpy in float64 as the runtime `gaussian_moments` computes on (the probes' laws are numpy values)
_FLOAT64 = SimpleNamespace(xp=np, asarray=lambda v: np.asarray(v, float))


def _moments(d):
    """(mean, covariance) of a Gaussian `Distribution` on numpy, flattened."""
    return gaussian_moments(_FLOAT64, d, math.prod(law_shape(d)))


def _gaussian(d):
    if d is None or getattr(d, "family", None) not in GAUSSIAN:
        return False
    if d.family == "MultivariateNormal":
        cov = d.params.get("covariance_matrix", d.params.get("scale_tril"))
        return np.ndim(d.params["loc"]) == 1 and np.ndim(cov) == 2 and not d.shape
    return True


def _affine(law, shape, rng):
    """Whether x ↦ law(x) (a Gaussian of x with `shape`) has a mean affine in x and a covariance free of x."""
    k = math.prod(shape)
    first = law(np.zeros(shape))
    if not _gaussian(first):
        return False
    m0, c0 = _moments(first)
    columns = []
    for i in range(k):
        e = np.zeros(k)
        e[i] = 1.0
        d = law(e.reshape(shape))
        if not _gaussian(d) or law_shape(d) != law_shape(first):
            return False
        columns.append(_moments(d)[0].reshape(-1) - m0.reshape(-1))
    M = np.stack(columns, axis=1)
    for _ in range(2):
        x = rng.standard_normal(k) * 2.0
        d = law(x.reshape(shape))
        if not _gaussian(d) or law_shape(d) != law_shape(first):
            return False
        m, c = _moments(d)
        if not (np.allclose(m.reshape(-1), m0.reshape(-1) + M @ x, rtol=1e-9, atol=1e-9 * (1 + np.abs(m0).max()))
                and np.allclose(c, c0, rtol=1e-9, atol=1e-12)):
            return False
    return bool(np.all(np.isfinite(M)) and np.all(np.isfinite(c0)))


def _is_linear_gaussian(model, name, obs, env, rng):
    site, osite = model.sites[name], model.sites[obs]
    chain = site(env)
    length = chain.length
    init = chain.init_dist(chain.params)
    if not _gaussian(init):
        return None
    shape = law_shape(init)
    ts = range(1, length) if chain.spec.reads_t else range(1, min(length, 2))
    if not all(_affine(lambda p, t=t: chain.step_dist(p, t, chain.params), shape, rng) for t in ts):
        return None
    timed = tuple(p for p in osite.parents if p != name and np.ndim(env[p]) >= 1 and np.shape(env[p])[0] == length)
    y = np.asarray(model.observed[obs])
    for t in range(length if timed else 1):
        at = {**env, **{p: np.asarray(env[p])[t] for p in timed}}
        law = (lambda x, at=at: osite({**at, name: x}))
        if not _affine(law, shape, rng):
            return None
    y_shape = law_shape(osite({**env, **{p: np.asarray(env[p])[0] for p in timed}, name: np.zeros(shape)}))
    if y.shape != (length,) + y_shape:
        return None
    return timed, y_shape


@rule(candidate=lambda model: bool(_paths(model)))
def kalman(model, probes, readers):
    """x (a linear-Gaussian path read only by the observed y) out, y ~ StateSpaceMarginal in; or None."""
    for name in _paths(model):
        readers_of_x = [n for n, s in model.sites.items() if name in s.parents]
        if name in readers or len(readers_of_x) != 1:
            continue
        obs = readers_of_x[0]
        if model.sites[obs].role != "latent" or obs not in model.observed:
            continue
        rng = np.random.default_rng(0)
        try:
            with np.errstate(all="ignore"):
                found = [_is_linear_gaussian(model, name, obs, env, rng) for env in probes]
        except Exception:   # noqa: BLE001 -- a law that cannot be evaluated at a probe is not found linear
            continue
        if any(f is None for f in found) or len({f[0] for f in found}) != 1:
            continue
        timed, y_shape = found[0]
        return _rewritten(model, name, obs, timed, y_shape), [Marginal(model.name, (name,), obs, HOW)]
    return None


def _rewritten(model, name, obs, timed, y_shape):
    site, osite = model.sites[name], model.sites[obs]
    parents = tuple(dict.fromkeys(site.parents + tuple(p for p in osite.parents if p != name)))

    def observe(env_t, x):
        return osite({**env_t, name: x})

    def marginal(**env):
        return StateSpaceMarginal(site(env), observe, {p: env[p] for p in osite.parents if p != name}, timed,
                                  y_shape, obs)
    sites = {n: (Site("latent", marginal, parents=parents, source=osite.source) if n == obs else s)
             for n, s in model.sites.items() if n != name}
    return Model(sites, model.data, model.observed, name=model.name)
