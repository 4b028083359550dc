"""Float precision: the warning that a run's answer was lost to rounding (float32 by default)."""
import numpy as np

from . import advice


class PrecisionWarning(UserWarning):
    """A run looks broken by float rounding: a continuous latent site whose draws are all equal, or
    non-finite samples, log weights or log Z. Rerun with precision="float64" (`ppl run --float64`)."""


def check(result, layout, precision):
    """Warn (`PrecisionWarning`) for each latent site of `layout` (continuous, as all latent sites are) whose
    draws have zero spread in some element over more than one draw, and for NaN samples, log weights or log Z."""
    sites = []
    for name in layout or {}:
        x = result.samples.get(name)
        if x is None:
            continue
        x = x.reshape((-1,) + x.shape[2:])
        if not np.isfinite(x).all():
            sites.append(f"{name!r} (non-finite draws)")
        elif x.shape[0] > 1 and (np.ptp(x, axis=0) == 0).any():
            sites.append(f"{name!r} (all {x.shape[0]} draws equal)")
    if result.log_weights is not None and np.isnan(result.log_weights).any():
        sites.append("the log weights (NaN)")
    if result.log_z is not None and np.isnan(result.log_z):
        sites.append("log Z (NaN)")
    if sites:
        said = f"rerun with {advice.options(result.method, precision='float64')}" if precision == "float32" \
            else "check the model's scales"
        advice.warn(f"{precision} rounding may have broken this run: {', '.join(sites)}; {said}", PrecisionWarning)
