"""Adaptive importance sampling (AMIS: Cornuet, Marin, Mira & Robert 2012; cross-entropy adaptation:
Rubinstein & Kroese 2004) on the unconstrained space.

Iteration 0 draws from the plan's reference π0 and searches it for the target's modes (`modes`): damped
Newton from its `starts` draws of highest log γ, maxima joined into one mode unless log γ dips between them,
each mode weighed by its Laplace mass m_k = γ(ẑ_k) (2π)^{D/2} |Σ_k|^{1/2}. Iteration 1 draws from the
Laplace approximation N(ẑ_k, Σ_k) at the mode (`start='laplace'`, the default but for mixtures), or from
the mixture Σ_k p_k N(ẑ_k, Σ_k), p_k = m_k / Σ_j m_j, of the family's members at every mode holding a
share p_k ≥ 10⁻³ (adapted by weighted EM from then on: a unimodal member fitted to several modes lands on
one and misses the others' mass); or from a given `proposal`. Every draw of every iteration keeps its
balance-heuristic (deterministic-mixture) weight

    w_i = γ(z_i) / q̄(z_i),    q̄ = Σ_t (n_t / n) q_t,

recomputed whenever a proposal joins (Veach & Guibas 1995; Owen & Zhou 2000). The next proposal is the
cross-entropy fit of the family to all draws with tempered weights w_i^a: the member closest in KL to
γ^a q̄^(1−a), with a ∈ (0, 1] the largest value keeping ESS(w^a) ≥ `target_ess` · n_t (a far start is
approached in steps rather than fitted to one draw).

Stopping rule: once a = 1, adaptation stops when the efficiency ESS/n of q_t's own weights γ/q_t has not
improved by `tol` (relative) on the best so far for `patience` iterations, or when one more batch would leave
less than one for the end; the rest of the budget is then one fresh batch from the best proposal (highest efficiency).

Estimates (`reuse=`): 'final' (default) uses the fresh batch with its own weights γ/q: unbiased for Z, with
se(log Z) ≈ sqrt(Σ W² − 1/n), the delta method (`is` adds 1/n, a guard for poor proposals that makes it
conservative when ESS ≈ n: on eight schools and German credit the sd of z-scores over 30 seeds was 0.59 with
it). 'mixture' pools every draw with the weights w above (AMIS):
more draws, but the proposals were fitted to the draws they reweight, which biases log Z downwards (on
German credit, 2000 draws × 6 iterations: −0.02, 3 se). PSIS k̂ is reported per iteration (q_t's own
weights) and for the estimate (`ImportanceWarning` above 0.7).

Coverage: the estimate's weight on each mode's basin (each draw counted at the mode of largest
p_k N(z; ẑ_k, Σ_k)) is reported beside p_k (`diagnostics['modes']`). A proposal that missed a mode gives it
no draws, so the estimate's weight there is ≈ 0 whatever the weights; an `ImportanceWarning` names the
missed share when modes holding ≥ 1 % of the Laplace mass get under a tenth of it (a factor of ten leaves
room for the Laplace masses' own error on non-Gaussian modes). k̂ cannot see this: the weights of a
proposal sitting on one mode are well behaved. Modes that none of the starts reached are not seen either.
"""
import math

import numpy as np
from scipy.optimize import brentq

from .. import advice
from ..errors import InferenceError, UnknownNameError, ValueRangeError
from ..result import Result
from ..weights import Weights
from . import integer, method
from .importance import ImportanceWarning, weights_khat
from .proposals import FAMILIES, Gaussian, Mixture, Pool, StudentT, layout_of
from .runtime import batched

#: the Laplace share of the target's mass from which a mode gets a component of the start
MATTERS = 1e-3
#: the share from which a mode the estimate misses is warned about
MISSED = 0.01


def _tempering(log_w, target):
    """The largest a ∈ (0, 1] with ESS(w^a) = (Σ w^a)² / Σ w^2a ≥ target (ESS decreases in a), on the host
    pool in float64: a root by Brent's method (the pool grows each iteration, so no compiled bisection)."""
    lw = log_w[np.isfinite(log_w)]

    def excess(a):
        return math.log(Weights(a * lw).ess()) - math.log(target)

    if excess(1.0) >= 0:
        return 1.0
    tiny = 2.0 ** -50
    return tiny if excess(tiny) < 0 else float(brentq(excess, tiny, 1.0, xtol=1e-10))


@method("ais")
def run(compiled, rt, key, particles=4000, family="gaussian", budget=None, max_iterations=30, target_ess=0.5,
        tol=0.05, patience=2, components=4, df=5.0, start=None, starts=16, reuse="final", proposal=None,
        batch_size=None, progress=None):
    """Adaptive IS of `compiled`: `particles` draws per iteration from a `family` proposal ('gaussian',
    'student_t', 'mixture' of `components` Gaussians, 'flow', or a `Proposal` to start from), adapted
    until the stopping rule; `budget` draws in all (default 10 · particles; whole batches). `start` is the
    first proposal: 'laplace' (the default; 'reference' for mixtures) or 'reference' (the plan's π0); `starts`
    reference draws start the search for modes."""
    program = compiled.lower(rt)
    if program.dim == 0:
        raise ValueRangeError("ais adapts a proposal over latent sites; the target has none",
                              hint=f"use {advice.options('is', True)}")
    budget = integer(budget if budget is not None else 10 * particles, "budget", 2 * particles)
    starts = integer(starts, "starts", 1)
    if family not in FAMILIES and family != "flow":
        raise UnknownNameError(f"unknown proposal family {family!r}; choose one of "
                               f"{', '.join(sorted(FAMILIES) + ['flow'])}")
    if proposal is not None:
        proposal.check(program)
    start = start or ("reference" if family == "mixture" else "laplace")
    if start not in ("laplace", "reference"):
        raise UnknownNameError(f"unknown start {start!r}; choose 'laplace' or 'reference'")
    if reuse not in ("final", "mixture"):
        raise UnknownNameError(f"unknown reuse {reuse!r}; choose 'final' or 'mixture'")
    parts = batched(rt, lambda z, _: program.log_densities(z), batch_size)
    keys = iter(rt.split(key, max_iterations + 3))
    u = np.asarray(rt.to_numpy(rt.uniform(next(keys), (components,))), dtype=np.float64)   # mixture starts
    pool, table, bar = Pool(rt), [], _bar(progress, budget)

    def log_gamma(z):
        """log γ at points z [n, D] (numpy), in chunks of `particles` (the draws' compiled shape)."""
        n, z = len(z), np.concatenate([z, np.repeat(z[:1], -len(z) % particles, 0)])
        return np.concatenate([rt.to_numpy(sum(parts(rt.asarray(c), None)))
                               for c in np.split(z, len(z) // particles)]).astype(np.float64)[:n]

    def draw(q, n, a, needed=True):
        """n draws from q (None: the reference) into the pool, in chunks of `particles` (one compiled shape);
        their efficiency ESS/n under q's own weights. An error if every weight so far vanished and `needed`."""
        n, z, log_t, log_r = n // particles * particles, [], [], []
        for k in rt.split(next(keys), n // particles):
            zk = program.sample_reference(k, particles) if q is None else q.sample(rt, k, particles)
            ref, rest = parts(zk, None)
            z.append(rt.to_numpy(zk))
            log_t.append(rt.to_numpy(ref + rest))
            log_r.append(rt.to_numpy(ref))
            if np.isnan(log_t[-1]).any() or (log_t[-1] == np.inf).any():   # refused, with the term named
                raise program.diagnose(zk, "ais") or InferenceError(
                    f"ais: log γ was NaN or +inf at {int((~np.isfinite(log_t[-1]) & (log_t[-1] != -np.inf)).sum())} "
                    f"of {particles} draws")
        pool.add(q, *(np.concatenate(x).astype(np.float64) for x in (z, log_t, log_r)))
        own = pool.own_log_weights()
        if needed and not np.isfinite(pool.log_weights()).any():
            raise InferenceError(f"ais: every weight vanished after {sum(pool.sizes)} draws (log γ was -inf on all "
                                 f"of them); the start misses the target's support")
        eff = float(Weights(own).ess()) / n if np.isfinite(own).any() else 0.0
        log_z = float(Weights(own).log_mean())
        table.append({"iteration": len(table), "draws": n, "family": "reference" if q is None else q.family,
                      "tempering": a, "ess_per_draw": eff, "pareto_k": weights_khat(own), "log_z": log_z})
        if bar is not None:
            bar.update(n)
            bar.set_postfix(log_z=f"{log_z:.3f}", ess=f"{eff:.2f}")
        return eff

    draw(None, particles, 0.0, proposal is None)     # iteration 0: the reference π0, searched for modes
    found = modes(program, rt, pool.z, pool.log_target, log_gamma, starts) \
        if np.isfinite(pool.log_target).any() else None
    q, a = proposal, 1.0
    if q is None and start == "laplace":     # the Laplace approximation at each mode that matters
        part = [(share, StudentT(m, c, df) if family == "student_t" else Gaussian(m, c))
                for m, c, _, share in found if share >= MATTERS]
        q = Mixture(*zip(*part)) if len(part) > 1 else part[0][1]
    fresh, best, stale = q is not None, (-1.0, q), 0
    while len(table) <= max_iterations and sum(pool.sizes) + 2 * particles <= budget and stale < patience:
        if not fresh:   # the cross-entropy fit to the tempered pooled weights
            lw = pool.log_weights()
            a = _tempering(lw, target_ess * particles)
            q = _fit(family, q, pool.z, Weights(a * lw).normalized(), rt, u, df)
        fresh = False
        eff = draw(q, particles, a)
        if a == 1.0:    # the stopping rule: `patience` iterations without a gain of `tol` over the best
            stale = 0 if eff > best[0] * (1 + tol) else stale + 1
            best = max(best, (eff, q), key=lambda b: b[0])
    q = best[1] if best[1] is not None else q
    draw(q, budget - sum(pool.sizes), 1.0)      # the rest of the budget (whole chunks) from the best proposal
    if bar is not None:
        bar.close()
    return _result(program, rt, pool, table, q, compiled, reuse, found, _missed_hint(family, start, proposal))


def laplace(program, rt, starts, iterations=50):
    """Laplace approximations N(ẑ, (−∇² log γ(ẑ))⁻¹) on the unconstrained space: damped Newton from each
    start (rows of `starts` [M, D], all at once) with the Hessian from central differences of the gradient
    (2D gradients per start in one batched call); negative curvature is clipped to the smallest positive one.
    Returns ẑ [M, D], covariances [M, D, D], log γ(ẑ) [M] and whether each run converged [M], in numpy
    float64."""
    z = np.array(starts, np.float64)
    m, d = z.shape

    def value_grad(z):
        (v, _), g = program.value_and_grad(rt.asarray(z), 1.0)
        return np.asarray(rt.to_numpy(v), np.float64), np.asarray(rt.to_numpy(g), np.float64)

    def curvature(z):
        h = 1e-3 * np.maximum(1.0, np.abs(z))                              # [M, D]
        shift = h[:, :, None] * np.eye(d)                                   # [M, D, D]: row j moves z_j
        _, gs = value_grad(np.concatenate([z[:, None] + shift, z[:, None] - shift], 1).reshape(-1, d))
        gs = gs.reshape(m, 2 * d, d)
        hess = (gs[:, :d] - gs[:, d:]).transpose(0, 2, 1) / (2 * h[:, None, :])   # [., i, j]: ∂g_i / ∂z_j
        evals, evecs = np.linalg.eigh(-0.5 * (hess + hess.transpose(0, 2, 1)))
        floor = np.where(evals > 0, evals, np.inf).min(1)
        floor = np.where(np.isfinite(floor), floor, 1.0)
        return np.maximum(evals, np.maximum(floor, 1e-8)[:, None]), evecs

    f, g = value_grad(z)
    active, converged = np.isfinite(f), np.zeros(m, bool)
    for _ in range(iterations):
        if not active.any():
            break
        evals, evecs = curvature(z)
        step = np.einsum("mij,mj->mi", evecs, np.einsum("mji,mj->mi", evecs, g) / evals)
        t, ok = np.ones(m), ~active
        fn, gn = f.copy(), g.copy()
        while not ok.all() and t[~ok].max() > 1e-6:     # backtracking, each run its own step length
            ft, gt = value_grad(np.where(ok[:, None], z, z + t[:, None] * step))
            up = ~ok & np.isfinite(ft) & (ft >= f - 1e-6 * (1 + np.abs(f)))
            fn[up], gn[up], ok = ft[up], gt[up], ok | up
            t = np.where(ok, t, 0.5 * t)
        moved = active & ok
        z[moved] += t[moved, None] * step[moved]
        done = moved & (np.abs(fn - f) < 1e-5 * (1 + np.abs(f))) & (t == 1.0)
        converged |= done | (active & ~ok)       # no ascent left along the Newton direction: a maximum
        f, g, active = fn, gn, moved & ~done
    evals, evecs = curvature(z)
    return z, np.einsum("mij,mj,mkj->mik", evecs, 1 / evals, evecs), f, converged


def modes(program, rt, z, log_target, log_gamma, starts=16, dip=1.0):
    """The target's modes found from the `starts` draws of highest log γ among (z, log_target): a Laplace
    approximation from each (`laplace`), then the maxima grouped into modes. Two maxima are one mode unless
    log γ (`log_gamma`: points [n, D] -> [n]) dips by more than `dip` nats below the lower of them somewhere
    on the segment between them (at 7 points): a basin of attraction crossed without a barrier. Each mode keeps
    its highest maximum and its Laplace mass

        log m_k = log γ(ẑ_k) + (D/2) log 2π + (1/2) log |Σ_k|,   share p_k = m_k / Σ_j m_j.

    Returns [(ẑ_k, Σ_k, log m_k, p_k)], by decreasing mass; modes no start reached are not in it."""
    finite = np.flatnonzero(np.isfinite(log_target))
    zs, covs, f, converged = laplace(program, rt, z[finite[np.argsort(log_target[finite])[::-1][:starts]]])
    same = np.eye(len(f), dtype=bool)
    a, b = np.triu_indices(len(f), 1)
    if len(a):
        path = zs[a, None] + (np.arange(1, 8) / 8)[None, :, None] * (zs[b] - zs[a])[:, None]   # [pairs, 7, D]
        low = log_gamma(path.reshape(-1, zs.shape[1])).reshape(len(a), 7)
        same[a, b] = same[b, a] = np.where(np.isnan(low), -np.inf, low).min(1) >= np.minimum(f[a], f[b]) - dip
    if not converged.any():     # no run reached a maximum in its iterations: the best point reached
        converged = f == np.max(f)
    found = []
    for i in np.argsort(-np.where(converged, f, -np.inf)):      # each maximum joins the first higher mode
        if converged[i] and not same[i, found].any():
            found.append(i)
    log_mass = np.array([f[i] + 0.5 * (len(zs[i]) * math.log(2 * math.pi) + np.linalg.slogdet(covs[i])[1])
                         for i in found])
    share = Weights(log_mass).normalized()
    order = np.argsort(log_mass)[::-1]
    return [(zs[found[k]], covs[found[k]], float(log_mass[k]), float(share[k])) for k in order]


def _fit(family, q, z, w, rt, u, df):
    """The next proposal: the cross-entropy fit of `family` to the weighted draws, from the current one."""
    if family == "flow":
        from .flows import Flow
        return q.fit(z, w) if isinstance(q, Flow) else Flow.start(rt, z, w)
    if isinstance(q, Mixture):
        return q.fit(z, w)
    if family == "mixture":
        return Mixture.start(z, w, u).fit(z, w)
    if family == "student_t":
        return StudentT.fit(z, w, q, df=df)
    return Gaussian.fit(z, w)


def _bar(progress, total):
    import sys
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="ais", unit="draw")


def _missed_hint(family, start, proposal):
    """What to try when the estimate misses a mode."""
    mixture = f"{advice.options('ais', start='laplace')} (a mixture with one component per mode)"
    if proposal is not None:
        return f"no proposal= and {mixture}"
    if start != "laplace":
        return mixture
    return f"more starts or a larger budget ({advice.options('ais', starts=64, particles=...)})"


def coverage(found, z, w):
    """The estimate's weight on each mode's basin: draw i goes to the mode of largest p_k N(z_i; ẑ_k, Σ_k)."""
    lp = np.stack([math.log(share) + Gaussian(m, c).log_density(z) for m, c, _, share in found])
    return np.bincount(np.argmax(lp, axis=0), weights=w, minlength=len(found))


def _result(program, rt, pool, table, q, compiled, reuse, found, hint):
    if reuse == "final":    # the last batch alone, with its own weights γ/q: unbiased
        n = pool.sizes[-1]
        lw, z = pool.own_log_weights(), pool.z[-n:]
    else:                   # every draw with the deterministic-mixture weights γ/q̄
        lw, z = pool.log_weights(), pool.z
    weights = Weights(lw)
    w, n = weights.normalized(), weights.n
    log_z, se, ess = float(weights.log_mean()), float(weights.log_mean_se()), float(weights.ess())
    k = weights_khat(lw)
    if k > 0.7:
        advice.warn(f"ais: Pareto k-hat of the pooled weights = {k:.2f} > 0.7; log Z and moments are unreliable "
                    f"(ESS = {ess:.0f} of {n}); try {advice.options('ais', family='student_t')} or "
                    f"'mixture', or a larger budget", ImportanceWarning)
    table_of_modes = None
    if found is not None:
        held = coverage(found, z, w) if len(found) > 1 else np.ones(1)
        table_of_modes = [{"share": share, "log_mass": log_mass, "weight": float(h)}
                          for (_, _, log_mass, share), h in zip(found, held)]
        missed = sum(m["share"] for m in table_of_modes if m["share"] >= MISSED and m["weight"] < 0.1 * m["share"])
        if missed:
            advice.warn(f"ais: Newton's method from the best reference draws found {len(found)} modes of the "
                        f"target, and the proposal missed modes holding {missed:.2f} of their Laplace mass (the "
                        f"estimate puts under a tenth of that on them): log Z is low by about "
                        f"{-math.log1p(-min(missed, 0.999)):.2f} and the moments are those of the other modes; "
                        f"try {hint}", ImportanceWarning)
    samples = {k_: v[None] for k_, v in program.to_constrained(rt.asarray(z)).items()}
    diagnostics = {"ess": ess, "pareto_k": k, "iterations": table, "log_z_per_chain": [log_z],
                   "draws": sum(pool.sizes), "modes": table_of_modes}
    proposal = q.bound(layout_of(compiled.layout)) if q is not None else None
    return Result(samples, lw[None], log_z, se, method="ais", runtime=rt.name, device=rt.device,
                  diagnostics=diagnostics, proposal=proposal, unconstrained=z[None])
