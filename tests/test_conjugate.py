"""Conjugate pairs integrated out (issue 33 part 4, `compiler/conjugate.py`, `stdlib/conjugate.py`): log Z exact
against closed forms and quadrature computed here, a partly conjugate model against quadrature, the plan, and
the posteriors of θ given y."""
import functools
import math
import operator

import numpy as np
import pytest
import scipy.integrate as si
import scipy.stats as st
from scipy.special import gammaln

import ppl
from ppl.backends.runtime import get_runtime
from ppl.compiler.lower import Evaluator

Y = np.array([0.3, -0.5, 1.2, 0.8])
#: numpyro's compile dominates these checks (5-17 s each): in CI on pyro only; the same code runs on both
PYRO_FAST = [pytest.param("numpyro", marks=pytest.mark.slow), "pyro"]
COUNTS = np.array([2.0, 0.0, 3.0, 1.0, 4.0])
GROUP, EXPOSURE = np.array([0, 1, 1, 0, 1]), np.array([1.0, 2.0, 0.5, 1.5, 1.0])
X = np.array([[1.0, -0.3], [1.0, 0.4], [1.0, 1.1], [1.0, -1.5]])
ALPHA = np.array([1.0, 2.0, 0.5, 1.0, 1.0])


def _quad(f, lo, hi):
    return math.log(si.quad(f, lo, hi, epsabs=0.0, epsrel=1e-12, limit=200)[0])


def _gamma_poisson(a, b, y, e):
    return _quad(lambda lam: st.gamma(a, scale=1 / b).pdf(lam) * np.prod(st.poisson(e * lam).pmf(y)), 0, 60)


def _polya(alpha, y):
    """log p(y) as the product of the sequential predictive probabilities (α_k + c_k) / (A + i)."""
    counts, out = np.zeros_like(alpha), 0.0
    for i, k in enumerate(y.astype(int)):
        out += math.log((alpha[k] + counts[k]) / (alpha.sum() + i))
        counts[k] += 1
    return out


#: name -> (model, exact log Z, its marginal's name in the plan); site names differ, so that the product of all
#: the models is one target whose log Z is the sum
PAIRS = {
    "normal shared": (ppl.model(t1=ppl.Normal(0.5, 2.0), y1=lambda t1: ppl.Normal(t1, 0.7, shape=4)).condition(y1=Y),
                      st.multivariate_normal(np.full(4, 0.5), 0.49 * np.eye(4) + 4.0).logpdf(Y), "normal-normal"),
    "normal elementwise": (ppl.model(t2=ppl.Normal(np.array([0.0, 1.0, -1.0, 0.5]), np.array([1.0, 2.0, 0.5, 1.5])),
                                     y2=lambda t2: ppl.Normal(t2, np.array([0.5, 0.3, 1.0, 0.8]))).condition(y2=Y),
                           st.norm([0.0, 1.0, -1.0, 0.5], np.hypot([1.0, 2.0, 0.5, 1.5], [0.5, 0.3, 1.0, 0.8]))
                           .logpdf(Y).sum(), "normal-normal"),
    "normal regression": (ppl.model(data={"X": X}, beta=ppl.Normal(0.0, 1.0, shape=2),
                                    y3=lambda beta, X: ppl.Normal(X @ beta, 0.5)).condition(y3=Y),
                          st.multivariate_normal(np.zeros(4), X @ X.T + 0.25 * np.eye(4)).logpdf(Y), "normal-normal"),
    "gamma-poisson": (ppl.model(lam=ppl.Gamma(2.0, 1.5), y4=lambda lam: ppl.Poisson(lam, shape=5)).condition(y4=COUNTS),
                      _gamma_poisson(2.0, 1.5, COUNTS, 1.0), "gamma-poisson"),
    "gamma-poisson groups": (ppl.model(data={"E": EXPOSURE[:, None] * np.eye(2)[GROUP]},
                                       rates=ppl.Gamma(np.array([2.0, 1.0]), 1.5),
                                       y5=lambda rates, E: ppl.Poisson(E @ rates)).condition(y5=COUNTS),
                             sum(_gamma_poisson(a, 1.5, COUNTS[GROUP == j], EXPOSURE[GROUP == j])
                                 for j, a in enumerate((2.0, 1.0))), "gamma-poisson"),
    "beta-binomial": (ppl.model(p=ppl.Beta(2.0, 3.0), y6=lambda p: ppl.Binomial(10, p, shape=5)).condition(y6=COUNTS),
                      _quad(lambda p: st.beta(2, 3).pdf(p) * np.prod(st.binom(10, p).pmf(COUNTS)), 0, 1),
                      "beta-binomial"),
    "beta-bernoulli": (ppl.model(q=ppl.Beta(2.0, 3.0), y7=lambda q: ppl.Bernoulli(probs=q, shape=5))
                       .condition(y7=(COUNTS > 1) * 1.0),
                       _quad(lambda p: st.beta(2, 3).pdf(p) * np.prod(st.bernoulli(p).pmf(COUNTS > 1)), 0, 1),
                       "beta-bernoulli"),
    "dirichlet-categorical": (ppl.model(th=ppl.Dirichlet(ALPHA), y8=lambda th: ppl.Categorical(th, shape=5))
                              .condition(y8=COUNTS), _polya(ALPHA, COUNTS), "dirichlet-categorical"),
}


@pytest.mark.parametrize("pair", PAIRS)
def test_found(pair):
    """Each pair is found and named in the plan; nothing is left to sample."""
    model, _, how = PAIRS[pair]
    compiled = ppl.compile(model, method="is")
    assert compiled.dim == 0 and f"integrated out by conjugacy ({how})" in str(compiled)


@pytest.mark.parametrize("method,runtime", [("is", "numpyro"), ("is", "pyro"),
                                            pytest.param("smc", "numpyro", marks=pytest.mark.slow), ("smc", "pyro")])
def test_log_z_exact(method, runtime):
    """Every latent site of every pair integrated out (D = 0): log Z of the product of the pairs' models is the
    sum of their exact evidences, with se 0 (to rounding), for is and smc."""
    target = functools.reduce(operator.mul, (m for m, _, _ in PAIRS.values()))
    exact = sum(e for _, e, _ in PAIRS.values())
    assert len(ppl.compile(target, method="is").marginals) == len(PAIRS)
    r = ppl.sample(target, method=method, runtime=runtime, particles=16, precision="float64")
    assert abs(r.log_z - exact) < 1e-6 and r.log_z_se < 1e-6, (r.log_z, r.log_z_se, exact)


def test_marginalize_false_keeps_theta():
    model, _, _ = PAIRS["gamma-poisson"]
    assert ppl.compile(model, marginalize=False).latent == ["lam"]
    assert "marginalized" not in str(ppl.compile(model, marginalize=False))
    assert "lam of model" in str(ppl.compile(model, method="is"))


def test_not_conjugate_is_kept():
    """A scale that reads θ, a rate that is not linear in θ, and θ read by two sites: nothing integrated out."""
    for model in (ppl.model(theta=ppl.Normal(0.0, 1.0), y=lambda theta: ppl.Normal(theta, ppl.math.exp(theta))),
                  ppl.model(lam=ppl.Gamma(2.0, 1.0), y=lambda lam: ppl.Poisson(lam * lam)),
                  ppl.model(theta=ppl.Normal(0.0, 1.0), z=lambda theta: ppl.Normal(theta, 1.0),
                            y=lambda theta: ppl.Normal(theta, 1.0))):
        model = model.condition(y=np.array(1.0))
        assert ppl.compile(model, method="is").marginals == []


def _sigma_model():
    """σ ~ half-normal(1) (sampled), θ ~ N(0, 1) (integrated out), y [4] ~ N(θ, σ)."""
    return ppl.model(sigma=ppl.HalfNormal(1.0), theta=ppl.Normal(0.0, 1.0),
                     y=lambda theta, sigma: ppl.Normal(theta, sigma, shape=4)).condition(y=Y)


def _sigma_log_z():
    def integrand(s):
        return st.halfnorm.pdf(s) * st.multivariate_normal(np.zeros(4), s * s * np.eye(4) + 1.0).pdf(Y)
    return _quad(integrand, 0, 40)


@pytest.mark.parametrize("method,particles,runtime", [pytest.param("is", 4000, "numpyro", marks=pytest.mark.slow),
                                                     ("is", 4000, "pyro"),
                                                     pytest.param("smc", 400, "numpyro", marks=pytest.mark.slow),
                                                     ("smc", 400, "pyro")])
def test_partly_conjugate(method, particles, runtime):
    """θ out, σ sampled: log Z against quadrature over σ within 4 se."""
    compiled = ppl.compile(_sigma_model(), method="is")
    assert compiled.latent == ["sigma"] and [m.sites for m in compiled.marginals] == [("theta",)]
    r = ppl.sample(_sigma_model(), method=method, runtime=runtime, particles=particles, precision="float64", seed=1)
    exact = _sigma_log_z()
    assert abs(r.log_z - exact) < 4 * r.log_z_se, (r.log_z, r.log_z_se, exact)


def _marginal(model, rt):
    """(the marginal's spec, y, the evaluator, the likelihood term) of a model with one conjugate pair, on `rt`
    (inside its scope)."""
    compiled = ppl.compile(model, method="is")
    ev = Evaluator(compiled, rt)
    term = next(t for t in compiled.terms if t.kind == "likelihood")
    return term.spec(ev.env(term.model, {}, {})), ev.observation(term), ev, term


def _posterior(pair, runtime):
    """θ | y of the pair's marginal, on float64."""
    rt = get_runtime(runtime, precision="float64")
    with rt.scope():
        spec, y, ev, term = _marginal(PAIRS[pair][0], rt)
        post = spec.posterior(rt, y)
        return post.family, {k: rt.to_numpy(v) for k, v in post.params.items()}, spec, rt, ev, term


@pytest.mark.parametrize("runtime", PYRO_FAST)
def test_posteriors(runtime):
    """The posterior parameters against the textbook updates."""
    fam, p, *_ = _posterior("normal shared", runtime)
    prec = 1 / 4.0 + 4 / 0.49
    assert fam == "Normal" and np.allclose([p["loc"], p["scale"]], [(0.5 / 4.0 + Y.sum() / 0.49) / prec,
                                                                     prec ** -0.5], rtol=1e-12)
    fam, p, *_ = _posterior("normal regression", runtime)
    cov = np.linalg.inv(np.eye(2) + X.T @ X / 0.25)
    assert fam == "MultivariateNormal" and np.allclose(p["covariance_matrix"], cov, rtol=1e-10)
    assert np.allclose(p["loc"], cov @ X.T @ Y / 0.25, rtol=1e-10)
    fam, p, *_ = _posterior("gamma-poisson groups", runtime)
    assert fam == "Gamma" and np.allclose(p["concentration"], [2.0 + 2 + 1, 1.0 + 0 + 3 + 4], rtol=1e-12)
    assert np.allclose(p["rate"], [1.5 + 1.0 + 1.5, 1.5 + 2.0 + 0.5 + 1.0], rtol=1e-12)
    fam, p, *_ = _posterior("beta-binomial", runtime)
    assert fam == "Beta" and np.allclose([p["concentration1"], p["concentration0"]], [12.0, 3.0 + 40.0], rtol=1e-12)
    fam, p, *_ = _posterior("dirichlet-categorical", runtime)
    assert fam == "Dirichlet" and np.allclose(p["concentration"], ALPHA + [1, 1, 1, 1, 1], rtol=1e-12)


@pytest.mark.parametrize("runtime", PYRO_FAST)
@pytest.mark.parametrize("pair", ["gamma-poisson groups", "beta-binomial", "dirichlet-categorical"])
def test_exact_draws(pair, runtime):
    """Draws of θ | y from uniforms (the bisected gamma quantile): their means within 4 se of the posterior's."""
    fam, p, spec, rt, ev, term = _posterior(pair, runtime)
    n = 4000
    with rt.scope():
        low = spec.lower(rt)
        y = ev.obs[term.model.name][term.site]
        kind, shape = low.noise(y)
        noise = rt.uniform(rt.key(3), (n,) + tuple(shape))
        draws = rt.to_numpy(rt.vmap(lambda u: low.draw(y, u)[spec.site])(noise))
    d = {"Gamma": lambda: st.gamma(p["concentration"], scale=1 / p["rate"]),
         "Beta": lambda: st.beta(p["concentration1"], p["concentration0"]),
         "Dirichlet": lambda: st.dirichlet(p["concentration"])}[fam]()
    mean, var = d.mean(), d.var()
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * np.sqrt(var / n)), (draws.mean(0), mean)
    assert np.all(np.abs(draws.var(0) / var - 1) < 0.15)


EIGHT_SCHOOLS = """
data J : int<lower=0>
data y : real[J]
data sigma : real<lower=0>[J]
model eight {
  mu ~ normal(0, 5)
  tau ~ half_normal(5)
  theta ~ normal(mu, tau) [J]
  y ~ normal(theta, sigma)
}
target posterior = eight
"""


def test_eight_schools_language():
    """The centered eight schools as written in `.ppl`: θ [J] is integrated out (y_j ~ N(μ, √(τ² + σ_j²))), μ and
    τ sampled; log Z against 2-d quadrature within 4 se, and θ's draws come back."""
    import json
    from pathlib import Path
    data = json.loads((Path(__file__).parents[1] / "examples" / "eight_schools.data.json").read_text())
    target = ppl.load_ppl(EIGHT_SCHOOLS, data=data).target("posterior")
    compiled = ppl.compile(target, method="is")
    assert compiled.latent == ["mu", "tau"] and "theta of model eight: integrated out by conjugacy (normal-normal)" \
        in str(compiled)
    y, s = np.array(data["y"], float), np.array(data["sigma"], float)

    def over_mu(tau):
        v = tau * tau + s * s
        return si.quad(lambda mu: math.exp(st.norm.logpdf(mu, 0, 5) - 0.5 * np.sum((y - mu) ** 2 / v
                                                                                    + np.log(2 * np.pi * v))),
                       -40, 40, epsrel=1e-9)[0] * st.halfnorm.pdf(tau, scale=5)
    exact = math.log(si.quad(over_mu, 0, 60, epsrel=1e-9, limit=200)[0])
    r = ppl.sample(target, method="is", runtime="pyro", particles=4000, precision="float64")
    assert abs(r.log_z - exact) < 4 * r.log_z_se, (r.log_z, r.log_z_se, exact)
    assert r.samples["theta"].shape == (1, 4000, 8)


@pytest.mark.parametrize("runtime", PYRO_FAST)
def test_regression_evidence_in_float32(runtime):
    """A regression on covariates of scale 200, as sblrc-blr's (n = 100, prior sd 10, σ = 1): its float32
    evidence within 0.01 nats of the exact one (as rᵀV⁻¹r − bᵀΛ⁻¹b, a difference of two numbers near 10⁹, it was
    off by 56 (numpyro) and 72 (pyro) nats)."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 200.0, size=(100, 5))
    y = x @ rng.normal(0.0, 10.0, size=5) + rng.normal(size=100)
    model = ppl.model(data={"X": x}, beta=ppl.Normal(0.0, 10.0, shape=5),
                      y9=lambda beta, X: ppl.Normal(X @ beta, 1.0)).condition(y9=y)
    exact = st.multivariate_normal(np.zeros(100), 100.0 * x @ x.T + np.eye(100), allow_singular=True).logpdf(y)
    rt = get_runtime(runtime, precision="float32")
    with rt.scope():
        spec, y9, _, _ = _marginal(model, rt)
        got = float(rt.to_numpy(spec.log_evidence(rt, y9)))
    assert abs(got - exact) < 0.01, (got, exact)
