"""ppl.markov: latent state paths x[0:T] with x[0] ~ init, x[t] ~ step(x[t-1], t), against closed forms."""
import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm

import ppl
from ppl.backends.runtime import get_runtime
from ppl.errors import NameResolutionError, PPLError, ShapeError, SupportError, ValueRangeError

T, PHI, Q, R = 10, 0.8, 0.5, 1.0


def ar1(length=T, data=None):
    """x[0] ~ N(0, 1), x[t] ~ N(0.8 x[t-1], 0.5), y[t] ~ N(x[t], 1)."""
    return ppl.model(data=data, x=ppl.markov(ppl.Normal(0., 1.), lambda prev: ppl.Normal(PHI * prev, Q), length),
                     y=lambda x: ppl.Normal(x, R))


def ar1_exact(y):
    """log p(y) and E[x | y]: x = B e with e ~ N(0, diag(1, Q², ...)), so x ~ N(0, K), y ~ N(0, K + R² I)."""
    b = np.linalg.inv(np.eye(T) - PHI * np.eye(T, k=-1))
    k = b @ np.diag([1.0] + [Q ** 2] * (T - 1)) @ b.T
    c = k + R ** 2 * np.eye(T)
    return multivariate_normal(np.zeros(T), c).logpdf(y), k @ np.linalg.solve(c, y)


Y = np.array([0.9, 1.6, 0.4, -0.3, 0.8, 1.9, 1.2, -0.5, -1.1, 0.2], dtype=np.float32)


def chain_log_prob(model, runtime, path, env=None):
    rt = get_runtime(runtime)
    d = model.sites["x"](env or {})
    assert isinstance(d, ppl.MarkovChain)
    return float(rt.to_numpy(d.lower(rt).log_prob(rt.asarray(path))))


def test_spec_and_parents():
    m = ppl.model(data={"T": 5}, mu=ppl.Normal(0., 1.), phi=ppl.Uniform(-1., 1.), sigma=ppl.HalfNormal(1.),
                  x=ppl.markov(lambda mu, phi, sigma: ppl.Normal(mu, sigma / ppl.math.sqrt(1 - phi ** 2)),
                               lambda prev, t, mu, phi, sigma: ppl.Normal(mu + phi * (prev - mu), sigma), "T"))
    site = m.sites["x"]
    assert site.role == "latent" and site.parents == ("mu", "phi", "sigma", "T")
    spec = site.markov
    assert isinstance(spec, ppl.MarkovSpec)
    assert (spec.init_parents, spec.step_parents, spec.reads_t, spec.length) == \
        (("mu", "phi", "sigma"), ("mu", "phi", "sigma"), True, "T")
    assert spec.init(mu=0., phi=0.6, sigma=0.8).params["scale"] == pytest.approx(1.0)
    assert spec.step(prev=1.0, t=3, mu=0., phi=0.5, sigma=1.).params["loc"] == 0.5
    assert ppl.compile(m).layout["x"]["shape"] == (5,)


def test_log_prob_is_the_sum_over_transitions(runtime):
    path = np.random.default_rng(0).normal(size=T).astype(np.float32)
    want = norm(0, 1).logpdf(path[0]) + norm(PHI * path[:-1], Q).logpdf(path[1:]).sum()
    np.testing.assert_allclose(chain_log_prob(ar1(), runtime, path), want, rtol=1e-5)
    by_name = ar1("T", data={"T": T})
    np.testing.assert_allclose(chain_log_prob(by_name, runtime, path, {"T": T}), want, rtol=1e-5)


def test_step_reads_t(runtime):
    # x[0] ~ N(0, 0.1), x[t] ~ N(x[t-1] + t, 0.1): E x[t] = t (t + 1) / 2, t 0-based
    m = ppl.model(x=ppl.markov(ppl.Normal(0., 0.1), lambda prev, t: ppl.Normal(prev + t, 0.1), 6))
    path = np.cumsum(np.arange(6.0)).astype(np.float32) + 0.05
    want = norm(0, 0.1).logpdf(path[0]) + norm(path[:-1] + np.arange(1, 6), 0.1).logpdf(path[1:]).sum()
    np.testing.assert_allclose(chain_log_prob(m, runtime, path), want, rtol=1e-5)
    prog = ppl.compile(m).lower(runtime)
    x = prog.to_constrained(prog.sample_reference(prog.rt.key(0), 400))["x"]
    assert x.shape == (400, 6)
    np.testing.assert_allclose(x.mean(0), np.cumsum(np.arange(6.0)), atol=0.05)


def test_vector_state(runtime):
    a = np.array([[0.9, 0.1, 0, 0], [0, 0.8, 0.1, 0], [0, 0, 0.7, 0.1], [0.1, 0, 0, 0.6]], np.float32)
    q = (0.2 * np.eye(4) + 0.05).astype(np.float32)
    m = ppl.model(data={"A": a, "Q": q},
                  x=ppl.markov(ppl.Normal(0., 1., shape=(4,)), lambda prev, A, Q: ppl.MultivariateNormal(prev @ A.T, Q),
                               5))
    compiled = ppl.compile(m)
    assert compiled.layout["x"]["shape"] == (5, 4) and compiled.dim == 20
    path = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    want = norm(0, 1).logpdf(path[0]).sum() + sum(multivariate_normal(a @ path[t - 1], q).logpdf(path[t])
                                                  for t in range(1, 5))
    rt = get_runtime(runtime)
    d = m.sites["x"]({"A": rt.asarray(a), "Q": rt.asarray(q)}).lower(rt)
    assert tuple(d.event_shape) == (5, 4)
    np.testing.assert_allclose(float(rt.to_numpy(d.log_prob(rt.asarray(path)))), want, rtol=1e-5)
    prog = compiled.lower(runtime)
    x = prog.to_constrained(prog.sample_reference(prog.rt.key(0), 7))["x"]
    assert x.shape == (7, 5, 4) and np.all(np.isfinite(x))


#: sd of the SMC log Z error over seeds 0-9 (500 particles, one run; 0.06 on numpyro, 0.08 on pyro): the
#: reported one-run (Eve) standard error is 2-5 times smaller on this target, so the tolerance is sized from this
SMC_LOG_Z_SD = 0.08


def test_smc_and_is_log_z(runtime):
    log_z, _ = ar1_exact(Y)
    target = ar1().condition(y=Y)
    r = ppl.sample(target, method="smc", runtime=runtime, particles=500, seed=0)
    assert abs(r.log_z - log_z) < 4 * SMC_LOG_Z_SD, (r.log_z, log_z)
    r = ppl.sample(target, method="is", runtime=runtime, particles=20000, seed=0)
    assert abs(r.log_z - log_z) < 4 * r.log_z_se, (r.log_z, log_z, r.log_z_se)


def test_nuts_posterior_mean(runtime):
    _, mean = ar1_exact(Y)
    r = ppl.sample(ar1().condition(y=Y), method="nuts", runtime=runtime, num_warmup=300, num_samples=500, chains=1,
                   seed=0)
    s = r.summary()
    assert r.samples["x"].shape == (1, 500, T)
    z = (s["mean"].to_numpy() - mean) / s["mcse_mean"].to_numpy()
    assert np.all(np.abs(z) < 4), z


def _compile_error(cls, match, **sites):
    with pytest.raises(cls, match=match):
        ppl.compile(ppl.model(data={"T": 2.5, "N": 4}, **sites))


@pytest.mark.parametrize("length", [0, -3, 2.5, True, None])
def test_bad_length(length):
    with pytest.raises(ValueRangeError, match="site 'x' \\(ppl.markov\\): length must be a positive int"):
        ppl.model(x=ppl.markov(ppl.Normal(0., 1.), lambda prev: ppl.Normal(prev, 1.), length))


def test_bad_input_names_the_site():
    init, step = ppl.Normal(0., 1.), (lambda prev: ppl.Normal(prev, 1.))
    with pytest.raises(NameResolutionError, match="site 'x' reads 'M'"):
        ppl.model(x=ppl.markov(init, step, "M"))
    _compile_error(ValueRangeError, "site 'x' \\(ppl.markov\\): its length 'T' must be a positive int",
                   x=ppl.markov(init, step, "T"))
    with pytest.raises(NameResolutionError, match="site 'x' \\(ppl.markov\\): step must read the previous state"):
        ppl.model(x=ppl.markov(init, lambda x: ppl.Normal(0., 1.), 4))
    _compile_error(PPLError, "site 'x' \\(ppl.markov\\): init must return the distribution of one state",
                   x=ppl.markov(lambda: 0.0, step, 4))
    _compile_error(PPLError, "site 'x' \\(ppl.markov\\): step must return the distribution of one state",
                   x=ppl.markov(init, lambda prev: prev, "N"))
    _compile_error(ShapeError, "site 'x' \\(ppl.markov\\): step returns a state of shape \\(2,\\), but init's has "
                               "shape \\(\\)", x=ppl.markov(init, lambda prev: ppl.Normal(prev, 1., shape=(2,)), 4))
    _compile_error(SupportError, "site 'x' \\(ppl.markov\\): init returned Poisson",
                   x=ppl.markov(ppl.Poisson(3.), step, 4))
    _compile_error(SupportError, "site 'x' \\(ppl.markov\\): init has support Positive",
                   x=ppl.markov(ppl.HalfNormal(1.), step, 4))
    _compile_error(SupportError, "site 'x' \\(ppl.markov\\): step has support Positive",
                   x=ppl.markov(init, lambda prev: ppl.LogNormal(prev, 1.), 4))
