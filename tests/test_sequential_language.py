"""Latent states in `.ppl` loops: x : real[T], x[1] ~ ..., for t in 2:T { x[t] ~ ... } is a `ppl.markov` site."""
import json
import os
import runpy

import numpy as np
import pytest

import ppl
from ppl.errors import SourceError
from ppl import load_ppl

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
RUNTIMES = ["numpyro", "pyro"]

SV = """
data T : int
data y : real[T]
model sv {
  mu ~ normal(0, 1); phi ~ uniform(-1, 1); sigma ~ half_normal(1)
  x : real[T]
  x[1] ~ normal(mu, sigma / sqrt(1 - phi ^ 2))
  for t in 2:T { x[t] ~ normal(mu + phi * (x[t - 1] - mu), sigma) }
  y ~ normal(0, exp(x / 2))
}
"""


def sv_data():
    with open(os.path.join(EXAMPLES, "sv.data.json")) as f:
        return json.load(f)


def sv_python(data):
    return ppl.model(
        name="sv", data={"T": data["T"]},
        mu=ppl.Normal(0., 1.), phi=ppl.Uniform(-1., 1.), sigma=ppl.HalfNormal(1.),
        x=ppl.markov(lambda mu, phi, sigma: ppl.Normal(mu, sigma / ppl.math.sqrt(1 - phi ** 2)),
                     lambda prev, mu, phi, sigma: ppl.Normal(mu + phi * (prev - mu), sigma), "T"),
        y=lambda x: ppl.Normal(0., ppl.math.exp(x / 2)),
    ).condition(y=np.asarray(data["y"], np.float32))


def log_density(compiled, runtime, z):
    prog = compiled.lower(runtime)
    ref, rest = prog.log_densities(prog.rt.asarray(z))
    return prog.rt.to_numpy(ref) + prog.rt.to_numpy(rest)


def assert_same_density(a, b, seed=0, scale=0.5):
    assert a.layout == b.layout
    z = (np.random.default_rng(seed).normal(size=(4, a.dim)) * scale).astype(np.float32)
    for rt in RUNTIMES:
        np.testing.assert_allclose(log_density(a, rt, z), log_density(b, rt, z), rtol=1e-5)


def test_sv_is_the_python_markov_site():
    data = sv_data()
    prog = load_ppl(SV, data=data)
    site = prog.models["sv"].sites["x"]
    assert site.role == "latent" and site.markov.length == "T" and not site.markov.reads_t
    assert set(site.markov.init_parents) == set(site.markov.step_parents) == {"mu", "phi", "sigma"}
    a, b = prog.compile(), ppl.compile(sv_python(data))
    assert str(a) == str(b) and a.layout["x"]["shape"] == (200,)
    assert_same_density(a, b)


def test_observations_in_a_loop_read_the_state():
    looped = SV.replace("y ~ normal(0, exp(x / 2))", "for t in 1:T { y[t] ~ normal(0, exp(x[t] / 2)) }")
    data = {"T": 12, "y": sv_data()["y"][:12]}
    assert_same_density(load_ppl(looped, data=data).compile(), load_ppl(SV, data=data).compile())


def test_vector_state_local_values_and_t():
    src = """
    data T : int
    data A : real[4, 4]
    data Q : real[4, 4]
    data y : real[T, 4]
    model lg {
      x : real[T, 4]
      x[1] ~ normal(0, 1)
      for t in 2:T {
        m = A @ x[t - 1] + 0.1 * t
        x[t] ~ multivariate_normal(m, Q)
      }
      y ~ normal(x, 1)
    }
    """
    rng = np.random.default_rng(2)
    a = (0.5 * np.eye(4) + 0.1 * rng.normal(size=(4, 4))).astype(np.float32)
    q = (0.3 * np.eye(4) + 0.05).astype(np.float32)
    y = rng.normal(size=(6, 4)).astype(np.float32)
    prog = load_ppl(src, T=6, A=a.tolist(), Q=q.tolist(), y=y.tolist())
    assert prog.models["lg"].sites["x"].markov.reads_t
    # ppl.markov's t is 0-based: the language's t is t + 1
    py = ppl.model(name="lg", data={"T": 6, "A": a, "Q": q},
                   x=ppl.markov(ppl.Normal(0., 1., shape=(4,)),
                                lambda prev, t, A, Q: ppl.MultivariateNormal(prev @ A.T + 0.1 * (t + 1), Q), "T"),
                   y=lambda x: ppl.Normal(x, 1.)).condition(y=y)
    compiled = prog.compile(marginalize=False)      # the path itself (it is linear-Gaussian: test_kalman.py)
    assert compiled.layout["x"]["shape"] == (6, 4)
    assert_same_density(compiled, ppl.compile(py, marginalize=False))


def test_example_and_its_data():
    data = sv_data()
    _, y = runpy.run_path(os.path.join(EXAMPLES, "sv_data.py"))["simulate"]()
    assert data["T"] == 200
    np.testing.assert_allclose(data["y"], y, atol=1e-6)
    prog = load_ppl(os.path.join(EXAMPLES, "sv.ppl"), data=data)
    assert prog.run_spec().method == "nuts" and str(prog.compile("sv")) == str(load_ppl(SV, data=data).compile())


HEAD = "data T : int\nmodel m {\n  x : real[T]\n"
INIT = "  x[1] ~ normal(0, 1)\n"


@pytest.mark.parametrize("body, message, at", [
    (INIT + "  for t in 2:T { x[t] ~ normal(x[t + 1], 1) }\n", "x[t] depends on the future: it reads x[t + 1]",
     "x[t + 1]"),
    (INIT + "  for t in 2:T { x[t] ~ normal(x[t - 2], 1) }\n", "not a Markov chain: x[t] reads x[t - 2]", "x[t - 2]"),
    (INIT + "  for t in 2:T { x[t] ~ normal(sum(x), 1) }\n", "not a Markov chain: x[t] reads the whole path x",
     "x)"),
    (INIT + "  for t in 3:T { x[t] ~ normal(x[t - 1], 1) }\n",
     "the loop must start right after the initial state x[1]: for t in 2:5, not 3", "3:T"),
    (INIT + "  for t in 2:T - 1 { x[t] ~ normal(x[t - 1], 1) }\n", "the loop must run to the last state x[5], not 4",
     "- 1 {"),  # a binary expression is located at its operator
    ("  for t in 2:T { x[t] ~ normal(x[t - 1], 1) }\n", "the initial state x[1] has no distribution", "for"),
    (INIT + "  x[1] ~ normal(1, 1)\n  for t in 2:T { x[t] ~ normal(x[t - 1], 1) }\n",
     "x[1] is drawn twice (first at line 4)", "x[1] ~ normal(1"),
    (INIT + "  for t in 2:T { x[t] ~ normal(x[t - 1], 1) }\n  for s in 2:T { x[s] ~ normal(x[s - 1], 2) }\n",
     "x[s] is drawn twice: by this loop and by the loop at line 5", "for s"),
    (INIT + "  x[2] ~ normal(0, 1)\n  for t in 3:T { x[t] ~ normal(x[t - 1], 1) }\n",
     "x[2] is drawn outside the loop; only the initial state x[1] is", "x[2]"),
    ("  x[1] ~ normal(x[2], 1)\n  for t in 2:T { x[t] ~ normal(x[t - 1], 1) }\n",
     "the initial state x[1] cannot read x", "x[2]"),
    (INIT + "  for t in 2:T { x[t] ~ normal(x[t - 1], 1)  y[t] ~ normal(x[t], 1) }\n",
     "a loop that draws a latent state holds local assignments and, last, the one draw", "y[t]"),
])
def test_state_errors_are_located(body, message, at):
    src = HEAD + body + "}\n"
    with pytest.raises(SourceError) as e:
        load_ppl(src, filename="f.ppl", T=5, y=[0.0] * 5)
    err = e.value
    assert message in err.message, err.render()
    assert err.hint and err.source_line is not None, err.render()
    line = src.splitlines()[err.line - 1]
    assert line.index(at) + 1 == err.column, err.render()
    assert err.render().startswith(f"f.ppl:{err.line}:{err.column}: ")


def test_particle_filter_errors_are_located_at_the_site_they_name():
    src = HEAD + "  mu ~ normal(0, 1)\n" + INIT.replace("0, 1", "mu, 1") + \
        "  for t in 2:T { x[t] ~ normal(x[t - 1], 1) }\n}\nsample m with pf(particles = 10)\n"
    with pytest.raises(SourceError, match="but 'mu' is latent") as e:
        load_ppl(src, filename="f.ppl", T=5).sample()
    assert (e.value.line, e.value.column) == (4, 3), e.value.render()
