"""Self-normalized importance sampling with the reference π0 (or a user's proposal) as proposal.

x_i ~ π0, log w_i = log γ(x_i) − log π0(x_i) = log L(x_i);
log Z ≈ logmeanexp(log w), se(log Z) ≈ sqrt(Var(w) / (N · mean(w)²)) (delta method);
ESS = (Σw)² / Σw²; Pareto k̂ from PSIS (ArviZ), with a warning when k̂ > 0.7.
"""
import warnings

import numpy as np

from ..errors import InferenceError
from ..result import Result, kish_ess
from . import method
from .runtime import batched


class ImportanceWarning(UserWarning):
    """The importance weights are unreliable (Pareto k̂ > 0.7 or few effective samples)."""


def log_z_and_se(log_w):
    """logmeanexp(log w) and its delta-method standard error, from numpy log weights [N]."""
    n = log_w.shape[-1]
    m = np.max(log_w)
    w = np.exp(log_w - m)
    mean = w.mean()
    return float(m + np.log(mean)), float(np.sqrt(w.var() / (n * mean ** 2)))


def pareto_khat(log_w):
    import arviz as az
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, k = az.psislw(np.asarray(log_w, dtype=np.float64).copy())
    return float(k)


@method("is")
def run(compiled, rt, key, particles=10_000, progress=None, batch_size=None):
    """Importance sampling of `compiled` with `particles` draws from its reference."""
    prog = compiled.lower(rt)
    z = prog.sample_reference(key, particles)
    _, log_rest = batched(rt, lambda z, _: prog.log_densities(z), batch_size)(z, None)
    log_w = rt.to_numpy(log_rest).astype(np.float64)
    bad = ~np.isfinite(log_w)
    bad_nan = int(np.sum(np.isnan(log_w)))
    log_w[bad] = -np.inf
    if bad.all():
        raise InferenceError(f"importance sampling: all {particles} weights vanished (log densities were "
                             f"-inf or NaN on every particle); the proposal misses the target's support")
    log_z, se = log_z_and_se(log_w)
    ess = float(kish_ess(log_w))
    finite = log_w[np.isfinite(log_w)]
    k = float("inf") if finite.size <= 5 else (-np.inf if np.ptp(finite) < 1e-9 else pareto_khat(finite))
    if k > 0.7:
        warnings.warn(f"importance sampling: Pareto k-hat = {k:.2f} > 0.7; the weights have a heavy tail and "
                      f"log Z and moments are unreliable (ESS = {ess:.0f} of {particles}); use SMC or a wider "
                      f"proposal (reference=...)", ImportanceWarning, stacklevel=3)
    samples = {k_: v[None] for k_, v in prog.to_constrained(z).items()}
    diagnostics = {"ess": ess, "pareto_k": k, "non_finite": int(bad.sum()), "nan": bad_nan,
                   "log_z_per_chain": [log_z]}
    return Result(samples, log_w[None], log_z, se, method="is", runtime=rt.name, device=rt.device,
                  diagnostics=diagnostics)
