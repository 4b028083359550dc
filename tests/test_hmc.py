"""NUTS/HMC backend: exact moments of an algebra target on both runtimes, diagnostics, warnings, bad input."""
import warnings

import numpy as np
import pytest

import ppl
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
