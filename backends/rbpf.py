"""The Rao–Blackwellized particle filter: particles over a path u, a Kalman filter of x per particle.

Where x is linear-Gaussian given another state path u (x_t | x_{t−1}, u_t ~ N(A(u_t) x_{t−1} + b(u_t), Q(u_t)),
y_t | x_t, u_t ~ N(C(u_t) x_t + c(u_t), R(u_t))), the compiler integrates x out given u (the Kalman rule,
`compiler/linear_gaussian.py`: y's law becomes the Kalman filter of the path u) and u is left as the target's
state path. `method="pf"` then runs a Feynman–Kac model (on `fk`'s loop, as `pf.ParticleFilter`) whose
particles are (u_t, m, P), the Kalman moments of x_t given y_{0:t} (or y_{0:t−1}) and u_{0:t}:

    M_0:  u_0 ~ p0,  (m, P) = moments of x_0's law given u_0
    G_t:  log N(y_t; C m + c, C P Cᵀ + R) (the Kalman predictive), then (m, P) ← the Kalman update
    M_t:  u_t ~ p(u_t | u_{t−1}) (bootstrap), (m, P) ← (A m + b, A P Aᵀ + Q) with A(u_t), b(u_t), Q(u_t)

so log Z = Σ_t log c_t estimates log p(y_{0:T−1}) with x summed exactly (Doucet et al. 2000; Chen & Liu 2000).
The laws of x and y are those of the model as written, read for one particle with u's whole path replaced by
u_t at every index (the step and the observation read u[t] only, which the Kalman rule checks at its probes),
and vmapped over the particles. Filtering moments of x are the mixtures Σ W m, Σ W (P + m mᵀ) − mean meanᵀ.
"""
import math
from typing import Any, NamedTuple

import numpy as np

from ..compiler.lower import Evaluator
from ..compiler.sequential import StateSpace
from ..errors import InferenceError, PlanError
from ..result import Result
from ..compiler.linear_gaussian import HOW as KALMAN
from ..stdlib.kalman import gaussian_moments, kalman_predict, kalman_update, law_shape
from . import fk, run_cache
from .pf import StatePath, genealogy, run_filter


class KalmanParticles(NamedTuple):
    u: Any   # the sampled states u_t [N, *U]
    m: Any   # Kalman means of x_t [N, k]
    P: Any   # Kalman covariances [N, k, k]


class ConditionalKalman:
    """The laws of x and y given u_t, for one particle, from y's `StateSpaceMarginal` (the Kalman rule's)."""

    def __init__(self, ss, rt, env, term, u0):
        """`u0`: one value of u_t (for the shape of x)."""
        self.ss, self.rt, self.env = ss, rt, env
        self.site = term.model.sites[term.site]
        self.length = ss.site(env).length
        self.y = rt.asarray(np.asarray(term.model.observed[term.site], float).reshape(self.length, -1))
        chain = self._spec(u0).chain
        self.shape = law_shape(chain.init_dist(chain.params))
        self.k = math.prod(self.shape)

    def _spec(self, u_t):
        """y's StateSpaceMarginal given u's path u_t at every index."""
        env = {**self.env, self.ss.name: self.rt.xp.broadcast_to(u_t, (self.length,) + tuple(u_t.shape))}
        return self.site({p: env[p] for p in self.site.parents})

    def _laws(self, spec, t):
        """(A, b, Q) of the step to x_t and (C, c, R) of y_t in the StateSpaceMarginal `spec`."""
        lowered = spec.lower(self.rt)
        return lowered.transition(t) + lowered.observation(t)

    def check_local(self, path):
        """x's step to t and y_t must read u's path at t only (what the filter gives them): their laws given the
        whole path `path` [T, *U] (a prior draw) and given path[t] at every index must agree at every t."""
        rt = self.rt
        whole = self.site({**{p: self.env[p] for p in self.site.parents if p != self.ss.name}, self.ss.name: path})

        def gap(t):
            one = self._spec(path[t])
            a, b = self._laws(whole, t), self._laws(one, t)
            return sum(rt.xp.sum(rt.xp.abs(x - y)) for x, y in zip(a, b))
        gaps = rt.to_numpy(rt.jit(rt.vmap(gap))(rt.asindex(np.arange(1, self.length))))
        if not np.all(gaps <= 1e-5):
            t = 1 + int(np.argmax(~(gaps <= 1e-5)))
            raise PlanError(f"the laws of the state integrated out given {self.ss.name!r} read more of its path than "
                            f"{self.ss.name}[t] at t = {t}; a Rao–Blackwellized filter gives them {self.ss.name}[t] "
                            f"only", site=self.ss.name,
                            hint=f"write the state's step to t and the observation at t to read {self.ss.name}[t] "
                                 f"(a particle filter over both paths is not supported)")

    def prior(self, u0):
        """(m, P) of x_0 given u_0."""
        chain = self._spec(u0).chain
        return gaussian_moments(self.rt, chain.init_dist(chain.params), self.k)

    def predict(self, u, m, P, t):
        """(m, P) of x_t given y_{0:t−1}, from those of x_{t−1} given y_{0:t−1}, with u_t = u."""
        return kalman_predict(m, P, *self._spec(u).lower(self.rt).transition(t))

    def update(self, u, m, P, t):
        """(log p(y_t | y_{0:t−1}, u), m and P given y_{0:t}) with u_t = u."""
        return kalman_update(self.rt.xp, m, P, *self._spec(u).lower(self.rt).observation(t), self.y[t])


class RaoBlackwellFilter(fk.FeynmanKac):
    """The RBPF as a Feynman–Kac model (see the module docstring); `path` samples u, `kf` filters x."""

    def __init__(self, path, kf):
        self.path, self.kf, self.rt = path, kf, path.rt
        self.offset = path.chain.spec.offset

    def _draw(self, key, n, prev=None, t=None):
        return self.path.sample(self.path.chain, key, n, prev, t) + self.offset

    def init(self, key, n):
        u = self._draw(key, n)
        m, P = self.rt.vmap(self.kf.prior)(u)
        return KalmanParticles(u, m, P), None

    def log_potential(self, t, p, log_w, carry):
        ll, m, P = self.rt.vmap(lambda u, m, P: self.kf.update(u, m, P, t))(p.u, p.m, p.P)
        return ll, KalmanParticles(p.u, m, P), carry

    def move(self, key, t, p, log_w, carry):
        u = self._draw(key, p.u.shape[0], p.u, t + 1)
        m, P = self.rt.vmap(lambda u, m, P: self.kf.predict(u, m, P, t + 1))(u, p.m, p.P)
        return KalmanParticles(u, m, P), carry, None, None

    def track(self, p, log_w, carry):
        """Filtering means and variances of x_t (the Gaussian mixture's) and of u_t; u_t and log W_t."""
        xp = self.rt.xp
        w = xp.exp(log_w)
        mean = xp.sum(w[:, None] * p.m, axis=0)
        second = xp.sum(w[:, None] * (xp.einsum("nii->ni", p.P) + p.m * p.m), axis=0)
        wu = w.reshape((-1,) + (1,) * (p.u.ndim - 1))
        u = p.u * 1.0
        u_mean = xp.sum(wu * u, axis=0)
        return mean, second - mean * mean, u_mean, xp.sum(wu * u * u, axis=0) - u_mean * u_mean, p.u, log_w


def _prior_path(path, key):
    """One draw of u's path [T, *U] from its laws (discrete or not), a scan over t."""
    rt, offset = path.rt, path.chain.spec.offset
    k0, k1 = rt.split(key, 2)
    u0 = path.sample(path.chain, k0, 1) + offset
    if path.length == 1:
        return u0

    def step(prev, s):
        u = path.sample(path.chain, s["key"], 1, prev, s["t"]) + offset
        return u, u
    _, rest = rt.scan(step, u0, {"key": rt.split(k1, path.length - 1), "t": rt.asindex(np.arange(1, path.length))})
    return rt.xp.concatenate([u0, rest[:, 0]])


def applies(compiled):
    """Whether x was integrated out by a Kalman filter given a state path u that is left to sample."""
    return any(mg.how == KALMAN for mg in compiled.marginals) and StateSpace.has_path(compiled)


def run(compiled, rt, key, particles, resampler="systematic", resample_threshold=0.5):
    """`method="pf"` where `applies`: (log Z, se, filtering moments of x and u, u's genealogy) as a `Result`."""
    cache = run_cache(compiled, "rbpf")
    sig = (repr(rt), particles, resampler, resample_threshold)
    if sig not in cache:
        ss = StateSpace(compiled)
        ss.check_fixed()
        term = next((t for t in ss.observations
                     if any(mg.how == KALMAN and mg.observed == t.site and mg.model == t.model.name
                            for mg in compiled.marginals)), None)
        if term is None or len(ss.observations) != 1:
            raise PlanError(f"a Rao–Blackwellized filter needs the state path {ss.name!r} read by one observation "
                            f"whose linear-Gaussian state was integrated out; it is read by "
                            f"{', '.join(repr(t.site) for t in ss.observations) or 'none'}", site=ss.name)
        ev = Evaluator(compiled, rt)
        env = ev.model_env(ss.model, {})
        path = StatePath(ss, rt, env)
        u = rt.jit(lambda k: _prior_path(path, k))(rt.key(0))
        kf = ConditionalKalman(ss, rt, env, term, u[0])
        if path.length > 1:
            kf.check_local(u)
        model = RaoBlackwellFilter(path, kf)
        xname = next(mg.sites[0] for mg in compiled.marginals if mg.observed == term.site)
        cache[sig] = (ss.name, xname, model.kf.shape, rt.jit(
            lambda k: run_filter(path, k, particles, resampler, resample_threshold, "genealogy", model=model)
            + (ev.log_density(ss.rest, ev.at_env(env)),)))
    uname, xname, shape, filt = cache[sig]
    state, info, rest = filt(key)
    log_c = rt.to_numpy(info.log_c).astype(np.float64)
    if not np.all(np.isfinite(log_c)):
        t = int(np.argmin(np.isfinite(log_c)))
        raise InferenceError(f"Rao–Blackwellized filter: every weight vanished (or a Kalman predictive was not "
                             f"finite) at t = {t}")
    log_z = float(log_c.sum()) + float(rt.to_numpy(rt.asarray(rest)))
    se = math.sqrt(float(rt.to_numpy(info.rel_var)))
    mean, var, u_mean, u_var, us, lw = (rt.to_numpy(a) for a in info.tracked)
    length = len(log_c)
    traj, final = genealogy(us, lw, rt.to_numpy(info.ancestors))
    diagnostics = {"ess": rt.to_numpy(info.ess).astype(np.float64), "resampled": rt.to_numpy(info.resampled),
                   "log_c": log_c, "particles": particles, "smoother": "genealogy", "rao_blackwellized": xname,
                   "filter_mean": {xname: mean.reshape((length,) + tuple(shape)), uname: u_mean},
                   "filter_var": {xname: var.reshape((length,) + tuple(shape)), uname: u_var},
                   "log_z_per_chain": [log_z]}
    return Result({uname: traj[None]}, final[None], log_z, se, method="pf", runtime=rt.name, device=rt.device,
                  diagnostics=diagnostics)
