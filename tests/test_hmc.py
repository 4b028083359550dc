"""NUTS/HMC backend: exact moments of an algebra target on both runtimes, diagnostics, warnings, bad input."""
import warnings

import numpy as np
import pytest

import ppl
from ppl.backends import hmc
from ppl.backends.hmc import ConvergenceWarning, diagnose

K = 4.5  # Monte Carlo standard errors allowed

# geometric(A, B, 1/2) ** 2 = A * B; tilted by exp(x/2 - y):
#   x: N(1, 1) N(-1, 2) = N(0.6, 0.8), tilt shifts the mean by 0.8 / 2 -> N(1.0, 0.8)
#   y: N(0, 1)^2 = N(0, 0.5), tilt shifts the mean by -0.5 -> N(-0.5, 0.5)
#   z: Gamma(3, 2)^2 ∝ z^4 e^{-4z} = Gamma(5, 4): mean 5/4, var 5/16, excess kurtosis 6/5
A = ppl.model(x=ppl.Normal(1.0, 1.0), y=ppl.Normal(0.0, 1.0), z=ppl.Gamma(3.0, 2.0))
B = ppl.model(x=ppl.Normal(-1.0, 2.0), y=ppl.Normal(0.0, 1.0), z=ppl.Gamma(3.0, 2.0))
TARGET = (ppl.geometric(A, B, 0.5) ** 2).tilt(lambda x, y: 0.5 * x - y, lam=1.0)
EXACT = {"x": (1.0, 0.8, 0.0), "y": (-0.5, 0.5, 0.0), "z": (1.25, 5 / 16, 1.2)}
SIZES = {"numpyro": dict(num_warmup=300, num_samples=500, chains=4),
         "pyro": dict(num_warmup=150, num_samples=150, chains=2)}
# Pyro's HMC at 150 + 150 draws: R-hat ≥ 1.05 on 2 of 12 seeds (z mixes slowly); at 300 + 300: 0 of 16, max 1.043
SIZES_PYRO_HMC = dict(num_warmup=300, num_samples=300, chains=2)


@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_algebra_target_moments(runtime, method):
    """Mean within K MCSE (ArviZ); variance within K SE of a sample variance with the run's ESS."""
    size = SIZES_PYRO_HMC if (runtime, method) == ("pyro", "hmc") else SIZES[runtime]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = ppl.sample(TARGET, method=method, runtime=runtime, seed=3, **size,
                       **({"num_steps": 3} if method == "hmc" else {}))  # about 0.4 of a period
    c, s = size["chains"], size["num_samples"]
    assert r.log_weights is None and r.log_z is None and r.method == method
    assert {k: v.shape for k, v in r.samples.items()} == {"x": (c, s), "y": (c, s), "z": (c, s)}
    assert set(r.sample_stats) >= {"diverging", "step_size"}
    assert all(v.shape == (c, s) for v in r.sample_stats.values())
    d = r.diagnostics
    assert d["chains"] == c and d["num_samples"] == s and len(d["step_size"]) == len(d["acceptance_rate"]) == c
    assert all(0.5 < a <= 1 for a in d["acceptance_rate"])
    assert all(h > 0 for h in d["step_size"]) and d["divergences"] == 0
    assert d["r_hat_max"] < 1.05
    assert (d["e_bfmi"] is None) == (runtime == "pyro")
    for site, (mean, var, kurt) in EXACT.items():
        ess = min(d["ess_bulk"][site], d["ess_tail"][site])
        assert abs(r.mean(site) - mean) < K * d["mcse_mean"][site], (site, r.mean(site), mean)
        assert abs(r.var(site) - var) < K * var * np.sqrt((2 + kurt) / ess), (site, r.var(site), var, ess)
    table = r.summary()
    assert list(table.index) == ["x", "y", "z"] and "r_hat" in table


@pytest.mark.filterwarnings("ignore::ppl.backends.hmc.ConvergenceWarning")
def test_particles_is_total_draws_without_num_samples():
    r = ppl.sample(ppl.model(x=ppl.Normal(0.0, 1.0)), method="nuts", runtime="pyro", particles=31, chains=2,
                   num_warmup=10)
    assert r.samples["x"].shape == (2, 16)
    r = ppl.sample(ppl.model(x=ppl.Normal(0.0, 1.0)), method="nuts", runtime="pyro", particles=31, chains=1,
                   num_warmup=10, num_samples=7)
    assert r.samples["x"].shape == (1, 7)


@pytest.mark.parametrize("options, error", [
    (dict(step=0.1), ppl.UnknownNameError), (dict(chains=0), ppl.ValueRangeError),
    (dict(target_accept=1.5), ppl.ValueRangeError), (dict(num_samples=2.5), ppl.ValueRangeError),
    (dict(max_tree_depth=0), ppl.ValueRangeError)])
def test_bad_options(options, error):
    with pytest.raises(error, match=next(iter(options))):
        ppl.sample(TARGET, method="nuts", runtime="pyro", **options)


def test_density_nan_everywhere_is_an_error():
    m = ppl.model(x=ppl.Normal(0.0, 1.0), bad=ppl.factor(lambda x: x * np.nan))
    with pytest.raises(ppl.InferenceError, match="finite"):
        ppl.sample(m, method="nuts", runtime="pyro", num_warmup=5, num_samples=5, chains=2)


# --- diagnostics and warnings on synthetic draws ----------------------------------------
RNG = np.random.default_rng(0)
GOOD = {"a": RNG.normal(size=(4, 500)), "tau": np.abs(RNG.normal(size=(4, 500)))}
NO_DIV = {"diverging": np.zeros((4, 500), bool), "energy": RNG.normal(size=(4, 500))}


def _warnings(samples, stats):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        diag = diagnose(samples, stats, 4)
    return diag, [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]


def test_diagnose_quiet_on_good_draws():
    diag, msgs = _warnings(GOOD, NO_DIV)
    assert msgs == []
    assert diag["r_hat_max"] < 1.01 and diag["ess_min"] > 1000 and min(diag["e_bfmi"]) > 0.3


def test_diagnose_names_the_parameter_with_high_rhat():
    shifted = dict(GOOD, a=GOOD["a"] + np.arange(4)[:, None])
    diag, msgs = _warnings(shifted, NO_DIV)
    assert diag["r_hat"]["a"] > 1.01
    assert any("R-hat" in m and "a (" in m and "tau" not in m for m in msgs), msgs


def test_diagnose_labels_components_1_based_like_the_summary():
    theta = np.stack([GOOD["a"], GOOD["a"] + np.arange(4)[:, None]], axis=-1)   # theta[2] disagrees
    diag, msgs = _warnings(dict(GOOD, theta=theta), NO_DIV)
    assert set(diag["r_hat"]) >= {"theta[1]", "theta[2]"} and "theta[0]" not in diag["r_hat"]
    assert diag["r_hat"]["theta[2]"] > 1.01 > diag["r_hat"]["theta[1]"]
    assert any("R-hat" in m and "theta[2] (" in m and "theta[1]" not in m for m in msgs), msgs


def test_diagnose_low_ess():
    ar = np.zeros((4, 500))
    for t in range(1, 500):
        ar[:, t] = 0.99 * ar[:, t - 1] + RNG.normal(size=4)
    _, msgs = _warnings(dict(GOOD, a=ar), NO_DIV)
    assert any("effective sample size" in m and "a (" in m for m in msgs), msgs


def test_diagnose_divergences_located_in_the_funnel_neck():
    diverging = GOOD["tau"] < 0.05
    diag, msgs = _warnings(GOOD, dict(NO_DIV, diverging=diverging))
    assert diag["divergences"] == int(diverging.sum()) > 0
    assert any("divergent" in m and "tau (low values" in m for m in msgs), msgs


def test_diagnose_low_ebfmi():
    energy = np.cumsum(RNG.normal(size=(4, 500)), axis=1)
    diag, msgs = _warnings(GOOD, dict(NO_DIV, energy=energy))
    assert max(diag["e_bfmi"]) < 0.3 and any("E-BFMI" in m for m in msgs), msgs


@pytest.mark.filterwarnings("ignore::ppl.backends.hmc.ConvergenceWarning")
def test_pyro_nuts_leaves_distribution_validation_off():
    """Pyro's MCMC restores torch's validation default from Pyro's own flag on return; with the checks back on,
    every later vmapped log density on torch failed (`.item()` under vmap)."""
    import torch
    ppl.sample(ppl.model(x=ppl.Normal(0.0, 1.0)), method="nuts", runtime="pyro", num_warmup=5, num_samples=5,
               chains=1)
    assert torch.distributions.Distribution._validate_args is False
    r = ppl.sample(TARGET, method="smc", runtime="pyro", particles=100, seed=0, moves=1)
    assert np.isfinite(r.log_z)


# --- chains that never moved (issue 37) -------------------------------------------------
def cliff(x):
    """0 everywhere, with a NaN gradient where x > 0.5 (through the branch where() does not take): a chain that
    starts there rejects every proposal, and warmup shrinks its step size to the smallest float, as float32 did to
    a chain of an approximate GP."""
    return ppl.math.where(x > 0.5, 0.0 * x, 0.0 * ppl.math.sqrt(0.5 - x))


CLIFF = ppl.model(x=ppl.Normal(1.0, 1.0), f=ppl.factor(cliff))   # the best of 8 prior draws is near 1: every start


def test_stuck_chains_are_those_still_or_with_a_collapsed_step():
    z = np.cumsum(RNG.normal(size=(4, 200, 2)), axis=1)
    z[1, 100:] = z[1, 100]                    # moved in half the iterations: not stuck
    z[2] = z[2, 0]                            # never moved
    z[3, 1:] = z[3, 0] + 1                    # moved once in 199 iterations: < 1 %
    stuck, moved = hmc.stuck_chains(z, [0.5, 0.4, 0.5, 0.6])
    assert stuck == [2, 3] and moved[0] == 1.0 and moved[1] == pytest.approx(100 / 199)
    moving = np.cumsum(RNG.normal(size=(4, 50, 1)), axis=1)
    assert hmc.stuck_chains(moving, [0.5, 0.6, 1e-4, 1e-7])[0] == [2, 3]   # below 1e-3 x the median, or 1e-6
    assert hmc.stuck_chains(moving[:1], [1e-7])[0] == [0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hmc._warn_stuck("hmc", {"stuck_chains": [2], "moved_fraction": [1.0, 1.0, 0.005]}, [0.5, 0.5, 3e-7], 200,
                        "float64")
    said = str(caught[0].message)
    assert said.startswith("hmc: chain 2 moved in 0.5% of 200 draws (step size 3e-07), also after a second warmup")
    assert "float64" not in said and "reparameterize" in said


def test_stuck_chains_rerun_once_from_new_starts():
    """The chains a first run leaves stuck take the draws, starts and statistics of a second run from new initial
    points (as many chains as stuck); the others keep theirs; the diagnostics say which chains were retried."""
    from ppl.backends.runtime import get_runtime
    rt = get_runtime("pyro")
    prog = ppl.compile(ppl.model(x=ppl.Normal(0.0, 1.0))).lower(rt)
    runs = []

    def sampler(key, z0):
        c = z0.shape[0]
        z = np.cumsum(RNG.normal(size=(c, 50, 1)), axis=1).astype(np.float32)
        step = np.full(c, 0.5)
        if not runs:                          # the first run leaves chain 1 still, with a collapsed step size
            z[1], step[1] = z[1, 0], 1e-30
        runs.append((rt.to_numpy(z0), z, step))
        return rt.asarray(z), {"diverging": RNG.random((c, 50)) < 0.5}, step, np.full(c, 0.8)

    run, check = hmc._sample_chains(prog, rt, rt.key(0), 3, sampler)
    (z0, z, _), (z0_again, z_again, _) = runs
    assert z0_again.shape == (1, 1) and z0_again[0] != z0[1]
    np.testing.assert_array_equal(run.z[[0, 2]], z[[0, 2]])
    np.testing.assert_array_equal(run.z[1], z_again[0])
    np.testing.assert_array_equal(run.z0[1], z0_again[0])
    assert run.step_size.tolist() == [0.5, 0.5, 0.5] and run.stats["diverging"].shape == (3, 50)
    assert check["retried_chains"] == [1] and check["retried_step_size"] == [1e-30] and check["stuck_chains"] == []
    assert check["moved_fraction"] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("rt", [pytest.param("numpyro", marks=pytest.mark.slow), "pyro"])
def test_a_chain_that_never_moved_is_retried_then_named(rt):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = ppl.sample(CLIFF, method="nuts", runtime=rt, num_warmup=30, num_samples=20, chains=2, seed=0)
    d = r.diagnostics
    assert d["retried_chains"] == d["stuck_chains"] == [0, 1] and d["moved_fraction"] == [0.0, 0.0]
    assert all(h < 1e-6 for h in d["step_size"] + d["retried_step_size"])
    said = [str(w.message) for w in caught if "never moved" in str(w.message)]
    assert len(said) == 1 and issubclass(caught[0].category, ConvergenceWarning), [str(w.message) for w in caught]
    assert "chain 0 never moved (step size" in said[0] and "; chain 1 never moved" in said[0]
    assert "second warmup" in said[0]
    assert "rerun in float64 (precision='float64')" in said[0] and "reparameterize" in said[0]


# --- flat parameters without a reference model (issue 37) ---------------------------------
FLAT_REGRESSION = """
data N : int
data K : int
data X : real[N, K]
data y : real[N]
model reg {
  beta : real[K]
  sigma : real<lower=0>
  y ~ normal(X @ beta, sigma)
}
sample reg with nuts(chains = 2, num_warmup = 300, num_samples = 500) on numpyro
"""


def regression_data(n=20):
    rng = np.random.default_rng(1)
    x = np.column_stack([np.ones(n), rng.normal(size=n)])
    return dict(N=n, K=2, X=x, y=x @ np.array([1.0, -0.5]) + 0.7 * rng.normal(size=n))


def flat_regression_posterior(X, y, **_):
    """Means and sds of β and σ under the flat prior p(β, σ) ∝ 1 (σ > 0): σ² ~ InvGamma(a, b) with
    a = (n − K − 1) / 2, b = RSS / 2, and β ~ t_{2a}(β̂, (b / a) (XᵀX)⁻¹) (normal-inverse-gamma)."""
    from scipy.special import gammaln
    n, k = X.shape
    xtx_inv = np.linalg.inv(X.T @ X)
    beta_hat = xtx_inv @ X.T @ y
    a, b = (n - k - 1) / 2, np.sum((y - X @ beta_hat) ** 2) / 2
    sigma_mean = np.sqrt(b) * np.exp(gammaln(a - 0.5) - gammaln(a))
    return {"beta": (beta_hat, np.sqrt(b / (a - 1) * np.diag(xtx_inv))),
            "sigma": (sigma_mean, np.sqrt(b / (a - 1) - sigma_mean ** 2))}


def test_flat_sites_need_no_reference_for_nuts(tmp_path, capsys):
    """`ppl check` passes a program whose parameters are flat; nuts starts those uniform(-2, 2) on the
    unconstrained scale; smc, which draws from the reference, still asks for one, located at the site."""
    import json
    from ppl.cli import main
    from ppl.lang import load_ppl
    data = regression_data()
    program, data_file = tmp_path / "reg.ppl", tmp_path / "reg.json"
    program.write_text(FLAT_REGRESSION)
    data_file.write_text(json.dumps({k: np.asarray(v).tolist() for k, v in data.items()}))
    assert main(["check", str(program), "--data", str(data_file)]) == 0, capsys.readouterr()
    prog = load_ppl(FLAT_REGRESSION, data=data)
    compiled = prog.compile()
    assert compiled.improper == ["beta", "sigma"] and "improper" in str(compiled)
    p = compiled.lower("pyro")
    z = p.rt.to_numpy(p.sample_start(p.rt.key(0), 4000))
    assert z.shape == (4000, 3) and np.all(np.abs(z) <= 2) and np.all(np.abs(z.mean(0)) < 0.1)
    assert np.all(np.abs(z.var(0) - 4 / 3) < 0.1)          # uniform(-2, 2): variance 16 / 12
    with pytest.raises(ppl.PlanError, match="site 'beta' has no normalized prior"):
        p.sample_reference(p.rt.key(0), 10)
    with pytest.raises(ppl.SourceError, match="site 'beta' has no normalized prior") as e:
        prog.sample(method="smc", particles=100)
    assert e.value.line == 7 and "nuts" in e.value.hint


@pytest.mark.slow
@pytest.mark.parametrize("rt", ["numpyro", "pyro"])
def test_flat_regression_under_nuts_matches_the_closed_form(rt):
    from ppl.lang import load_ppl
    data = regression_data()
    exact = flat_regression_posterior(**data)
    r = load_ppl(FLAT_REGRESSION, data=data).sample(runtime=rt, seed=0)
    d = r.diagnostics
    assert d["retried_chains"] == [] and d["divergences"] == 0 and d["r_hat_max"] < 1.05
    for site, (mean, sd) in exact.items():
        for j, (m, s) in enumerate(zip(np.atleast_1d(mean), np.atleast_1d(sd))):
            label = f"{site}[{j + 1}]" if site == "beta" else site
            got = np.atleast_1d(r.mean(site))[j]
            assert abs(got - m) < 4 * d["mcse_mean"][label], (label, got, m, d["mcse_mean"][label])
            assert abs(np.atleast_1d(r.samples[site].std(axis=(0, 1)))[j] - s) < 0.15 * s, (label, s)


def test_pyro_nuts_takes_the_gradient_it_is_given():
    """Pyro's NUTS with `value_and_grad` (the compiled density pass, as `hmc` passes it) makes the same draws as
    with autograd through the potential."""
    import torch
    from ppl.backends import get_runtime
    rt = get_runtime("pyro")
    prog = ppl.compile(TARGET).lower(rt)
    one = rt.asarray(1.0)

    def potential(z):
        ref, rest = prog.log_parts(z)
        return -(ref + rest)

    def value_and_grad(z):
        (value, _), grad = prog.value_and_grad(z.reshape((1, -1)), one)
        return -value[0], -grad[0]

    z0 = torch.zeros((1, prog.dim))
    with rt.scope():
        runs = [rt.mcmc(potential, 5, z0, "nuts", 40, 40, 0.8, 10, None, False, False, vg)
                for vg in (None, value_and_grad)]
    np.testing.assert_allclose(runs[1][0].numpy(), runs[0][0].numpy(), rtol=1e-4, atol=1e-5)
    assert np.std(runs[1][0].numpy()) > 0.1
