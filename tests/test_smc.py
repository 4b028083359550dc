"""SMC backend: log Z and moments against exact answers, the CESS bisection, failure modes, options.

Tolerances are 5 standard errors of log Z, estimated from the spread over independent runs (`runs=`),
plus the float32 accumulation slack of the log densities where stated.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import ppl
from ppl.backends import get_runtime
from ppl.backends.smc import SMC, conditional_ess, increment, next_beta
from ppl.errors import InferenceError, ValueRangeError
from ppl.stdlib import targets as T

RUNTIMES = ["numpyro", "pyro"]
A = [0.2, 0.4, 0.6, 0.8, 1.0]
LAM = 0.5


def _reference_or_skip(build):
    try:
        return build()
    except ppl.PPLError as e:
        pytest.skip(f"shared reference data absent: {e}")


def _tilted():
    """N(0, I₅) tilted by exp(a·x / λ): log Z = |a|² / (2λ²), mean a / λ, sd 1."""
    return ppl.model(x=ppl.Normal(0.0, 1.0, shape=(5,))).tilt(lambda x: sum(A[i] * x[i] for i in range(5)), LAM)


def _check_log_z(r, exact, k=5.0, slack=0.0):
    assert r.log_z_se is not None and r.log_z_se > 0
    assert abs(r.log_z - exact) < k * r.log_z_se + slack, (r.log_z, r.log_z_se, exact,
                                                           r.diagnostics["log_z_per_chain"])


# ---- the CESS bisection ---------------------------------------------------------------------------------

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bisection_increment_sign_and_cess(runtime):
    """β' > β; CESS(β' − β) = target; the increment is +δ log L, so particles with larger log L gain weight,
    also when every log L is hugely negative (a sign error stalls at β ≈ 0 or moves toward lower L)."""
    rt = get_runtime(runtime)
    rng = np.random.default_rng(0)
    log_rest = rt.asarray(-1e4 - 50 * rng.standard_normal(1000) ** 2)
    log_w = rt.asarray(np.full(1000, -math.log(1000)))
    beta = next_beta(rt, log_w, log_rest, rt.asarray(0.0), 0.5)
    b = float(rt.to_numpy(beta))
    assert 0 < b < 1
    cess = float(rt.to_numpy(conditional_ess(rt, log_w, increment(rt, beta, log_rest))))
    assert abs(cess - 0.5) < 1e-3
    inc = rt.to_numpy(increment(rt, beta, log_rest))
    lr = rt.to_numpy(log_rest)
    assert np.all(np.diff(inc[np.argsort(lr)]) >= 0), "weight increment must increase with log L"
    np.testing.assert_allclose(inc, b * lr, rtol=1e-6)
    # a flat likelihood is reached in one step
    flat = next_beta(rt, log_w, 0.0 * log_rest - 7.0, rt.asarray(0.3), 0.5)
    assert float(rt.to_numpy(flat)) == 1.0


def test_non_finite_increment_is_excluded():
    rt = get_runtime("numpyro")
    log_rest = rt.asarray([0.0, -float("inf"), -1.0])
    np.testing.assert_array_equal(rt.to_numpy(increment(rt, rt.asarray(0.0), log_rest)), [0.0, -np.inf, -0.0])


# ---- closed forms -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_tilted_gaussian(runtime):
    r = ppl.sample(_tilted(), method="smc", runtime=runtime, particles=1000, runs=4, seed=1)
    _check_log_z(r, sum(a * a for a in A) / (2 * LAM ** 2))
    # moments: sd of the mean of N draws ≈ 1/sqrt(ESS); 4 independent runs pooled
    se = 1.0 / np.sqrt(r.ess)
    assert np.all(np.abs(r.mean("x") - np.array(A) / LAM) < 5 * se * 2)
    assert np.all(np.abs(r.std("x") - 1.0) < 0.15)
    assert r.samples["x"].shape == (4, 1000, 5)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_annealed_gaussian_unfolded(runtime):
    """N(1, 2²)^β per dimension, β = 2.5, d = 3: log Z = d [(1 − β)/2 log(2π σ²) − ½ log β]."""
    beta, s, d = 2.5, 2.0, 3
    target = ppl.model(x=ppl.Normal(1.0, s, shape=(d,))) ** beta
    r = ppl.sample(target, method="smc", runtime=runtime, particles=1000, runs=4, seed=2, fold=False,
                   kernel="mala")
    _check_log_z(r, d * ((1 - beta) / 2 * math.log(2 * math.pi * s * s) - 0.5 * math.log(beta)))
    assert np.all(np.abs(r.std("x") - s / math.sqrt(beta)) < 0.15 * s / math.sqrt(beta))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_eight_schools(runtime):
    known = _reference_or_skip(T.eight_schools)
    r = ppl.sample(known.target, method="smc", runtime=runtime, particles=1000, runs=4, seed=3)
    _check_log_z(r, known.log_z)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_gaussian_mixture_modes_small(runtime):
    """Fast variant: 4 separated modes in 10-d, log Z = 0 and every mode with its weight."""
    known = T.gaussian_mixture()
    r = ppl.sample(known.target, method="smc", runtime=runtime, particles=1000, runs=4, seed=4)
    _check_log_z(r, known.log_z, slack=0.1)
    _check_modes(r, known)


#: the settings of benchmarks/smc_vs_blackjax.py: 5 HMC moves of 5 leapfrog steps, target ESS 0.5
MIXTURE_BENCH = dict(kernel="hmc", moves=5, kernel_options={"n_leapfrog": 5, "step_jitter": 3.0},
                     resampler="systematic", target_ess=0.5, resample_threshold=1.0)


def _mixture_log_z(runtime, particles, runs, seed):
    r = ppl.sample(T.gaussian_mixture().target, method="smc", runtime=runtime, particles=particles, runs=runs,
                   seed=seed, progress=False, **MIXTURE_BENCH)
    return np.array(r.diagnostics["log_z_per_chain"])


def _t_unbiased(z):
    """t statistic of mean log Ẑ against its expectation for an unbiased Ẑ, log Z − Var(log Ẑ)/2 (log Z = 0)."""
    return (z.mean() + z.var(ddof=1) / 2) / (z.std(ddof=1) / np.sqrt(len(z)))


@pytest.mark.slow     # 96 SMC runs; the fast versions in CI: test_gaussian_mixture_modes_small
def test_gaussian_mixture_log_z_converges_in_n():
    """Issue 36: log Z on the 10-d mixture must not keep a bias as N grows, and its sd must fall like 1/sqrt(N).
    Measured (numpyro, these settings): sd 0.16 at N = 500 (128 runs), 0.076 at N = 2000 (200 seeds), mean
    error -0.008 +- 0.005 at 2000. 64 runs at 2000: se 0.0095, so a bias of -0.045 (the issue's) gives t = -4.7;
    |t| < 3.5 has P = 0.001 under the null (63 dof). Var(500) / Var(2000) is 4.4 measured; an sd that stops
    falling gives ~1; F(31, 63) exceeds 0.42 with P = 0.999, so the ratio must exceed 4 x 0.42."""
    small, big = _mixture_log_z("numpyro", 500, 32, 20), _mixture_log_z("numpyro", 2000, 64, 21)
    assert abs(_t_unbiased(big)) < 3.5, (big.mean(), big.std(ddof=1))
    assert small.var(ddof=1) / big.var(ddof=1) > 4 * 0.42, (small.std(ddof=1), big.std(ddof=1))


def _perfect_mixing_sd(r):
    """√(Σ_t χ²_t / N) over a run's steps, χ²_t = N / ESS_t − 1 of the weights each step applies (ESS_t after
    reweighting uniformly resampled particles is the CESS): the sd of log Ẑ when the moves mix perfectly, i.e. the
    particles are independent draws from each π_β (then the log ĉ_t are independent, each of variance χ²_t / N)."""
    n = r.diagnostics["particles"]
    return float(np.mean([np.sqrt(np.sum(n / e - 1) / n) for e in r.diagnostics["ess"]]))


@pytest.mark.slow     # 512 runs of 500 particles (~30 s)
def test_gaussian_mixture_log_z_sd_near_perfect_mixing():
    """Issue 36: the moves decorrelate, so log Ẑ's sd is near that of perfect mixing (`_perfect_mixing_sd`, ~7/N
    in variance here) rather than a multiple of it. Measured (numpyro, benchmark settings, 512 runs each, seeds
    30-32): sd / perfect 1.06, 1.10, 1.12 with hmc's step_jitter 3 (the benchmark's); 1.32, 1.26 (seeds 30, 31) with
    the default 10, whose N = 10⁴ sd (0.039 over 60 seeds against 0.028 for J = 3) was the issue's gap to BlackJAX.
    With 511 dof the sd's relative se is 3.1 %: the bound 1.2 is 3.2 se above J = 3's mean ratio, 1.09, and 2.3
    below J = 10's."""
    r = ppl.sample(T.gaussian_mixture().target, method="smc", particles=500, runs=512, seed=34, progress=False,
                   **MIXTURE_BENCH)
    z = np.array(r.diagnostics["log_z_per_chain"])
    assert z.std(ddof=1) < 1.2 * _perfect_mixing_sd(r), (z.std(ddof=1), _perfect_mixing_sd(r))


def _check_modes(r, known):
    """Mode weights per independent run; the tolerance is 5 standard errors of their mean over runs."""
    means, expected = known.moments["means"], known.moments["weights"]
    frac = []
    for x, w in zip(r.samples["x"], r.weights):
        k = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
        frac.append([w[k == j].sum() for j in range(len(expected))])
    frac = np.array(frac)
    se = frac.std(0, ddof=1) / np.sqrt(len(frac))
    assert np.all(np.abs(frac.mean(0) - expected) < 5 * se + 0.02), (frac, expected)


# ---- failure is loud ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_non_finite_particles_are_dropped_and_counted(runtime):
    """N(0, 1) restricted to x > 0 by a factor log 1[x > 0] (−inf on half the particles): log Z = log ½."""
    target = ppl.model(x=ppl.Normal(0.0, 1.0), cut=ppl.factor(lambda x: ppl.math.log((x > 0) * 1.0)))
    r = ppl.sample(target, method="smc", runtime=runtime, particles=2000, runs=3, seed=5)
    assert r.diagnostics["non_finite"][0][0] > 500
    _check_log_z(r, math.log(0.5))
    assert np.all(r.samples["x"][r.weights > 0] > 0)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_all_weights_vanish_raises(runtime):
    target = ppl.model(x=ppl.Normal(0.0, 1.0), bad=ppl.factor(lambda x: 0.0 * x - float("inf")))
    with pytest.raises(InferenceError, match="every weight vanished at step 1"):
        ppl.sample(target, method="smc", runtime=runtime, particles=100, seed=0)


def test_bad_options_raise():
    with pytest.raises(ValueRangeError, match="schedule"):
        ppl.sample(_tilted(), method="smc", particles=100, schedule=[0.0, 0.7, 0.5, 1.0])
    with pytest.raises(ppl.UnknownNameError, match="kernel"):
        ppl.sample(_tilted(), method="smc", particles=100, kernel="gibbs")


# ---- options, reproducibility, result ------------------------------------------------------------------------

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_reproducible_from_seed(runtime):
    opts = dict(method="smc", runtime=runtime, particles=300, moves=2)
    target = ppl.compile(_tilted())  # one compiled target: the jitted step is reused across calls
    a, b, c = (ppl.sample(target, seed=s, **opts) for s in (11, 11, 12))
    assert a.log_z == b.log_z and np.array_equal(a.samples["x"], b.samples["x"])
    assert a.log_z != c.log_z


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_options_schedule_waste_free_batches_and_arviz(runtime):
    """Fixed schedule, waste-free SMC with residual resampling, and chunked evaluation give the right log Z;
    chunking does not change the result; to_arviz carries log Z and the schedule. The se is the spread of 8 runs
    (7 degrees of freedom: P(|t| > 5) = 0.002; with 3 runs it was 0.04 per check, and waste-free RWM at 1000
    particles has a run-to-run log Z sd of 0.18, measured over 12 seeds)."""
    exact = sum(a * a for a in A) / (2 * LAM ** 2)
    base = dict(method="smc", runtime=runtime, particles=1000, runs=8, seed=6)
    fixed = ppl.sample(_tilted(), schedule=np.linspace(0, 1, 11) ** 2, kernel="mala", moves=3, **base)
    _check_log_z(fixed, exact)
    assert np.allclose(fixed.diagnostics["beta"][0], np.linspace(0, 1, 11) ** 2)
    wf = ppl.sample(_tilted(), waste_free=10, resampler="residual", kernel="rwm", **base)
    _check_log_z(wf, exact)
    chunked = ppl.sample(_tilted(), waste_free=10, resampler="residual", kernel="rwm", batch_size=128, **base)
    np.testing.assert_allclose(wf.diagnostics["log_z_per_chain"], chunked.diagnostics["log_z_per_chain"], atol=1e-3)
    np.testing.assert_allclose(wf.samples["x"], chunked.samples["x"], atol=1e-3)
    idata = wf.to_arviz()
    runs, particles = base["runs"], base["particles"]
    assert idata.sample_stats["log_marginal_likelihood"].shape == (runs, 1)
    assert idata.sample_stats["beta"].shape[:2] == (runs, 1)
    assert idata.posterior["x"].shape == (runs, particles, 5)


# ---- long statistical runs --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_gaussian_mixture_modes(runtime):
    known = T.gaussian_mixture()
    r = ppl.sample(known.target, method="smc", runtime=runtime, particles=10_000, runs=4, seed=7)
    _check_log_z(r, known.log_z)
    _check_modes(r, known)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_gaussian_mixture_log_z_unbiased_at_large_n(runtime):
    """Issue 36 at N = 10^4 (benchmark settings), where the issue saw a bias of -0.045: measured (numpyro, 150
    seeds) mean error -0.002 +- 0.003, sd 0.036, so 24 runs give se 0.0073 and that bias t = -6.1; |t| < 3.5
    (23 dof: P = 0.002)."""
    z = _mixture_log_z(runtime, 10_000, 24, 22)
    assert abs(_t_unbiased(z)) < 3.5, (z.mean(), z.std(ddof=1))


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_many_well_32(runtime):
    known = T.many_well(32)
    r = ppl.sample(known.target, method="smc", runtime=runtime, particles=10_000, runs=4, seed=8,
                   reference=known.reference, kernel="hmc")
    _check_log_z(r, known.log_z, slack=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_sblrc_blr(runtime):
    """Default options. Between β ≈ 0.02 and 0.1 σ falls from ≈ 15 to ≈ 1.5 and the coefficients narrow with it
    (a funnel): fixed-step HMC lagged there and ended 7 low, RWM 2.4 low; per-particle step jitter moves both ends."""
    known = _reference_or_skip(T.sblrc_blr)
    r = ppl.sample(known.target, method="smc", runtime=runtime, particles=4000, runs=4, seed=9)
    _check_log_z(r, known.log_z, slack=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_german_credit(runtime):
    known = _reference_or_skip(T.german_credit)
    r = ppl.sample(known.target, method="smc", runtime=runtime, particles=5000, runs=4, seed=10, kernel="hmc")
    _check_log_z(r, known.log_z, slack=0.05)
    assert abs(r.mean("w")[0] - known.moments["w0"][0]) < 0.03
    assert abs(r.mean("w")[-1] - known.moments["bias"][0]) < 0.03


def test_batch_size_bounds_step_memory():
    """10⁵ particles of a logistic regression on 10³ observations: without chunking one SMC step holds the
    [N, n_obs] logits (≥ 0.4 GB of float32); with batch_size=10³ its buffers shrink at least tenfold."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 3)).astype(np.float32)
    y = (rng.uniform(size=1000) < 0.5).astype(np.float32)
    target = ppl.model(data={"X": x}, w=ppl.Normal(0.0, 1.0, shape=(3,)),
                       y=lambda w, X: ppl.Bernoulli(logits=X @ w)).condition(y=y)
    program = ppl.compile(target).lower(get_runtime("numpyro"))
    whole, chunked = (SMC(program, batch_size=b).step_memory(100_000) for b in (None, 1000))
    assert whole >= 100_000 * 1000 * 4
    assert chunked < whole / 10


GP_SMC = """
import numpy as np, ppl
x = np.linspace(-5, 5, 11)
k = np.array([1, 2, 4, 7, 9, 8, 6, 3, 2, 1, 1], float)
gp = ppl.model(data={"sq": (x[:, None] - x[None]) ** 2, "eye": np.eye(11)},
               rho=ppl.Gamma(25.0, 4.0), alpha=ppl.HalfNormal(2.0), f_tilde=ppl.Normal(0.0, 1.0, shape=(11,)),
               k=lambda rho, alpha, f_tilde, sq, eye: ppl.Poisson(ppl.math.exp(
                   alpha * ppl.math.cholesky(ppl.math.exp(-0.5 * sq / rho ** 2) + 1e-4 * eye) @ f_tilde))
               ).condition(k=k)
r = ppl.sample(gp, method="smc", runtime="numpyro", particles=1000, seed=0, schedule=[0.0, 0.5, 1.0], moves=2)
print(r.log_z)
"""


def test_jitted_step_with_batched_cholesky_does_not_deadlock():
    """XLA:CPU's concurrency-optimized scheduler deadlocked this step (a GP with a Cholesky factor per particle,
    1000 particles: every thread idle, forever); the JAX runtime switches it off. Run in a fresh process, with
    a time limit, so that a regression fails instead of hanging the suite."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    try:
        out = subprocess.run([sys.executable, "-c", GP_SMC], env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("SMC on a GP model hung for 180 s (XLA:CPU scheduler deadlock)")
    assert out.returncode == 0, out.stderr[-2000:]
    assert math.isfinite(float(out.stdout.split()[-1]))
