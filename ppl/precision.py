"""Float precision: the warning that a run's answer was lost to rounding (float32 by default).

Gradient methods (nuts, hmc, smc) record in `diagnostics["non_finite_gradient"]` the sites where ∇ log γ was
non-finite at a finite density, checked once per run (`gradient_sites`); the warning names them."""
import numpy as np

from . import advice


class PrecisionWarning(UserWarning):
    """A run looks broken by float rounding: a continuous latent site whose draws are all equal, non-finite
    samples, log weights or log Z, or a non-finite gradient of the log density. Rerun with precision="float64"
    (`ppl run --float64`)."""


def gradient_sites(layout, grad, log_density):
    """The sites of `layout` with a non-finite component of `grad` [N, D] (numpy: ∇ log density at N points)
    at a point whose `log_density` [N] is finite."""
    grad = np.asarray(grad)[np.isfinite(np.asarray(log_density))]
    if grad.size == 0:
        return []
    bad = ~np.isfinite(grad).all(axis=0)
    return [name for name, e in layout.items() if bad[e["offset"]:e["offset"] + e["size"]].any()]


#: the fewest float steps per standard deviation of a site's draws for the float type to resolve it
STEPS_PER_SD = 10


def unresolved(x, precision, weights=None):
    """[(component index, scale, step, sd)] of the columns of x [N, K] that `precision` cannot resolve: at their
    scale max |x| the spacing of adjacent floats exceeds sd / STEPS_PER_SD (e.g. float32 near 1e8 moves in steps
    of 8: a site of sd 1 there is a handful of values). `weights` [N] (normalized) weigh the sd."""
    x = np.asarray(x, dtype=np.float64)
    w = np.full(len(x), 1.0 / len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = w @ x
    sd = np.sqrt(np.maximum(w @ (x - mean) ** 2, 0.0))
    scale = np.abs(x).max(axis=0)
    step = np.spacing(scale.astype(precision)).astype(np.float64)
    return [(j, scale[j], step[j], sd[j]) for j in np.flatnonzero(step > sd / STEPS_PER_SD)]


def check(result, layout, precision):
    """Warn (`PrecisionWarning`) for each latent site of `layout` (continuous, as all latent sites are) whose
    draws have zero spread in some element over more than one draw, or that the float type cannot resolve
    (`unresolved`), and for NaN samples, log weights or log Z."""
    sites = []
    for name in layout or {}:
        if name not in result.samples:
            continue
        x, w = result._pooled(name)     # draws [C·N, ...] and their pooled normalized weights
        if not np.isfinite(x).all():
            sites.append(f"{name!r} (non-finite draws)")
        elif x.shape[0] > 1 and (np.ptp(x, axis=0) == 0).any():
            sites.append(f"{name!r} (all {x.shape[0]} draws equal)")
        elif x.shape[0] > 1 and x.size:
            bad = unresolved(x.reshape(len(x), -1), precision, w)
            if bad:
                _, scale, step, sd = bad[0]
                sites.append(f"{name!r} (at its scale {scale:.3g} {precision} moves in steps of {step:.3g}, "
                             f"its sd is {sd:.3g})")
    if result.log_weights is not None and np.isnan(result.log_weights).any():
        sites.append("the log weights (NaN)")
    if result.log_z is not None and np.isnan(result.log_z):
        sites.append("log Z (NaN)")
    sites += [f"the gradient of the log density in {name!r} (non-finite)"
              for name in (result.diagnostics or {}).get("non_finite_gradient", [])]
    if sites:
        said = f"rerun with {advice.options(result.method, precision='float64')}" if precision == "float32" \
            else "check the model's scales"
        advice.warn(f"{precision} rounding may have broken this run: {', '.join(sites)}; {said}", PrecisionWarning)
