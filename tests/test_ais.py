"""Adaptive importance sampling (`method="ais"`), many expectations with control variates (`ppl.expect`,
`Result.expect`), and fitted proposals reused as `reference=`: against exact answers."""
import math
import warnings

import numpy as np
import pytest

import ppl
from ppl.backends.importance import ImportanceWarning
from ppl.backends.proposals import Gaussian, Mixture, StudentT
from ppl.stdlib import targets as T

RUNTIMES = ["numpyro", "pyro"]
J = 10
#: E[X^{2j}] = (2j − 1)!! for X ~ N(0, 1)
MOMENTS = np.array([math.prod(range(1, 2 * j, 2)) for j in range(1, J + 1)], dtype=float)
FUNCTIONS = {f"x{2 * j}": (lambda j: (lambda x: x ** (2 * j)))(j) for j in range(1, J + 1)}


def plain_mc_relative_variance(n):
    """Σ_j Var(mean of n draws of X^{2j}) / I_j², exactly: Var X^{2j} = (4j − 1)!! − ((2j − 1)!!)²."""
    return sum(math.prod(range(1, 4 * j, 2)) / m ** 2 - 1 for j, m in zip(range(1, J + 1), MOMENTS)) / n


def _reference_or_skip(build):
    try:
        return build()
    except ppl.PPLError as e:
        pytest.skip(f"shared reference data absent: {e}")


def _within(r, exact, z=4.0):
    assert r.log_z_se > 0
    assert abs(r.log_z - exact) < z * r.log_z_se, (r.log_z, r.log_z_se, exact)


def _one_mode(r):
    """The mode search of a unimodal target found one mode, holding all the estimate's weight."""
    assert [(m["share"], m["weight"]) for m in r.diagnostics["modes"]] == [(1.0, 1.0)]


def bimodal(d=10, s=3.0, scale=5.0):
    """½ N(s·1, I) + ½ N(−s·1, I) in d dimensions, log Z = 0 (issue 36: a Gaussian at one mode gave
    log Z = −log 2 ± 4e-7 and no warning), as x ~ N(0, scale² I) times mixture(x) / N(x; 0, scale² I)."""
    c0 = -0.5 * d * math.log(2 * math.pi)

    def log_ratio(x):
        up, down = (math.log(0.5) + c0 - 0.5 * ppl.math.sum(ppl.math.square(x - m)) for m in (s, -s))
        ref = c0 - d * math.log(scale) - 0.5 * ppl.math.sum(ppl.math.square(x)) / scale ** 2
        return ppl.math.log_sum_exp(up, down) - ref
    return ppl.model(x=ppl.Normal(0.0, scale, shape=(d,)), mix=ppl.factor(log_ratio, ["x"]))


def _mode_weights(r):
    """The estimate's weight on x̄ > 0 and its standard error sqrt(Σ W_i² (f_i − p̂)²)."""
    w = np.exp(r.log_weights[0] - r.log_weights[0].max())
    w /= w.sum()
    f = r.samples["x"][0].mean(axis=1) > 0
    p = float(w @ f)
    return p, math.sqrt(float(w ** 2 @ (f - p) ** 2))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ais_eight_schools(runtime):
    known = _reference_or_skip(T.eight_schools)
    r = ppl.sample(known.target, method="ais", runtime=runtime, particles=1000, seed=1)
    _within(r, known.log_z)
    table = r.diagnostics["iterations"]
    assert table[0]["family"] == "reference" and all(np.isfinite(row["pareto_k"]) for row in table)
    assert r.proposal is not None and r.ess > 300
    _one_mode(r)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ais_german_credit_and_reuse_as_reference(runtime):
    known = _reference_or_skip(T.german_credit)
    r = ppl.sample(known.target, method="ais", runtime=runtime, particles=1000, seed=0)
    _within(r, known.log_z)
    assert r.diagnostics["pareto_k"] < 0.7
    _one_mode(r)
    s = ppl.sample(known.target, method="is", runtime=runtime, particles=20_000, seed=5, reference=r.proposal)
    _within(s, known.log_z)
    assert s.ess > 0.3 * 20_000     # the fitted proposal is a good importance sampler on its own


#: float32 rounding of log γ: on the bimodal target, where the default proposal is the target itself
#: (se ≈ 5e-7), log Z was off by up to 2e-6 (120 runs: 2 and 4 modes, both runtimes)
ROUNDING = 1e-5


@pytest.mark.parametrize("runtime, family", [("numpyro", "gaussian"), ("pyro", "gaussian"), ("numpyro", "student_t")])
def test_ais_bimodal_finds_both_modes(runtime, family):
    """The start is a mixture over the modes Newton's method finds from the best reference draws: both modes of
    the issue's target, each with half the weight (within 4 se), log Z = 0 within 4 se, and no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImportanceWarning)
        r = ppl.sample(bimodal(), method="ais", runtime=runtime, particles=1000, seed=0, family=family)
    assert abs(r.log_z) < 4 * r.log_z_se + ROUNDING, (r.log_z, r.log_z_se)
    assert [m["share"] for m in r.diagnostics["modes"]] == pytest.approx([0.5, 0.5], abs=1e-3)
    p, se = _mode_weights(r)
    assert abs(p - 0.5) < 4 * se and se > 0
    assert r.proposal.family == "mixture" and len(r.proposal.components) == 2


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ais_warns_when_the_proposal_misses_a_mode(runtime):
    """A Gaussian proposal at one mode of the issue's target: log Z = −log 2 with a tiny se and k̂ < 0.7, so
    only the coverage check can tell; it warns, naming the missed half."""
    at_one_mode = Gaussian(3.0 * np.ones(10), np.eye(10))
    with pytest.warns(ImportanceWarning, match="missed modes holding 0.50 of their Laplace mass"):
        r = ppl.sample(bimodal(), method="ais", runtime=runtime, particles=1000, seed=0, proposal=at_one_mode)
    assert abs(r.log_z + math.log(2)) < 1e-3 and r.diagnostics["pareto_k"] < 0.7
    assert sorted(round(m["weight"], 6) for m in r.diagnostics["modes"]) == [0.0, 1.0]


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ais_bimodal_calibrated_over_seeds(runtime):
    """20 seeds of the issue's target with Student-t components (a proposal that is not the target, se ≈ 0.006):
    both modes found, no warning, log Z within 4 se of 0 on each seed and the z-scores' sd below 1.5."""
    z = []
    for seed in range(20):
        with warnings.catch_warnings():
            warnings.simplefilter("error", ImportanceWarning)
            r = ppl.sample(bimodal(), method="ais", runtime=runtime, particles=1000, seed=seed, family="student_t")
        assert len(r.diagnostics["modes"]) == 2
        z.append(r.log_z / r.log_z_se)
    assert np.all(np.abs(z) < 4) and np.std(z) < 1.5, z


@pytest.mark.parametrize("family", ["student_t", "mixture"])
def test_ais_families_closed_form(family):
    """A 3-d Gaussian tilted to a known log Z, posterior mean and sd."""
    a, lam = np.array([1.0, -2.0, 0.5]), 2.0
    target = ppl.model(x=ppl.Normal(0.0, 1.0, shape=(3,))).tilt(lambda x: ppl.math.sum(x * a), lam=lam)
    r = ppl.sample(target, method="ais", particles=1000, seed=2, family=family)
    _within(r, float(a @ a) / (2 * lam ** 2))
    assert np.all(np.abs(r.mean("x") - a / lam) < 0.05)
    assert r.proposal.family == family
    _one_mode(r)


def test_ais_mixture_reuse_pools_every_draw():
    target = ppl.model(x=ppl.Normal(0.0, 1.0, shape=(2,)))
    r = ppl.sample(target, method="ais", particles=500, seed=0, reuse="mixture")
    assert r.samples["x"].shape[1] == r.diagnostics["draws"]
    _within(r, 0.0)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_expect_gaussian_moments(runtime):
    """E[X^{2j}], j = 1..10, from 2·10⁴ draws: every estimate within 4 se of (2j − 1)!!, and the reported
    relative variance far below plain Monte Carlo's."""
    e = ppl.expect(ppl.model(x=ppl.Normal(0.0, 1.0)), FUNCTIONS, budget=20_000, runtime=runtime, seed=3)
    est = np.array([e.estimate(n) for n in FUNCTIONS])
    se = np.array([e.se(n) for n in FUNCTIONS])
    assert np.all(np.abs(est - MOMENTS) < 4 * se), (est - MOMENTS) / se
    assert np.sum(se ** 2 / MOMENTS ** 2) < plain_mc_relative_variance(20_000) / 1000
    assert e.diagnostics["normalized"] and len(e.proposal.components) == J + 1
    assert "x20" in repr(e)


@pytest.mark.slow
def test_expect_gaussian_moments_variance_over_repetitions():
    """Over 50 repetitions at N = 2·10⁴: Σ_j Var_j / I_j² at least 1000× below plain Monte Carlo's."""
    est = np.array([[ppl.expect(ppl.model(x=ppl.Normal(0.0, 1.0)), FUNCTIONS, budget=20_000, seed=s).estimate(n)
                     for n in FUNCTIONS] for s in range(50)])
    measured = np.sum(est.var(axis=0, ddof=1) / MOMENTS ** 2)
    assert measured < plain_mc_relative_variance(20_000) / 1000, measured


def test_expect_unnormalized_target_is_a_ratio():
    """Posterior of a normal mean (prior N(0, 1), one observation y = 1, noise sd 1): N(1/2, 1/2)."""
    target = ppl.model(mu=ppl.Normal(0.0, 1.0), y=lambda mu: ppl.Normal(mu, 1.0)).condition(y=1.0)
    e = ppl.expect(target, {"mean": lambda mu: mu, "second": lambda mu: mu ** 2}, budget=10_000, seed=0)
    assert not e.diagnostics["normalized"]
    assert abs(e.estimate("mean") - 0.5) < 4 * e.se("mean")
    assert abs(e.estimate("second") - 0.75) < 4 * e.se("second")
    log_z = -0.5 * math.log(2 * math.pi * 2) - 1 / 4    # y ~ N(0, 2)
    assert abs(e.diagnostics["log_z"] - log_z) < 0.01


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_result_expect(runtime):
    target = ppl.model(mu=ppl.Normal(0.0, 1.0), y=lambda mu: ppl.Normal(mu, 1.0)).condition(y=1.0)
    r = ppl.sample(target, method="is", runtime=runtime, particles=20_000, seed=1)
    e = r.expect({"mean": lambda mu: mu})
    assert abs(e.estimate("mean") - 0.5) < 4 * e.se("mean") and 0 < e["mean"]["ess"] <= 20_000 * 1.05
    # a mixture proposal: its components are control variates, and the error is no larger than without them
    q = Mixture([0.5, 0.5], [Gaussian([0.0], [[1.0]]), Gaussian([1.0], [[0.5]])])
    s = ppl.sample(target, method="is", runtime=runtime, particles=20_000, seed=1, reference=q)
    cv = s.expect({"mean": lambda mu: mu})
    assert abs(cv.estimate("mean") - 0.5) < 4 * cv.se("mean")


def test_result_expect_mcmc():
    target = ppl.model(x=ppl.Normal(2.0, 1.0))
    r = ppl.sample(target, method="nuts", particles=2, num_warmup=200, num_samples=500, seed=0)
    e = r.expect({"x": lambda x: x})
    assert abs(e.estimate("x") - 2.0) < 4 * e.se("x")


def test_bad_input():
    target = ppl.model(x=ppl.Normal(0.0, 1.0, shape=(2,)))
    with pytest.raises(ppl.ShapeError, match="one number per draw"):
        ppl.expect(target, {"v": lambda x: x}, budget=4000)
    with pytest.raises(ppl.UnknownNameError, match="reads y"):
        ppl.expect(target, {"v": lambda y: y}, budget=4000)
    with pytest.raises(ppl.PPLError, match="non-empty dict"):
        ppl.expect(target, [lambda x: x], budget=4000)
    with pytest.raises(ppl.ValueRangeError, match="too small to adapt"):
        ppl.expect(target, {"s": lambda x: ppl.math.sum(x)}, budget=50)
    with pytest.raises(ppl.ValueRangeError, match="budget"):
        ppl.sample(target, method="ais", particles=100, budget=150)
    with pytest.raises(ppl.UnknownNameError, match="family"):
        ppl.sample(target, method="ais", family="gauss")
    other = ppl.sample(ppl.model(s=ppl.HalfNormal(1.0), t=ppl.Normal(0, 1)), method="ais", particles=300,
                       seed=0).proposal
    with pytest.raises(ppl.ShapeError, match="fit it on this target"):   # a proposal over another support
        ppl.sample(target, method="is", reference=other)
    with pytest.raises(ppl.PlanError, match="methods 'is' and 'ais'"):
        ppl.sample(target, method="smc", reference=Gaussian(np.zeros(2), np.eye(2)))
    assert isinstance(StudentT(np.zeros(2), np.eye(2)), Gaussian)
