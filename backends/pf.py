"""Particle filters for state-space targets (`ppl.markov`): a Feynman–Kac model on the core loop of `fk`.

With θ fixed, M0 = q0 (the initial law p0, or a user proposal), M_t = q_t(x_t | x_{t−1}) (the transition
p(x_t | x_{t−1}), the bootstrap filter, or a user proposal: the guided filter), and

    log G_t = log p(y_t | x_t) + log p(x_t | x_{t−1}) − log q_t(x_t | x_{t−1})      (the last two cancel
                                                                                      for the bootstrap filter)

so log Z = Σ_t log c_t is the unbiased (on the Z scale) estimate of log p(y_{0:T−1} | θ), plus the terms of
the target that do not read the path (priors of observed parameters, constants). One step per t: weight,
resample when ESS < `resample_threshold` · N, propagate; one `scan` over t on JAX, a Python loop around one
compiled step on torch (`StepwiseFilter`, the laws evaluated for all particles at once). Filtering means and
variances Σ W x_t, Σ W x_t² − mean² are recorded after each weighting. Smoothing (memory O(N T)):

* `smoother="genealogy"`: the surviving ancestral lines of the final particles, weighted by W_{T−1};
* `smoother="backward"`: backward simulation (Godsill, Doucet & West 2004): M trajectories,
  b_{T−1} ~ W_{T−1}, b_t ~ W_t^i p(x_{t+1}^{b_{t+1}} | x_t^i), O(M N) transition densities per step;
* `smoother=None`: memory O(N).
"""
import math
from typing import Any, NamedTuple

import numpy as np

from ..compiler.lower import Evaluator
from ..compiler.sequential import StateSpace
from .. import advice
from ..errors import UNDEFINED_DENSITY_HINT, InferenceError, PlanError, PPLError, ValueRangeError
from ..result import Result
from ..stdlib.distributions import per_particle, repeated
from . import fk, marginals, method, run_cache
from .sharding import shards_particles


class PathParticles(NamedTuple):
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
        self.batched = False   # the laws evaluated on all particles at once (see `check_batched`)

    def law(self, chain, prev, t):
        """The runtime law of x_t given prev [N, *E], batched over the particles: the step called once with the
        whole batch when `batched`, else per particle (`per_particle`)."""
        rt, env = self.rt, chain.params
        if self.batched:
            return chain.step_dist(prev, t, env).lower(rt)
        return per_particle(rt, lambda p: chain.step_dist(p, t, env), prev)

    def sample(self, chain, key, n, prev=None, t=None):
        """n draws from init (prev None) or from the step given prev [N, *E] at time t."""
        rt = self.rt
        d = repeated(rt, chain.init_dist(chain.params), n) if prev is None else self.law(chain, prev, t)
        return rt.sample(d, key)

    def log_prob(self, chain, x, prev=None, t=None):
        """log density of x [N, *E] under init (prev None) or the step from prev [N, *E] (per particle)."""
        rt, env = self.rt, chain.params
        if prev is None:
            return rt.vmap(lambda x: chain.init_dist(env).lower(rt).log_prob(x).sum())(x)
        if self.batched:
            return _per_row(self.law(chain, prev, t).log_prob(x), x.shape[0])
        return rt.vmap(lambda p, x: chain.step_dist(p, t, env).lower(rt).log_prob(x).sum())(prev, x)

    def log_obs(self, x, t):
        """Σ over observations of log p(y_t | x_t), per particle: each observation's site evaluated with the
        state x_t, data with a leading time axis sliced at t, and its value y[t] (with all the particles'
        states at once when `batched`)."""
        rt = self.rt
        # batched (torch, traced into one graph): an index array, not y[t], which reads t back to the host
        at = (lambda a: rt.xp.take(a, t.reshape(1), axis=0)[0]) if self.batched else (lambda a: a[t])
        total = 0.0
        for term, y in self.obs:
            site = term.model.sites[term.site]
            sliced = {p: (at(self.env[p]) if self._timed(p) else self.env[p]) for p in site.parents
                      if p != self.ss.name}
            if self.batched:
                total = total + _per_row(site({**sliced, self.ss.name: x}).lower(rt).log_prob(at(y)), x.shape[0])
                continue
            total = total + rt.vmap(
                lambda xi: site({**sliced, self.ss.name: xi}).lower(rt).log_prob(y[t]).sum())(x)
        return total

    def check_batched(self, key, n):
        """Sets `batched` when calling the laws with all n particles' states at once gives what calling them
        per particle gives: the same family and parameters of the step's (and the proposal's) law, the same
        observation log densities, on prior draws of x_0 and x_1 (the site functions are written for one
        particle; most are elementwise, and those that are not fail here or disagree). Torch: per-particle
        `vmap` rebuilds the distribution per particle, O(N) dispatch; JAX compiles it away (never batched)."""
        rt = self.rt
        if rt.compiles_loops:
            return False
        k0, k1 = rt.split(key, 2)
        x0 = self.sample(self.chain, k0, n)
        x1 = self.sample(self.chain, k1, n, x0, rt.asindex(1)) if self.length > 1 else x0
        chains = [self.chain] + ([self.proposal] if self.proposal is not None else [])

        def evaluate():
            out = [self.log_obs(x0, rt.asindex(0)), self.log_obs(x1, rt.asindex(min(1, self.length - 1)))]
            for c in chains if self.length > 1 else ():
                t1 = rt.asindex(1)
                if self.batched:
                    spec = c.step_dist(x0, t1, c.params)
                    out += [spec.family, spec.broadcast_params(rt), self.law(c, x0, t1).batch_shape]
                else:
                    one = c.step_dist(x0[0], t1, c.params)
                    params = rt.vmap(lambda p: c.step_dist(p, t1, c.params).broadcast_params(rt))(x0)
                    out += [one.family, params, (n,) + tuple(one.lower(rt).batch_shape)]
                out.append(self.log_prob(c, x1, x0, t1))
            return out
        want = evaluate()
        self.batched = True
        try:
            got = evaluate()
        except Exception:   # noqa: BLE001 -- a site that cannot take a batch of states: per particle
            got = None
        self.batched = got is not None and _agree(rt, got, want)
        return self.batched

    def _timed(self, name):
        v = self.env[name]
        return hasattr(v, "shape") and len(v.shape) >= 1 and v.shape[0] == self.length

    def check_elementwise(self, key):
        """Σ_t log p(y_t | x_t) must equal the whole observation's log density on a prior path (else an
        observation reads more than x_t, or a datum with a time axis is not per-time)."""
        rt, xp = self.rt, self.rt.xp

        def residual(key):
            path = rt.sample(repeated(rt, self.chain, 1), key)
            ts = rt.asindex(np.arange(self.length))
            per_t = rt.vmap(lambda xt, t: self.log_obs(xt[None], t)[0])(path[0], ts)
            total = per_t.sum()
            for term, y in self.obs:
                site = term.model.sites[term.site]
                whole = site({**{p: self.env[p] for p in site.parents if p != self.ss.name},
                              self.ss.name: path[0]})
                total = total - whole.lower(rt).log_prob(y).sum()
            return total, xp.sum(xp.abs(per_t))
        # jitted: on JAX one compile instead of one per operation (seconds of a first run)
        total, scale = (float(rt.to_numpy(v)) for v in rt.jit(residual)(key))
        if math.isnan(total):   # the probe path met a NaN density: undecided here, the run refuses the NaN itself
            return
        if not abs(total) <= 1e-4 * (1.0 + scale):
            names = ", ".join(repr(t.site) for t, _ in self.obs)
            raise PPLError(f"observation {names} of the state path {self.ss.name!r} is not elementwise in time: "
                           f"element t must depend on {self.ss.name}[t] only (and on data indexed by t)")


def _per_row(lp, n):
    """Log densities [N, ...] summed per particle: [N]."""
    if tuple(lp.shape[:1]) != (n,):
        raise ValueError(f"a batched log density of shape {tuple(lp.shape)} for {n} particles")
    return lp.reshape(n, -1).sum(1)


def _agree(rt, got, want):
    """Whether two lists of values (strings, shapes, arrays, dicts of arrays) agree up to float rounding."""
    if len(got) != len(want):
        return False
    for a, b in zip(got, want):
        if isinstance(b, dict):
            if not isinstance(a, dict) or sorted(a) != sorted(b) or not _agree(rt, [a[k] for k in sorted(a)],
                                                                               [b[k] for k in sorted(b)]):
                return False
        elif hasattr(b, "shape"):
            a, b = np.asarray(rt.to_numpy(rt.asarray(a)), float), np.asarray(rt.to_numpy(b), float)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-5, equal_nan=True):
                return False
        elif isinstance(b, str):
            if a != b:
                return False
        elif tuple(a) != tuple(b):    # shapes
            return False
    return True


class ParticleFilter(fk.FeynmanKac):
    """The filter as a Feynman–Kac model over t = 0..T−1 (`StatePath` gives the laws)."""

    def __init__(self, path, smoother):
        self.path, self.rt, self.smoother = path, path.rt, smoother

    def _propose(self, key, n, prev=None, t=None):
        p = self.path
        q = p.proposal if p.proposal is not None else p.chain
        x = p.sample(q, key, n, prev, t)
        if p.proposal is None:
            return PathParticles(x, self.rt.xp.zeros((n,)))
        return PathParticles(x, p.log_prob(p.chain, x, prev, t) - p.log_prob(q, x, prev, t))

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


class StepwiseFilter:
    """`run_filter` as one Python loop over t around one pure kernel per step (torch; JAX scans `fk.make_step`).

    The kernel is step t of `fk.make_step` without the move and without a branch on values: weight by the
    observations (and the proposal ratio), normalize, ESS, track, then the resampler's ancestors computed at
    every step and selected by `where` where ESS < threshold · N, so nothing is read back to the host during a
    run and the kernel traces into one graph (`rt.jit_pure` with `compile`: inductor fuses its ~85 aten ops). Its
    uniforms and the moves' draws come from one random stream per run (`rt.stream`); the moves draw from the
    batched laws (`StatePath.law`), reparameterized where the law allows (`rt.draw`): the same laws as
    `make_step`'s, not the same random numbers."""

    def __init__(self, path, n, resampler="systematic", threshold=0.5, smoother=None, compile=False):
        rt = path.rt
        self.path, self.rt, self.n, self.threshold, self.smoother = path, rt, n, threshold, smoother
        self.model = ParticleFilter(path, smoother)
        self.resample = fk.check_resampling(resampler, threshold)
        self.n_uniform = fk.uniforms_read(rt, self.resample, n)
        self.ts = [rt.asindex(t) for t in range(path.length)]
        self.kernel = rt.jit_pure(self._kernel) if compile else self._kernel

    def _kernel(self, x, log_ratio, log_w, eve, t, u):
        """Weight, track and resample at step t: ((particles, log W, Eves) after resampling, log W before it),
        then the step's record (log c_t, ESS, resampled, non-finite count, ancestors, tracked...)."""
        rt, xp, n, model = self.rt, self.rt.xp, self.n, self.model
        p = PathParticles(x, log_ratio)
        log_g, p, _ = model.log_potential(t, p, log_w, None)
        log_w, log_c, ess, non_finite, invalid = fk.weigh(xp, log_w, log_g)
        tracked = model.track(p, log_w, None)
        resampled = (ess < self.threshold * n) & model.can_resample(t)
        idx = fk.ancestors_where(rt, self.resample, u, xp.exp(log_w), resampled)
        x, log_ratio, eve = (xp.take(a, idx, axis=0) for a in (p.x, p.log_ratio, eve))
        return (x, log_ratio, xp.where(resampled, -math.log(n), log_w), eve, log_w), \
            (log_c, ess, resampled, non_finite, idx, invalid) + tuple(tracked)

    def __call__(self, key):
        rt, xp, path, n, ts = self.rt, self.rt.xp, self.path, self.n, self.ts
        q = path.proposal if path.proposal is not None else path.chain

        def ratio(x, prev=None, t=None):
            if path.proposal is None:
                return xp.zeros((n,))
            return path.log_prob(path.chain, x, prev, t) - path.log_prob(q, x, prev, t)
        rows = []
        with rt.stream(key):
            x = rt.draw(repeated(rt, q.init_dist(q.params), n))
            log_ratio, log_w, eve = ratio(x), xp.full((n,), -math.log(n)), xp.arange(n)
            for t in range(path.length):
                (x_res, ratio_res, log_w_res, eve_res, log_w_t), row = self.kernel(
                    x, log_ratio, log_w, eve, ts[t], rt.uniform_draw((self.n_uniform,)))
                rows.append(row)
                if t + 1 < path.length:
                    x = rt.draw(path.law(q, x_res, ts[t + 1]))
                    log_ratio, log_w, eve = ratio(x, x_res, ts[t + 1]), log_w_res, eve_res
            rel_var = fk.relative_variance(rt, log_w_t, eve)     # at the last step, before its resampling
        cols = [xp.stack(c) if i != 4 or self.smoother else None for i, c in enumerate(zip(*rows))]
        log_c, ess, resampled, non_finite, idx, invalid = cols[:6]
        state = fk.FKState(PathParticles(x_res, ratio_res), log_w_res, log_c.sum(), eve_res, None,
                           rt.asindex(path.length))
        return state, fk.StepInfo(log_c, ess, resampled, non_finite, rel_var, idx, tuple(cols[6:]), None, invalid)


def run_filter(path, key, n, resampler="systematic", threshold=0.5, smoother=None, model=None):
    """One filter over the whole path: (final state, StepInfo stacked over t), a scan of `fk.make_step` (any
    runtime; on torch a Python loop with a branch per step, per-particle laws). `method="pf"` on torch runs
    `StepwiseFilter` instead (the same law, other random numbers); PMMH keeps this one on both runtimes: its
    chains are a function of the filter's random stream (tests/test_particle_filter.py's PMMH-vs-NUTS check at
    seed 0 passes with this stream; with StepwiseFilter's, 4x faster on torch, its ESS came out 81-87 < 100).
    `model`: another Feynman–Kac model over the path (the Rao–Blackwellized filter, `rbpf.py`)."""
    rt = path.rt
    model = model or ParticleFilter(path, smoother)
    step = fk.make_step(model, resampler, threshold, keep_ancestors=smoother is not None, error_every_step=False)
    k0, k1, k_last = rt.split(key, 3)
    steps = path.length - 1
    return fk.scan(rt, step, fk.init(model, k0, n), rt.split(k1, steps) if steps else None, k_last)


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


def check_particles(particles, what="a particle filter"):
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 2:
        raise ValueRangeError(f"{what} needs particles >= 2 (an integer), got {particles!r}")


@method("pf")
@shards_particles
def run(compiled, rt, key, particles=1000, progress=None, resampler="systematic", resample_threshold=0.5,
        smoother="genealogy", smoother_draws=None, proposal=None):
    """Particle filter of a state-space target with its static parameters fixed (see the module docstring).

    Where the compiler integrated the path out (a linear-Gaussian state space), this is the Kalman filter
    (`marginals.kalman_filter`: exact log Z, se 0). Options: resampler, resample_threshold (ESS fraction, 0.5),
    smoother ('genealogy' | 'backward' | None),
    smoother_draws (M trajectories of backward simulation, default min(N, 1000)), proposal (a ppl.markov site
    over the same state whose init and step may read the model's data, observations and parameters: the
    guided filter)."""
    check_particles(particles)
    if any(mg.how == marginals.KALMAN for mg in compiled.marginals) and not StateSpace.has_path(compiled):
        return marginals.kalman_filter(compiled, rt, key, particles)
    from . import rbpf   # not at the top: rbpf builds on this module
    if rbpf.applies(compiled):     # x integrated out given another path u: a Kalman filter per particle of u
        return rbpf.run(compiled, rt, key, particles, resampler, resample_threshold)
    if smoother not in ("genealogy", "backward", None):
        raise ValueRangeError(f"smoother must be 'genealogy', 'backward' or None, got {smoother!r}")
    if proposal is not None and getattr(proposal, "markov", None) is None:
        raise PPLError("proposal= must be a ppl.markov(init, step, length) site over the same state")
    cache = run_cache(compiled, "pf")
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
        env = ev.model_env(ss.model, {})
        path = StatePath(ss, rt, env, proposal)
        path.check_elementwise(k_check)
        if not rt.compiles_loops:   # the laws batched where they allow, one compiled kernel per step
            path.check_batched(rt.split(k_check, 2)[1], particles)
            stepwise = StepwiseFilter(path, particles, resampler, resample_threshold, smoother, compile=True)
            cache[sig] = (ss.name, path, lambda k: stepwise(k) + (ev.log_density(ss.rest, ev.at_env(env)),))
        else:
            cache[sig] = (ss.name, path, rt.jit(lambda k: run_filter(path, k, particles, resampler,
                                                                     resample_threshold, smoother)
                                                + (ev.log_density(ss.rest, ev.at_env(env)),)))
    name, path, filt = cache[sig]
    state, info, rest = filt(k_run)
    host = fk.to_host(rt, info._replace(non_finite=None, ancestors=None, tracked=None))   # what it reports and checks

    def invalid(t, info, _):
        return InferenceError(f"particle filter: the observation density of {name!r} was NaN or +inf at t = {t} on "
                              f"{int(info.invalid[t])} of {particles} particles (NaN weights are not dropped "
                              f"silently)", hint="an observation's parameters out of their range (a negative scale, "
                                                 "a log of a negative number)? " + UNDEFINED_DENSITY_HINT)

    def vanished(t, info, _):
        return InferenceError(f"particle filter: every weight vanished at t = {t} (the observation density was -inf "
                              f"on all {particles} particles); the proposal misses the observation")
    fk.check(host, 0, invalid, vanished)
    log_z_path = host.log_c.astype(np.float64)
    log_z = float(log_z_path.sum()) + float(rt.to_numpy(rt.asarray(rest)))
    se = math.sqrt(host.rel_var)
    mean, var = rt.to_numpy(info.tracked[0]), rt.to_numpy(info.tracked[1])
    diagnostics = {"ess": host.ess.astype(np.float64), "resampled": host.resampled,
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
