"""Self-normalized importance sampling: the one-step Feynman–Kac model with M0 = π0 (or a user's proposal)
and log G_0 = log L = log γ − log π0.

log Z ≈ log c_0 = logmeanexp(log L); se(log Z) from the core's family estimate, which for one step is
sqrt(Σ W²) (the delta method's Σ W² − 1/N, plus 1/N); ESS = 1/Σ W²; Pareto k̂ from PSIS (ArviZ), with a
warning when k̂ > 0.7. On several devices (`sharding`) each weighs its own draws; log Z and the ESS are
global sums, and the draws are the one-device draws.
"""
import math
import warnings

import numpy as np

from .. import advice
from ..errors import InferenceError
from ..result import Result
from ..weights import Weights
from . import fk, method, run_cache
from .runtime import batched
from .sharding import shards_particles


class ImportanceWarning(UserWarning):
    """The importance weights are unreliable (Pareto k̂ > 0.7 or few effective samples)."""


def pareto_khat(log_w):
    import arviz as az
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, k = az.psislw(np.asarray(log_w, dtype=np.float64).copy())
    return float(k)


def narrowest(samples, w):
    """'site (weighted sd p% of its sd under the proposal)' for the scalar component whose weighted sd is the
    smallest share of its sd under the proposal (where the target is narrowest); None if none is narrower."""
    best, said = 1.0, None
    for name, x in samples.items():
        flat = x.reshape(x.shape[0] * x.shape[1], -1).astype(np.float64)
        sd = flat.std(axis=0)
        mean = w @ flat
        ratio = np.sqrt(np.maximum(w @ (flat - mean) ** 2, 0.0)) / np.where(sd > 0, sd, np.inf)
        j = int(np.argmin(ratio))
        if ratio[j] < best:
            best = float(ratio[j])
            said = name if flat.shape[1] == 1 and x.ndim == 2 else f"{name}[{j}]"
            said = f"{said} (weighted sd {100 * best:.2g}% of its sd under the proposal)"
    return said


def weights_khat(log_w):
    """Pareto k̂ of log weights: inf with 5 or fewer finite ones, -inf when they are all equal."""
    finite = log_w[np.isfinite(log_w)]
    if finite.size <= 5:
        return float("inf")
    return -float("inf") if np.ptp(finite) < 1e-9 else pareto_khat(finite)


class Importance(fk.FeynmanKac):
    """M0 = the reference π0, log G_0 = log L; or, with a fitted `proposal` q on the unconstrained space
    (`backends/proposals.py`), M0 = q and log G_0 = log γ − log q; no move."""

    def __init__(self, program, batch_size=None, proposal=None):
        self.program, self.rt, self.proposal = program, program.rt, proposal
        if proposal is not None:
            proposal.check(program)
        self.log_parts = batched(self.rt, lambda z, _: program.log_densities(z), batch_size)

    def init(self, key, n):
        if self.proposal is not None:
            return self.proposal.sample(self.rt, key, n), None
        return self.program.sample_reference(key, n), None

    def log_potential(self, t, z, log_w, carry):
        """log L, or log γ − log q with a proposal; NaN where log π0 is (a reference draw it fails to define)."""
        ref, rest = self.log_parts(z, None)
        if self.proposal is None:
            return self.rt.xp.where(self.rt.xp.isnan(ref), ref, rest), z, carry
        return ref + rest - self.proposal.log_prob(self.rt, z), z, carry


def _cached_step(compiled, rt, batch_size, proposal):
    """One `Importance` model and its jit-compiled weighting step per compiled target, runtime and options (a
    new lambda per run would compile again on every call)."""
    per_target = run_cache(compiled, "is")
    key = (repr(rt), batch_size, proposal)
    if key not in per_target:
        model = Importance(compiled.lower(rt), batch_size, proposal)
        per_target[key] = model, rt.jit(lambda k, s: fk.make_step(model, threshold=0.0)(k, s, move=False))
    return per_target[key]


@method("is")
@shards_particles
def run(compiled, rt, key, particles=10_000, progress=None, batch_size=None, proposal=None):
    """Importance sampling of `compiled` with `particles` draws from its reference, or from `proposal` (a
    fitted `Proposal`, given as `reference=`)."""
    model, step = _cached_step(compiled, rt, batch_size, proposal)
    k0, k1 = rt.split(key, 2)

    def failed(t, info, before):     # NaN or +inf log weights, or all -inf: the term that failed, if one did
        return model.program.diagnose(before.particles, "importance sampling") or InferenceError(
            f"importance sampling: {info.invalid} of {particles} log weights were NaN or +inf (the proposal's density)"
            if info.invalid else f"importance sampling: all {particles} weights vanished (log densities were -inf "
            f"on every particle); the proposal misses the target's support")
    state, (info,) = fk.run(rt, step, fk.init(model, k0, particles), [k1], invalid=failed, vanished=failed)
    log_w = rt.to_numpy(state.log_w).astype(np.float64)
    log_z, ess = float(info.log_c), float(info.ess)
    k = weights_khat(log_w)
    samples = {k_: v[None] for k_, v in model.program.to_constrained(state.particles).items()}
    if k > 0.7:
        where = narrowest(samples, Weights(log_w).normalized())
        advice.warn(f"importance sampling: Pareto k-hat = {k:.2f} > 0.7; the weights have a heavy tail and "
                    f"log Z and moments are unreliable (ESS = {ess:.0f} of {particles})"
                    + (f"; the target is narrowest in {where}" if where else "")
                    + f"; use SMC ({advice.options('smc', True)}) or a proposal closer to the target "
                    f"({advice.reference(compiled.latent, 'is')})", ImportanceWarning)
    diagnostics = {"ess": ess, "pareto_k": k, "non_finite": info.non_finite, "log_z_per_chain": [log_z],
                   "particle_devices": rt.device_count(state.log_w)}
    se = math.sqrt(info.rel_var)
    return Result(samples, log_w[None], log_z, se, method="is", runtime=rt.name, device=rt.device,
                  diagnostics=diagnostics, proposal=proposal,
                  unconstrained=None if proposal is None else rt.to_numpy(state.particles)[None])
