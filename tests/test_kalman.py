"""A linear-Gaussian state path integrated out by the compiler (`compiler/linear_gaussian.py`, `stdlib/kalman.py`).

Exact answers: the numpy Kalman filter and RTS smoother of `ssm_reference` (written independently), and for the
static parameters the posterior by quadrature of the Kalman likelihood on a grid.
"""
import math

import numpy as np
import pytest

import ppl
from ppl import load_ppl
from ssm_reference import LinearGaussianSSM
from test_particle_filter import A4, lg_target

RUNTIMES = ["numpyro", "pyro"]
T = 100
MODELS = {"d1": lambda: LinearGaussianSSM(0.9, 1.0, 1.0, 1.0, 0.0, 1 / 0.19),
          "d4": lambda: LinearGaussianSSM(A4, 0.25 * np.eye(4), np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0]]) + 0.3,
                                          np.eye(2), np.zeros(4), np.eye(4))}

#: the issue's model: x[t] ~ normal(0.9 x[t−1], 1), y ~ normal(x, 0.5)
LGSSM = """
data T : int
data y : real[T]
model lg {
  x : real[T]
  x[1] ~ normal(0, 1)
  for t in 2:T { x[t] ~ normal(0.9 * x[t - 1], 1) }
  y ~ normal(x, 0.5)
}
"""

#: the same with the autoregression coefficient unknown
AR = """
data T : int
data y : real[T]
model ar {
  a ~ uniform(-1, 1)
  x : real[T]
  x[1] ~ normal(0, 1)
  for t in 2:T { x[t] ~ normal(a * x[t - 1], 1) }
  y ~ normal(x, 0.5)
}
"""


def issue_model():
    return LinearGaussianSSM(0.9, 1.0, 1.0, 0.25, 0.0, 1.0)


def _data(m, seed=0):
    x, y = m.simulate(T, seed)
    return y if m.dy > 1 else y[:, 0]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", ["d1", "d4"])
def test_pf_is_the_kalman_filter(runtime, name):
    m = MODELS[name]()
    y = _data(m)
    kf, (ms, ps) = m.kalman(y), m.rts(y)
    r = ppl.sample(lg_target(m, y), method="pf", particles=2000, seed=0, runtime=runtime)
    assert r.log_z_se == 0.0
    assert abs(r.log_z - kf["log_lik"]) < 1e-5 * abs(kf["log_lik"]), (r.log_z, kf["log_lik"])
    shape = (T, m.dx)
    np.testing.assert_allclose(r.diagnostics["filter_mean"]["x"].reshape(shape), kf["means"], atol=2e-4)
    np.testing.assert_allclose(r.diagnostics["smoothed_mean"]["x"].reshape(shape), ms, atol=2e-4)
    np.testing.assert_allclose(r.diagnostics["smoothed_var"]["x"].reshape(shape),
                               np.diagonal(ps, axis1=1, axis2=2), rtol=1e-4)
    # the 2000 paths by backward sampling: their mean against the RTS mean, z-scored by the exact sd
    draws = r.samples["x"][0].reshape((2000,) + shape)
    z = (draws.mean(0) - ms) / np.sqrt(np.diagonal(ps, axis1=1, axis2=2) / 2000)
    assert np.sqrt(np.mean(z ** 2)) < 1.3 and np.abs(z).max() < 4.5, (np.sqrt(np.mean(z ** 2)), np.abs(z).max())
    # and their covariance between neighbouring times (the path, not only its marginals)
    lag = np.mean((draws[:, 1:, 0] - ms[1:, 0]) * (draws[:, :-1, 0] - ms[:-1, 0]), axis=0)
    np.testing.assert_allclose(lag.mean(), _lag_cov(m, kf, ps).mean(), rtol=0.1)


def _lag_cov(m, kf, ps):
    """Cov(x[t+1], x[t] | y) of the first coordinate: J_t P^s_{t+1} (RTS)."""
    out = []
    for t in range(T - 1):
        J = np.linalg.solve(kf["pred_covs"][t + 1], m.A @ kf["covs"][t]).T
        out.append((J @ ps[t + 1])[0, 0])
    return np.array(out)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_issue_model_in_the_language(runtime):
    """The `.ppl` model the issue measured (pf: −154.646 ± 0.269 against the exact −154.862 at 4096 particles
    on its data): with the path integrated out, pf gives the Kalman value, se 0; marginalize=False keeps the
    bootstrap filter, whose estimate agrees within its se."""
    m = issue_model()
    y = _data(m, seed=3)
    exact = m.kalman(y)["log_lik"]
    prog = load_ppl(LGSSM, T=T, y=y.tolist())
    r = prog.sample(method="pf", particles=1000, seed=0, runtime=runtime)
    assert r.log_z_se == 0.0 and abs(r.log_z - exact) < 1e-5 * abs(exact)
    boot = prog.sample(method="pf", particles=1000, seed=0, runtime=runtime, marginalize=False)
    assert boot.log_z_se > 0.05 and abs(boot.log_z - exact) < 4 * boot.log_z_se


def test_the_plan_says_what_it_integrated_out():
    m = issue_model()
    prog = load_ppl(LGSSM, T=T, y=_data(m).tolist())
    plan = str(prog.compile())
    assert "x of model lg: integrated out by a Kalman filter (into y)" in plan
    compiled = ppl.compile(prog.target())
    assert compiled.graph.nodes["x"]["role"] == "marginalized" and compiled.latent == [] and compiled.dim == 0
    kept = prog.compile(marginalize=False)
    assert kept.latent == ["x"] and not kept.marginals and "integrated out" not in str(kept)


def test_cli_graph_shows_the_marginalized_path(tmp_path, capsys):
    import json

    from ppl.cli import main
    m = issue_model()
    (tmp_path / "lg.ppl").write_text(LGSSM)
    (tmp_path / "lg.data.json").write_text(json.dumps({"T": T, "y": _data(m).tolist()}))
    main(["compile", str(tmp_path / "lg.ppl"), "--data", str(tmp_path / "lg.data.json"), "--graph"])
    out = capsys.readouterr().out
    assert "integrated out by a Kalman filter" in out and "  x  [marginalized how=a Kalman filter]" in out \
        and "  x -> lg:lik y" in out


NONLINEAR = {   # a law the rule must not take for linear-Gaussian
    "mean not affine": ("x[t] ~ normal(0.9 * sin(x[t - 1]), 1)", "y ~ normal(x, 0.5)"),
    "scale reads the state": ("x[t] ~ normal(0.9 * x[t - 1], 1)", "y ~ normal(0, exp(x / 2))"),
    "not gaussian": ("x[t] ~ student_t(5, 0.9 * x[t - 1], 1)", "y ~ normal(x, 0.5)"),
    "observation not gaussian": ("x[t] ~ normal(0.9 * x[t - 1], 1)", "y ~ student_t(4, x, 0.5)"),
    "product of states": ("x[t] ~ normal(0.9 * x[t - 1] * x[t - 1] / (1 + x[t - 1] * x[t - 1]), 1)",
                          "y ~ normal(x, 0.5)"),
}


@pytest.mark.parametrize("case", list(NONLINEAR))
def test_what_is_not_linear_gaussian_stays_sampled(case):
    step, obs = NONLINEAR[case]
    src = LGSSM.replace("for t in 2:T { x[t] ~ normal(0.9 * x[t - 1], 1) }", f"for t in 2:T {{ {step} }}") \
        .replace("y ~ normal(x, 0.5)", obs)
    compiled = load_ppl(src, T=T, y=[0.1] * T).compile()
    assert compiled.latent == ["x"] and not compiled.marginals


def _log_lik(a, m, y):
    """The Kalman log-likelihood of the scalar model m with its coefficient replaced by each of a [G] (a numpy
    filter vectorized over a; `ssm_reference`'s, one a at a time, checks it in `test_quadrature_filter`)."""
    q, c, r = m.Q[0, 0], m.C[0, 0], m.R[0, 0]
    mean, var, ll = np.full_like(a, m.m0[0]), np.full_like(a, m.P0[0, 0]), np.zeros_like(a)
    for t, yt in enumerate(np.asarray(y).reshape(-1)):
        if t:
            mean, var = a * mean, a * a * var + q
        s = c * c * var + r
        ll += -0.5 * ((yt - c * mean) ** 2 / s + np.log(2 * np.pi * s))
        k = var * c / s
        mean, var = mean + k * (yt - c * mean), (1 - k * c) * var
    return ll


def test_quadrature_filter():
    m = issue_model()
    y = _data(m, seed=1)
    a = np.array([-0.5, 0.3, 0.9])
    np.testing.assert_allclose(_log_lik(a, m, y), [LinearGaussianSSM(v, m.Q, m.C, m.R, m.m0, m.P0).kalman(y)["log_lik"]
                                                   for v in a], rtol=1e-12)


def _posterior_of_a(m, y, grid=np.linspace(-0.999, 0.999, 2001)):
    """Mean and sd of a | y (uniform prior) by quadrature of the Kalman likelihood."""
    ll = _log_lik(grid, m, y)
    w = np.exp(ll - ll.max())
    w /= w.sum()
    mean = np.sum(w * grid)
    return mean, math.sqrt(np.sum(w * (grid - mean) ** 2))


def _check_mean(draws, ess, mean, sd):
    assert abs(draws.mean() - mean) < 4 * sd / math.sqrt(ess), (draws.mean(), mean, sd, ess)
    assert abs(draws.std() / sd - 1) < 0.25, (draws.std(), sd)


def _ess(r):
    return float(np.min(r.diagnostics["ess_bulk"]["a"]))


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_nuts_and_pmmh_on_the_exact_marginal(runtime):
    """The static parameter a sampled with the path integrated out: NUTS and PMMH (then exact random-walk
    Metropolis) against quadrature; each run's draws of x come back too (one per draw of a). Pyro: NUTS 180 s
    (the filter's 100 steps are a Python loop under autograd), PMMH 37 s; NumPyro: 22 s and 5 s."""
    m = issue_model()
    y = _data(m, seed=1)
    mean, sd = _posterior_of_a(m, y)
    prog = load_ppl(AR, T=T, y=y.tolist())
    r = prog.sample(method="nuts", chains=2, num_warmup=200, num_samples=300, seed=0, runtime=runtime)
    assert r.samples["x"].shape == (2, 300, T)
    _check_mean(r.samples["a"], _ess(r), mean, sd)
    p = prog.sample(method="pmmh", chains=2, num_warmup=300, num_samples=600, seed=0, runtime=runtime)
    _check_mean(p.samples["a"], _ess(p), mean, sd)


def test_nuts_and_pmmh_on_the_exact_marginal_fast():
    """Its CI part: NUTS on Pyro and PMMH on NumPyro, shorter runs on the first 20 observations (NUTS on NumPyro
    is 20 s of compiling)."""
    m = issue_model()
    y = _data(m, seed=1)[:20]
    mean, sd = _posterior_of_a(m, y)
    prog = load_ppl(AR, T=20, y=y.tolist())
    r = prog.sample(method="nuts", chains=2, num_warmup=100, num_samples=150, seed=0, runtime="pyro")
    assert r.samples["x"].shape == (2, 150, 20)
    _check_mean(r.samples["a"], _ess(r), mean, sd)
    p = prog.sample(method="pmmh", chains=2, num_warmup=150, num_samples=300, seed=0, runtime="numpyro")
    _check_mean(p.samples["a"], _ess(p), mean, sd)


def _log_evidence(m, y):
    """log ∫ p(y | a) p(a) da (a ~ uniform(−1, 1)) by quadrature."""
    grid = np.linspace(-0.9999, 0.9999, 4001)
    ll = _log_lik(grid, m, y)
    return ll.max() + math.log(np.trapezoid(np.exp(ll - ll.max()), grid) / 2.0)


@pytest.mark.parametrize("method, runtime", [("is", "numpyro"), ("is", "pyro")] +
                         [pytest.param("smc", rt, marks=pytest.mark.slow) for rt in RUNTIMES])
def test_log_z_on_the_exact_marginal(method, runtime):
    """IS (4000 particles) and SMC (2000) over a alone, the path integrated out: log Z = log ∫ p(y | a) p(a) da
    against quadrature within 4 se, with a se of that size; the particles carry draws of x. (SMC is slow: pyro
    97 s under load, each of its density evaluations a 40-step Python loop under vmap; NumPyro 26 s, mostly
    compiling.)"""
    m = issue_model()
    y = _data(m, seed=1)[:40]
    exact = _log_evidence(m, y)
    n = {"is": 4000, "smc": 2000}[method]
    r = load_ppl(AR, T=40, y=y.tolist()).sample(method=method, particles=n, seed=0, runtime=runtime)
    assert abs(r.log_z - exact) < 4 * r.log_z_se and r.log_z_se < 0.05, (r.log_z, r.log_z_se, exact)
    assert r.samples["x"].shape == (1, n, 40)
