"""Model statements in any order: the front end orders them by their dependencies (ppl.lang.names)."""
import numpy as np
import pytest

import ppl
from ppl import load_ppl
from ppl.backends import get_runtime
from ppl.errors import SourceError
from test_sequential_language import SV   # the state model, in source order

EIGHT_DATA = {"J": 8, "y": [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
              "sigma": [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]}
HEAD = "data J : int<lower=0>\ndata y : real[J]\ndata sigma : real<lower=0>[J]\n"
EIGHT = HEAD + """model m {
  mu ~ normal(0, 5)
  tau ~ half_cauchy(5)
  theta_raw ~ normal(0, 1) [J]
  theta = mu + tau * theta_raw
  y ~ normal(theta, sigma)
}"""
EIGHT_SHUFFLED = HEAD + """model m {
  y ~ normal(theta, sigma)
  theta = mu + tau * theta_raw
  mu ~ normal(0, 5)
  tau ~ half_cauchy(5)
  theta_raw ~ normal(0, 1) [J]
}"""
EIGHT_REVERSED = HEAD + """model m {
  y ~ normal(theta, sigma)
  theta = mu + tau * theta_raw
  theta_raw ~ normal(0, 1) [J]
  tau ~ half_cauchy(5)
  mu ~ normal(0, 5)
}"""

SV_SHUFFLED = """data T : int
data y : real[T]
model sv {
  y ~ normal(0, exp(x / 2))
  x : real[T]
  x[1] ~ normal(mu, sigma / sqrt(1 - phi ^ 2))
  for t in 2:T { x[t] ~ normal(mu + phi * (x[t - 1] - mu), sigma) }
  mu ~ normal(0, 1); phi ~ uniform(-1, 1); sigma ~ half_normal(1)
}"""
SV_DATA = {"T": 6, "y": [0.3, -0.8, 1.1, 0.2, -0.4, 0.9]}


@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
@pytest.mark.parametrize("ordered, shuffled, data, name", [(EIGHT, EIGHT_SHUFFLED, EIGHT_DATA, "m"),
                                                          (SV, SV_SHUFFLED, SV_DATA, "sv")])
def test_forward_references_give_the_same_numbers(runtime, ordered, shuffled, data, name):
    """Uses before definitions move after them; independent statements keep their order, so the layout and the
    draws of one seed are those of the program written in order."""
    a, b = (load_ppl(text, data=data).sample(name, method="is", runtime=runtime, particles=2000, seed=3)
            for text in (ordered, shuffled))
    assert list(a.samples) == list(b.samples)
    assert a.log_z == b.log_z
    for k in a.samples:
        np.testing.assert_array_equal(a.samples[k], b.samples[k])


def test_reversed_program_has_the_same_log_z():
    """Reversed independent priors change the layout (and so the draws), not the target: log Z within 4 se."""
    a, b = (load_ppl(text, data=EIGHT_DATA).sample("m", method="is", particles=20000, seed=5)
            for text in (EIGHT, EIGHT_REVERSED))
    assert abs(a.log_z - b.log_z) < 4 * np.hypot(a.log_z_se, b.log_z_se)


def test_forward_reference_and_loops_keep_their_order():
    src = """data T : int
model m {
  y_mu ~ normal(mu, 1)
  s = total + 1
  acc = zeros(T)
  for t in 2:T { acc[t] = acc[t - 1] + mu }
  total = sum(acc)
  mu ~ normal(0, 1)
  keep acc, s
}"""
    prog = load_ppl(src, T=4)
    assert list(prog.models["m"].sites)[:2] == ["mu", "y_mu"]
    r = prog.sample("m", method="is", particles=50, seed=0)
    mu, acc = r.samples["mu"][0], r.samples["acc"][0]
    np.testing.assert_allclose(acc, mu[:, None] * np.arange(4), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.samples["s"][0], 6 * mu + 1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("src, message, line, col", [
    ("model m {\n  a ~ normal(b, 1)\n  b ~ normal(a, 1)\n}", "cyclic dependency in model m: a -> b -> a", 2, 14),
    ("model m {\n  a ~ normal(0, 1)\n  c = b + a\n  b = c * 2\n}", "cyclic dependency in model m: ", 3, 7),
    ("model m {\n  y_mu ~ normal(mu, 1)\n  nu ~ normal(0, 1)\n}", "unknown name 'mu' in model m", 2, 17),
])
def test_cycles_and_unknown_names_are_located(src, message, line, col):
    with pytest.raises(SourceError) as e:
        load_ppl(src, filename="f.ppl")
    assert message in e.value.message, e.value.render()
    assert (e.value.line, e.value.column) == (line, col), e.value.render()


def test_unknown_name_suggests_a_name_defined_later():
    with pytest.raises(SourceError) as e:
        load_ppl("model m {\n  y ~ normal(muu, 1)\n  mu ~ normal(0, 1)\n}")
    assert e.value.hint == "did you mean 'mu'?"


# ---- half_student_t(df, scale): |StudentT(df, 0, scale)| on both runtimes ------------------------------------
@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
def test_half_student_t_density_is_twice_the_t_density(runtime):
    from scipy import stats
    rt = get_runtime(runtime)
    x = np.array([0.01, 0.5, 1.0, 3.0, 40.0], np.float32)
    d = ppl.HalfStudentT(np.float32(3.5), np.float32(2.0), shape=(5,)).lower(rt)
    np.testing.assert_allclose(rt.to_numpy(d.log_prob(rt.asarray(x))),
                               np.log(2) + stats.t(3.5, 0, 2.0).logpdf(x), rtol=1e-5)


@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
def test_half_student_t_posterior_matches_quadrature(runtime):
    """s ~ half_student_t(4, 2), y ~ normal(0, s) for y = (1.5, -3): log Z and E[s | y] by quadrature."""
    from scipy import integrate, stats
    y = np.array([1.5, -3.0])
    joint = lambda s: 2 * stats.t(4, 0, 2).pdf(s) * np.prod(stats.norm(0, s).pdf(y))  # noqa: E731
    z = integrate.quad(joint, 0, np.inf)[0]
    mean = integrate.quad(lambda s: s * joint(s), 0, np.inf)[0] / z
    prog = load_ppl("data y : real[2]\nmodel m {\n  s ~ half_student_t(4, 2)\n  y ~ normal(0, s) [2]\n}", y=list(y))
    r = prog.sample("m", method="is", runtime=runtime, particles=20000, seed=0)
    assert abs(r.log_z - np.log(z)) < 4 * r.log_z_se
    s, w = r.samples["s"][0], r.weights[0]
    se = np.sqrt(np.sum(w ** 2 * (s - mean) ** 2))
    assert abs(np.sum(w * s) - mean) < 4 * se


# ---- values of data alone are computed once, as data ----------------------------------------------------------
DATA_ONLY = HEAD + """model m {
  y ~ normal(mu, sigma)
  mu ~ normal(ybar, 5 * sd_y)
  tau ~ half_cauchy(sd_y)
  w = zeros(J)
  for j in 1:J { w[j] = 1 / square(sigma[j]) }
  ybar = sum(w * y) / sum(w)
  sd_y = sd(y)
  twice = 2 * mu
  keep twice
}"""


@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
def test_data_only_values_are_data_not_draws(runtime):
    y, s = np.array(EIGHT_DATA["y"]), np.array(EIGHT_DATA["sigma"])
    ybar, sd_y = float(np.sum(y / s ** 2) / np.sum(1 / s ** 2)), float(np.std(y, ddof=1))
    literal = HEAD + f"model m {{\n  mu ~ normal({ybar!r}, {5 * sd_y!r})\n  tau ~ half_cauchy({sd_y!r})\n" \
                     f"  twice = 2 * mu\n  keep twice\n  y ~ normal(mu, sigma)\n}}"
    prog = load_ppl(DATA_ONLY, data=EIGHT_DATA)
    model = prog.models["m"]
    assert set(model.sites) == {"mu", "tau", "twice", "y"}
    np.testing.assert_allclose([model.data["ybar"], model.data["sd_y"]], [ybar, sd_y], rtol=1e-6)
    a, b = (p.sample("m", method="is", runtime=runtime, particles=2000, seed=1)
            for p in (prog, load_ppl(literal, data=EIGHT_DATA)))
    assert set(a.samples) == {"mu", "tau", "twice"} and "sd_y" not in a.summary().index
    np.testing.assert_allclose(a.log_z, b.log_z, rtol=1e-5)
    np.testing.assert_allclose(a.samples["mu"], b.samples["mu"], rtol=1e-5)


def test_a_value_updated_from_a_parameter_is_not_data():
    prog = load_ppl("model m {\n  a ~ normal(0, 1)\n  x = zeros(2)\n  x[1] = a\n  c = 3\n  d = c * x\n}")
    assert set(prog.models["m"].sites) == {"a", "x", "d"} and prog.models["m"].data["c"] == 3


def test_loop_locals_are_not_draws_and_data_values_bound_loops():
    """`d` is local to one step of the loop (not a site); `n = T - 1` is data, read by the loop bound and by a
    deterministic site (a parent named `n` once filled the site function's own default argument)."""
    y = np.array([0.1, 0.5, 0.2, 0.9])
    src = """data T : int
data y : real[T]
model m {
  n = T - 1
  mu ~ normal(0, 1)
  acc = 0.0
  for t in 1:n {
    d = y[t + 1] - y[t]
    acc += square(d - mu)
  }
  factor -acc
  keep acc
}"""
    r = load_ppl(src, T=4, y=list(y)).sample("m", method="is", particles=100, seed=0)
    assert set(r.samples) == {"mu", "acc"}
    mu = r.samples["mu"][0]
    np.testing.assert_allclose(r.samples["acc"][0], ((np.diff(y)[None] - mu[:, None]) ** 2).sum(1), rtol=1e-4)


# ---- the summary is labelled 1-based, as the language indexes ---------------------------------------------------
def test_summary_labels_are_one_based():
    prog = load_ppl("model m {\n  theta ~ normal(0, 1) [2, 2]\n  s ~ half_normal(1)\n}")
    r = prog.sample("m", method="nuts", chains=2, num_warmup=100, num_samples=100, seed=0)
    table = r.summary()
    assert sorted(table.index) == ["s", "theta[1, 1]", "theta[1, 2]", "theta[2, 1]", "theta[2, 2]"]
    assert np.isfinite(table["r_hat"]).all() and np.isfinite(table["ess_bulk"]).all()
    np.testing.assert_allclose(table.loc["theta[2, 1]", "mean"], r.samples["theta"][..., 1, 0].mean(), rtol=1e-6)


def test_axis_counts_from_one_and_axis_zero_is_located():
    src = "data A : real[2, 3]\nmodel m {\n  mu ~ normal(0, 1)\n  r = sum(A, axis = 2)\n  c = sum(A, axis = 1)\n" \
          "  l = sum(A, axis = -1)\n  factor -square(mu - r[1])\n}"
    data = {"A": [[1, 2, 3], [4, 5, 6]]}
    m = load_ppl(src, **data).models["m"]
    np.testing.assert_allclose(m.data["r"], [6, 15])
    np.testing.assert_allclose(m.data["c"], [5, 7, 9])
    np.testing.assert_allclose(m.data["l"], [6, 15])
    with pytest.raises(SourceError) as e:
        load_ppl(src.replace("axis = 2", "axis = 0"), **data)
    assert "axes count from 1" in e.value.message and (e.value.line, e.value.column) == (4, 14)
