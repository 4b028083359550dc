"""The constructs real Stan programs need (issue 37): functions, conditionals, truncation, observed expressions,
priors on parts of a vector, `keep`, `ode(...)`: exact log densities on both runtimes, and located errors."""
import warnings

import numpy as np
import pytest
from scipy.stats import lognorm, norm, truncnorm

from ppl import load_ppl
from ppl.errors import SourceError
from ppl.lang.lower import JacobianWarning

RUNTIMES = ["numpyro", "pyro"]


def log_density_at(prog, name, runtime, n=7, seed=0):
    """(constrained values, log γ) at n points: the compiled target's terms summed, no Jacobian."""
    compiled = prog.compile(name)
    p = compiled.lower(runtime)
    z = np.random.default_rng(seed).normal(size=(n, p.dim)).astype(np.float32)
    values = p.to_constrained(p.rt.asarray(z))
    out = []
    for i in range(n):
        vals, dets, _, dists, _ = p.ev.latent_values(p.rt.asarray(z[i]), p.layout)
        terms, _ = p.ev.term_values(vals, dets, dists)
        out.append(sum(t.coef * float(p.rt.to_numpy(p.rt.asarray(v))) for t, v in zip(compiled.terms, terms)))
    return values, np.array(out)


FUNCTIONS = """
function f(a : real, v : vector) {
  s = 0.0
  for i in 1:size(v) { s += v[i] * a }
  return s > 0 ? s : -s
}
model m {
  a ~ normal(0, 1)
  v ~ normal(0, 1) [3]
  if a > 0 { factor -f(a, v) } else if a > -0.5 { factor 0.0 } else { factor f(a, v) / 2 }
  c = a > 1 ? a : 0.0
  factor c
  keep c
}
"""


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_functions_and_conditionals_on_parameters_select_their_branch(runtime):
    values, got = log_density_at(load_ppl(FUNCTIONS), "m", runtime)
    a, v = values["a"], values["v"]
    g = np.abs(a * v.sum(1))
    want = norm.logpdf(a) + norm.logpdf(v).sum(1) + np.where(a > 0, -g, np.where(a > -0.5, 0.0, g / 2)) + \
        np.where(a > 1, a, 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(values["c"], np.where(a > 1, a, 0.0), rtol=1e-6)


PRIOR_ONLY = """
data y : real[3]
data prior_only : int
model m {
  mu ~ normal(0, 1)
  if prior_only == 1 { } else { y ~ normal(mu, 1) [3] }
}
"""


def test_a_condition_on_data_is_resolved_at_load():
    for flag, observed in ((0, {"y"}), (1, set())):
        model = load_ppl(PRIOR_ONLY, y=[0.1, 0.2, 0.3], prior_only=flag).models["m"]
        assert set(model.observed) == observed and set(model.sites) == {"mu"} | observed


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_truncation_latent_declared_and_observed(runtime):
    src = """
    data y : real
    model m {
      x : real<lower=0> ~ normal(1, 0.5)
      z ~ normal(0, 1) T[-1, 2]
      y ~ normal(x, 1) T[0, ]
    }"""
    values, got = log_density_at(load_ppl(src, y=0.3), "m", runtime)
    x, z = values["x"], values["z"]
    assert np.all(x > 0) and np.all((z > -1) & (z < 2))
    want = truncnorm(-2, np.inf, 1, 0.5).logpdf(x) + truncnorm(-1, 2).logpdf(z) + norm(x, 1).logpdf(0.3) - \
        norm.logsf(0, x, 1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_observed_expression_of_data_is_an_observation(runtime):
    y = np.array([1.5, 2.0, 0.7, 3.1])
    src = "data N : int\ndata y : real[N]\nmodel m {\n  mu ~ normal(0, 1)\n  log(y) ~ normal(mu, 1) [N]\n}"
    prog = load_ppl(src, N=4, y=y.tolist())
    assert set(prog.models["m"].observed) == {"log(y)"}
    r = prog.sample("m", method="smc", runtime=runtime, particles=2000, seed=0)
    ly = np.log(y)   # mu ~ N(0, 1), log y_i ~ N(mu, 1): log y ~ N(0, I + 11ᵀ)
    exact = norm.logpdf(ly, 0, 1).sum() + 0.5 * np.log(1 / 5) + 0.5 * ly.sum() ** 2 / 5
    assert abs(r.log_z - exact) < 4 * r.log_z_se, (r.log_z, r.log_z_se, exact)


def test_an_observed_expression_of_parameters_warns_about_the_jacobian():
    with pytest.warns(JacobianWarning, match="no Jacobian term"):
        prog = load_ppl("model m {\n  mu ~ normal(0, 1)\n  log(mu + 3) ~ normal(1, 1)\n}")
    values, got = log_density_at(prog, "m", "numpyro")
    mu = values["mu"]
    np.testing.assert_allclose(got, norm.logpdf(mu) + norm.logpdf(np.log(mu + 3), 1, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_priors_on_parts_of_a_vector(runtime):
    src = """model m {
      theta : vector[4]
      theta[1:2] ~ normal(1, 0.5) [2]
      theta[[3, 4]] ~ normal(0.05, 0.05) [2]
      s : real<lower=0> ~ half_normal(1)
    }"""
    values, got = log_density_at(load_ppl(src), "m", runtime)
    t = values["theta"]
    want = norm.logpdf(t[:, :2], 1, 0.5).sum(1) + norm.logpdf(t[:, 2:], 0.05, 0.05).sum(1) + \
        np.log(2) + norm.logpdf(values["s"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_keep_chooses_the_saved_values():
    src = """model m {
      a ~ normal(0, 1)
      b = 2 * a
      local = exp(b)
      total = b + local
      keep b, total
    }"""
    r = load_ppl(src).sample("m", method="is", particles=50, seed=0)
    assert set(r.samples) == {"a", "b", "total"}
    np.testing.assert_allclose(r.samples["total"], 2 * r.samples["a"] + np.exp(2 * r.samples["a"]), rtol=1e-5)


ODE = """
data T : int
data ts : real[T]
data y : real[T]
function decay(t : real, u : vector, k : real) {
  return -k * u
}
model m {
  k ~ lognormal(0, 0.5)
  sol = ode(decay, [2.0], 0.0, ts, k, method = "dopri5", rtol = 1e-6, atol = 1e-6)
  y ~ normal(sol[:, 1], 0.1)
}
"""


@pytest.mark.parametrize("runtime", ["pyro", pytest.param("numpyro", marks=pytest.mark.slow)])
def test_ode_with_a_program_function_against_quadrature(runtime):
    ts = np.linspace(0.5, 4, 6)
    y = 2 * np.exp(-0.7 * ts) + np.random.default_rng(0).normal(0, 0.1, 6)
    r = load_ppl(ODE, T=6, ts=ts.tolist(), y=y.tolist()).sample("m", method="is", runtime=runtime,
                                                                   particles=4000, seed=0)
    k = np.linspace(1e-3, 4, 40001)
    lp = lognorm(0.5).logpdf(k) + norm(2 * np.exp(-k[:, None] * ts), 0.1).logpdf(y).sum(1)
    w = np.exp(lp - lp.max())
    exact = lp.max() + np.log(np.trapezoid(w, k))
    assert abs(r.log_z - exact) < 4 * r.log_z_se, (r.log_z, r.log_z_se, exact)


@pytest.mark.parametrize("src, message, line, col", [
    ("function f(a : real) { return g(a) }\nfunction g(a : real) { return f(a) + 1 }\nmodel m { x ~ normal(0, 1) }",
     "recursion: f -> g -> f", 2, 31),
    ("function f(a : real) { return f(a) }\nmodel m { x ~ normal(0, 1) }", "recursion: f -> f", 1, 31),
    ("data y : real\nfunction f(a : real) { return a + y }\nmodel m { x ~ normal(0, 1) }",
     "f reads 'y', which is not one of its parameters", 2, 35),
    ("function f(a : real, v : vector) { return a + sum(v) }\nmodel m { x ~ normal(0, 1)\n factor f(x, x) }",
     "argument v of f is declared vector, got a number", 3, 14),
    ("function f(a : real) { if a > 0 { return a }\n return -a }\nmodel m { x ~ normal(0, 1) }",
     "return is only the last statement of a function", 1, 35),
    ("function f(a : real) { a ~ normal(0, 1)\n return a }\nmodel m { x ~ normal(0, 1) }", "a function is pure", 1, 24),
    ("function exp(a : real) { return a }\nmodel m { x ~ normal(0, 1) }", "'exp' is a built-in function", 1, 1),
    ("function f(a : real) { return a }\nfunction f(b : real) { return b }", "'f' is already defined", 2, 1),
    ("model m { x ~ normal(0, 1)\n if x > 0 { z ~ normal(0, 1) } }", "'z' is a site drawn under a condition", 2, 13),
    ("model m { x ~ normal(0, 1)\n log(x) = 3 }", "cannot assign to an expression", 2, 2),
    ("model m { x ~ normal(0, 1)\n return x }", "a model has none", 2, 2),
    ("model m { x : vector[2, 3] ~ normal(0, 1) }", "vector takes 1 dimension(s)", 1, 15),
    ("model m { x ~ normal(0, 1)\n keep x }", "'x' is a latent site; latent sites are always saved", 2, 7),
    ("model m { x ~ normal(0, 1)\n keep xx }", "keep names an unknown value 'xx'", 2, 7),
    ("model m { x ~ normal(0, 1)\n for i in 1:2 { keep x } }", "keep is a statement of a model", 2, 17),
    ("model m { x ~ normal(0, 1)\n y = ode(x, [1.0], 0.0, [1.0]) }", "ode takes the right-hand side's function first",
     2, 10),
    ("model m { x ~ normal(0, 1) T[2, 1] }", "lower = 2 must be below upper = 1", 1, 15),
])
def test_errors_are_located(src, message, line, col):
    with pytest.raises(SourceError) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_ppl(src, y=1.0).sample("m", method="nuts", particles=10, num_warmup=5, chains=1, seed=0)
    assert message in e.value.message and (e.value.line, e.value.column) == (line, col), str(e.value)


def test_an_error_inside_a_function_names_the_call():
    src = "function f(v : vector) { w = v[4]\n  return w }\nmodel m { x ~ normal(0, 1) [3]\n factor f(x) }"
    with pytest.raises(SourceError) as e:
        load_ppl(src).sample("m", method="is", particles=10, seed=0)
    assert (e.value.line, e.value.column) == (1, 32) and "index 4 is out of range" in e.value.message
    assert "in f, called at line 4: factor f(x)" in e.value.hint
