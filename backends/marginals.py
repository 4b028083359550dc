"""The sites the compiler integrated out (`compiler/marginalize.py`), at run time.

* `draw`: after any method, draws of the integrated-out sites x from p(x | θ, y), one for each draw (or
  particle) of θ, added to `Result.samples` (the marginal's own exact sampler: backward sampling for a Kalman
  filter). Weighted runs keep their weights: (θ_i, x_i) with x_i ~ p(x | θ_i, y) is weighted by w(θ_i).
* `kalman_filter`: `method="pf"` on a state-space target whose path was integrated out and whose static
  parameters are fixed: the exact log-likelihood (se 0), filtering and RTS-smoothed moments, and `particles`
  smoothed paths by forward filtering, backward sampling.

A lowered marginal (the `lower(rt)` of the marginal's `Distribution`) offers `noise(y)` -> (kind, shape): the
standard normals ('normal') or uniforms ('uniform') one exact draw needs, and `draw(y, noise)` -> {site: value}.
"""
import math

import numpy as np

from ..compiler.linear_gaussian import HOW as KALMAN
from ..compiler.lower import Evaluator
from .. import advice
from ..errors import PlanError
from ..result import Result
from . import run_cache

#: draws of integrated-out sites are skipped above this many numbers (particles x path size)
MAX_DRAWN = 5 * 10 ** 7


def observed_terms(compiled):
    """(likelihood term, Marginal) of each observed site that carries a marginal."""
    out = []
    for mg in compiled.marginals:
        term = next(t for t in compiled.terms if t.kind == "likelihood" and t.model.name == mg.model
                    and t.site == mg.observed)
        out.append((term, mg))
    return out


def lowered(ev, term, theta):
    """The lowered marginal of `term` at the latent values θ (one particle)."""
    return term.spec(ev.model_env(term.model, theta)).lower(ev.rt)


def _noise(rt, key, kind, shape):
    return rt.normal(key, shape) if kind == "normal" else rt.uniform(key, shape)


def draw(compiled, rt, key, result):
    """`result` with draws of every integrated-out site given each draw of θ (see the module docstring)."""
    terms = observed_terms(compiled)
    if not terms or not result.samples and compiled.latent:
        return result
    ev = Evaluator(compiled, rt)
    shape = next(iter(result.samples.values())).shape[:2] if result.samples else np.shape(result.log_weights)
    count = math.prod(shape)
    theta = {n: rt.asarray(result.samples[n].reshape((count,) + result.samples[n].shape[2:]))
             for n in compiled.latent}
    for (term, mg), k in zip(terms, rt.split(key, len(terms))):
        y = ev.observation(term)
        kind, noise_shape = lowered(ev, term, {n: v[0] for n, v in theta.items()}).noise(y)
        if count * math.prod(noise_shape) > MAX_DRAWN:
            result.diagnostics.setdefault("marginalized_not_drawn", []).extend(mg.sites)
            continue
        noise = _noise(rt, k, kind, (count,) + tuple(noise_shape))
        drawn = rt.jit(rt.vmap(lambda th, e: lowered(ev, term, th).draw(y, e)))(theta, noise)
        for name, v in drawn.items():
            v = rt.to_numpy(v)
            result.samples[name] = v.reshape(shape + v.shape[1:])
    order = {n: i for i, n in enumerate(compiled.declared)}
    result.samples = dict(sorted(result.samples.items(), key=lambda kv: order.get(kv[0], len(order))))
    return result


def _kalman_programs(compiled, rt):
    """(log Z, moments, draw of paths, the path's name and state shape) of a Kalman marginal, jitted once per
    compiled target and runtime (a run is then three calls)."""
    cache = run_cache(compiled, "kalman")
    if repr(rt) not in cache:
        ev = Evaluator(compiled, rt)
        (term, mg), = [(t, mg) for t, mg in observed_terms(compiled) if mg.how == KALMAN]
        y = ev.observation(term)
        d = lowered(ev, term, {})
        prog = compiled.lower(rt)
        cache[repr(rt)] = (rt.jit(lambda: sum(prog.log_parts(rt.xp.zeros((0,))))), rt.jit(lambda: d.moments(y)),
                           rt.jit(rt.vmap(lambda e: d.draw(y, e))), d.noise(y), mg.sites[0], d.state_shape())
    return cache[repr(rt)]


def kalman_filter(compiled, rt, key, particles):
    """`method="pf"` where the compiler integrated the path out (see the module docstring)."""
    if compiled.latent:
        names = ", ".join(map(repr, compiled.latent))
        raise PlanError(f"method 'pf' filters with the static parameters fixed, but {names} "
                        f"{'is' if len(compiled.latent) == 1 else 'are'} latent", site=compiled.latent[0],
                        hint=f"condition on them ({advice.condition(compiled.latent[0])}) or sample them with "
                             f"{advice.options('pmmh', True)} or {advice.options('nuts', True)} (the path is "
                             f"integrated out exactly in both)")
    log_z, moments, draw_paths, (kind, noise_shape), name, state = _kalman_programs(compiled, rt)
    log_z = float(rt.to_numpy(log_z()))
    log_c, mean, cov, smean, scov = (rt.to_numpy(a) for a in moments())
    length = log_c.shape[0]
    var, svar = (np.diagonal(c, axis1=-2, axis2=-1).reshape((length,) + state) for c in (cov, scov))
    mean, smean = (m.reshape((length,) + state) for m in (mean, smean))
    paths = draw_paths(_noise(rt, key, kind, (particles,) + tuple(noise_shape)))
    return Result({n: rt.to_numpy(v)[None] for n, v in paths.items()}, np.full((1, particles), -math.log(particles)),
                  log_z, 0.0, method="pf", runtime=rt.name, device=rt.device, diagnostics={
                      "ess": np.full(length, float(particles)), "resampled": np.zeros(length, bool), "log_c": log_c,
                      "filter_mean": {name: mean}, "filter_var": {name: var}, "smoothed_mean": {name: smean},
                      "smoothed_var": {name: svar}, "log_z_per_chain": [log_z], "particles": particles,
                      "smoother": "exact (backward sampling)",
                      "marginalized": [str(m) for m in compiled.marginals]})
