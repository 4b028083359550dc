"""HMC and NUTS: the runtime's own samplers (NumPyro's or Pyro's, `rt.mcmc`) on the compiled potential.

Over the flat unconstrained particle z ∈ ℝ^D the potential is

    U(z) = −(log π0(z) + log L(z))        (log|det J| of the constraining transforms included)

so exp(−U) is the target γ pushed to ℝ^D; draws are mapped back with `to_constrained`.
Warmup adapts the step size (dual averaging towards `target_accept`) and a diagonal
(or `dense_mass`) inverse mass matrix. Chains start from exact draws of the reference π0
(redrawn where the density is not finite); a site without a normalized prior (flat: `real`,
`real<lower=0>` declared without a distribution) starts uniform(−2, 2) on the unconstrained scale, as
Stan's chains do, so no `reference` model is needed. On JAX the chains are vectorized (one jit-compiled
`vmap`); Pyro has no vectorized chains, so its chains run one after the other.

`particles` (passed by `ppl.sample`) is the total number of kept draws when `num_samples`
is not given: num_samples = ceil(particles / chains). `num_samples` (draws per chain) wins.

Diagnostics (ArviZ): rank-normalized split R-hat (NaN with one chain), bulk and tail ESS and MCSE per scalar
component, divergences, E-BFMI (NumPyro only: Pyro does not expose the Hamiltonian per
draw) and the adapted step size; a `ConvergenceWarning` names the offending parameter when
R-hat > 1.01, ESS < 100 per chain, E-BFMI < 0.3 or any transition diverged.

A chain can be lost in warmup: started where the log density or its gradient is not finite (or is rounded to
nonsense in float32), every proposal is rejected, dual averaging shrinks the step size towards 0 (1e-38 in
float32) and the chain repeats its start. A chain whose draws changed in fewer than 1% of the iterations, or
whose adapted step size is below 1e-6 (or 1e-3 times the chains' median), is stuck: its warmup is run again
once from a new initial point (`diagnostics["retried_chains"]`), and a `ConvergenceWarning` names the chains still
stuck after that (`diagnostics["stuck_chains"]`), their step sizes, and what to change.
"""
import logging
import math
import warnings
from typing import NamedTuple

import numpy as np

from .. import advice
from ..errors import InferenceError, ValueRangeError
from ..precision import gradient_sites, unresolved
from ..result import Result, component_label
from . import integer, method
from .sharding import shards_chains

RHAT_MAX, ESS_PER_CHAIN_MIN, EBFMI_MIN = 1.01, 100, 0.3
MOVED_MIN, STEP_MIN, STEP_MIN_RELATIVE = 0.01, 1e-6, 1e-3   # a stuck chain: see the module's docstring
MIN_DRAWS = 4   # per chain: ArviZ's split R-hat, ESS and E-BFMI need a few
OPTIONS = ("num_warmup", "num_samples", "chains", "target_accept", "max_tree_depth", "num_steps", "dense_mass")


class ConvergenceWarning(UserWarning):
    """The MCMC run shows signs of non-convergence (R-hat, ESS, divergences, E-BFMI, or chains that never moved)."""


def _initial_points(prog, rt, key, chains):
    """One start per chain: the draw of highest target density among 8 draws of `LoweredPlan.sample_start` (the
    reference's, uniform(−2, 2) unconstrained at flat sites; one jit on JAX);
    a chain whose 8 draws all have a non-finite density takes the best unused finite draw of the others."""
    def candidates(key):
        z = prog.sample_start(key, 8 * chains)
        ref, rest = rt.vmap(prog.log_parts)(z)
        return z, ref + rest
    z, log_density = rt.jit(candidates)(key)
    lp = np.asarray(rt.to_numpy(log_density), dtype=float)
    lp[~np.isfinite(lp)] = -np.inf
    finite = np.flatnonzero(lp > -np.inf)
    if finite.size < chains:
        raise InferenceError(f"NUTS/HMC: only {finite.size} of {8 * chains} draws from the reference have a finite "
                             f"target density; cannot start {chains} chains",
                             hint=f"check the target's support and parameters, or pass "
                                  f"{advice.reference(prog.compiled.latent)} closer to the target")
    unresolvable = unresolved(rt.to_numpy(z), rt.precision)
    if unresolvable:
        j, scale, step, sd = unresolvable[0]
        site = next(name for name, e in prog.layout.items() if e["offset"] <= j < e["offset"] + e["size"])
        raise InferenceError(f"NUTS/HMC: {rt.precision} cannot resolve {site!r}: at its scale {scale:.3g} it moves in "
                             f"steps of {step:.3g}, while the reference's sd there is {sd:.3g}; the sampler would "
                             f"crawl with a vanishing step size", hint="rerun with precision='float64' (ppl run "
                                                                       "--float64), or center and scale the site")
    best = 8 * np.arange(chains) + lp.reshape(chains, 8).argmax(axis=1)
    empty = lp[best] == -np.inf
    spare = [i for i in finite[np.argsort(-lp[finite])] if i not in best]
    best[empty] = spare[:empty.sum()]
    return rt.asarray(rt.to_numpy(z)[best])


def stuck_chains(z, step_size):
    """(stuck, moved): the chains of draws z [C, S, D] whose draws changed in fewer than `MOVED_MIN` of the
    iterations or whose adapted step size (per chain) is below `STEP_MIN` or `STEP_MIN_RELATIVE` × the median of
    the chains'; and the fraction of iterations in which each chain moved."""
    z, step = np.asarray(z), np.asarray(step_size, dtype=float)
    moved = (np.diff(z, axis=1) != 0).any(axis=-1).mean(axis=1)
    collapsed = ~(step >= STEP_MIN) | (step < STEP_MIN_RELATIVE * np.median(step))
    return np.flatnonzero((moved < MOVED_MIN) | collapsed).tolist(), moved


class Chains(NamedTuple):
    """A run of the runtime's MCMC: draws z [C, S, D] from starts z0 [C, D], statistics {name: [C, S, ...]}, the
    adapted step size and mean acceptance rate per chain, and how many devices held the chains."""
    z: object
    z0: object
    stats: dict
    step_size: np.ndarray
    accept: np.ndarray
    devices: int

    def replaced(self, chains, other, rt):
        """These chains with `chains` (indices) replaced by the first len(chains) of `other` (numpy arrays)."""
        def put(a, b):
            a = _numpy(rt, a).copy()
            a[chains] = _numpy(rt, b)[:len(chains)]
            return a
        stats = {k: put(v, other.stats[k]) for k, v in self.stats.items()}
        return Chains(put(self.z, other.z), put(self.z0, other.z0), stats, put(self.step_size, other.step_size),
                      put(self.accept, other.accept), self.devices)


def _numpy(rt, a):
    """The runtime's array `a` as a numpy array (one that is already numpy as it is)."""
    return a if isinstance(a, np.ndarray) else rt.to_numpy(a)


def _chains(prog, rt, key, n, sampler):
    """`sampler(key, z0)` (the runtime's MCMC) on n chains from `_initial_points`."""
    k_init, k_run = rt.split(key, 2)
    z0 = _initial_points(prog, rt, k_init, n)
    z, stats, step_size, accept = sampler(k_run, z0)
    return Chains(z, z0, stats, np.asarray(step_size, dtype=float), np.asarray(accept, dtype=float),
                  rt.device_count(z))


def _sample_chains(prog, rt, key, chains, sampler):
    """`Chains` of `sampler`, run once more from new initial points for the chains it left stuck
    (`stuck_chains`), whose draws and statistics then replace theirs (as many chains as the devices divide, the
    extra dropped); and the diagnostics of the check: {"moved_fraction", "retried_chains", "retried_step_size",
    "stuck_chains"}."""
    run = _chains(prog, rt, key, chains, sampler)
    stuck, moved = stuck_chains(rt.to_numpy(run.z), run.step_size)
    check = {"retried_chains": stuck, "retried_step_size": run.step_size[stuck].tolist()}
    if stuck:
        n = -(-len(stuck) // rt.n_devices) * rt.n_devices
        again = _chains(prog, rt, rt.split(key, 4)[3], n, sampler)   # a fourth key: the others' stay as they were
        run = run.replaced(stuck, again, rt)
        stuck, moved = stuck_chains(run.z, run.step_size)
    return run, dict(check, moved_fraction=moved.tolist(), stuck_chains=stuck)


def _warn_stuck(method, check, step_size, draws, precision):
    """A ConvergenceWarning naming the chains still stuck after their second warmup, and what to change."""
    said = "; ".join(f"chain {c} " + ("never moved" if check["moved_fraction"][c] == 0 else
                                      f"moved in {check['moved_fraction'][c]:.1%} of {draws} draws") +
                     f" (step size {step_size[c]:.2g})" for c in check["stuck_chains"])
    fixes = (f"rerun in float64 ({advice.options(method, precision='float64')}), or reparameterize"
             if precision == "float32" else "reparameterize")
    advice.warn(f"{method}: {said}, also after a second warmup from a new initial point: its draws are no sample; "
                f"the step size collapsed in warmup, where the log density or its gradient is not finite (or float32 "
                f"rounds it) near the start; {fixes} (non-centered, parameters scaled to order 1)", ConvergenceWarning)


def one_based(label):
    """ArviZ's 0-based component label `theta[0, 2]` as the language and `Result.summary` write it: `theta[1, 3]`."""
    name, bracket, rest = str(label).partition("[")
    return name if not bracket else f"{name}[{', '.join(str(int(i) + 1) for i in rest.rstrip(']').split(','))}]"


def _labelled(table, column):
    return {one_based(k): float(v) for k, v in table[column].items()}


def _worst(values, bad, what):
    """'name (value)' for the worst entries of `values` where `bad(value)`, worst first."""
    names = sorted((k for k, v in values.items() if bad(v)), key=lambda k: values[k])
    if what == "max":
        names = names[::-1]
    shown = ", ".join(f"{k} ({values[k]:.3g})" for k in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else ""), names


def diagnose(samples, stats, chains, method="nuts", warmup=None, target_accept=None):
    """ArviZ diagnostics of draws `samples` {site: [C, S, ...]} and `stats` {name: [C, S]}, components labelled
    1-based as in `Result.summary` (`theta[1]` is the first); warns on failure,
    naming `method` and advising options for it (from its `warmup` and `target_accept`, where given)."""
    import arviz as az
    log = logging.getLogger("arviz")
    level = log.level
    log.setLevel(logging.ERROR)  # one chain: R-hat is NaN, said in the docstring, not logged per call
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant deterministic components give NaN R-hat
            table = az.summary(az.from_dict(posterior=samples), kind="diagnostics", round_to="none")
    finally:
        log.setLevel(level)
    diverging = stats["diverging"].astype(bool)
    diag = {"r_hat": _labelled(table, "r_hat"), "ess_bulk": _labelled(table, "ess_bulk"),
            "ess_tail": _labelled(table, "ess_tail"), "mcse_mean": _labelled(table, "mcse_mean"),
            "divergences": int(diverging.sum()), "divergences_per_chain": diverging.sum(axis=1).tolist(),
            "e_bfmi": az.bfmi(stats["energy"]).tolist() if "energy" in stats else None}
    r_hat = {k: v for k, v in diag["r_hat"].items() if np.isfinite(v)}  # NaN: one chain, or a constant
    ess = {k: min(diag["ess_bulk"][k], diag["ess_tail"][k]) for k in diag["ess_bulk"]}
    ess = {k: v for k, v in ess.items() if np.isfinite(v)}
    diag["r_hat_max"] = max(r_hat.values(), default=float("nan"))
    diag["ess_min"] = min(ess.values(), default=float("nan"))
    draws = next(iter(samples.values())).shape[1]
    shown, bad = _worst(r_hat, lambda v: v > RHAT_MAX, "max")
    if bad:
        longer = advice.options(method, num_warmup=2 * warmup if warmup else ..., num_samples=2 * draws)
        advice.warn(f"{method}: R-hat > {RHAT_MAX} for {shown}: the chains disagree; run longer ({longer}) or "
                    f"reparametrize", ConvergenceWarning)
    shown, bad = _worst(ess, lambda v: v < ESS_PER_CHAIN_MIN * chains, "min")
    if bad:
        needed = 100 * math.ceil(draws * ESS_PER_CHAIN_MIN * chains / max(ess[bad[0]], 1.0) * 1.25 / 100)
        advice.warn(f"{method}: low effective sample size (< {ESS_PER_CHAIN_MIN} per chain) for {shown}; "
                    f"means and quantiles are unreliable; run longer ({advice.options(method, num_samples=needed)})",
                    ConvergenceWarning)
    if diag["divergences"]:
        site, where = _divergent_site(samples, diverging)
        accept = advice.options(method, target_accept=_closer_to_one(target_accept) if target_accept else ...)
        reparam = f"reparametrize {site} non-centered ({advice.noncentered(site)})" if site else "reparametrize"
        advice.warn(f"{method}: {diag['divergences']} divergent transitions after warmup (per chain "
                    f"{diag['divergences_per_chain']}); they concentrate in {where}; raise target_accept ({accept}) "
                    f"or {reparam}", ConvergenceWarning)
    low = [i for i, v in enumerate(diag["e_bfmi"] or []) if v < EBFMI_MIN]
    if low:
        advice.warn(f"{method}: E-BFMI < {EBFMI_MIN} in chains {low} ({diag['e_bfmi']}): the momentum "
                    f"resampling explores the energy poorly (heavy tails or a funnel)", ConvergenceWarning)
    return diag


def _closer_to_one(p):
    """(1 + p) / 2, rounded to the digits it needs to stay above p (0.8 -> 0.9, 0.99 -> 0.995)."""
    higher = (1 + p) / 2
    return round(higher, max(3, 1 - math.floor(math.log10(1 - higher))))


def _divergent_site(samples, diverging):
    """The scalar component whose divergent draws sit furthest (in sd) from the mean of all draws, and a
    description: (label, text), or (None, 'no particular parameter')."""
    best, label, where = 0.0, None, "no particular parameter"
    for name, x in samples.items():
        flat = x.reshape(x.shape[0] * x.shape[1], -1).astype(np.float64)
        sd = flat.std(axis=0)
        shift = flat[diverging.reshape(-1)].mean(axis=0) - flat.mean(axis=0)
        score = np.where(sd > 0, shift / np.where(sd > 0, sd, 1.0), 0.0)
        j = int(np.argmax(np.abs(score)))
        if abs(score[j]) > abs(best):
            best = float(score[j])
            label = component_label(name, np.unravel_index(j, x.shape[2:]))
            where = f"{label} ({'low' if best < 0 else 'high'} values, {best:+.1f} sd from its mean)"
    return label, where


def _run(kind, compiled, rt, key, particles, progress, num_warmup=1000, num_samples=None, chains=4,
         target_accept=0.8, max_tree_depth=10, num_steps=None, dense_mass=False):
    """One MCMC run; its options (`OPTIONS`) were checked by `ppl.options` (values of `backends.VALUES`)."""
    if chains % rt.n_devices:
        raise ValueRangeError(f"{kind}: chains ({chains}) must be divisible by the number of devices "
                              f"({rt.n_devices}): each device runs chains / devices of them")
    draws = num_samples if num_samples is not None else math.ceil(integer(particles, "particles", 1) / chains)
    if isinstance(draws, int) and draws < MIN_DRAWS:
        given = "" if num_samples is not None else f" ({advice.options(kind, particles=particles, chains=chains)})"
        raise ValueRangeError(f"{kind} needs at least {MIN_DRAWS} draws per chain for its diagnostics (R-hat, ESS, "
                              f"E-BFMI), got {draws}{given}")
    draws = integer(draws, "num_samples", MIN_DRAWS)
    max_tree_depth = integer(max_tree_depth, "max_tree_depth", 1)
    if num_steps is not None:
        num_steps = integer(num_steps, "num_steps", 1)
    prog = compiled.lower(rt)
    if prog.dim == 0:
        if compiled.marginals:   # all integrated out: their exact draws (`marginals.draw`) are the run
            return Result({}, np.zeros((chains, draws)), method=kind, runtime=rt.name, device=rt.device,
                          diagnostics={"chains": chains, "num_samples": draws,
                                       "marginalized": [str(m) for m in compiled.marginals]})
        raise InferenceError(f"{kind}: the target has no latent sites to sample")
    k_pred = rt.split(key, 3)[2]   # a third key, leaving the chains' keys as they were
    def potential(z):
        ref, rest = prog.log_parts(z)
        return -(ref + rest)

    one = rt.asarray(1.0)

    def value_and_grad(z):      # at one point z [D], by the compiled batched pass of the density and its gradient
        (value, _), grad = prog.value_and_grad(z.reshape((1, -1)), one)
        return -value[0], -grad[0]

    run, check = _sample_chains(prog, rt, key, chains, lambda k, z0: rt.mcmc(
        potential, k, z0, kind, num_warmup, draws, float(target_accept), max_tree_depth, num_steps, bool(dense_mass),
        progress, value_and_grad))
    if check["stuck_chains"]:
        _warn_stuck(kind, check, run.step_size, draws, rt.precision)
    z, stats = rt.asarray(run.z) if isinstance(run.z, np.ndarray) else run.z, run.stats   # numpy where merged
    zs = z.reshape((chains * draws, prog.dim))
    by_chain = lambda d: {k: v.reshape((chains, draws) + v.shape[1:]) for k, v in d.items()}  # noqa: E731
    samples = by_chain(prog.to_constrained(zs))
    pointwise = dict(log_likelihood=by_chain(prog.log_likelihood(zs)), predictive=by_chain(prog.predictive(k_pred, zs)),
                     observed={name: t.model.observed[t.site] for name, t in prog.observed})
    if "grad" in stats:      # recorded by the runtime's sampler at every draw (`mcmc`)
        grad, log_density = stats.pop("grad"), stats.pop("log_density")
    else:                    # else evaluated once, at the chains' starts and ends
        ends = np.concatenate([_numpy(rt, run.z0), rt.to_numpy(z).reshape((chains, draws, prog.dim))[:, -1]])
        (value, _), grad = prog.value_and_grad(rt.asarray(ends), rt.asarray(1.0))
        grad, log_density = rt.to_numpy(grad), rt.to_numpy(value)
    diag = diagnose(samples, stats, chains, kind, num_warmup, float(target_accept))
    diag["non_finite_gradient"] = gradient_sites(prog.layout, np.reshape(grad, (-1, prog.dim)),
                                                 np.reshape(log_density, -1))
    diag.update(check, step_size=run.step_size.tolist(), acceptance_rate=run.accept.tolist(), chains=chains,
                num_warmup=num_warmup, num_samples=draws, chain_devices=run.devices)
    return Result(samples, None, method=kind, runtime=rt.name, device=rt.device, diagnostics=diag,
                  sample_stats=stats, **pointwise)


@method("nuts")
@shards_chains
def run_nuts(compiled, rt, key, particles=4000, progress=None, **options):
    """NUTS (options: see `OPTIONS`) on the compiled potential; samples [chains, num_samples, ...]."""
    return _run("nuts", compiled, rt, key, particles, progress, **options)


@method("hmc")
@shards_chains
def run_hmc(compiled, rt, key, particles=4000, progress=None, **options):
    """Static HMC with `num_steps` leapfrog steps on the potential.

    Without `num_steps` the libraries' trajectory length 2π is used; after mass-matrix adaptation a
    near-Gaussian target then has period ≈ 2π and the chain barely moves: prefer num_steps ≈ (π/2) / step size.
    """
    return _run("hmc", compiled, rt, key, particles, progress, **options)


run_nuts.options = run_hmc.options = OPTIONS
run_nuts.needs_reference = run_hmc.needs_reference = False   # chains start from `LoweredPlan.sample_start`
