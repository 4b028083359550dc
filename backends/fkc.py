"""Feynman–Kac correctors (FKC) for diffusion targets γ_t = Π_i q_{i,t}^{β_i} · exp(R(x)), R = Σ_j c_j r_j.

Reverse time τ = 1 − t, Euler–Maruyama on dx = v dτ + σ dW with

    S = Σ β_i s_i + ∇R,    v = −f + ((g² + σ²)/2) S,    σ = g (default) or g/√B (tempered noise), B = Σ β_i,

from x_T ~ N(0, (α_T² + σ_T²)/B I) with initial log weights R(x_T), and log-weight increments (DESIGN §5)

    dw = [ (B − 1) ∇·f − f·∇R + (g²/2) ( ‖S‖² − Σ β_i ‖s_i‖² + ΔR ) ] dτ

(ΔR exact, or Hutchinson's estimate ε·∇²R ε with Rademacher ε). Systematic resampling every step or when
ESS < threshold · N (from `start_resampling_step` on); log Z = Σ over resampling epochs of logmeanexp of the
weights estimates log(Z_0 / Z_T), Z_T the normalizer of Π q_{i,T}^{β_i} ≈ that of the start. `corrected=False`
runs the same SDE without weights (the uncorrected sampler).
"""
import math
import warnings

import numpy as np

from ..compiler.diffusion_plan import DiffusionPlan
from ..diffusion import SITE
from ..errors import InferenceError, PlanError, UnknownNameError, ValueRangeError
from ..result import Result
from ..stdlib.resamplers import RESAMPLERS
from . import method


class FKCWarning(UserWarning):
    """An FKC setting is known to be unstable."""


def _reward_terms(plan, rt, laplacian, probes):
    """R(x) [N], ∇R [N, d], ΔR [N] for the plan's rewards (None when there are none)."""
    if not plan.rewards:
        return None
    xp = rt.xp

    def total(z):
        return sum(c * r.fn(z) for r, c in plan.rewards)

    value_and_grad = rt.value_and_grad(lambda z, _: (lambda v: (v, v))(total(z)))
    hvp = rt.hvp(total)
    eye = rt.asarray(np.eye(plan.dim))
    if laplacian == "exact":
        lap1 = rt.vmap(lambda z: xp.sum(rt.vmap(lambda e: hvp(z, e))(eye) * eye))
    elif laplacian == "hutchinson":
        lap1 = rt.vmap(lambda z, eps: xp.mean(xp.sum(rt.vmap(lambda e: hvp(z, e))(eps) * eps, axis=-1)))
    else:
        raise UnknownNameError(f"unknown laplacian {laplacian!r}; choose 'exact' or 'hutchinson'")

    def terms(x, key):
        (r, _), grad = value_and_grad(x, 0.0)
        if laplacian == "exact":
            return r, grad, lap1(x)
        eps = xp.sign(rt.normal(key, (x.shape[0], probes, plan.dim)))
        return r, grad, lap1(x, eps)
    return terms


def _threshold(resample):
    if resample == "always":
        return math.inf
    if resample in ("never", None):
        return 0.0
    if isinstance(resample, (int, float)) and 0 < resample <= 1:
        return float(resample)
    raise ValueRangeError(f"resample must be 'always', 'never' or an ESS fraction in (0, 1], got {resample!r}")


@method("fkc")
def run(plan, rt, key, particles=1000, progress=None, steps=500, t_min=1e-3, corrected=True, resample="always",
        resampler="systematic", start_resampling_step=0, noise="target", laplacian="exact", probes=1):
    """Sample a diffusion target (see the module docstring); options as named there."""
    if not isinstance(plan, DiffusionPlan):
        raise PlanError("method 'fkc' samples targets built from ppl.diffusion(...) bases; this target has none "
                        "(use 'smc', 'is' or 'nuts')")
    if noise not in ("target", "tempered"):
        raise UnknownNameError(f"unknown noise {noise!r}; choose 'target' (sigma = g) or 'tempered' (g/sqrt(B))")
    if resampler not in RESAMPLERS:
        raise UnknownNameError(f"unknown resampler {resampler!r}; choose one of {', '.join(sorted(RESAMPLERS))}")
    sde, d, n, xp = plan.sde, plan.dim, int(particles), rt.xp
    if not 0 < t_min < sde.T or int(steps) < 1:
        raise ValueRangeError(f"need 0 < t_min < T = {sde.T} and steps >= 1, got t_min={t_min}, steps={steps}")
    big_b = plan.total_beta
    if noise == "tempered" and big_b > 2:
        warnings.warn(f"the tempered-noise SDE (sigma = g/sqrt(B)) is unstable for B = {big_b:g} > 2; "
                      f"use noise='target'", FKCWarning, stacklevel=3)
    noise_scale = 1.0 if noise == "target" else 1.0 / big_b
    threshold, resample_fn = _threshold(resample), RESAMPLERS[resampler]
    betas = [beta for _, beta in plan.bases]
    scores = [b.score_fn(rt) for b, _ in plan.bases]
    rewards = _reward_terms(plan, rt, laplacian, probes)
    dt = (sde.T - t_min) / int(steps)
    log_n = math.log(n)

    def step(carry, inp):
        """One reverse Euler–Maruyama step from t to t − dt, its weight increment and (maybe) resampling."""
        x, log_w, log_z = carry
        t, k = inp["t"], inp["k"]
        k_noise, k_res, k_lap = rt.split(inp["key"], 3)
        s = [rt.stop_gradient(fn(x, t * xp.ones((n,)))) for fn in scores]
        big_s = sum(beta * si for beta, si in zip(betas, s))
        drift, g2 = sde.f(x, t), sde.g2(t, xp)
        if rewards is not None:
            _, grad_r, lap_r = rewards(x, k_lap)
            big_s = big_s + grad_r
        x_new = x + (-drift + 0.5 * g2 * (1.0 + noise_scale) * big_s) * dt \
            + xp.sqrt(g2 * noise_scale * dt) * rt.normal(k_noise, (n, d))
        if not corrected:
            return (x_new, log_w, log_z), (xp.ones(()) * n, k < 0)
        h = (big_b - 1.0) * sde.div_f(t, d) + 0.5 * g2 * (
            xp.sum(big_s * big_s, axis=-1) - sum(beta * xp.sum(si * si, axis=-1) for beta, si in zip(betas, s)))
        if rewards is not None:
            h = h + 0.5 * g2 * lap_r - xp.sum(drift * grad_r, axis=-1)
        log_w = log_w + h * dt
        lse = xp.logsumexp(log_w, axis=0)
        ess = xp.exp(2.0 * lse - xp.logsumexp(2.0 * log_w, axis=0))
        do = (k >= start_resampling_step) & (ess < threshold * n)
        idx = resample_fn(rt, k_res, xp.exp(log_w - lse))
        idx = xp.where(do, idx, xp.arange(n))
        x_new = xp.take(x_new, idx, axis=0)
        log_z = log_z + xp.where(do, lse - log_n, 0.0 * lse)
        log_w = xp.where(do, 0.0 * log_w, log_w)
        return (x_new, log_w, log_z), (ess, do)

    k_init, k_r0, k_steps = rt.split(key, 3)
    x0 = rt.normal(k_init, (n, d)) * math.sqrt(sde.prior_var / big_b)
    log_w0 = rewards(x0, k_r0)[0] if (rewards is not None and corrected) else xp.zeros((n,))
    xs = {"t": rt.asarray(sde.T - dt * np.arange(int(steps))), "k": rt.asindex(np.arange(int(steps))),
          "key": rt.split(k_steps, int(steps))}
    loop = rt.jit(lambda x, lw, xs: rt.scan(step, (x, lw, xp.zeros(())), xs))
    (x, log_w, log_z), (ess, resampled) = loop(x0, log_w0, xs)
    x, log_w = rt.to_numpy(x).astype(np.float64), rt.to_numpy(log_w).astype(np.float64)
    if not np.all(np.isfinite(x)) or (corrected and not np.any(np.isfinite(log_w))):
        raise InferenceError(f"fkc: the reverse SDE diverged (non-finite particles or weights) after {steps} steps; "
                             f"increase steps or use noise='target'")
    diagnostics = {"ess": rt.to_numpy(ess), "resampled": rt.to_numpy(resampled).astype(bool),
                   "t": np.asarray(sde.T - dt * np.arange(int(steps))), "t_min": t_min, "steps": int(steps),
                   "total_beta": big_b, "noise": noise, "corrected": bool(corrected)}
    if not corrected:
        return Result({SITE: x[None]}, None, method="fkc", runtime=rt.name, device=rt.device, diagnostics=diagnostics)
    finite = log_w[np.isfinite(log_w)]
    top = finite.max()
    log_z_total = float(rt.to_numpy(log_z)) + top + math.log(np.sum(np.exp(finite - top))) - log_n
    diagnostics["log_z_per_chain"] = [log_z_total]
    diagnostics["n_resampled"] = int(diagnostics["resampled"].sum())
    return Result({SITE: x[None]}, log_w[None], log_z_total, None, method="fkc", runtime=rt.name,
                  device=rt.device, diagnostics=diagnostics)
