"""Many expectations under one target from one sample: an adaptive mixture proposal with control variates
(Demange-Chryst, Bachoc & Morio 2023, "Efficient estimation of multiple expectations with the same sample by
adaptive importance sampling and control variates").

For functions f_1..f_J of the target π = γ / Z, on the unconstrained space (γ includes the Jacobian):

- one component g_j per function, fitted by cross-entropy to |f_j − I_j| γ (to f_j γ when γ is normalized:
  a plain model without observations, Z = 1), plus g_0 fitted to γ; the proposal is g_α = Σ_j α_j g_j;
- adaptation: batches of budget / `batches` draws, every draw reused with the balance-heuristic weights
  (`backends/ais.py`); after each batch the components are refitted and α minimizes the estimated
  Σ_j Var_j(α) / I_j², Var_j(α) ∝ ∫ h_j² / g_α (h_j the integrand), by exponentiated gradient on the simplex
  (the objective is convex in α);
- stopping rule: adapt while the predicted variance of the final estimate, v_t / (draws left), still falls
  (v_{t+1} predicted as v_t² / v_{t−1}), and at most on `adapt` · budget draws;
- the final estimate uses a fresh sample from g_α, with the control variates g_k / g_α − 1 (mean 0 under g_α):

      Ĵ_j = mean_i [ f_j γ / g_α − Σ_k β_jk (g_k / g_α − 1) ](x_i),

  β by least squares, cross-fitted (each half of the sample uses the β fitted on the other half), so the
  final estimate is unbiased;
  Î_j = Ĵ_j when Z = 1, else the ratio Ĵ_j / Ĵ_0 (f_0 = 1) with its delta-method standard error.

`Result.expect` is the plain version on an existing weighted run: self-normalized estimates with
delta-method errors, and the components of a mixture proposal as control variates.
"""
import math
import numbers

import numpy as np

from .errors import PPLError, ShapeError, UnknownNameError, UserFunctionError, ValueRangeError
from .backends.proposals import Gaussian, Mixture, Pool, logsumexp
from .target import arg_names, call_user
from .weights import Weights


class Expectations:
    """The table `ppl.expect` returns: per function its estimate, standard error and effective sample size
    (Var_π(f) / se², the number of exact draws from π with the same error); `.proposal` is the final mixture."""

    def __init__(self, rows, proposal=None, diagnostics=None):
        self.rows, self.proposal, self.diagnostics = rows, proposal, dict(diagnostics or {})

    def __getitem__(self, name):
        return self.rows[name]

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def estimate(self, name):
        return self.rows[name]["estimate"]

    def se(self, name):
        return self.rows[name]["se"]

    def __repr__(self):
        width = max(8, *(len(n) for n in self.rows))
        lines = [f"{'function':<{width}} {'estimate':>14} {'se':>12} {'ess':>10}"]
        lines += [f"{n:<{width}} {r['estimate']:>14.6g} {r['se']:>12.4g} {r['ess']:>10.1f}"
                  for n, r in self.rows.items()]
        return "\n".join(lines)


def function_values(rt, functions, values, n):
    """f_j at every draw: numpy float64 [J, n]; `values` are the constrained site values (runtime arrays with
    leading axis n); each f reads sites by its argument names and returns one number per draw."""
    out = []
    for name, f in functions.items():
        reads = arg_names(f, f"function {name!r}")
        missing = [r for r in reads if r not in values]
        if missing:
            raise UnknownNameError(f"function {name!r} reads {', '.join(missing)}, not a site of the target; "
                                   f"its sites: {', '.join(sorted(values))}")
        per_draw = rt.vmap(lambda vals, f=f, name=name: _number(call_user(f, vals, f"function {name!r}"), name))
        v = per_draw({r: values[r] for r in reads})
        v = np.asarray(rt.to_numpy(rt.asarray(v)), dtype=np.float64)
        if v.shape != (n,):
            raise ShapeError(f"function {name!r} must return one number per draw; it returned shape "
                             f"{v.shape[1:]} per draw")
        out.append(v)
    return np.stack(out)


def _number(v, name):
    """The value of function `name` at one draw, refused unless a number (a runtime array: JAX or torch)."""
    if v is None or isinstance(v, (str, bytes)) or not (isinstance(v, numbers.Number) or hasattr(v, "shape")):
        raise UserFunctionError(f"function {name!r} must return one number per draw; it returned "
                                f"{type(v).__name__} {v!r:.40}")
    return v


def _check(functions):
    if not isinstance(functions, dict) or not functions:
        raise PPLError("functions must be a non-empty dict {name: function of the target's sites}")
    for name, f in functions.items():
        if not callable(f):
            raise PPLError(f"function {name!r} is not callable")
    return functions


def expect(target, functions, budget=20_000, runtime="numpyro", device="cpu", seed=0, family="gaussian",
           batches=10, adapt=0.5, components=2):
    """E_π[f] for every f in `functions` ({name: f(site, ...)}) under `target`, from `budget` target
    evaluations: the adaptive mixture with control variates above. `family` of each component: 'gaussian' or
    'mixture' (of `components` Gaussians). Returns an `Expectations` table."""
    from .backends import get_runtime, integer
    from .compiler import compile
    _check(functions)
    budget = integer(budget, "budget", 1)
    batches = integer(batches, "batches", 2)
    if isinstance(adapt, bool) or not isinstance(adapt, numbers.Real) or not 0 < adapt < 1:
        raise ValueRangeError(f"adapt (the largest fraction of the budget spent adapting) must be in (0, 1), "
                              f"got {adapt!r}")
    if family not in ("gaussian", "mixture"):
        raise UnknownNameError(f"unknown family {family!r} for the components; choose 'gaussian' or 'mixture'")
    n_batch = budget // batches
    rt = get_runtime(runtime, device)
    compiled = compile(target)
    program = compiled.lower(rt)
    if program.dim == 0:
        raise ValueRangeError("ppl.expect needs latent sites; the target has none")
    if n_batch < 10 * (program.dim + 1) or budget - int(adapt * budget) < n_batch:
        raise ValueRangeError(f"budget={budget} is too small to adapt a proposal in dimension {program.dim}: "
                              f"each of the {batches} batches needs at least {10 * (program.dim + 1)} draws")
    normalized = not np.any(compiled.rest_coef)     # γ = π0: Z = 1 exactly
    names = list(functions)
    keys = iter(rt.split(rt.key(integer(seed, "seed", 0, 2 ** 63)), batches + 3))
    u = np.asarray(rt.to_numpy(rt.uniform(next(keys), (components,))), np.float64)
    pool, values = Pool(rt), []

    def draw(q, n):
        z = program.sample_reference(next(keys), n) if q is None else q.sample(rt, next(keys), n)
        ref, rest = program.log_densities(z)
        pool.add(q, np.asarray(rt.to_numpy(z), np.float64), np.asarray(rt.to_numpy(ref + rest), np.float64),
                 np.asarray(rt.to_numpy(ref), np.float64))
        values.append(function_values(rt, functions, program.to_constrained_arrays(z), n))
        if not np.all(np.isfinite(values[-1])):
            bad = names[int(np.argmax(~np.isfinite(values[-1]).all(axis=1)))]
            raise PPLError(f"function {bad!r} returned a non-finite value")

    def fit(z, w):
        if family == "mixture":
            return Mixture.start(z, w, u).fit(z, w)
        return Gaussian.fit(z, w)

    q, history, spent = None, [], 0
    while True:
        draw(q, n_batch)
        spent += n_batch
        weights = Weights(pool.log_weights())
        lw, w = weights.log, weights.normalized()   # γ / q̄ and its normalized W
        f = np.concatenate(values, axis=1)          # [J, n]
        est = f @ w
        dev = np.abs(f if normalized else f - est[:, None])          # h_j = dev_j γ
        comps = [fit(pool.z, w)] + [fit(pool.z, d * w / (d * w).sum()) for d in dev if (d * w).sum() > 0]
        log_g = np.stack([g.log_density(pool.z) for g in comps])    # [K, n]
        second = (f ** 2) @ w
        scale = 1.0 / np.maximum(est ** 2, 1e-12 * second)           # relative variances: 1 / I_j²
        log_s = np.log(np.maximum((scale[:, None] * dev ** 2).sum(0), 1e-300))
        alpha, v = _alpha(log_g, log_s + pool.log_target + lw)
        # Σ_j Var_j / I_j² per draw from g_α: V − Σ_j scale_j I_j² (Z = 1), or V / Z² (the ratio's integrand
        # (f − I) γ has mean 0)
        log_zhat = float(weights.log_mean())
        v = v - float((scale * est ** 2).sum()) if normalized else v / math.exp(2 * log_zhat)
        history.append({"iteration": len(history), "draws": n_batch, "variance_per_draw": v,
                        "alpha": alpha.tolist()})
        q = Mixture(alpha, comps)
        left = budget - spent
        if spent + n_batch > adapt * budget:
            break
        if len(history) >= 2:   # the stopping rule: one more batch must lower v / (draws left)
            v_prev = history[-2]["variance_per_draw"]
            predicted = v * min(v / v_prev, 1.0) if v_prev > 0 else v
            if predicted / (left - n_batch) >= v / left:
                break
    # the final fresh sample from g_α, with cross-fitted control variates (unbiased)
    shift = log_zhat        # responses in units of Ẑ
    pool, values = Pool(rt), []
    n_final = budget - spent
    draw(q, n_final)
    f = values[0]
    y, cv = _regressors(pool.log_target, q, pool.z, f, normalized, shift)
    resid = _cross_fitted(y, cv)
    means = resid.mean(1)
    w = Weights(pool.log_target - q.log_density(pool.z)).normalized()
    var_pi = (f ** 2) @ w - (f @ w) ** 2
    rows = {}
    for j, name in enumerate(names):
        if normalized:
            e = resid[j] * math.exp(shift)
            est_j = float(e.mean())
        else:
            est_j = means[j + 1] / means[0]
            e = (resid[j + 1] - est_j * resid[0]) / means[0]
        se_j = float(e.std(ddof=1) / math.sqrt(n_final))
        rows[name] = {"estimate": float(est_j), "se": se_j,
                      "ess": float(var_pi[j] / se_j ** 2) if se_j > 0 else float("inf")}
    log_z = 0.0 if normalized else float(math.log(means[0]) + shift)
    return Expectations(rows, q, {"adaptation": history, "draws": budget, "final_draws": n_final,
                                  "alpha": q.weights.tolist(), "log_z": log_z, "normalized": normalized})


def expect_draws(result, functions):
    """`Result.expect`: E[f] from a run's draws. Weighted draws: Î = Σ W f, se² = Σ W² (f − Î)² (pooled over
    runs); when the draws came from a mixture proposal (`result.proposal`, with `result.unconstrained`), its
    components' g_k/q − 1 are control variates (β cross-fitted on halves, as in `expect`). Unweighted
    (MCMC) draws: the mean, with se = sd / √ESS from ArviZ's bulk ESS over the chains."""
    from .backends import get_runtime
    _check(functions)
    rt = get_runtime(result.runtime or "numpyro")
    first = next(iter(result.samples.values()))
    c, n = first.shape[:2]
    values = {k: rt.asarray(v.reshape((c * n,) + v.shape[2:])) for k, v in result.samples.items()}
    f = function_values(rt, functions, values, c * n)
    names = list(functions)
    rows = {}
    if result.log_weights is None:
        import arviz as az
        for j, name in enumerate(names):
            chains = f[j].reshape(c, n)
            ess = float(az.ess(chains, method="bulk")) if n >= 4 else float(c * n)
            sd = float(chains.std())
            rows[name] = {"estimate": float(chains.mean()), "se": sd / math.sqrt(max(ess, 1.0)), "ess": ess}
        return Expectations(rows, None, {"draws": c * n})
    w = Weights(result.log_weights).pooled().normalized()      # runs pooled with equal weight
    est = f @ w
    resid = (f - est[:, None]) * w * len(w)          # Î − I ≈ mean(resid): the linearized estimator
    from .backends.proposals import Mixture
    q, z = result.proposal, result.unconstrained
    if isinstance(q, Mixture) and z is not None and c == 1:
        cv, _ = _control_variates(q, z.reshape(c * n, -1))
        fitted = _cross_fitted(resid, cv)
        est, resid = est + fitted.mean(1), fitted - fitted.mean(1, keepdims=True)
    var_pi = ((f - est[:, None]) ** 2) @ w
    for j, name in enumerate(names):
        se = float(resid[j].std() / math.sqrt(len(w)))
        rows[name] = {"estimate": float(est[j]), "se": se, "ess": float(var_pi[j] / se ** 2) if se > 0 else
                      float("inf")}
    return Expectations(rows, q, {"draws": c * n})


def _regressors(log_target, q, z, f, normalized, shift):
    """The responses y = [1 (Z unknown), f_j] · γ/g_α · e^{−shift} and the control variates g_k/g_α − 1
    [K, n] (mean 0 under g_α)."""
    cv, log_ga = _control_variates(q, z)
    ratio = np.exp(log_target - log_ga - shift)
    y = f * ratio if normalized else np.concatenate([ratio[None], f * ratio])
    return y, cv


def _control_variates(q, z):
    """g_k/q − 1 [K, n] for the components g_k of the mixture q = Σ α_k g_k (mean 0 under q), and log q."""
    log_gk = q.component_log_densities(z)          # log α_k g_k
    log_q = logsumexp(log_gk, axis=0)
    return np.exp(log_gk - np.log(q.weights)[:, None] - log_q) - 1.0, log_q


def _cross_fitted(y, cv):
    """y − β' cv with β cross-fitted on halves (each half's β [K, J] is the least-squares fit on the other
    half, minimum norm: Σ_k α_k cv_k = 0 makes cv rank deficient), so each half's mean keeps y's mean."""
    halves = np.arange(y.shape[1]) % 2 == 0
    out = np.empty_like(y)
    for fit_on in (halves, ~halves):
        a, b = cv[:, fit_on] @ cv[:, fit_on].T, cv[:, fit_on] @ y[:, fit_on].T
        beta = np.linalg.lstsq(a, b, rcond=1e-10)[0]
        out[:, ~fit_on] = y[:, ~fit_on] - beta.T @ cv[:, ~fit_on]
    return out


def _alpha(log_g, log_num, steps=300, floor=1e-3):
    """α on the simplex minimizing V(α) = mean_i exp(log_num_i) / g_α(x_i), g_α = Σ_k α_k g_k (convex in α),
    by exponentiated gradient; log_num_i = log(Σ_j scale_j dev_j²) + log γ + log(γ/q̄) at pooled draws
    x_i ~ q̄, so that V estimates Σ_j scale_j ∫ h_j² / g_α. Returns (α, V)."""
    k = len(log_g)
    m = np.max(log_g, axis=0)
    g = np.exp(log_g - m)                           # g_k e^{-m}
    a = log_num - m
    top = np.max(a)
    num = np.exp(a - top)
    alpha = np.full(k, 1.0 / k)
    for step in range(steps):
        ga = alpha @ g
        grad = -((num / ga ** 2) @ g.T) / len(num)
        alpha = alpha * np.exp(-0.5 * grad / np.max(np.abs(grad)) / math.sqrt(1 + step / 50))
        alpha = np.maximum(alpha / alpha.sum(), floor / k)
        alpha /= alpha.sum()
    return alpha, float(np.mean(num / (alpha @ g)) * math.exp(top))
