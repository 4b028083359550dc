"""Particle marginal Metropolis–Hastings (Andrieu, Doucet & Holenstein 2010) over the static parameters θ of a
state-space target, with the particle filter's likelihood estimate inside.

θ lives in the unconstrained space u (each static site x = T(u), T = biject_to(its prior's support)):

    log π̂(u) = log p(θ) + log p̂(y | θ) + log |det J_T(u)|,   p̂ a new particle filter run at each proposal

a random-walk proposal u' = u + s L ε accepted with probability min(1, π̂(u') / π̂(u)): the `rwm` kernel of
`kernels` on the density u -> π̂(u) (a new filter per call), whose state keeps the current estimate and never
evaluates it again, which makes the chain exact for the posterior of θ. Where the compiler integrated the path out (a
linear-Gaussian state space), p̂ is the Kalman filter's exact likelihood. Adaptation during warmup only (Haario et al. 2001):
L L' the covariance of the warmup draws of all chains so far, s² = 2.38² / d scaled by a Robbins–Monro factor
towards an acceptance rate of 0.25. Chains run as one batch (vmapped on JAX; one after the other on torch, whose
random draws cannot be vmapped); diagnostics (R-hat, ESS) come from ArviZ as for NUTS.
"""
import math

import numpy as np

from ..compiler.handlers import block
from ..compiler.lower import Constrain, Evaluator
from ..compiler.sequential import StateSpace
from .. import advice
from ..errors import PlanError, ValueRangeError
from ..result import Result
from . import method
from .hmc import diagnose
from .kernels import State, get_kernel
from .pf import StatePath, check_particles, run_filter


class Parameters:
    """The static sites θ as a flat unconstrained vector u [d], in evaluation order (a site's prior may read
    the sites before it): `constrain(u) -> (θ, the model's environment at θ, log|det J|)`: the site interpreter
    with `Constrain` over the static sites' layout and the state path blocked (the filter's)."""

    def __init__(self, ss, ev):
        self.ss, self.rt, self.ev = ss, ev.rt, ev
        self.layout, offset = {}, 0
        for node in ss.compiled.order:
            if node.role == "latent" and node.name in ss.static:
                self.layout[node.name] = {**ss.compiled.layout[node.name], "offset": offset}
                offset += self.layout[node.name]["size"]
        self.dim = offset
        self.path = block(lambda msg: msg["name"] == ss.name)

    def constrain(self, u):
        h = Constrain(self.ev, u, self.layout)
        theta, dets = self.ev.run(h, self.path)
        return theta, self.ev.env(self.ss.model, theta, dets), h.ldj

    def initial(self, key, chains):
        """Initial points: prior draws of θ (the reference sampler of the compiled target), unconstrained."""
        program = self.ss.compiled.lower(self.rt)
        z = self.rt.to_numpy(program.sample_reference(key, chains))
        full = self.ss.compiled.layout
        return np.concatenate([z[:, full[n]["offset"]:full[n]["offset"] + e["size"]]
                               for n, e in self.layout.items()], axis=1)


def _filtered(compiled, rt, particles, resampler, resample_threshold):
    """(log π̂(u) with a particle filter inside, d, initial points, u -> θ batched)."""
    ss = StateSpace(compiled)
    if not ss.static:
        raise PlanError(f"PMMH samples the static parameters of a state-space target, and this one has none "
                        f"(every site but {ss.name!r} is observed)", hint=f"use {advice.options('pf', True)}")
    ev = Evaluator(compiled, rt)
    params = Parameters(ss, ev)

    def log_target(k, u):
        theta, env, ldj = params.constrain(u)
        state, info = run_filter(StatePath(ss, rt, env), k, particles, resampler, resample_threshold)
        value = info.log_c.sum() + ev.log_density(ss.rest, ev.at_env(env)) + ldj
        return rt.xp.where(rt.xp.isnan(value), -float("inf"), value)
    return log_target, params.dim, params.initial, rt.vmap(lambda v: params.constrain(v)[0])


def _exact(compiled, rt):
    """The same where the compiler integrated the path out: log π(u), exact (the chain is then plain random-walk
    Metropolis on the marginal posterior of θ), over the compiled target's flat unconstrained z."""
    if not compiled.latent:
        raise PlanError("PMMH samples the static parameters of a state-space target, and this one has none (every "
                        "site is observed)", hint=f"use {advice.options('pf', True)}")
    prog = compiled.lower(rt)

    def log_target(k, u):
        ref, rest = prog.log_parts(u)
        return rt.xp.where(rt.xp.isnan(ref + rest), -float("inf"), ref + rest)

    def initial(key, chains):
        return rt.to_numpy(prog.sample_reference(key, chains))
    return log_target, compiled.dim, initial, prog.to_constrained_arrays


@method("pmmh")
def run(compiled, rt, key, particles=100, progress=None, chains=4, num_warmup=500, num_samples=1000,
        resampler="systematic", resample_threshold=0.5, target_accept=0.25):
    """PMMH with `particles` per filter, `chains` chains of `num_warmup` + `num_samples` iterations."""
    check_particles(particles, "PMMH's particle filter")
    for name, v in (("chains", chains), ("num_samples", num_samples)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueRangeError(f"{name} must be a positive integer, got {v!r}")
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, int) or num_warmup < 0:
        raise ValueRangeError(f"num_warmup must be an integer >= 0, got {num_warmup!r}")
    if compiled.marginals and not StateSpace.has_path(compiled):
        log_target, dim, initial, constrain = _exact(compiled, rt)
    else:
        log_target, dim, initial, constrain = _filtered(compiled, rt, particles, resampler, resample_threshold)
    batch, rwm = rt.batch(log_target), get_kernel("rwm")

    def estimate(key):
        """The kernel's density: u [C, d] -> (log π̂(u) from one new filter per chain, no gradient, no aux)."""
        return lambda v: (batch(rt.split(key, chains), v), v[:, :0], ())
    k0, key = rt.split(key, 2)
    u = rt.asarray(initial(k0, chains))
    d = dim
    key, sub = rt.split(key, 2)
    state = State(u, *estimate(sub)(u))
    rng = np.random.default_rng(int(rt.to_numpy(rt.uniform(key, (1,)))[0] * 2 ** 31))
    chol, log_s = np.eye(d) * 0.1, 0.0
    draws, accepted, warm = [], np.zeros((chains, num_samples)), []
    for i in range(num_warmup + num_samples):
        scale = math.exp(log_s) * 2.38 / math.sqrt(d)
        eps = rt.asarray(rng.standard_normal((chains, d)))
        key, sub = rt.split(key, 2)
        state, ok = rwm.propose(rt, (eps, rt.asarray(rng.uniform(size=chains))), state, estimate(sub), scale,
                                rt.asarray(chol))
        ok, u = rt.to_numpy(ok), rt.to_numpy(state.z).astype(np.float64)
        if i < num_warmup:
            log_s += (ok.mean() - target_accept) / math.sqrt(i + 1)
            warm.append(u.copy())
            if i >= 50 and i % 25 == 0:
                pooled = np.concatenate(warm[len(warm) // 2:])
                cov = np.atleast_2d(np.cov(pooled, rowvar=False)) + 1e-8 * np.eye(d)
                chol = np.linalg.cholesky(cov)
        else:
            draws.append(u.copy())
            accepted[:, i - num_warmup] = ok
    z = np.stack(draws, axis=1)  # [C, S, d]
    samples = {k: rt.to_numpy(v).reshape((chains, num_samples) + tuple(v.shape[1:]))
               for k, v in constrain(rt.asarray(z.reshape(-1, d))).items()}
    diagnostics = diagnose(samples, {"diverging": np.zeros((chains, num_samples), bool)}, chains, "pmmh", num_warmup)
    diagnostics.update({"acceptance_rate": accepted.mean(axis=1), "particles": particles, "chains": chains,
                        "proposal_scale": scale, "proposal_cholesky": chol})
    return Result(samples, None, method="pmmh", runtime=rt.name, device=rt.device, diagnostics=diagnostics)
