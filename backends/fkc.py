"""Feynman–Kac correctors (FKC) for diffusion targets γ_t = Π_i q_{i,t}^{β_i} · exp(R(x)), R = Σ_j c_j r_j.

Reverse time τ = 1 − t, Euler–Maruyama on dx = v dτ + σ dW with

    S = Σ β_i s_i + ∇R,    v = −f + ((g² + σ²)/2) S,    σ = g (default) or g/√B (tempered noise), B = Σ β_i,

from x_T ~ N(0, (α_T² + σ_T²)/B I) with initial log weights R(x_T), and log-weight increments (DESIGN §5)

    dw = [ (B − 1) ∇·f − f·∇R + (g²/2) ( ‖S‖² − Σ β_i ‖s_i‖² + ΔR ) ] dτ

(ΔR exact, or Hutchinson's estimate ε·∇²R ε with Rademacher ε). A Feynman–Kac model on the core loop of `fk`:
log G_k = dw at x_k (the step's increment), resampled (systematic) every step or when ESS < threshold · N
(from `start_resampling_step` on), then moved by the Euler step — the same law as stepping first, since the
move acts on each particle independently. log Z = Σ_k log c_k estimates log(Z_0 / Z_T), Z_T the normalizer
of Π q_{i,T}^{β_i} ≈ that of the start. `corrected=False` runs the same SDE without weights (the uncorrected
sampler).
"""
import math
from typing import Any, NamedTuple

import numpy as np

from ..diffusion import SITE
from .. import advice
from ..errors import InferenceError, UnknownNameError, ValueRangeError
from ..result import Result
from . import fk, integer, method
from .kernels import Particles, get_kernel
from .sharding import shards_particles


class FKCWarning(UserWarning):
    """An FKC setting is known to be unstable."""


def _reward_terms(plan, rt, laplacian, probes):
    """(terms, value_and_grad) for the plan's rewards (None, None when there are none): terms(x, key) is
    R(x) [N], ∇R [N, d], ΔR [N]; value_and_grad(x) is R(x), ∇R."""
    if not plan.rewards:
        return None, None
    xp = rt.xp

    def total(z):
        return sum(c * r.fn(z) for r, c in plan.rewards)

    grad_fn = rt.value_and_grad(lambda z, _: (lambda v: (v, v))(total(z)))
    hvp = rt.hvp(total)
    eye = rt.asarray(np.eye(plan.dim))
    if laplacian == "exact":
        lap1 = rt.vmap(lambda z: xp.sum(rt.vmap(lambda e: hvp(z, e))(eye) * eye))
    elif laplacian == "hutchinson":
        lap1 = rt.vmap(lambda z, eps: xp.mean(xp.sum(rt.vmap(lambda e: hvp(z, e))(eps) * eps, axis=-1)))
    else:
        raise UnknownNameError(f"unknown laplacian {laplacian!r}; choose 'exact' or 'hutchinson'")

    def value_and_grad(x):
        (r, _), grad = grad_fn(x, 0.0)
        return r, grad

    def terms(x, key):
        r, grad = value_and_grad(x)
        if laplacian == "exact":
            return r, grad, lap1(x)
        eps = xp.sign(rt.normal(key, (x.shape[0], probes, plan.dim)))
        return r, grad, lap1(x, eps)
    return terms, value_and_grad


def _threshold(resample):
    if resample == "always":
        return 1.0
    if resample in ("never", None):
        return 0.0
    if isinstance(resample, (int, float)) and 0 < resample <= 1:
        return float(resample)
    raise ValueRangeError(f"resample must be 'always', 'never' or an ESS fraction in (0, 1], got {resample!r}")


class Carry(NamedTuple):
    """FKC's state between steps: the key of the step's Hutchinson probes (set by the caller) and the MCMC
    kernel's step size."""
    key: Any
    step_size: Any


class FKC(fk.FeynmanKac):
    """The reverse SDE as a Feynman–Kac model: particles (x, S) with S the combined score at x; step k is at
    time t_k = T − k dt. log G_k = h(x, t_k) dt (+ R(x) at k = 0); M_k is one Euler–Maruyama step from t_k to
    t_{k+1}, followed by `moves` steps of an MCMC kernel (resample–move) that leave γ_{t_{k+1}} invariant:
    the weighted cloud after that Euler step stands for γ_{t_{k+1}} / Z_{t_{k+1}}, so the moves keep it
    consistent (weights ride along unchanged) and bring the particles to local equilibrium, which the
    weights then need not correct. The kernel's last density evaluation gives S at t_{k+1}, reused by G_{k+1}."""

    def __init__(self, plan, rt, steps, t_min, corrected, noise, laplacian, probes, start_resampling_step,
                 moves=0, kernel="mala", kernel_options=None, step_size=None):
        self.plan, self.rt, self.sde, self.corrected = plan, rt, plan.sde, corrected
        self.big_b = plan.total_beta
        self.noise_scale = 1.0 if noise == "target" else 1.0 / self.big_b
        self.betas = [beta for _, beta in plan.bases]
        self.scores = [b.score_fn(rt) for b, _ in plan.bases]
        self.rewards, self.reward_grad = _reward_terms(plan, rt, laplacian, probes)
        self.dt = (self.sde.T - t_min) / steps
        self.start = start_resampling_step
        self.moves = integer(moves, "moves", 0)
        if self.moves:
            self.kernel = get_kernel(kernel)
            self.kernel_options = self.kernel.options(kernel_options)
            self.densities = [b.density_fn(rt) for b, _ in plan.bases]
        if step_size is not None and not (isinstance(step_size, (int, float)) and step_size > 0):
            raise ValueRangeError(f"step_size must be a positive number, got {step_size!r}")
        self.step_size = step_size

    def _t(self, k):
        return self.sde.T - self.dt * k

    def log_gamma(self, x, t):
        """(log γ_t(x) [N], ∇ log γ_t(x) [N, d]) with log γ_t = Σ β_i log q_{i,t} + R (the moves' target)."""
        xp, n = self.rt.xp, x.shape[0]
        parts = [fn(x, t * xp.ones((n,))) for fn in self.densities]
        log_g = sum(beta * lq for beta, (lq, _) in zip(self.betas, parts))
        grad = sum(beta * s for beta, (_, s) in zip(self.betas, parts))
        if self.reward_grad is not None:
            r, grad_r = self.reward_grad(x)
            log_g, grad = log_g + r, grad + grad_r
        return log_g, grad

    def init(self, key, n):
        rt, d = self.rt, self.plan.dim
        x = rt.normal(key, (n, d)) * math.sqrt(self.sde.prior_var / self.big_b)
        big_s = self.log_gamma(x, self.sde.T)[1] if self.moves else rt.xp.zeros((n, d))
        h = 0.0
        if self.moves:   # default: the kernel's step for dimension d at the scale of the start
            h = self.step_size or self.kernel.initial_step(d) * math.sqrt(self.sde.prior_var / self.big_b)
        return (x, big_s), Carry(key, rt.asarray(float(h)))

    def log_potential(self, k, particles, log_w, carry):
        rt, xp, sde = self.rt, self.rt.xp, self.sde
        x, cached = particles
        n = x.shape[0]
        t = self._t(k)
        if self.rewards is not None:
            r, grad_r, lap_r = self.rewards(x, carry.key)
        if self.moves and len(self.betas) == 1:   # the moves left S at (x, t_k): the one base's score from it
            big_s = rt.stop_gradient(cached)
            s = [(big_s - (grad_r if self.rewards is not None else 0.0)) / self.betas[0]]
        else:
            s = [rt.stop_gradient(fn(x, t * xp.ones((n,)))) for fn in self.scores]
            big_s = sum(beta * si for beta, si in zip(self.betas, s))
            if self.rewards is not None:
                big_s = big_s + grad_r
        if not self.corrected:
            return xp.zeros((n,)), (x, big_s), carry
        g2 = sde.g2(t, xp)
        h = (self.big_b - 1.0) * sde.div_f(t, self.plan.dim) + 0.5 * g2 * (
            xp.sum(big_s * big_s, axis=-1) - sum(beta * xp.sum(si * si, axis=-1) for beta, si in zip(self.betas, s)))
        if self.rewards is not None:
            h = h + 0.5 * g2 * lap_r - xp.sum(sde.f(x, t) * grad_r, axis=-1) + xp.where(k == 0, r / self.dt, 0.0)
        return h * self.dt, (x, big_s), carry

    def can_resample(self, k):
        return k >= self.start

    def move(self, key, k, particles, log_w, carry):
        """x ← x + (−f + ((g² + σ²)/2) S) dt + σ √dt ε at time t_k, then the MCMC moves at t_{k+1}; the step
        size follows the acceptance rate, log h += acc − target."""
        rt, xp, sde = self.rt, self.rt.xp, self.sde
        x, big_s = particles
        t = self._t(k)
        g2 = sde.g2(t, xp)
        k_sde, k_mcmc = rt.split(key, 2)
        x = x + (-sde.f(x, t) + 0.5 * g2 * (1.0 + self.noise_scale) * big_s) * self.dt \
            + xp.sqrt(g2 * self.noise_scale * self.dt) * rt.normal(k_sde, x.shape)
        if not self.moves:
            return (x, big_s), carry, None, None
        t_next, one = self._t(k + 1), 1.0 + 0.0 * carry.step_size
        eye = rt.asarray(np.eye(self.plan.dim))

        def density(z, _):
            log_g, grad = self.log_gamma(z, t_next)
            return 0.0 * log_g, log_g, grad

        def body(_, c):
            kk, p, acc = c
            kk, sub = rt.split(kk, 2)
            p, ok = self.kernel.step(rt, sub, p, one, carry.step_size, eye, density, **self.kernel_options)
            return kk, p, acc + xp.mean(ok * 1.0)

        p = Particles(x, *density(x, one))
        _, p, acc = rt.fori_loop(0, self.moves, body, (k_mcmc, p, 0.0 * one))
        acc = acc / self.moves
        h = carry.step_size * xp.exp(acc - self.kernel.target_accept)
        return (p.z, p.grad), carry._replace(step_size=h), None, (acc, carry.step_size)


@method("fkc", kind="diffusion")
@shards_particles
def run(plan, rt, key, particles=1000, progress=None, steps=500, t_min=1e-3, corrected=True, resample="always",
        resampler="systematic", start_resampling_step=0, noise="target", laplacian="exact", probes=1, moves=0,
        kernel="mala", kernel_options=None, step_size=None):
    """Sample a diffusion target (see the module docstring); options as named there. `moves` MCMC steps of
    `kernel` (mala | hmc | rwm, `kernels`; its `kernel_options`; initial `step_size`) after each Euler step
    (resample–move, `FKC`) need the log density of every factor (`ppl.GaussianMixture` scores)."""
    if noise not in ("target", "tempered"):
        raise UnknownNameError(f"unknown noise {noise!r}; choose 'target' (sigma = g) or 'tempered' (g/sqrt(B))")
    sde, n, steps = plan.sde, int(particles), int(steps)
    if not 0 < t_min < sde.T or steps < 1:
        raise ValueRangeError(f"need 0 < t_min < T = {sde.T} and steps >= 1, got t_min={t_min}, steps={steps}")
    if noise == "tempered" and plan.total_beta > 2:
        advice.warn(f"the tempered-noise SDE (sigma = g/sqrt(B)) is unstable for B = {plan.total_beta:g} > 2; "
                    f"use {advice.options('fkc', noise='target')}", FKCWarning)
    threshold = _threshold(resample) if corrected else 0.0
    model = FKC(plan, rt, steps, t_min, corrected, noise, laplacian, probes, start_resampling_step, moves, kernel,
                kernel_options, step_size)
    step = fk.make_step(model, resampler, threshold, error_every_step=False)   # FKC reports no log Z error

    def body(state, xs):
        k_lap, k_step = rt.split(xs["key"], 2)
        state, info = step(k_step, state._replace(carry=state.carry._replace(key=k_lap)))
        return state, (info.ess, info.resampled, info.model)

    k_init, k_steps = rt.split(key, 2)
    loop = rt.jit(lambda s, keys: rt.scan(body, s, keys))
    state, (ess, resampled, moved) = loop(fk.init(model, k_init, n), {"key": rt.split(k_steps, steps)})
    x, log_w = rt.to_numpy(state.particles[0]).astype(np.float64), rt.to_numpy(state.log_w).astype(np.float64)
    log_z = float(rt.to_numpy(state.log_z))
    if not np.all(np.isfinite(x)) or (corrected and not math.isfinite(log_z)):
        raise InferenceError(f"fkc: the reverse SDE diverged (non-finite particles or weights) after {steps} steps",
                             hint=f"use {advice.options('fkc', steps=2 * steps)} or "
                                  f"{advice.options('fkc', noise='target')}")
    diagnostics = {"ess": rt.to_numpy(ess), "resampled": rt.to_numpy(resampled).astype(bool),
                   "t": np.asarray(sde.T - model.dt * np.arange(steps)), "t_min": t_min, "steps": steps,
                   "total_beta": plan.total_beta, "noise": noise, "corrected": bool(corrected),
                   "particle_devices": rt.device_count(state.log_w), "moves": model.moves}
    if model.moves:
        diagnostics["acceptance"], diagnostics["step_size"] = (rt.to_numpy(v) for v in moved)
    if not corrected:
        return Result({SITE: x[None]}, None, method="fkc", runtime=rt.name, device=rt.device, diagnostics=diagnostics)
    diagnostics["log_z_per_chain"] = [log_z]
    diagnostics["n_resampled"] = int(diagnostics["resampled"].sum())
    return Result({SITE: x[None]}, log_w[None], log_z, None, method="fkc", runtime=rt.name, device=rt.device,
                  diagnostics=diagnostics)
