"""The rules that sum discrete latent sites out of a model (`stdlib/hidden_markov.py`).

A latent site z with finite support (categorical, bernoulli: K values offset + k) whose only reader is one
observed site y is summed out when, at every probe (`marginalize.probe_environments`):

* a `ppl.markov` path z (T states, each a scalar categorical or bernoulli of K values, init and step alike):
  y [T, ...] reads z_t only at t: y's law at a path z has batch shape [T, ...] and the same family and
  parameters, element t of each parameter with a leading T axis equal to its element t at the constant path
  z_t (the other parameters free of z). Then y ~ `ChainMarginal` (the forward algorithm) and z leaves the model.
* an independent site z (not a path) whose law is finite, either scalar (y's law at each value; any y) or with
  batch [L] read elementwise by y [L, ...] as above: y ~ `EnumeratedMarginal` (enumeration).

An independent site is looked at where its law is known before sampling (it reads data only) or a `.ppl`
declaration says it is an integer (`Site.finite`), so that models without one are not probed.
"""
import numpy as np

from ..errors import PPLError
from ..stdlib.hidden_markov import FINITE, ChainMarginal, EnumeratedMarginal, states
from ..target import Model, Site
from .marginalize import Marginal, rule
from .shapes import ShapeRuntime, tracing


def _paths(model):
    return [n for n, s in model.sites.items()
            if getattr(s, "markov", None) is not None and s.role == "latent" and n not in model.observed]


def _independent(model):
    return [n for n, s in model.sites.items()
            if s.role == "latent" and n not in model.observed and getattr(s, "markov", None) is None
            and (getattr(s, "finite", False) or s.constant is not None and s.constant.family in FINITE)]


def _finite(d, k=None):
    """K for a law with finite support (k, where given, must match), else None."""
    if getattr(d, "family", None) not in FINITE:
        return None
    n = states(d)
    return n if k is None or n == k else None


def _batch(d):
    with tracing():
        return tuple(d.lower(ShapeRuntime()).batch_shape)


def _aligned(law, length, k, offset, rng):
    """Whether y's law at z (an integer array [length], or a scalar where length is None) reads z elementwise:
    see the module docstring. A scalar z only needs a law at each value."""
    if length is None:
        return all(law(np.asarray(offset + j)) is not None for j in range(k))
    consts = [law(np.full(length, offset + j)) for j in range(k)]
    for _ in range(2):
        z = rng.integers(k, size=length)
        mixed = law(offset + z)
        if any(c.family != mixed.family or set(c.params) != set(mixed.params) for c in consts):
            return False
        batch = _batch(mixed)
        if not batch or batch[0] != length:
            return False
        for p, v in mixed.params.items():
            a, cs = np.asarray(v, float), [np.asarray(c.params[p], float) for c in consts]
            if any(c.shape != a.shape for c in cs):
                return False
            if a.ndim and a.shape[0] == length:
                want = np.stack(cs)[z, np.arange(length)]
            elif all(np.array_equal(c, cs[0], equal_nan=True) for c in cs):
                want = cs[0]
            else:
                return False
            if not np.allclose(a, want, rtol=1e-9, atol=0, equal_nan=True):
                return False
    return True


def _only_reader(model, name, readers):
    """The observed site that alone reads `name`, or None."""
    readers_of = [n for n, s in model.sites.items() if name in s.parents]
    if name in readers or len(readers_of) != 1:
        return None
    obs = readers_of[0]
    return obs if model.sites[obs].role == "latent" and obs in model.observed else None


def _observation(model, name, obs, env):
    y = np.asarray(model.observed[obs])
    return y, (lambda z: model.sites[obs]({**env, name: z}))


def _chain_states(model, name, obs, env, rng):
    """K if the path `name` is a finite discrete chain read elementwise in time by `obs` at `env`, else None."""
    chain = model.sites[name](env)
    offset, length = chain.spec.offset, chain.length
    init = chain.init_dist(chain.params)
    k = _finite(init)
    if k is None or _batch(init) or init.family == "Categorical" and np.ndim(init.params.get(
            "probs", init.params.get("logits"))) != 1:
        return None
    ts = range(1, length) if chain.spec.reads_t else range(1, min(length, 2))
    for t in ts:
        for j in range(k):
            step = chain.step_dist(np.asarray(offset + j), t, chain.params)
            if _finite(step, k) is None or step.family != init.family or _batch(step):
                return None
    y, law = _observation(model, name, obs, env)
    if y.ndim == 0 or y.shape[0] != length or not _aligned(law, length, k, offset, rng):
        return None
    return k


def _site_states(model, name, obs, env, rng):
    """(K, L) if the independent site `name` is finite and read by `obs` as a whole (L None, a scalar) or
    elementwise (L its length), else None."""
    prior = model.sites[name](env)
    k = _finite(prior)
    if k is None:
        return None
    batch = _batch(prior)
    if len(batch) > 1:
        return None
    length = batch[0] if batch else None
    y, law = _observation(model, name, obs, env)
    if length is not None and (y.ndim == 0 or y.shape[0] != length):
        return None
    return (k, length) if _aligned(law, length, k, _offset(model.sites[name]), rng) else None


def _offset(site):
    return getattr(site, "offset", 0)


def _found(check, model, name, obs, probes):
    """What `check` finds, the same at every probe where the laws can be built (the moved probes may leave a
    constrained parameter's support: a simplex) and at the representative point; else None."""
    rng, found = np.random.default_rng(0), []
    for i, env in enumerate(probes):
        try:
            with np.errstate(all="ignore"):
                found.append(check(model, name, obs, env, rng))
        except PPLError:
            if i == 0:
                return None
        except Exception:   # noqa: BLE001 -- a law that cannot be evaluated at a probe is not found summable
            return None
    return found[0] if found[0] is not None and all(f == found[0] for f in found) else None


@rule(candidate=lambda model: bool(_paths(model)))
def forward_algorithm(model, probes, readers):
    """z (a finite discrete Markov path read only by the observed y) out, y ~ ChainMarginal in; or None."""
    for name in _paths(model):
        obs = _only_reader(model, name, readers)
        k = obs and _found(_chain_states, model, name, obs, probes)
        if k:
            site, osite = model.sites[name], model.sites[obs]

            def marginal(env):
                return ChainMarginal(site(env), lambda z: osite({**env, name: z}), site.markov.offset, obs, k,
                                     np.shape(model.observed[obs]))
            return (_replaced(model, name, obs, marginal),
                    [Marginal(model.name, (name,), obs, "the forward algorithm")])
    return None


@rule(candidate=lambda model: bool(_independent(model)))
def enumeration(model, probes, readers):
    """z (an independent finite discrete site read only by the observed y) out, y ~ EnumeratedMarginal in."""
    for name in _independent(model):
        obs = _only_reader(model, name, readers)
        found = obs and _found(_site_states, model, name, obs, probes)
        if found:
            k, length = found
            site, osite = model.sites[name], model.sites[obs]

            def marginal(env):
                return EnumeratedMarginal(site(env), lambda z: osite({**env, name: z}), length, _offset(site),
                                          obs, name, k, np.shape(model.observed[obs]))
            return _replaced(model, name, obs, marginal), [Marginal(model.name, (name,), obs, "enumeration")]
    return None


def _replaced(model, name, obs, marginal):
    """`model` without `name`, `obs` drawn from `marginal(env)` (env: what both read)."""
    site, osite = model.sites[name], model.sites[obs]
    parents = tuple(dict.fromkeys(site.parents + tuple(p for p in osite.parents if p != name)))
    fn = lambda **env: marginal(env)  # noqa: E731 -- its parents are given, not read off its argument names
    sites = {n: (Site("latent", fn, parents=parents, source=osite.source) if n == obs else s)
             for n, s in model.sites.items() if n != name}
    return Model(sites, model.data, model.observed, name=model.name)
