"""The rule that finds a conjugate pair in a model and integrates its parameter out (`stdlib/conjugate.py`).

A latent static site θ (no `ppl.markov` path) whose only reader is one observed site y, and no reward or
energy, is integrated out when, at every probe (`marginalize.probe_environments`), θ's law and y's law given θ
are one of the pairs of `stdlib.conjugate.PAIRS`:

* normal–normal: θ ~ Normal, y ~ Normal with a mean affine in θ and a scale that does not read it (checked as
  `linear_gaussian` checks a step: at θ = 0, the unit vectors and random points);
* gamma–poisson, beta–binomial, beta–bernoulli: y's rate (probs) is e_i θ_g(i) for exposures e_i > 0 (1 for
  probs) and groups g that are the same at every probe: read off at θ = 1 and the unit vectors, checked at a
  random θ; y's other parameters (a binomial's total count) do not read θ;
* dirichlet–categorical: θ ~ Dirichlet [K], y ~ Categorical with probs θ (broadcast over y's batch).

Then y's distribution becomes the pair's exact marginal and θ leaves the model; the laws are evaluated under
the compiler's trace (`shapes.tracing`), where θ = 0 or a unit vector is not refused as a parameter.
"""
import math

import numpy as np

from ..stdlib.conjugate import PAIRS
from ..stdlib.distributions import PARAM_EVENT_DIMS, Distribution, invalid_parameter
from ..stdlib.kalman import law_shape
from ..target import Model, Site
from .linear_gaussian import _affine
from .marginalize import Marginal, rule
from .shapes import tracing

#: the parameter of y's law that θ is, per observation family (the discrete pairs)
PARAMETER = {"Poisson": "rate", "Binomial": "probs", "Bernoulli": "probs", "Categorical": "probs"}


def _candidates(model):
    """(θ, y): latent static θ read only by the observed latent site y."""
    for name, site in model.sites.items():
        if site.role != "latent" or name in model.observed or getattr(site, "markov", None) is not None:
            continue
        readers = [n for n, s in model.sites.items() if name in s.parents]
        if len(readers) == 1 and readers[0] in model.observed and model.sites[readers[0]].role == "latent":
            yield name, readers[0]


def _batch(d):
    """The batch shape of a discrete law (its parameters broadcast with its `shape`)."""
    shapes = [np.shape(v)[:np.ndim(v) - PARAM_EVENT_DIMS.get((d.family, k), 0)] for k, v in d.params.items()]
    return tuple(np.broadcast_shapes(*shapes, tuple(d.shape)))


def _groups(law, family, shape, y_shape, rng):
    """G [n, k] (one-hot) where y's parameter is e ⊙ (G θ) with e > 0 (e = 1 for probs) and y's other
    parameters do not read θ; None otherwise."""
    k, name = math.prod(shape), PARAMETER[family]

    def at(x):
        d = law(np.reshape(x, shape))
        if type(d) is not Distribution or d.family != family or name not in d.params or _batch(d) != y_shape:
            return None
        return d, np.broadcast_to(np.asarray(d.params[name], float), y_shape).reshape(-1)
    first = at(np.ones(k))
    if first is None:
        return None
    d1, e = first
    if not np.all(e > 0) or (name == "probs" and not np.allclose(e, 1.0)):
        return None
    columns = [at(np.eye(k)[j]) for j in range(k)]
    if any(c is None for c in columns):
        return None
    G = np.stack([c[1] for c in columns], axis=1) / e[:, None]
    if not (np.all((G == 0) | (G == 1)) and np.all(G.sum(axis=1) == 1)):
        return None
    x = rng.uniform(0.2, 0.8, k)
    last = at(x)
    if last is None or not np.allclose(last[1], e * (G @ x), rtol=1e-9, atol=1e-12):
        return None
    others = [p for p in d1.params if p != name]
    if any(not np.array_equal(np.asarray(d1.params[p]), np.asarray(last[0].params[p])) for p in others):
        return None
    return G


def _categorical(law, shape, y_shape, rng):
    """Whether y ~ Categorical(probs = θ) (broadcast over y's batch) for θ [K]."""
    if len(shape) != 1:
        return False
    for _ in range(2):
        x = rng.dirichlet(np.ones(shape[0]))
        d = law(x)
        if type(d) is not Distribution or d.family != "Categorical" or "probs" not in d.params \
                or _batch(d) != y_shape or set(d.params) != {"probs"}:
            return False
        if not np.allclose(np.broadcast_to(d.params["probs"], y_shape + shape), x, rtol=1e-12, atol=0.0):
            return False
    return True


def _pair(model, name, obs, env, rng):
    """(the pair's class, its groups or None, y's family) of θ = `name` and y = `obs` at one probe, or None."""
    prior = model.sites[name](env)
    shape = tuple(np.shape(env[name]))
    if type(prior) is not Distribution:
        return None
    y_shape = tuple(np.shape(model.observed[obs]))

    def law(x):
        return model.sites[obs]({**env, name: x})
    first = law(np.asarray(env[name], float))
    cls = PAIRS.get((prior.family, getattr(first, "family", None)))
    if cls is None or type(first) is not Distribution:
        return None
    fixed = {k: np.asarray(v, float) for k, v in first.params.items() if k != PARAMETER.get(first.family, "loc")}
    if invalid_parameter(first.family, fixed):   # left to the run, which names the site and the parameter
        return None
    if prior.family == "Normal":
        if law_shape(prior) != shape or law_shape(first) != y_shape or not _affine(law, shape, rng):
            return None
        return cls, None, first.family
    if prior.family == "Dirichlet":
        ok = not prior.shape and np.shape(prior.params["concentration"]) == shape and \
            _categorical(law, shape, y_shape, rng)
        return (cls, None, first.family) if ok else None
    if _batch(prior) != shape:
        return None
    groups = _groups(law, first.family, shape, y_shape, rng)
    return None if groups is None else (cls, groups, first.family)


@rule(candidate=lambda model: any(True for _ in _candidates(model)), methods=("is", "smc"))
def conjugate(model, probes, readers):
    """θ (a conjugate parameter read only by the observed y) out, y ~ its exact marginal in; or None."""
    for name, obs in _candidates(model):
        if name in readers:
            continue
        rng = np.random.default_rng(0)
        try:
            with np.errstate(all="ignore"), tracing():
                found = [_pair(model, name, obs, env, rng) for env in probes]
        except Exception:   # noqa: BLE001 -- a law that cannot be evaluated at a probe is not found conjugate
            continue
        if any(f is None for f in found) or len({(f[0], f[2]) for f in found}) != 1 or \
                any(not np.array_equal(f[1], found[0][1]) for f in found if f[1] is not None):
            continue
        cls, groups, family = found[0]
        how = cls.pair if family != "Bernoulli" else "beta-bernoulli"
        shape = tuple(np.shape(probes[0][name]))
        return _rewritten(model, name, obs, cls, shape, groups), [Marginal(model.name, (name,), obs,
                                                                           f"conjugacy ({how})")]
    return None


def _rewritten(model, name, obs, cls, shape, groups):
    site, osite = model.sites[name], model.sites[obs]
    parents = tuple(dict.fromkeys(site.parents + tuple(p for p in osite.parents if p != name)))
    y_shape = tuple(np.shape(model.observed[obs]))

    def marginal(**env):
        return cls(site(env), lambda x: osite({**env, name: x}), shape, y_shape, name, groups)
    sites = {n: (Site("latent", marginal, parents=parents, source=osite.source) if n == obs else s)
             for n, s in model.sites.items() if n != name}
    return Model(sites, model.data, model.observed, name=model.name)
