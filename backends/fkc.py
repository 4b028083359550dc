"""Feynman–Kac correctors (FKC) for diffusion targets γ_t = Π_i q_{i,t}^{β_i} · exp(R_t(x)), R_t = Σ_j c_j b_j(t) r_j.

b_j is a tilt's schedule (1 without one). Reverse time τ = 1 − t, Euler–Maruyama on dx = v dτ + σ dW with

    S = Σ β_i s_i + ∇R_t,    v = −f + ((g² + σ²)/2) S,    σ = g (default) or g/√B (tempered noise), B = Σ β_i,

from x_T ~ N(0, (α_T² + σ_T²)/B I) with initial log weights R_T(x_T), and log-weight increments (DESIGN §5;
Skreta et al. 2025, Props 3.1–3.4)

    dw = [ (B − 1) ∇·f − f·∇R_t + (g²/2) ( ‖S‖² − Σ β_i ‖s_i‖² + ΔR_t ) ] dτ + ∂_τ R_t dτ

(ΔR exact, or Hutchinson's estimate ε·∇²R ε with Rademacher ε; ∂_τ R_t dτ = R_{t_{k+1}} − R_{t_k} at fixed x).
(q1 q2)^β is β_1 = β_2 = β, CFG q^{1−w} q_c^w is β = (1 − w, w). A Feynman–Kac model on the core loop of `fk`:
log G_k = dw at x_k (the step's increment), resampled (systematic) every step or when ESS < threshold · N
(from `start_resampling_step` on), then moved by the Euler step — the same law as stepping first, since the
move acts on each particle independently — and, with `moves`, by MCMC steps invariant for γ_{t_{k+1}} (`FKC`).
log Z = Σ_k log c_k estimates log(Z_0 / Z_T), Z_T the normalizer of Π q_{i,T}^{β_i} ≈ that of the start.
`corrected=False` runs the same SDE without weights (the uncorrected sampler).

Left-point increments make log Z biased by O(dt): on an annealed Gaussian (σ_t² ≫ data variance) at
equilibrium the step's expected log-increment misses (β−1)(β−2) u²/4 per dimension, u = g² dt / v_t (GMM-40
with β = 3, VE, 1000 steps: +0.19, halving with each doubling of the steps).

`increments="path"` replaces them, where every factor knows its log density, by the exact importance weight of
each Euler step M(x'|x) = N(x + v dt, σ² dt) against a backward kernel L (an SMC sampler's weight, as in AIS):

    log G = log γ_{t_{k+1}}(x') − log γ_{t_k}(x) + log L(x | x') − log M(x' | x),
    L(x | x') = N(x' + (f(x') + ((σ² − g²)/2) S(x')) dt, σ² dt)   (the reversed SDE's Euler step),

the continuous-time increment's discretization without its O(dt) bias: log Z is then exact up to Monte Carlo
error at any dt (the start N(0, (α_T² + σ_T²)/B) standing for γ_T / Z_T). The weight of step k rides with the
particle through its moves (invariant for γ_{t_{k+1}}) and is charged at step k + 1, the last one at t_min.

Defaults: where every factor knows its log density, a corrected run makes one MALA move per step and uses the path
weights (GMM-40, paper setup, 3 seeds: worst mode TV 0.04–0.05 against 0.14–0.19 for the SDE weights alone, at
1.7–2× the CPU time); a score alone gets the SDE weights. se(log Z) = √(Σ_k F_k²) over the time-0 ancestors (`fk`)
with the path weights (z-scores against exact log Z over 20 seeds: sd 1.07–1.3; conservative, ≥ 1/√N, where the
weights are nearly flat); none with the SDE weights, whose O(dt) bias it would not cover (`_log_z_note`). A
FKCWarning says when the ESS after weighting falls below ESS_COLLAPSE · N at some step.
"""
import math
from typing import Any, NamedTuple

import numpy as np

from ..diffusion import SITE
from .. import advice
from ..errors import UNDEFINED_DENSITY_HINT, InferenceError, UnknownNameError, ValueRangeError
from ..result import Result
from ..weights import Weights
from . import fk, integer, method, run_cache
from .kernels import State, at, get_kernel
from .sharding import shards_particles


class FKCWarning(UserWarning):
    """An FKC setting is known to be unstable."""


def _reward_terms(plan, rt, laplacian, probes):
    """(terms, value_and_grad) for the plan's rewards r_j with per-step coefficients a [J] (None, None when
    there are none): value_and_grad(x, a) is R = Σ_j a_j r_j(x) [N], ∇R [N, d] and the r_j(x) [N, J];
    terms(x, key, a) adds ΔR [N]."""
    if not plan.rewards:
        return None, None
    xp = rt.xp

    def values(z):
        return xp.stack([r.fn(z) for r, _ in plan.rewards])

    def total(z, a):
        v = values(z)
        return xp.sum(a * v), v

    grad_fn = rt.value_and_grad(total)
    eye = rt.asarray(np.eye(plan.dim))
    if laplacian not in ("exact", "hutchinson"):
        raise UnknownNameError(f"unknown laplacian {laplacian!r}; choose 'exact' or 'hutchinson'")

    def value_and_grad(x, a):
        (r, v), grad = grad_fn(x, a)
        return r, grad, v

    def terms(x, key, a):
        hvp = rt.hvp(lambda z: total(z, a)[0])
        if laplacian == "exact":
            lap = rt.vmap(lambda z: xp.sum(rt.vmap(lambda e: hvp(z, e))(eye) * eye))(x)
        else:
            eps = xp.sign(rt.normal(key, (x.shape[0], probes, plan.dim)))
            lap = rt.vmap(lambda z, e: xp.mean(xp.sum(rt.vmap(lambda u: hvp(z, u))(e) * e, axis=-1)))(x, eps)
        return value_and_grad(x, a) + (lap,)
    return terms, value_and_grad


def _schedules(plan, times):
    """[K + 1, J]: c_j b_j(t_k) at the step times, b_j the tilt's schedule (1 when it has none)."""
    cols = []
    for r, c in plan.rewards:
        b = np.ones_like(times) if r.schedule is None else np.broadcast_to(
            np.asarray(r.schedule(times), dtype=np.float64), times.shape)
        if not np.all(np.isfinite(b)):
            raise ValueRangeError(f"the schedule of reward {r.name} is not finite on [t_min, T]")
        cols.append(c * b)
    return np.stack(cols, -1) if cols else np.zeros((len(times), 0))


def _threshold(resample):
    if resample == "always":
        return 1.0
    if resample in ("never", None):
        return 0.0
    if isinstance(resample, (int, float)) and 0 < resample <= 1:
        return float(resample)
    raise ValueRangeError(f"resample must be 'always', 'never' or an ESS fraction in (0, 1], got {resample!r}")


class FKCCarry(NamedTuple):
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
                 moves=0, kernel="mala", kernel_options=None, step_size=None, increments="sde"):
        if increments not in ("sde", "path"):
            raise UnknownNameError(f"unknown increments {increments!r}; choose 'sde' (FKC's continuous-time "
                                   f"weights) or 'path' (exact weights of the Euler path, needs log densities)")
        self.plan, self.rt, self.sde, self.corrected = plan, rt, plan.sde, corrected
        self.path, self.steps = increments == "path", steps
        self.big_b = plan.total_beta
        self.noise_scale = 1.0 if noise == "target" else 1.0 / self.big_b
        self.betas = [beta for _, beta in plan.bases]
        self.scores = [b.score_fn(rt) for b, _ in plan.bases]
        self.rewards, self.reward_grad = _reward_terms(plan, rt, laplacian, probes)
        self.dt = (self.sde.T - t_min) / steps
        self.coefs = rt.asarray(_schedules(plan, self.sde.T - self.dt * np.arange(steps + 1)))
        self.start = start_resampling_step
        self.moves = integer(moves, "moves", 0)
        self.kernel = get_kernel(kernel)
        self.kernel_options = self.kernel.options(kernel_options)
        if self.moves or self.path:
            self.densities = [b.density_fn(rt) for b, _ in plan.bases]
        if step_size is not None and not (isinstance(step_size, (int, float)) and step_size > 0):
            raise ValueRangeError(f"step_size must be a positive number, got {step_size!r}")
        self.step_size = step_size

    def _t(self, k):
        return self.sde.T - self.dt * k

    def log_gamma(self, x, k):
        """(log γ_t(x) [N], ∇ log γ_t(x) [N, d]) at t = t_k, log γ_t = Σ β_i log q_{i,t} + R_t (the moves'
        target)."""
        t = self._t(k)
        xp, n = self.rt.xp, x.shape[0]
        parts = [fn(x, t * xp.ones((n,))) for fn in self.densities]
        log_g = sum(beta * lq for beta, (lq, _) in zip(self.betas, parts))
        grad = sum(beta * s for beta, (_, s) in zip(self.betas, parts))
        if self.reward_grad is not None:
            r, grad_r, _ = self.reward_grad(x, self.coefs[k])
            log_g, grad = log_g + r, grad + grad_r
        return log_g, grad

    def init(self, key, n):
        rt, d = self.rt, self.plan.dim
        x = rt.normal(key, (n, d)) * math.sqrt(self.sde.prior_var / self.big_b)
        if self.moves or self.path:   # compiled: x may be split over devices, the step's arrays are on one
            log_g, big_s, start = rt.jit(self._start)(x)
        else:
            big_s = rt.xp.zeros((n, d))
        h = 0.0
        if self.moves:   # default: the kernel's step for dimension d at the scale of the start
            h = self.step_size or self.kernel.initial_step(d) * math.sqrt(self.sde.prior_var / self.big_b)
        carry = FKCCarry(key, rt.asarray(float(h)))
        return ((x, big_s, log_g, start) if self.path else (x, big_s)), carry

    def _start(self, x):
        """log γ_T(x), ∇ log γ_T(x) and R_T(x) (0 without rewards) at the start x."""
        log_g, grad = self.log_gamma(x, 0)
        r = self.reward_grad(x, self.coefs[0])[0] if self.reward_grad is not None else 0.0 * log_g
        return log_g, grad, r

    def log_potential(self, k, particles, log_w, carry):
        rt, xp, sde = self.rt, self.rt.xp, self.sde
        if self.path:   # the weight of the transition into x, computed by `move` (R_T(x_T) at k = 0)
            return particles[3] if self.corrected else 0.0 * particles[3], particles, carry
        x, cached = particles
        n = x.shape[0]
        t = self._t(k)
        if self.rewards is not None:
            r, grad_r, vals, lap_r = self.rewards(x, carry.key, self.coefs[k])
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
            db = xp.sum(vals * (self.coefs[k + 1] - self.coefs[k]), axis=-1)   # ∂_τ R_t dτ at fixed x
            h = h + 0.5 * g2 * lap_r - xp.sum(sde.f(x, t) * grad_r, axis=-1) \
                + (xp.where(k == 0, r, 0.0) + db) / self.dt
        return h * self.dt, (x, big_s), carry

    def can_resample(self, k, particles=None):
        return (k >= self.start) & (k < self.steps)   # not at the path weights' closing step

    def move(self, key, k, particles, log_w, carry):
        """x ← x + (−f + ((g² + σ²)/2) S) dt + σ √dt ε at time t_k, then the MCMC moves at t_{k+1}; the step
        size follows the acceptance rate, log h += acc − target."""
        rt, xp, sde = self.rt, self.rt.xp, self.sde
        x, big_s = particles[:2]
        t = self._t(k)
        g2 = sde.g2(t, xp)
        k_sde, k_mcmc = rt.split(key, 2) if self.moves else (key, None)
        x0, mean = x, x + (-sde.f(x, t) + 0.5 * g2 * (1.0 + self.noise_scale) * big_s) * self.dt
        x = mean + xp.sqrt(g2 * self.noise_scale * self.dt) * rt.normal(k_sde, x.shape)
        if self.path:
            log_g, big_s = self.log_gamma(x, k + 1)
            path = log_g - particles[2] + self._log_backward_ratio(x0, mean, x, big_s, t, g2)
        if not self.moves:
            return ((x, big_s, log_g, path) if self.path else (x, big_s)), carry, None, None
        def logdensity(z):   # the moves' target γ_{t_{k+1}}, unwhitened
            return self.log_gamma(z, k + 1) + ((),)

        def body(_, c):
            kk, p, acc = c
            kk, sub = rt.split(kk, 2)
            p, ok = self.kernel.step(rt, sub, p, logdensity, carry.step_size, None, **self.kernel_options)
            return kk, p, acc + xp.mean(ok * 1.0)

        p = State(x, log_g, big_s, ()) if self.path else at(logdensity, x)
        _, p, acc = rt.fori_loop(0, self.moves, body, (k_mcmc, p, 0.0 * carry.step_size))
        acc = acc / self.moves
        h = carry.step_size * xp.exp(acc - self.kernel.target_accept)
        moved = (p.z, p.grad, p.log_p, path) if self.path else (p.z, p.grad)
        return moved, carry._replace(step_size=h), None, (acc, carry.step_size)

    def _log_backward_ratio(self, x0, mean, x1, s1, t, g2):
        """log L(x0 | x1) − log M(x1 | x0) for the Euler step M = N(mean, σ² dt) and the backward kernel
        L = N(x1 + (f(x1) + ((σ² − g²)/2) S(x1)) dt, σ² dt), the Euler step of the reversed SDE (for σ = g the
        forward noising step). Any L gives exact weights; this one keeps their variance that of the SDE's."""
        xp, sde = self.rt.xp, self.sde
        var = g2 * self.noise_scale * self.dt
        back = x1 + (sde.f(x1, t) + 0.5 * (g2 * self.noise_scale - g2) * s1) * self.dt
        return (xp.sum((x1 - mean) ** 2, axis=-1) - xp.sum((x0 - back) ** 2, axis=-1)) / (2.0 * var)


#: the ESS fraction below which a step's weights have collapsed: healthy runs of the tests' targets stay above
#: 0.25 at every step, runs with too few steps fall below 0.01 (and their log Z is off by many se)
ESS_COLLAPSE = 0.1


def _check_ess(ess, n, times, steps):
    """A FKCWarning when the ESS after weighting falls below ESS_COLLAPSE · N at some step (`times` its t)."""
    low = ess < ESS_COLLAPSE * n
    if low.any():
        k = int(np.argmin(ess))
        advice.warn(f"fkc: the effective sample size collapsed to {ess[k]:.0f} of {n} particles at t = {times[k]:.3g} "
                    f"({int(low.sum())} of {len(ess)} steps below {ESS_COLLAPSE:.0%} of the particles): the weights, "
                    f"log Z and its standard error are unreliable; use {advice.options('fkc', steps=4 * steps)}",
                    FKCWarning)


def _log_z_note(path):
    """What the result's log Z ± se is."""
    what = "log Z = log ∫γ_{t_min} − log ∫γ_T, γ_t = Π_i q_{i,t}^{β_i} · exp(R_t) (the start N(0, (α_T² + σ_T²)/B) " \
           "standing for γ_T / ∫γ_T)"
    if path:
        return what + "; the exact weights of the Euler path make it consistent at any step size; se = √(Σ_k F_k²) " \
                      "from the particles' time-0 ancestors"
    return what + "; the left-point SDE increments bias it by O(dt) (+1.1 on examples/fkc_mixture.ppl at 200 steps, " \
                  "halving with each doubling of the steps), which a Monte Carlo standard error would not cover, so " \
                  "none is given; increments='path' (every factor with a log density) removes the bias and gives one"


def _compiled(plan, rt, options, resampler, threshold):
    """(FKC model, the jitted loop over its steps, the jitted closing step) per plan, runtime and options: one
    compile, not one per run (the loop's shapes follow the particles and steps, which jit keys on itself)."""
    per_plan = run_cache(plan, "fkc")
    key = (repr(rt), repr(options), resampler, threshold)
    if key not in per_plan:
        model = FKC(plan, rt, *options)
        step = fk.make_step(model, resampler, threshold, error_every_step=False)   # se once, at the end

        def lap(key, state):     # the step, its key split with the one the model's Laplacian probes read
            k_lap, k_step = rt.split(key, 2)
            return step(k_step, state._replace(carry=state.carry._replace(key=k_lap)))
        per_plan[key] = (model, rt.jit(lambda s, keys: fk.scan(rt, lap, s, keys)),
                         rt.jit(lambda s, key: step(key, s, move=False)[0]))
    return per_plan[key]


@method("fkc", kind="diffusion")
@shards_particles
def run(plan, rt, key, particles=1000, progress=None, steps=500, t_min=1e-3, corrected=True, resample="always",
        resampler="systematic", start_resampling_step=0, noise="target", laplacian="exact", probes=1, moves=None,
        kernel="mala", kernel_options=None, step_size=None, increments=None):
    """Sample a diffusion target (see the module docstring); options as named there. `moves` MCMC steps of
    `kernel` (mala | hmc | rwm, `kernels`; its `kernel_options`; initial `step_size`) after each Euler step
    (resample–move, `FKC`) and `increments="path"` (exact weights of the Euler path) need the log density of
    every factor (`ppl.GaussianMixture`, `DoubleWells` scores); they are the defaults of a corrected run where
    every factor has one (moves=1, increments='path'), else moves=0, increments='sde'. log Z ± se as
    `_log_z_note` says (in `diagnostics["log_z_note"]`); a FKCWarning when the ESS collapses along time."""
    if noise not in ("target", "tempered"):
        raise UnknownNameError(f"unknown noise {noise!r}; choose 'target' (sigma = g) or 'tempered' (g/sqrt(B))")
    sde, n, steps = plan.sde, int(particles), int(steps)
    if not 0 < t_min < sde.T or steps < 1:
        raise ValueRangeError(f"need 0 < t_min < T = {sde.T} and steps >= 1, got t_min={t_min}, steps={steps}")
    if noise == "tempered" and plan.total_beta > 2:
        advice.warn(f"the tempered-noise SDE (sigma = g/sqrt(B)) is unstable for B = {plan.total_beta:g} > 2; "
                    f"use {advice.options('fkc', noise='target')}", FKCWarning)
    exact = corrected and all(b.has_density for b, _ in plan.bases)
    moves = (1 if exact else 0) if moves is None else moves
    increments = ("path" if exact else "sde") if increments is None else increments
    threshold = _threshold(resample) if corrected else 0.0
    options = (steps, t_min, corrected, noise, laplacian, probes, start_resampling_step, moves, kernel,
               kernel_options, step_size, increments)
    model, loop, close = _compiled(plan, rt, options, resampler, threshold)
    k_init, k_steps = rt.split(key, 2)
    state, info = loop(fk.init(model, k_init, n), rt.split(k_steps, steps))
    info = fk.to_host(rt, info)

    def invalid(k, info, _):   # NaN or +inf increments: refused, not dropped as zero weights
        return InferenceError(f"fkc: the log-weight increment was NaN or +inf at step {k} (t = "
                              f"{sde.T - model.dt * k:.4g}) on {int(info.invalid[k])} of {n} particles; a reward or "
                              f"log density is undefined there", hint=UNDEFINED_DENSITY_HINT)
    fk.check(info, 0, invalid, vanished=lambda *_: None)   # vanished weights: the divergence below
    if model.path:   # the last transition's weight, at t_min (no resampling, no move)
        state = close(state, k_init)
    x, log_w = rt.to_numpy(state.particles[0]).astype(np.float64), rt.to_numpy(state.log_w).astype(np.float64)
    log_z = float(rt.to_numpy(state.log_z))
    if not np.all(np.isfinite(x)) or (corrected and not math.isfinite(log_z)):
        raise InferenceError(f"fkc: the reverse SDE diverged (non-finite particles or weights) after {steps} steps",
                             hint=f"use {advice.options('fkc', steps=2 * steps)} or "
                                  f"{advice.options('fkc', noise='target')}")
    times = sde.T - model.dt * np.arange(steps)
    diagnostics = {"ess": info.ess, "resampled": info.resampled.astype(bool), "t": times,
                   "t_min": t_min, "steps": steps, "total_beta": plan.total_beta, "noise": noise,
                   "corrected": bool(corrected), "particle_devices": rt.device_count(state.log_w), "moves": model.moves,
                   "increments": increments}
    if model.moves:
        diagnostics["acceptance"], diagnostics["step_size"] = info.model
    if not corrected:
        return Result({SITE: x[None]}, None, method="fkc", runtime=rt.name, device=rt.device, diagnostics=diagnostics)
    final_ess = float(Weights(log_w).ess())   # the closing step's, at t_min, with path increments
    _check_ess(np.append(diagnostics["ess"], final_ess), n, np.append(times, t_min), steps)
    rel_var = float(rt.to_numpy(fk.relative_variance(rt, state.log_w, state.eve)))
    diagnostics.update({"log_z_per_chain": [log_z], "n_resampled": int(diagnostics["resampled"].sum()),
                        "eve_relative_variance": rel_var, "n_eves": len(np.unique(rt.to_numpy(state.eve))),
                        "log_z_note": _log_z_note(model.path)})
    return Result({SITE: x[None]}, log_w[None], log_z, math.sqrt(rel_var) if model.path else None, method="fkc",
                  runtime=rt.name, device=rt.device, diagnostics=diagnostics)
