"""Pointwise log-likelihood and posterior predictive draws (one site interpreter, issue 15) on eight schools,
against hand computations; ArviZ's loo / waic on a NUTS result."""
import warnings

import numpy as np
import pytest

import ppl

Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
SCHOOLS = ppl.model(data={"sigma": SIGMA}, mu=ppl.Normal(0.0, 5.0), tau=ppl.HalfCauchy(5.0),
                    theta_tilde=ppl.Normal(0.0, 1.0, shape=(8,)),
                    theta=ppl.deterministic(lambda mu, tau, theta_tilde: mu + tau * theta_tilde),
                    y=lambda theta, sigma: ppl.Normal(theta, sigma)).condition(y=Y)


def normal_logpdf(y, theta, sigma):
    return -0.5 * ((y - theta) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)


@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
def test_pointwise_log_likelihood_and_predictive(runtime):
    prog = ppl.compile(SCHOOLS).lower(runtime)
    z = prog.sample_reference(prog.rt.key(0), 4000)
    theta = prog.to_constrained(z)["theta"]
    ll = prog.log_likelihood(z)
    assert set(ll) == {"y"} and ll["y"].shape == (4000, 8)
    np.testing.assert_allclose(ll["y"], normal_logpdf(Y, theta, SIGMA), rtol=1e-5, atol=1e-4)
    rep = prog.predictive(prog.rt.key(1), z)["y"]
    assert rep.shape == (4000, 8)
    u = (rep - theta) / SIGMA         # y_rep | θ ~ N(θ, σ): standard normal, 32000 draws
    assert abs(u.mean()) < 4 / np.sqrt(u.size) and abs(u.std() - 1) < 4 / np.sqrt(2 * u.size)
    assert np.abs(u.mean(axis=0)).max() < 4.5 / np.sqrt(4000)


def test_nuts_result_has_loo_and_waic(tmp_path):
    import arviz as az
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ppl.sample(SCHOOLS, method="nuts", num_warmup=300, num_samples=250, chains=2, seed=1, progress=False)
    ll = r.log_likelihood["y"]
    assert ll.shape == (2, 250, 8) and r.predictive["y"].shape == (2, 250, 8)
    np.testing.assert_allclose(ll, normal_logpdf(Y, r.samples["theta"], SIGMA), rtol=1e-5, atol=1e-4)
    idata = r.to_arviz()
    assert {"log_likelihood", "posterior_predictive", "observed_data"} <= set(idata.groups())
    np.testing.assert_array_equal(idata.observed_data["y"].values, Y)
    flat = ll.reshape(-1, 8)    # WAIC by hand: lppd − p_waic, each a sum over schools
    lppd = np.sum(np.log(np.mean(np.exp(flat), axis=0)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        waic, loo = az.waic(idata), az.loo(idata)
    assert waic.elpd_waic == pytest.approx(lppd - np.sum(np.var(flat, axis=0)), abs=1e-4)  # float32 log-likelihoods
    assert np.isfinite(loo.elpd_loo) and abs(loo.elpd_loo - waic.elpd_waic) < 1.0
    back = ppl.load(r.save(tmp_path / "r.nc"))
    np.testing.assert_allclose(back.log_likelihood["y"], ll)
    np.testing.assert_allclose(back.predictive["y"], r.predictive["y"])
