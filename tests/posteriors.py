"""posteriordb models as Python targets, with their reference draws (../shared/reference/posteriordb).

Each builder takes the posterior's data (the `*.data.json` dict) and returns a `Posterior`:
the target, a `reference=` model where the planner needs one (flat priors), and the
posteriordb parameter names with the site and index each maps to. User functions are
written for one particle and run on both runtimes (`ppl.math` dispatches on the array type).

Notes on the parametrizations (each gives exactly the posteriordb density):
* eight_schools_noncentered: θ = μ + τ θ̃ is a deterministic site.
* arK: the likelihood is conditional on the first K observations (as in Stan).
* garch11: flat priors; β1 ∈ (0, 1 − α1) is written β1 = (1 − α1) b with b flat on (0, 1) and the
  Jacobian factor log(1 − α1), so (μ, α0, α1, β1) has the flat density of the Stan program.
  The variance recursion σ_t² = α0 + α1 (y_{t−1} − μ)² + β1 σ_{t−1}² is the linear recurrence
  s_t = β1 s_{t−1} + b_t, evaluated by doubling in ⌈log2 T⌉ vectorized steps. Flat priors have no
  normalized reference, so the run passes `reference=` (a proper model over the same sites).
* low_dim_gauss_mix: μ ordered with N(0, 2) priors on both is μ = (m, m + g), g > 0; m ~ N(0, 2),
  g ~ half-N(0, 2) as the sampled prior and a factor log N(m + g; 0, 2) − log half-N(g; 0, 2).
* gp_pois_regr: f = L f̃ with L = chol(α² (R + εI)); ε = 1e-10 in Stan (float64); here ε = 1e-4 because the
  runtimes compute in float32, where the derivative of the Cholesky factor carries a relative error of
  about cond(R + εI) · 6e-8: with ε = 1e-6 it is O(1), NUTS's step size collapses to 1e-5 and chains stick.
  The prior of f gains independent N(0, ε α²) noise (sd ≈ 0.03), small against its posterior sd (≥ 0.09);
  the check against posteriordb still passes at 4 MCSE.
"""
import json
from collections import namedtuple
from pathlib import Path

import numpy as np

import ppl
from ppl import math as pm
from ppl.result import component_label

Posterior = namedtuple("Posterior", "name target reference params")

LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def _normal_logpdf(x, loc, scale):
    return -0.5 * pm.square((x - loc) / scale) - pm.log(scale) - LOG_SQRT_2PI


def linear_recurrence(a, b):
    """s_0 = b_0, s_t = a s_{t-1} + b_t (scalar a, vector b) by doubling: ⌈log2 T⌉ shifted adds."""
    xp = pm.namespace(b, a)
    s, k, power = b, 1, a
    while k < b.shape[0]:
        s = s + power * xp.concatenate([xp.zeros(k), s[:-k]])
        power, k = power * power, 2 * k
    return s


def eight_schools_noncentered(data):
    target = ppl.model(
        name="eight_schools", data={"sigma": np.asarray(data["sigma"], float)},
        mu=ppl.Normal(0.0, 5.0), tau=ppl.HalfCauchy(5.0), theta_tilde=ppl.Normal(0.0, 1.0, shape=(data["J"],)),
        theta=ppl.deterministic(lambda mu, tau, theta_tilde: mu + tau * theta_tilde),
        y=lambda theta, sigma: ppl.Normal(theta, sigma),
    ).condition(y=np.asarray(data["y"], float))
    return target, None, ["theta", "mu", "tau"]


def arK(data):
    y, K = np.asarray(data["y"], float), data["K"]
    lags = np.stack([y[K - k:len(y) - k] for k in range(1, K + 1)], axis=1)  # [T - K, K]: y_{t-k}
    target = ppl.model(
        name="arK", data={"lags": lags},
        alpha=ppl.Normal(0.0, 10.0), beta=ppl.Normal(0.0, 10.0, shape=(K,)), sigma=ppl.HalfCauchy(2.5),
        y=lambda alpha, beta, sigma, lags: ppl.Normal(alpha + lags @ beta, sigma),
    ).condition(y=y[K:])
    return target, None, ["alpha", "beta", "sigma"]


def garch11(data):
    y = np.asarray(data["y"], float)

    def variance(mu, alpha0, alpha1, beta1, y_lag, sigma1_sq):
        xp = pm.namespace(mu, alpha0)
        b = xp.concatenate([xp.reshape(sigma1_sq, (1,)), alpha0 + alpha1 * pm.square(y_lag - mu)])
        return linear_recurrence(beta1, b)

    target = ppl.model(
        name="garch11", data={"y_lag": y[:-1], "sigma1_sq": np.asarray(data["sigma1"] ** 2, float)},
        mu=ppl.Flat(), alpha0=ppl.Flat(support="positive"), alpha1=ppl.Flat(support="unit_interval"),
        beta1_raw=ppl.Flat(support="unit_interval"),
        beta1=ppl.deterministic(lambda alpha1, beta1_raw: (1.0 - alpha1) * beta1_raw),
        jacobian=ppl.factor(lambda alpha1: pm.log1p(-alpha1)),
        s2=ppl.deterministic(variance),
        y=lambda mu, s2: ppl.Normal(mu, pm.sqrt(s2)),
    ).condition(y=y)
    reference = ppl.model(name="garch11_reference", mu=ppl.Normal(5.0, 1.0), alpha0=ppl.LogNormal(0.0, 1.0),
                          alpha1=ppl.Beta(2.0, 2.0), beta1_raw=ppl.Beta(2.0, 2.0))
    return target, reference, ["mu", "alpha0", "alpha1", "beta1"]


def low_dim_gauss_mix(data):
    def log_lik(mu, sigma, theta, y):
        xp = pm.namespace(mu)
        parts = xp.stack([pm.log(theta) + _normal_logpdf(y, mu[0], sigma[0]),
                          pm.log1p(-theta) + _normal_logpdf(y, mu[1], sigma[1])])
        return pm.sum(pm.logsumexp(parts, axis=0))

    target = ppl.model(
        name="low_dim_gauss_mix", data={"y": np.asarray(data["y"], float)},
        mu1=ppl.Normal(0.0, 2.0), gap=ppl.HalfNormal(2.0),
        ordered_prior=ppl.factor(lambda mu1, gap: -0.125 * (pm.square(mu1 + gap) - pm.square(gap)) - np.log(2.0)),
        mu=ppl.deterministic(lambda mu1, gap: pm.namespace(mu1).stack([mu1, mu1 + gap])),
        sigma=ppl.HalfNormal(2.0, shape=(2,)), theta=ppl.Beta(5.0, 5.0),
        likelihood=ppl.factor(log_lik),
    )
    return target, None, ["mu", "sigma", "theta"]


GP_JITTER = 1e-4


def gp_pois_regr(data):
    x = np.asarray(data["x"], float)
    sq_dist = (x[:, None] - x[None, :]) ** 2

    def f(rho, alpha, f_tilde, sq_dist, eye):
        chol = pm.cholesky(pm.exp(-0.5 * sq_dist / pm.square(rho)) + GP_JITTER * eye)
        return alpha * (chol @ f_tilde)

    target = ppl.model(
        name="gp_pois_regr", data={"sq_dist": sq_dist, "eye": np.eye(len(x))},
        rho=ppl.Gamma(25.0, 4.0), alpha=ppl.HalfNormal(2.0), f_tilde=ppl.Normal(0.0, 1.0, shape=(len(x),)),
        f=ppl.deterministic(f),
        k=lambda f: ppl.Poisson(pm.exp(f)),
    ).condition(k=np.asarray(data["k"], float))
    return target, None, ["rho", "alpha", "f"]


BUILDERS = {
    "eight_schools_noncentered": ("eight_schools-eight_schools_noncentered", eight_schools_noncentered),
    "arK": ("arK-arK", arK),
    "garch11": ("garch-garch11", garch11),
    "low_dim_gauss_mix": ("low_dim_gauss_mix-low_dim_gauss_mix", low_dim_gauss_mix),
    "gp_pois_regr": ("gp_pois_regr-gp_pois_regr", gp_pois_regr),
}


def _site_of(param):
    """'theta[3]' -> ('theta', (2,)); 'mu' -> ('mu', ())."""
    if "[" not in param:
        return param, ()
    name, idx = param[:-1].split("[")
    return name, tuple(int(i) - 1 for i in idx.split(","))


def load(name, root):
    """The `Posterior` called `name` and its reference summary {param: (mean, sd, mcse_mean)} from `root`."""
    folder, build = BUILDERS[name]
    path = Path(root) / "posteriordb" / folder
    data = json.loads(next(path.glob("*.data.json")).read_text())
    target, reference, sites = build(data)
    summary = json.loads((path / "summary.json").read_text())["parameters"]
    ref = {p: (s["mean"], s["sd"], s["mcse_mean"]) for p, s in summary.items() if _site_of(p)[0] in sites}
    return Posterior(name, target, reference, sites), ref


def agreement(result, ref, z=4.0, sd_tol=0.10):
    """Per posteriordb parameter: |mean − ref| / sqrt(MCSE² + ref MCSE²) and |sd / ref sd − 1|.

    Our MCSE is ArviZ's (MCMC, from `result.diagnostics['mcse_mean']`) or sd / sqrt(ESS) for weighted runs.
    Returns (ok, rows sorted worst first, the worst row as text).
    """
    rows = []
    for param, (ref_mean, ref_sd, ref_mcse) in ref.items():
        site, idx = _site_of(param)
        mean, sd = float(np.asarray(result.mean(site))[idx]), float(np.asarray(result.std(site))[idx])
        if result.log_weights is None:
            mcse = result.diagnostics["mcse_mean"][component_label(site, idx)]
        else:
            mcse = sd / np.sqrt(result.ess)
        score = abs(mean - ref_mean) / np.sqrt(mcse ** 2 + ref_mcse ** 2)
        rows.append({"param": param, "mean": mean, "ref_mean": ref_mean, "z": score, "sd": sd, "ref_sd": ref_sd,
                     "sd_rel": abs(sd / ref_sd - 1.0)})
    rows.sort(key=lambda r: -max(r["z"] / z, r["sd_rel"] / sd_tol))
    ok = all(r["z"] < z and r["sd_rel"] < sd_tol for r in rows)
    w = rows[0]
    worst = (f"worst parameter {w['param']}: mean {w['mean']:.4g} vs {w['ref_mean']:.4g} ({w['z']:.2f} MCSE), "
             f"sd {w['sd']:.4g} vs {w['ref_sd']:.4g} ({100 * w['sd_rel']:.1f}% off)")
    return ok, rows, worst
