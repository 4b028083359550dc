"""The state-space references of tests/ssm_reference.py against dense Gaussian algebra (exact, fast), and the
particle-filter test statistics against the numpy bootstrap filter: they pass for a correct filter and fail
for a broken one."""
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from ssm_reference import (LinearGaussianSSM, StochasticVolatility, bootstrap_filter, filter_mean_z,
                           log_z_coverage, simulate_sv, smoothed_mean_z)

A3 = np.array([[0.7, 0.2, 0.0], [-0.1, 0.8, 0.1], [0.0, 0.3, 0.5]])
MODELS = {
    "d1": lambda: LinearGaussianSSM(0.9, 1.0, 1.0, 1.0, 0.3, 2.0),
    "d3": lambda: LinearGaussianSSM(A3, np.diag([0.5, 0.3, 0.4]) + 0.1, [[1.0, 0.0, 0.5], [0.0, 1.0, -0.4]],
                                    [[0.6, 0.1], [0.1, 0.3]], [0.1, -0.2, 0.3], np.eye(3) + 0.2),
}


def _split(m, T):
    mean, cov = m.dense(T)
    nx = T * m.dx
    return mean[:nx], mean[nx:], cov[:nx, :nx], cov[:nx, nx:], cov[nx:, nx:]


@pytest.mark.parametrize("name", MODELS)
def test_kalman_log_lik_and_filter_against_dense_gaussian(name):
    m, T = MODELS[name](), 5
    x, y = m.simulate(T, seed=0)
    assert x.shape == (T, m.dx) and y.shape == (T, m.dy)
    mx, my, cxx, cxy, cyy = _split(m, T)
    kf = m.kalman(y)
    assert kf["log_lik"] == pytest.approx(multivariate_normal(my, cyy).logpdf(y.ravel()), abs=1e-9)
    for t in range(T):                                  # x[t] | y[0..t]: condition on the first (t+1) dy
        k = (t + 1) * m.dy
        gain = np.linalg.solve(cyy[:k, :k], cxy[:, :k].T).T
        mean = mx + gain @ (y.ravel()[:k] - my[:k])
        cov = cxx - gain @ cxy[:, :k].T
        sl = slice(t * m.dx, (t + 1) * m.dx)
        np.testing.assert_allclose(kf["means"][t], mean[sl], atol=1e-9)
        np.testing.assert_allclose(kf["covs"][t], cov[sl, sl], atol=1e-9)
    # prefix log-likelihoods
    np.testing.assert_allclose(np.cumsum(kf["log_lik_t"])[1],
                               multivariate_normal(my[:2 * m.dy], cyy[:2 * m.dy, :2 * m.dy]).logpdf(y[:2].ravel()))


@pytest.mark.parametrize("name", MODELS)
def test_rts_against_dense_gaussian_conditional(name):
    m, T = MODELS[name](), 5
    x, y = m.simulate(T, seed=1)
    mx, my, cxx, cxy, cyy = _split(m, T)
    gain = np.linalg.solve(cyy, cxy.T).T
    mean = (mx + gain @ (y.ravel() - my)).reshape(T, m.dx)
    cov = cxx - gain @ cxy.T
    ms, ps = m.rts(y)
    np.testing.assert_allclose(ms, mean, atol=1e-9)
    for t in range(T):
        np.testing.assert_allclose(ps[t], cov[t * m.dx:(t + 1) * m.dx, t * m.dx:(t + 1) * m.dx], atol=1e-9)
    np.testing.assert_allclose(ms[-1], m.kalman(y)["means"][-1])      # the last smoothed = the last filtered


def test_scalar_inputs_are_one_dimensional():
    m = MODELS["d1"]()
    assert (m.dx, m.dy) == (1, 1)
    x, y = m.simulate(7, seed=2)
    assert np.isfinite(m.kalman(y[:, 0])["log_lik"])
    np.testing.assert_array_equal(m.simulate(7, seed=2)[1], y)        # the seed fixes the draw


def test_simulators_moments():
    m = LinearGaussianSSM(0.5, 0.75, 1.0, 0.5, 0.0, 1.0)            # stationary: var x = 1, var y = 1.5
    x, y = m.simulate(20_000, seed=3)
    assert abs(np.var(x) - 1.0) < 0.08 and abs(np.var(y) - 1.5) < 0.1   # ~5 sd of a correlated variance
    x, y = simulate_sv(20_000, -1.0, 0.9, 0.3, seed=4)                 # var x = 0.09 / 0.19
    assert abs(np.mean(x) + 1.0) < 0.05 and abs(np.var(x) - 0.09 / 0.19) < 0.05
    assert abs(np.mean(y ** 2) - np.mean(np.exp(x))) < 0.05 * np.mean(np.exp(x))


def test_bootstrap_filter_and_test_statistics():
    """The numpy filter agrees with Kalman / RTS by the statistics tests/test_particle_filter.py uses, and the
    same statistics reject a filter that reports predictive means or a smoother shifted by one step."""
    m = LinearGaussianSSM(0.9, 1.0, 1.0, 1.0, 0.0, 1 / 0.19)
    x, y = m.simulate(50, seed=5)
    kf = m.kalman(y)
    var = kf["covs"][:, :, 0]
    lz, se = [], []
    for s in range(10):
        r = bootstrap_filter(m, y, 500, seed=s)
        lz.append(r["log_z"])
        se.append(np.sqrt(r["log_z_var_cl"]))
        z = filter_mean_z(r["filter_mean"], kf["means"], var, r["ess"])
        assert np.sqrt(np.mean(z ** 2)) < 2.0 and z.max() < 8.0
        zp = filter_mean_z(kf["pred_means"], kf["means"], var, r["ess"])
        assert np.sqrt(np.mean(zp ** 2)) > 5.0
    assert log_z_coverage(lz, se, kf["log_lik"], k=4.0) == 1.0
    r = bootstrap_filter(m, y, 300, seed=0, backward=100)
    ms, ps = m.rts(y)
    z = smoothed_mean_z(r["paths"], np.ones(100), ms, ps[:, :, 0])
    assert np.sqrt(np.mean(z ** 2)) < 2.5 and z.max() < 8.0
    shifted = np.concatenate([r["paths"][:, :1], r["paths"][:, :-1]], axis=1)
    assert np.sqrt(np.mean(smoothed_mean_z(shifted, np.ones(100), ms, ps[:, :, 0]) ** 2)) > 5.0


def test_sv_bootstrap_filter_runs():
    x, y = simulate_sv(50, -1.0, 0.95, 0.25, seed=6)
    r = bootstrap_filter(StochasticVolatility(-1.0, 0.95, 0.25), y, 200, seed=0, backward=5)
    assert np.isfinite(r["log_z"]) and r["paths"].shape == (5, 50, 1)
