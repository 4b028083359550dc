"""Particle filters for state-space targets (`ppl.markov`): a Feynman–Kac model on the core loop of `fk`.

With θ fixed, M0 = q0 (the initial law p0, or a user proposal), M_t = q_t(x_t | x_{t−1}) (the transition
p(x_t | x_{t−1}), the bootstrap filter, or a user proposal: the guided filter), and

    log G_t = log p(y_t | x_t) + log p(x_t | x_{t−1}) − log q_t(x_t | x_{t−1})      (the last two cancel
                                                                                      for the bootstrap filter)

so log Z = Σ_t log c_t is the unbiased (on the Z scale) estimate of log p(y_{0:T−1} | θ), plus the terms of
the target that do not read the path (priors of observed parameters, constants). One step per t: weight,
resample when ESS < `resample_threshold` · N, propagate; one `scan` over t on JAX. Filtering means and
variances Σ W x_t, Σ W x_t² − mean² are recorded after each weighting. Smoothing (memory O(N T)):

* `smoother="genealogy"`: the surviving ancestral lines of the final particles, weighted by W_{T−1};
* `smoother="backward"`: backward simulation (Godsill, Doucet & West 2004): M trajectories,
  b_{T−1} ~ W_{T−1}, b_t ~ W_t^i p(x_{t+1}^{b_{t+1}} | x_t^i), O(M N) transition densities per step;
* `smoother=None`: memory O(N).
"""
import math
import weakref
from typing import Any, NamedTuple

import numpy as np

from ..compiler.lower import Evaluator
from ..compiler.sequential import StateSpace
from .. import advice
from ..errors import InferenceError, PlanError, PPLError, ValueRangeError
from ..result import Result
from ..stdlib.distributions import per_particle, repeated
from . import fk, method
from .sharding import shards_particles


class Particles(NamedTuple):
    x: Any          # the states x_t [N, *E]
    log_ratio: Any  # log p(x_t | x_{t−1}) − log q_t(x_t | x_{t−1}) [N] (0 for the bootstrap filter)


class StatePath:
    """Batched access to the state's laws and the observations on runtime `rt`, for one environment `env`
    (data, observations and the static parameters θ)."""

    def __init__(self, ss, rt, env, proposal=None):
        self.ss, self.rt, self.env = ss, rt, env
        self.chain = ss.site(env)
        self.length = self.chain.length
        self.proposal = None if proposal is None else proposal(env)
        self.obs = [(t, rt.asarray(ss.observed_value(t, self.length))) for t in ss.observations]

    def sample(self, chain, key, n, prev=None, t=None):
        """n draws from init (prev None) or from the step given prev [N, *E] at time t."""
        rt, env = self.rt, chain.params
        d = repeated(rt, chain.init_dist(env), n) if prev is None else \
            per_particle(rt, lambda p: chain.step_dist(p, t, env), prev)
        return rt.sample(d, key)

    def log_prob(self, chain, x, prev=None, t=None):
        """log density of x [N, *E] under init (prev None) or the step from prev [N, *E] (per particle)."""
        rt, env = self.rt, chain.params
        if prev is None:
            return rt.vmap(lambda x: chain.init_dist(env).lower(rt).log_prob(x).sum())(x)
        return rt.vmap(lambda p, x: chain.step_dist(p, t, env).lower(rt).log_prob(x).sum())(prev, x)

    def log_obs(self, x, t):
        """Σ over observations of log p(y_t | x_t), per particle: each observation's site evaluated with the
        state x_t, data with a leading time axis sliced at t, and its value y[t]."""
        rt = self.rt
        total = 0.0
        for term, y in self.obs:
            site = term.model.sites[term.site]
            sliced = {p: (self.env[p][t] if self._timed(p) else self.env[p]) for p in site.parents
                      if p != self.ss.name}
            total = total + rt.vmap(
                lambda xi: site({**sliced, self.ss.name: xi}).lower(rt).log_prob(y[t]).sum())(x)
        return total

    def _timed(self, name):
        v = self.env[name]
        return hasattr(v, "shape") and len(v.shape) >= 1 and v.shape[0] == self.length

    def check_elementwise(self, key):
        """Σ_t log p(y_t | x_t) must equal the whole observation's log density on a prior path (else an
        observation reads more than x_t, or a datum with a time axis is not per-time)."""
        rt, xp = self.rt, self.rt.xp
        path = rt.sample(repeated(rt, self.chain, 1), key)
        ts = rt.asindex(np.arange(self.length))
        per_t = rt.vmap(lambda xt, t: self.log_obs(xt[None], t)[0])(path[0], ts)
        total = per_t.sum()
        for term, y in self.obs:
            site = term.model.sites[term.site]
            whole = site({**{p: self.env[p] for p in site.parents if p != self.ss.name}, self.ss.name: path[0]})
            total = total - whole.lower(rt).log_prob(y).sum()
        if not abs(float(rt.to_numpy(total))) <= 1e-4 * (1.0 + float(rt.to_numpy(xp.sum(xp.abs(per_t))))):
            names = ", ".join(repr(t.site) for t, _ in self.obs)
            raise PPLError(f"observation {names} of the state path {self.ss.name!r} is not elementwise in time: "
                           f"element t must depend on {self.ss.name}[t] only (and on data indexed by t)")


class ParticleFilter(fk.FeynmanKac):
    """The filter as a Feynman–Kac model over t = 0..T−1 (`StatePath` gives the laws)."""

    def __init__(self, path, smoother):
        self.path, self.rt, self.smoother = path, path.rt, smoother

    def _propose(self, key, n, prev=None, t=None):
        p = self.path
        q = p.proposal if p.proposal is not None else p.chain
        x = p.sample(q, key, n, prev, t)
        if p.proposal is None:
            return Particles(x, self.rt.xp.zeros((n,)))
        return Particles(x, p.log_prob(p.chain, x, prev, t) - p.log_prob(q, x, prev, t))

    def init(self, key, n):
        return self._propose(key, n), None

    def log_potential(self, t, p, log_w, carry):
        return self.path.log_obs(p.x, t) + p.log_ratio, p, carry

    def move(self, key, t, p, log_w, carry):
        return self._propose(key, p.x.shape[0], p.x, t + 1), carry, None, None

    def track(self, p, log_w, carry):
        """Filtering mean and variance of x_t; with a smoother also x_t and log W_t."""
        xp = self.rt.xp
        w = xp.exp(log_w).reshape((-1,) + (1,) * (p.x.ndim - 1))
        mean = xp.sum(w * p.x, axis=0)
        var = xp.sum(w * p.x * p.x, axis=0) - mean * mean
        return (mean, var, p.x, log_w) if self.smoother else (mean, var)


def run_filter(path, key, n, resampler="systematic", threshold=0.5, smoother=None):
    """One filter over the whole path: (final state, StepInfo stacked over t)."""
    rt = path.rt
    model = ParticleFilter(path, smoother)
    step = fk.make_step(model, resampler, threshold, keep_ancestors=smoother is not None, error_every_step=False)
    k0, k1, k_last = rt.split(key, 3)
    state = fk.init(model, k0, n)

    def body(s, k):
        return step(k["key"], s)

    steps = path.length - 1
    infos = []
    if steps:
        state, infos = rt.scan(body, state, {"key": rt.split(k1, steps)})
    state, last = step(k_last, state, move=False)
    rel_var, last = last.rel_var, last._replace(rel_var=None)   # Var(Ẑ)/Ẑ² is computed at the last step only
    if not steps:
        return state, rt.tree_map(lambda a: None if a is None else a[None], last)._replace(rel_var=rel_var)
    stacked = rt.tree_map(lambda a, b: None if a is None else rt.xp.concatenate([a, b[None]]), infos, last)
    return state, stacked._replace(rel_var=rel_var)


def genealogy(xs, log_w, ancestors):
    """The ancestral lines of the final particles (numpy): trajectories [N, T, *E], weights W_{T−1}."""
    n, length = xs.shape[1], xs.shape[0]
    b = np.arange(n)
    out = np.empty((n,) + (length,) + xs.shape[2:], dtype=xs.dtype)
    for t in range(length - 1, -1, -1):
        out[:, t] = xs[t][b]
        if t:
            b = ancestors[t - 1][b]
    return out, log_w[-1]


def backward_simulation(path, key, xs, log_w, m):
    """M trajectories by backward simulation: b_{T−1} ~ W_{T−1}; b_t ~ W_t^i p(x_{t+1}^{b_{t+1}} | x_t^i)."""
    rt, xp = path.rt, path.rt.xp
    length = xs.shape[0]
    keys = rt.split(key, length)

    def pick(k, logits):
        """One categorical draw per row of logits [M, N] (Gumbel max)."""
        g = -xp.log(-xp.log(rt.uniform(k, logits.shape)))
        return xp.argmax(logits + g, axis=-1)

    b = pick(keys[-1], xp.broadcast_to(log_w[-1], (m, log_w.shape[-1])))
    out = [xp.take(xs[-1], b, axis=0)]
    for t in range(length - 2, -1, -1):
        nxt = out[-1]
        trans = rt.vmap(lambda x1: path.log_prob(path.chain, xp.broadcast_to(x1, xs[t].shape), xs[t], t + 1))(nxt)
        b = pick(keys[t], log_w[t][None] + trans)
        out.append(xp.take(xs[t], b, axis=0))
    return xp.stack(out[::-1], axis=1)


def model_env(ev, ss, theta=None):
    """What the state's laws and the observations read: the model's data and observations (as the evaluator
    `ev` holds them), θ, and its deterministic sites."""
    m = ss.model
    env = ev.env(m, theta or {}, {})
    for node in ss.compiled.order:
        if node.kind == "det" and node.model is m:
            env[node.name] = m.sites[node.name](env)
    return env


def rest_log_density(ss, ev, env):
    """The terms that do not read the path (priors and likelihoods of θ, constants), at θ in `env`."""
    total = 0.0
    for t in ss.rest:
        if t.kind == "constant":
            total = total + t.coef * t.value
        elif t.kind in ("prior", "likelihood", "gaussian"):
            value = env[t.site]
            total = total + t.coef * ev.spec(t, env).lower(ev.rt).log_prob(value).sum()
        elif t.kind == "factor":
            total = total + t.coef * t.model.sites[t.site](env)
        elif t.kind in ("reward", "energy"):
            total = total + t.coef * t.fn(env)
    return total


def check_particles(particles, what="a particle filter"):
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 2:
        raise ValueRangeError(f"{what} needs particles >= 2 (an integer), got {particles!r}")


_CACHE = weakref.WeakKeyDictionary()


@method("pf")
@shards_particles
def run(compiled, rt, key, particles=1000, progress=None, resampler="systematic", resample_threshold=0.5,
        smoother="genealogy", smoother_draws=None, proposal=None):
    """Particle filter of a state-space target with its static parameters fixed (see the module docstring).

    Options: resampler, resample_threshold (ESS fraction, 0.5), smoother ('genealogy' | 'backward' | None),
    smoother_draws (M trajectories of backward simulation, default min(N, 1000)), proposal (a ppl.markov site
    over the same state whose init and step may read the model's data, observations and parameters: the
    guided filter)."""
    check_particles(particles)
    if smoother not in ("genealogy", "backward", None):
        raise ValueRangeError(f"smoother must be 'genealogy', 'backward' or None, got {smoother!r}")
    if proposal is not None and getattr(proposal, "markov", None) is None:
        raise PPLError("proposal= must be a ppl.markov(init, step, length) site over the same state")
    cache = _CACHE.setdefault(compiled, {})
    sig = (repr(rt), particles, resampler, resample_threshold, smoother, proposal)
    k_check, k_run, k_smooth = rt.split(key, 3)
    if sig not in cache:   # built and checked once per target and options; a run is then one jitted call
        ss = StateSpace(compiled)
        ss.check_fixed()
        if not ss.observations:
            raise PlanError(f"a particle filter weights the state {ss.name!r} by observations of it, and the target "
                            f"observes none (y[t] ~ ... reading {ss.name}[t], with the data y given)",
                            hint=f"use {advice.options('smc', True)} or {advice.options('is', True)} for the "
                                 f"state's prior")
        ev = Evaluator(compiled, rt)
        env = model_env(ev, ss)
        path = StatePath(ss, rt, env, proposal)
        path.check_elementwise(k_check)
        cache[sig] = (ss.name, path, rt.jit(lambda k: run_filter(path, k, particles, resampler, resample_threshold,
                                                                 smoother) + (rest_log_density(ss, ev, env),)))
    name, path, filt = cache[sig]
    state, info, rest = filt(k_run)
    log_z_path = rt.to_numpy(info.log_c).astype(np.float64)
    if not np.all(np.isfinite(log_z_path)):
        t = int(np.argmin(np.isfinite(log_z_path)))
        raise InferenceError(f"particle filter: every weight vanished at t = {t} (the observation density was -inf "
                             f"or NaN on all {particles} particles); the proposal misses the observation")
    log_z = float(log_z_path.sum()) + float(rt.to_numpy(rt.asarray(rest)))
    se = math.sqrt(float(rt.to_numpy(info.rel_var)))
    mean, var = rt.to_numpy(info.tracked[0]), rt.to_numpy(info.tracked[1])
    diagnostics = {"ess": rt.to_numpy(info.ess).astype(np.float64), "resampled": rt.to_numpy(info.resampled),
                   "log_c": log_z_path, "filter_mean": {name: mean}, "filter_var": {name: var},
                   "log_z_per_chain": [log_z], "particles": particles, "smoother": smoother,
                   "particle_devices": rt.device_count(state.log_w)}
    if smoother is None:
        samples, log_w = {name: rt.to_numpy(state.particles.x)[None]}, rt.to_numpy(state.log_w)[None]
    elif smoother == "genealogy":
        xs, lw = rt.to_numpy(info.tracked[2]), rt.to_numpy(info.tracked[3])
        traj, final = genealogy(xs, lw, rt.to_numpy(info.ancestors))
        samples, log_w = {name: traj[None]}, final[None]
    else:
        m = smoother_draws or min(particles, 1000)
        traj = backward_simulation(path, k_smooth, info.tracked[2], info.tracked[3], m)
        samples, log_w = {name: rt.to_numpy(traj)[None]}, np.zeros((1, m))
    return Result(samples, log_w, log_z, se, method="pf", runtime=rt.name, device=rt.device,
                  diagnostics=diagnostics)
