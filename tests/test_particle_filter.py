"""Particle filter (`method="pf"`) and PMMH (`method="pmmh"`) on `ppl.markov` state-space models (issue 10).

Exact answers come from tests/ssm_reference.py (Kalman filter, RTS smoother). Every tolerance is a multiple of
a Monte Carlo error, and every bound below was sized on the numpy bootstrap filter of ssm_reference.py, which
runs the same algorithm (bootstrap proposal, systematic resampling when ESS < N/2, the options passed here):
over 60–600 independent runs per configuration each statistic stayed below about half of its bound, and the
broken variants it is meant to catch (predictive means reported as filtering means, a smoother shifted by one
step, filtering means reported as smoothed means) exceed it several times over (tests/test_ssm_reference.py
checks both on the numpy filter).

* Filtering means: z_t = |mean_t − Kalman_t| / sqrt(Kalman var_t / ESS_t). var / ESS_t ignores the variance the
  earlier resampling steps add, so z_t is not N(0, 1): its RMS over t is ~0.8–1.5 and its maximum over 100 t
  (and 4 components) reaches ~4 (d = 1) and ~27 (d = 4). The tests bound the RMS (what a systematic error
  moves) and, more loosely, the maximum (what a bug at one t moves). The brief's "z_t < 5 at every t" fails a
  correct bootstrap filter in 4-d most of the time (median of the max 8.7).
* Backward-simulation smoother: the same z with the RTS moments and the Kish ESS of the trajectory weights;
  the M trajectories share one forward particle system, so the inflation is larger (see the bounds in LG).
* log Z: a single run within 4 single-run standard errors; the coverage test runs 50 seeds.
"""
import math

import numpy as np
import pytest

import ppl
from ssm_reference import (LinearGaussianSSM, StochasticVolatility, bootstrap_filter, filter_mean_z, log_z_coverage, simulate_sv,
                           smoothed_mean_z)

# the regime the bounds were sized for; marginalize=False: the particle filter itself is tested here (the compiler
# would integrate a linear-Gaussian path out: tests/test_kalman.py)
PF = {"resample_threshold": 0.5, "resampler": "systematic", "marginalize": False}
T = 100
N = 1000
A4 = np.array([[0.8, 0.1, 0.0, 0.0], [-0.1, 0.8, 0.1, 0.0], [0.0, -0.1, 0.8, 0.1], [0.0, 0.0, -0.1, 0.8]])
LG = {   # name: (model, (RMS, max, variance-ratio) bounds of the filter, (RMS, max) bounds of the smoother)
    # numpy filter, N = 1000, data seed 0: filter RMS ≤ 1.11, max ≤ 3.98 (60 runs), variance ratio within 0.016;
    # smoother RMS ≤ 2.76, max ≤ 14.6 (60 runs); predictive means: RMS ≈ 20, smoother shifted by one: RMS ≈ 30
    "d1": (lambda: LinearGaussianSSM(0.9, 1.0, 1.0, 1.0, 0.0, 1 / 0.19), (2.5, 8.0, 0.05), (5.0, 25.0)),
    # filter RMS ≤ 2.74, max ≤ 27 (100 runs), variance ratio within 0.073; smoother RMS ≤ 4.95, max ≤ 39 (12
    # runs); predictive means: RMS ≈ 9.3. In 4-d the max over t is heavy-tailed: its bound is a sanity bound.
    "d4": (lambda: LinearGaussianSSM(A4, 0.25 * np.eye(4), np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0]]) + 0.3,
                                     np.eye(2), np.zeros(4), np.eye(4)), (5.0, 60.0, 0.15), (8.0, 80.0)),
}
SV = {"mu": -1.0, "phi": 0.95, "sigma": 0.25}


# ---- models ----------------------------------------------------------------------------------------------

def lg_target(m, y):
    """The ppl model of a LinearGaussianSSM conditioned on y: scalar sites when d = 1, MultivariateNormal
    otherwise."""
    if m.dx == 1 and m.dy == 1:
        data = {"a": float(m.A[0, 0]), "q": math.sqrt(m.Q[0, 0]), "c": float(m.C[0, 0]), "r": math.sqrt(m.R[0, 0]),
                "m0": float(m.m0[0]), "s0": math.sqrt(m.P0[0, 0])}
        return ppl.model(
            data=data,
            x=ppl.markov(init=lambda m0, s0: ppl.Normal(m0, s0),
                         step=lambda prev, a, q: ppl.Normal(a * prev, q),
                         length=len(y)),
            y=lambda x, c, r: ppl.Normal(c * x, r),
        ).condition(y=np.asarray(y, dtype=float).reshape(len(y)))
    data = {"A": m.A, "Q": m.Q, "C": m.C, "R": m.R, "m0": m.m0, "P0": m.P0}
    return ppl.model(
        data=data,
        x=ppl.markov(init=lambda m0, P0: ppl.MultivariateNormal(m0, P0),
                     step=lambda prev, A, Q: ppl.MultivariateNormal(prev @ A.T, Q),
                     length=len(y)),
        y=lambda x, C, R: ppl.MultivariateNormal(x @ C.T, R),
    ).condition(y=np.asarray(y, dtype=float))


def _sv_sites(length):
    return dict(
        x=ppl.markov(init=lambda mu, phi, sigma: ppl.Normal(mu, sigma / ppl.math.sqrt(1 - phi ** 2)),
                     step=lambda prev, mu, phi, sigma: ppl.Normal(mu + phi * (prev - mu), sigma),
                     length=length),
        y=lambda x: ppl.Normal(0.0, ppl.math.exp(x / 2)),
    )


def sv_target(y, params=SV):
    """Stochastic volatility with known (conditioned) parameters."""
    return ppl.model(data=dict(params), **_sv_sites(len(y))).condition(y=np.asarray(y, dtype=float))


def sv_with_priors(y):
    """Stochastic volatility with the static parameters latent: the PMMH / NUTS target."""
    return ppl.model(mu=ppl.Normal(0.0, 1.0), phi=ppl.Uniform(-1.0, 1.0), sigma=ppl.HalfNormal(1.0),
                     **_sv_sites(len(y))).condition(y=np.asarray(y, dtype=float))


def sv_noncentered(y):
    """The same posterior over (mu, phi, sigma) with the path non-centered (x = mu + d, d_t = phi d_{t−1} +
    c_t z_t, z ~ N(0, I), c_0 the stationary sd): NUTS mixes on it, while on the centered path it meets the
    funnel at small sigma (seed 2: R-hat 1.2–1.4 for sigma after 1000 warmup draws at target_accept 0.95)."""
    def path(z, mu, phi, sigma):
        s0 = sigma / ppl.math.sqrt(1 - phi ** 2)

        def f(carry, zt):
            d, first = carry
            d = phi * d + ppl.math.where(first > 0, s0, sigma) * zt
            return (d, 0.0 * first), d
        return mu + ppl.math.scan(f, (0.0 * mu, 1.0 + 0.0 * mu), z)[1]
    return ppl.model(mu=ppl.Normal(0.0, 1.0), phi=ppl.Uniform(-1.0, 1.0), sigma=ppl.HalfNormal(1.0),
                     z=ppl.Normal(0.0, 1.0, shape=(len(y),)), x=ppl.deterministic(path),
                     y=lambda x: ppl.Normal(0.0, ppl.math.exp(x / 2))).condition(y=np.asarray(y, dtype=float))


def _lg(name):
    """The model, its data (the one the bounds were sized on) and the bounds."""
    build, filt_bounds, smooth_bounds = LG[name]
    m = build()
    x, y = m.simulate(T, seed=0)
    return m, (y[:, 0] if m.dy == 1 else y), filt_bounds, smooth_bounds


def _squeeze(a, m):
    """A [T] or [T, d] array of the PF as [T, dx]."""
    return np.asarray(a, dtype=float).reshape(-1, m.dx)


# ---- (a) linear-Gaussian: log Z, filtering means and variances, smoothed means -----------------------------

@pytest.mark.parametrize("name", LG)
def test_lgssm_log_z_and_filtering_moments(runtime, name):
    m, y, (rms_max, z_max, var_tol), _ = _lg(name)
    kf = m.kalman(y)
    r = ppl.sample(lg_target(m, y), method="pf", particles=N, seed=0, runtime=runtime, **PF)
    # the single-run standard error must be of the size of the spread of log Z over runs (else 4 se is vacuous)
    spread = np.std([bootstrap_filter(m, y, N, seed=s)["log_z"] for s in range(20)], ddof=1)
    assert 0 < r.log_z_se < 2.5 * spread, (r.log_z_se, spread)
    assert abs(r.log_z - kf["log_lik"]) < 4 * r.log_z_se, (r.log_z, r.log_z_se, kf["log_lik"])

    ess = np.asarray(r.diagnostics["ess"], dtype=float)
    assert ess.shape == (T,) and np.all(ess >= 1 - 1e-3) and np.all(ess <= N * (1 + 1e-4)), ess
    shape = (T,) if name == "d1" else (T, m.dx)
    fm, fv = r.diagnostics["filter_mean"]["x"], r.diagnostics["filter_var"]["x"]
    assert np.shape(fm) == shape and np.shape(fv) == shape
    var = np.einsum("tii->ti", kf["covs"])
    z = filter_mean_z(_squeeze(fm, m), kf["means"], var, ess)
    assert np.sqrt(np.mean(z ** 2)) < rms_max and z.max() < z_max, (np.sqrt(np.mean(z ** 2)), z.max(), z.argmax())
    # the mean over t of the filtering-variance ratio, per component
    ratio = np.mean(_squeeze(fv, m) / var, axis=0)
    assert np.all(np.abs(ratio - 1) < var_tol), ratio


def test_guided_filter_with_the_optimal_proposal(runtime):
    """d = 1: the locally optimal proposal p(x_t | x_{t-1}, y_t) (Gaussian, closed form) gives log Z within 4 se
    of the Kalman value and a higher ESS than the bootstrap filter at the same N."""
    m, y, _, _ = _lg("d1")
    kf = m.kalman(y)
    a, q2, c, r2 = float(m.A[0, 0]), float(m.Q[0, 0]), float(m.C[0, 0]), float(m.R[0, 0])
    m0, p0 = float(m.m0[0]), float(m.P0[0, 0])
    v0, v = 1 / (1 / p0 + c * c / r2), 1 / (1 / q2 + c * c / r2)
    proposal = ppl.markov(init=lambda y: ppl.Normal(v0 * (m0 / p0 + c * y[0] / r2), math.sqrt(v0)),
                          step=lambda prev, t, y: ppl.Normal(v * (a * prev / q2 + c * y[t] / r2), math.sqrt(v)),
                          length=T)
    target = lg_target(m, y)
    guided = ppl.sample(target, method="pf", particles=200, seed=0, runtime=runtime, proposal=proposal, **PF)
    boot = ppl.sample(target, method="pf", particles=200, seed=0, runtime=runtime, **PF)
    assert abs(guided.log_z - kf["log_lik"]) < 4 * guided.log_z_se, (guided.log_z, guided.log_z_se, kf["log_lik"])
    assert guided.diagnostics["ess"].mean() > 1.2 * boot.diagnostics["ess"].mean()


@pytest.mark.parametrize("name", LG)
def test_lgssm_backward_smoother_against_rts(runtime, name):
    m, y, _, (rms_max, z_max) = _lg(name)
    ms, ps = m.rts(y)
    r = ppl.sample(lg_target(m, y), method="pf", particles=N, seed=1, runtime=runtime, smoother="backward", **PF)
    paths, w = np.asarray(r.samples["x"], dtype=float), np.asarray(r.weights, dtype=float)
    M = paths.shape[1]
    assert paths.shape == ((1, M, T) if name == "d1" else (1, M, T, m.dx)) and w.shape == (1, M)
    assert M >= 100 and np.all(np.isfinite(paths)) and np.all(w >= 0)
    z = smoothed_mean_z(paths[0].reshape(M, T, m.dx), w[0], ms, np.einsum("tii->ti", ps))
    assert np.sqrt(np.mean(z ** 2)) < rms_max and z.max() < z_max, (np.sqrt(np.mean(z ** 2)), z.max(), z.argmax())


def test_lgssm_genealogy_smoother_is_the_default(runtime):
    """Genealogy trajectories: at the last step they are the filtering particles, so their weighted mean at T−1
    is the filtering mean (within its MC error), and earlier steps are finite (degenerate, not tested)."""
    m, y, _, _ = _lg("d1")
    kf = m.kalman(y)
    r = ppl.sample(lg_target(m, y), method="pf", particles=N, seed=2, runtime=runtime, **PF)
    paths, w = np.asarray(r.samples["x"], dtype=float), np.asarray(r.weights, dtype=float)
    assert paths.shape[0] == 1 and paths.shape[2:] == (T,) and w.shape == paths.shape[:2]
    assert np.all(np.isfinite(paths))
    w = w[0] / w[0].sum()
    last = float(w @ paths[0, :, -1])
    ess = 1 / np.sum(w ** 2)
    assert abs(last - kf["means"][-1, 0]) < 5 * math.sqrt(kf["covs"][-1, 0, 0] / ess), (last, kf["means"][-1])


# ---- (b) calibration of log_z_se --------------------------------------------------------------------------

def _calibration(runtime, particles, length, data_seed, seeds=50):
    """Over `seeds` runs: 2-se coverage in [0.85, 1], 1-se coverage at most 0.9, and the spread of log Z over
    runs against the mean reported variance in [0.5, 2].

    The brief's upper bound 0.99 on the 2-se coverage is not used: with 50 runs it reads "not all 50", which a
    perfectly calibrated se (coverage 0.954) breaks with probability 0.954^50 ≈ 0.095. An se too large is what
    that bound was for; the 1-se coverage (0.68 when calibrated; 0.95 when se is twice too large) and the
    variance ratio (sd over 49 dof ≈ 0.2) catch it with margin. On the numpy filter (Chan & Lai's genealogy
    variance, no (N/(N−1))^R factor) these configurations give a 2-se coverage of 0.93–0.955 and a variance
    ratio of 0.95–1.15; Lee & Whiteley's factor, derived for multinomial resampling, over-corrects under
    adaptive systematic resampling (coverage 0.84–0.88)."""
    m = LG["d1"][0]()
    x, y = m.simulate(length, seed=data_seed)
    exact = m.kalman(y)["log_lik"]
    target = ppl.compile(lg_target(m, y[:, 0]), marginalize=False)   # compiled once: the seeds reuse one jitted filter
    lz, se = [], []
    for s in range(seeds):
        r = ppl.sample(target, method="pf", particles=particles, seed=s, runtime=runtime, **PF)
        lz.append(r.log_z)
        se.append(r.log_z_se)
    lz, se = np.asarray(lz), np.asarray(se)
    assert len(set(lz.tolist())) == seeds, "the seeds must give independent runs"
    cover2, cover1 = log_z_coverage(lz, se, exact, 2.0), log_z_coverage(lz, se, exact, 1.0)
    ratio = np.var(lz, ddof=1) / np.mean(se ** 2)
    assert 0.85 <= cover2 and cover1 <= 0.9 and 0.5 < ratio < 2.0, (cover2, cover1, ratio, lz - exact, se)


def test_log_z_se_calibration_fast(runtime):
    _calibration(runtime, particles=1000, length=30, data_seed=4)


@pytest.mark.slow
def test_log_z_se_calibration(runtime):
    _calibration(runtime, particles=5000, length=100, data_seed=3)


# ---- (c) stochastic volatility: PMMH against NUTS on the whole path ------------------------------------------

def _acceptance(r):
    for key in ("acceptance_rate", "acceptance", "accept_prob"):
        if key in r.diagnostics:
            return np.asarray(r.diagnostics[key], dtype=float)
    raise AssertionError(f"no acceptance rate among the diagnostics {sorted(r.diagnostics)}")


def test_sv_particle_filter_against_a_reference_filter(runtime):
    """SV, T = 200, known parameters: log Z and the filtering means against the numpy bootstrap filter with
    50 000 particles (log Z se 0.03); on the numpy filter with N = 500 the z statistics stay below RMS 1.6 and
    max 8 over 100 seeds."""
    x, y = simulate_sv(200, seed=0, **SV)
    ref = bootstrap_filter(StochasticVolatility(**SV), y, 50_000, seed=123)
    r = ppl.sample(sv_target(y), method="pf", particles=500, seed=0, runtime=runtime, **PF)
    assert 0 < r.log_z_se < 0.7
    assert abs(r.log_z - ref["log_z"]) < 4 * math.hypot(r.log_z_se, math.sqrt(ref["log_z_var_cl"]))
    fm = np.asarray(r.diagnostics["filter_mean"]["x"], dtype=float)
    fv = np.asarray(r.diagnostics["filter_var"]["x"], dtype=float)
    assert fm.shape == (200,) and np.all(np.isfinite(fm)) and np.all(fv > 0)
    z = filter_mean_z(fm[:, None], ref["filter_mean"], ref["filter_var"], r.diagnostics["ess"])
    assert np.sqrt(np.mean(z ** 2)) < 3.0 and z.max() < 12.0, (np.sqrt(np.mean(z ** 2)), z.max())


def test_pmmh_smoke(runtime):
    x, y = simulate_sv(50, seed=1, **SV)
    r = ppl.sample(sv_with_priors(y), method="pmmh", particles=100, chains=2, num_warmup=30, num_samples=40,
                   seed=0, runtime=runtime)
    for name in ("mu", "phi", "sigma"):
        s = np.asarray(r.samples[name], dtype=float)
        assert s.shape == (2, 40) and np.all(np.isfinite(s)), (name, s.shape)
    assert np.all(np.abs(np.asarray(r.samples["phi"])) < 1) and np.all(np.asarray(r.samples["sigma"]) > 0)
    acc = _acceptance(r)
    assert np.all((acc > 0) & (acc < 1)), acc
    table = r.summary()
    assert {"mu", "phi", "sigma"} <= set(table.index) and np.all(np.isfinite(table.loc[["mu", "phi", "sigma"],
                                                                                       "mean"]))


@pytest.fixture(scope="module")
def sv_nuts_reference():
    """NUTS on the whole (non-centered) path of SV, T = 200, on NumPyro: the posterior PMMH must match."""
    x, y = simulate_sv(200, seed=2, **SV)
    return y, ppl.sample(sv_noncentered(y), method="nuts", chains=4, num_warmup=500, num_samples=1000, seed=0,
                         runtime="numpyro")


@pytest.mark.slow
def test_pmmh_agrees_with_nuts(runtime, sv_nuts_reference):
    """Posterior of (mu, phi, sigma) on SV with T = 200: means within 4 combined MCSE, sd within 15% (or 4 MC
    standard errors of an sd ratio, 1/sqrt(2 ESS) each, when the ESS is too small for 15% to be 4 of them).
    PMMH on torch costs ~0.3 s per iteration here (the filter steps in Python), so it runs 2 chains there."""
    y, nu = sv_nuts_reference
    chains, warmup, draws = (4, 500, 1000) if runtime == "numpyro" else (2, 400, 800)
    pm = ppl.sample(sv_with_priors(y), method="pmmh", particles=200, chains=chains, num_warmup=warmup,
                    num_samples=draws, seed=0, runtime=runtime)
    acc = _acceptance(pm)
    assert np.all((acc > 0.02) & (acc < 0.9)), acc
    sp, sn = pm.summary(["mu", "phi", "sigma"]), nu.summary(["mu", "phi", "sigma"])
    assert np.all(sp["r_hat"] < 1.05) and np.all(sn["r_hat"] < 1.05), (sp, sn)
    assert np.all(sp["ess_bulk"] > 100), sp             # so that 4 MCSE is a real tolerance
    for name in ("mu", "phi", "sigma"):
        p, q = sp.loc[name], sn.loc[name]
        assert abs(p["mean"] - q["mean"]) < 4 * math.hypot(p["mcse_mean"], q["mcse_mean"]), (name, sp, sn)
        tol = max(0.15, 4 * math.sqrt(1 / (2 * p["ess_bulk"]) + 1 / (2 * q["ess_bulk"])))
        assert abs(p["sd"] / q["sd"] - 1) < tol, (name, p["sd"], q["sd"], tol)


# ---- (d) bad input ----------------------------------------------------------------------------------------

def test_pf_without_markov_site_is_an_error(runtime):
    target = ppl.model(x=ppl.Normal(0.0, 1.0), y=lambda x: ppl.Normal(x, 1.0)).condition(y=0.5)
    with pytest.raises(ppl.PPLError, match="markov"):
        ppl.sample(target, method="pf", particles=100, runtime=runtime)


@pytest.mark.parametrize("particles", [1, 0])
def test_pf_needs_two_particles(runtime, particles):
    x, y = simulate_sv(10, seed=3, **SV)
    with pytest.raises(ppl.PPLError, match="particles"):
        ppl.sample(sv_target(y), method="pf", particles=particles, runtime=runtime)


def test_pf_with_latent_static_parameter_names_it(runtime):
    x, y = simulate_sv(10, seed=4, **SV)
    target = ppl.model(data={"phi": 0.95, "sigma": 0.25}, mu=ppl.Normal(0.0, 1.0),
                       **_sv_sites(len(y))).condition(y=y)
    with pytest.raises(ppl.PPLError, match=r"\bmu\b"):
        ppl.sample(target, method="pf", particles=100, runtime=runtime)


@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
def test_nan_observation_densities_are_refused(runtime):
    """An observation density that is NaN on part of the state space (scale sqrt(x), x < 0 half the time) stops
    the filter with the step named, instead of being dropped as a zero weight (issue 36)."""
    y = np.ones(5)
    m = ppl.model(x=ppl.markov(init=lambda: ppl.Normal(0.0, 1.0), step=lambda prev: ppl.Normal(prev, 1.0),
                               length=len(y)),
                  y=lambda x: ppl.Normal(0.0, ppl.math.sqrt(x))).condition(y=y)
    with pytest.raises(ppl.InferenceError, match=r"observation density of 'x' was NaN or \+inf at t = 0 on \d+ of "
                                                 r"200 particles"):
        ppl.sample(m, method="pf", runtime=runtime, particles=200, seed=0)
