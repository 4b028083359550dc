"""The .ppl language: parsing, errors with positions, lowering to the Python target objects, loops as scans."""
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ppl
from ppl import load_ppl
from ppl.errors import PPLError, SourceError
from ppl.lang.syntax import ModelDef

REF = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "posteriordb")
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
RUNTIMES = ["numpyro", "pyro"]


def ref_data(folder, name):
    path = os.path.join(REF, folder, name)
    if not os.path.exists(path):
        pytest.skip(f"reference data {path} is absent (../shared/reference)")
    with open(path) as f:
        return json.load(f)


EIGHT = """
data J : int
data y : real[J]
data sigma : real<lower=0>[J]

model eight_schools {
  mu ~ normal(0, 5)
  tau ~ half_cauchy(5)
  theta_raw ~ normal(0, 1) [J]
  theta = mu + tau * theta_raw
  y ~ normal(theta, sigma)          # observed: y is data
}
target post = eight_schools
target hot = post ^ 0.5
target both = post * hot
target guided = geometric(hot, post, 2.0)
target tilted = post * exp(sum(theta) / 10)
sample hot with smc(particles = 4096, move = hmc(steps = 5)) on pyro
"""
EIGHT_DATA = {"J": 8, "y": [28, 8, -3, 7, -1, 1, 18, 12], "sigma": [15, 10, 16, 11, 9, 11, 10, 18]}


def target_log_density(compiled, prog, z):
    """Σ_t c_t ℓ_t(x) per particle: log γ at the constrained point of each row of z (no Jacobian)."""
    out = []
    for i in range(z.shape[0]):
        values, dets, _, dists, _ = prog.ev.latent_values(z[i], prog.layout)
        terms, _ = prog.ev.term_values(values, dets, dists)
        out.append(sum(t.coef * float(prog.rt.to_numpy(prog.rt.asarray(v))) for t, v in zip(compiled.terms, terms)))
    return np.array(out)


def total_log_density(compiled, rt, z):
    prog = compiled.lower(rt)
    ref, rest = prog.log_densities(prog.rt.asarray(z))
    return prog.rt.to_numpy(ref) + prog.rt.to_numpy(rest)


# ---- parsing and errors --------------------------------------------------------
def test_parse_positions_and_syntax_error_rendering():
    tree = ppl.parse("model m {\n  x ~ normal(0, 1)\n}\n")
    model = tree.items[0]
    assert isinstance(model, ModelDef) and model.name == "m" and model.body[0].line == 2
    with pytest.raises(SourceError) as e:
        load_ppl("model m {\n  x ~ normal(0, 1\n  y = 2\n}\n", filename="bad.ppl")
    text = str(e.value)
    assert text.startswith("bad.ppl:3:3: unexpected 'y'") and "\n      y = 2\n      ^" in text


def _grouped(e):
    """An expression's tree written with every operation in parentheses."""
    from ppl.lang import syntax as S
    if isinstance(e, (S.Name, S.Number)):
        return str(getattr(e, "name", getattr(e, "value", None)))
    if isinstance(e, S.BinOp):
        return f"({_grouped(e.left)} {e.op} {_grouped(e.right)})"
    if isinstance(e, (S.And, S.Or)):
        return f"({_grouped(e.left)} {type(e).__name__.lower()} {_grouped(e.right)})"
    if isinstance(e, S.Pow):
        return f"({_grouped(e.base)} ^ {_grouped(e.exponent)})"
    if isinstance(e, S.Neg):
        return f"(-{_grouped(e.operand)})"
    if isinstance(e, S.Not):
        return f"(not {_grouped(e.operand)})"
    if isinstance(e, S.Index):
        return f"{_grouped(e.value)}[{', '.join(_grouped(i) for i in e.indices)}]"
    raise AssertionError(type(e))


@pytest.mark.parametrize("text, grouped", [
    ("a + b * c - d", "((a + (b * c)) - d)"),
    ("a / b / c", "((a / b) / c)"),
    ("-a ^ 2 * b", "((-(a ^ 2)) * b)"),
    ("a ^ b ^ c", "(a ^ (b ^ c))"),
    ("2 ^ -x ^ 2", "(2 ^ (-(x ^ 2)))"),
    ("- - a", "(-(-a))"),
    ("+a * b", "(a * b)"),
    ("not a < b and c or d", "(((not (a < b)) and c) or d)"),
    ("a or b and not c == d + 1", "(a or (b and (not (c == (d + 1)))))"),
    ("a > b", "(a > b)"),                            # the old grammar lexed ">" as the end of bounds here
    ("a < b and b > c", "((a < b) and (b > c))"),
    ("(a + b) * x[i + 1][2]", "((a + b) * x[(i + 1)][2])"),
])
def test_expression_precedence(text, grouped):
    """Expressions are read flat and grouped by precedence climbing (parser.py): the groups of the old grammar's
    one-rule-per-level ladder."""
    tree = ppl.parse(f"model m {{ x ~ normal(0, 1)\n  y = {text} }}")
    assert _grouped(tree.items[0].body[1].value) == grouped


@pytest.mark.parametrize("text, col, message", [
    ("a < b < c", 13, "comparisons do not chain"),
    ("a * not b", 11, "'not' cannot appear after"),
    ("a == not b", 12, "'not' cannot appear after"),
    ("-not b", 8, "'not' cannot appear after"),
])
def test_misplaced_operators_are_located(text, col, message):
    with pytest.raises(SourceError) as e:
        ppl.parse(f"model m {{ x ~ normal(0, 1)\n  y = {text} }}", "f.ppl")
    assert (e.value.line, e.value.column) == (2, col) and message in e.value.message, e.value.render()


def test_bounds_and_loop_ranges_take_arithmetic_only():
    """`<` and `>` close the bounds of a type; `not` in a loop range or a bound is an error, as before."""
    tree = ppl.parse("data N : int\nmodel m { s : real<lower=0, upper=N+1>[N] ~ normal(0, 1)\n"
                     "  for i in 1:N-1 { s[i] ~ normal(0, 1) } }")
    assert _grouped(tree.items[1].body[0].type.bounds[1].value) == "(N + 1)"
    assert _grouped(tree.items[1].body[1].hi) == "(N - 1)"
    with pytest.raises(SourceError, match="'not' cannot appear in a bound or a loop range"):
        ppl.parse("model m { for i in not 1:2 { } }")


@pytest.mark.parametrize("src, message, line, col", [
    ("model m {\n  x ~ nromal(0, 1)\n}", "unknown distribution 'nromal'", 2, 7),
    ("model m {\n  x ~ normal(0, 1)\n  y ~ normal(z, 1)\n}", "unknown name 'z'", 3, 14),
    ("data N : int\nmodel m { x ~ normal(0, 1) }", "data 'N' is declared but no value was given", 1, 1),
    ("model m {\n  x ~ normal(0, 1)\n  x ~ normal(0, 2)\n}", "'x' is already defined", 3, 3),
    ("model m { s : real<lower=0> ~ student_t(3, 0, 1) T[1, 0] }", "lower = 1 must be below upper = 0", 1, 31),
    ("model m { x ~ normal(0, 1) }\ntarget t = m ^ -1", "beta of p ** beta must be > 0", 2, 16),
    ("use f from \"os:system\"\n", "refusing to import Python module 'os'", 1, 1),
    ("model m { x ~ normal(0, 1) }\nsample m with is(particles = 10) on jax", "unknown runtime 'jax'", 2, 37),
    ("model m { x ~ normal(0, 1) [2] y = x[3] }", "3 is out of range", 1, 38),
])
def test_semantic_errors_are_located(src, message, line, col):
    with pytest.raises(SourceError) as e:
        load_ppl(src, filename="f.ppl").compile()
    assert message in e.value.message, e.value.render()
    assert (e.value.line, e.value.column) == (line, col), e.value.render()
    assert e.value.source_line is not None


@pytest.mark.parametrize("src, message, line, col", [
    ("model a {\n  x ~ normal(0, 1)\n}\nmodel b {\n  y ~ normal(0, 1)\n  x ~ normal(0, 1) [2]\n}\ntarget t = b * a",
     "site 'x' has shape (2,) in prior b.x but () in prior a.x", 6, 3),
    ("model m {\n  z ~ normal(0, 1)\n  x ~ poisson(3)\n}", "latent site 'x' is discrete", 3, 3),
    ("model m {\n  z ~ normal(0, 1)\n  x : real\n}\nsample m with is(particles = 10)", "site 'x' has no normalized prior",
     3, 3),
    ("data y : real[3]\nmodel m {\n  x ~ normal(0, 1)\n  y ~ normal(x, 1) [2]\n}", "observed 'y' of model m", 4, 3),
    ("model m {\n  x ~ normal(0, 1) [3]\n  factor x\n}", "a factor must return one real per particle", None, None),
])
def test_compiler_errors_are_located_at_the_site_they_name(src, message, line, col):
    with pytest.raises(SourceError) as e:
        load_ppl(src, filename="f.ppl", y=[1.0, 2.0, 3.0]).compile()
    assert message in e.value.message and e.value.filename == "f.ppl", e.value.render()
    assert (e.value.line, e.value.column) == (line, col), e.value.render()


def test_data_shape_and_type_are_checked():
    with pytest.raises(SourceError, match=r"data 'y' has shape \(3,\), but its declaration says \(8,\)"):
        load_ppl(EIGHT, data={**EIGHT_DATA, "y": [1, 2, 3]})
    with pytest.raises(SourceError, match="declared int but has non-integer"):
        load_ppl(EIGHT, data={**EIGHT_DATA, "J": 8.5})
    with pytest.raises(SourceError, match="violates lower=0"):
        load_ppl(EIGHT, data={**EIGHT_DATA, "sigma": [-1] * 8})


def test_use_needs_allow_python():
    src = 'use myexp from "ppl.math:exp"\nmodel m { x ~ normal(0, 1)  e = myexp(x)  keep e }'
    with pytest.raises(SourceError, match="refusing to import Python module 'ppl.math'"):
        load_ppl(src)
    prog = load_ppl(src, allow_python=True)
    r = prog.sample("m", particles=2000, seed=1)
    np.testing.assert_allclose(r.samples["e"], np.exp(r.samples["x"]), rtol=1e-5)


# ---- lowering: the same targets as the Python API ----------------------------
def test_targets_are_the_python_algebra():
    prog = load_ppl(EIGHT, data=EIGHT_DATA)
    t = prog.targets
    assert isinstance(t["post"], ppl.Model) and t["post"].observed.keys() == {"y"}
    assert isinstance(t["hot"], ppl.target.Power) and t["hot"].beta == 0.5
    assert isinstance(t["both"], ppl.target.Product)
    assert isinstance(t["guided"], ppl.target.Geometric) and t["guided"].w == 2.0
    assert isinstance(t["tilted"], ppl.target.Tilt) and t["tilted"].lam == 10.0
    assert t["tilted"].reward.parents == ("theta",)
    spec = prog.run_spec("hot")
    assert (spec.method, spec.runtime, spec.options["particles"]) == ("smc", "pyro", 4096)
    assert spec.options["move"] == {"name": "hmc", "steps": 5}
    # the compiled plan is the Python API's plan
    py = ppl.model(name="eight_schools", data={"sigma": np.array(EIGHT_DATA["sigma"], np.float32)},
                   mu=ppl.Normal(0., 5.), tau=ppl.HalfCauchy(5.), theta_raw=ppl.Normal(0., 1., shape=(8,)),
                   theta=ppl.deterministic(lambda mu, tau, theta_raw: mu + tau * theta_raw),
                   y=lambda theta, sigma: ppl.Normal(theta, sigma)).condition(y=np.array(EIGHT_DATA["y"], float))
    a, b = prog.compile("hot"), ppl.compile(py ** 0.5)
    assert str(a) == str(b)
    z = np.random.default_rng(0).normal(size=(5, a.dim))
    for rt in RUNTIMES:
        np.testing.assert_allclose(total_log_density(a, rt, z), total_log_density(b, rt, z), rtol=1e-5)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_eight_schools_log_z_matches_reference(runtime):
    data = ref_data("eight_schools-eight_schools_noncentered", "eight_schools.data.json")
    prog = load_ppl(os.path.join(EXAMPLES, "eight_schools_noncentered.ppl"), data=data)
    r = prog.sample(method="is", runtime=runtime, particles=20000, seed=3)
    assert abs(r.log_z - (-31.311347)) < 5 * r.log_z_se, (r.log_z, r.log_z_se)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_tilt_has_exact_log_z(runtime):
    # x ~ N(0, 1) tilted by exp(x / 0.5): Z = E[exp(2x)] = e^2, log Z = 2
    prog = load_ppl("model m { x ~ normal(0, 1) }\ntarget t = m * exp(x / 0.5)")
    r = prog.sample("t", method="is", runtime=runtime, particles=20000, seed=0)
    assert abs(r.log_z - 2.0) < 5 * r.log_z_se



@pytest.mark.parametrize("runtime", RUNTIMES)
def test_constant_vector_in_a_reward(runtime):
    # x ~ N(0, I_2) tilted by exp(x . [0.5, 0.5]): log Z = |[0.5, 0.5]|^2 / 2 = 0.25 (constants in a site's vector)
    prog = load_ppl("model m { x ~ normal(0, 1) [2] }\ntarget t = m * exp(sum(x * [0.5, 0.5]))")
    r = prog.sample("t", method="is", runtime=runtime, particles=20000, seed=0)
    assert abs(r.log_z - 0.25) < 5 * r.log_z_se


# ---- loops, recursions, constrained types -----------------------------------
ARK_VECTORIZED = """
data K : int
data T : int
data y : real[T]
model arK {
  alpha ~ normal(0, 10)
  beta ~ normal(0, 10) [K]
  sigma ~ half_cauchy(2.5)
  mu = alpha + beta[1] * y[5:199] + beta[2] * y[4:198] + beta[3] * y[3:197] + beta[4] * y[2:196] + beta[5] * y[1:195]
  y[6:200] ~ normal(mu, sigma)
}
"""


def test_loop_recursion_equals_vectorized_and_is_a_scan():
    import jax
    data = ref_data("arK-arK", "arK.data.json")
    loop = load_ppl(os.path.join(EXAMPLES, "arK.ppl"), data=data).compile("arK")
    vec = load_ppl(ARK_VECTORIZED, data=data).compile("arK")
    z = np.random.default_rng(1).normal(size=(4, loop.dim)) * 0.3
    for rt in RUNTIMES:
        np.testing.assert_allclose(total_log_density(loop, rt, z), total_log_density(vec, rt, z), rtol=2e-4)
    prog = loop.lower("numpyro")
    jaxpr = str(jax.make_jaxpr(prog.log_parts)(prog.rt.asarray(z[0])))
    assert jaxpr.count("scan[") == 1  # the outer loop is one scan; the inner K = 5 loop is unrolled


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_garch_flat_priors_and_dependent_bound(runtime):
    data = ref_data("garch-garch11", "garch.data.json")
    prog = load_ppl(os.path.join(EXAMPLES, "garch11.ppl"), data=data)
    c = prog.compile()
    p = c.lower(runtime)
    z = p.sample_reference(p.rt.key(0), 6)
    x = p.to_constrained(z)
    assert np.all(x["beta1"] < 1 - x["alpha1"]) and np.all(x["beta1"] > 0)
    # log γ = Σ_t log N(y_t | mu, sigma_t) (the flat priors contribute 0 on their support)
    got = target_log_density(c, p, z)
    y = np.asarray(data["y"])
    for i in range(6):
        mu, a0, a1, b1 = (float(x[k][i]) for k in ("mu", "alpha0", "alpha1", "beta1"))
        s = [data["sigma1"]]
        for t in range(1, len(y)):
            s.append(np.sqrt(a0 + a1 * (y[t - 1] - mu) ** 2 + b1 * s[-1] ** 2))
        s = np.array(s)
        want = np.sum(-0.5 * ((y - mu) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi))
        np.testing.assert_allclose(got[i], want, rtol=1e-4)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ordered_is_sorted_iid(runtime):
    from scipy.stats import norm
    prog = load_ppl("model m { mu : ordered[3] ~ normal(0, 2) }")
    c = prog.compile("m")
    p = c.lower(runtime)
    z = p.sample_reference(p.rt.key(0), 500)
    x = p.to_constrained(z)["mu"]
    assert np.all(np.diff(x, axis=1) > 0)
    got = target_log_density(c, p, z)
    want = np.log(6.0) + norm(0, 2).logpdf(x).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_flat_simplex_and_indexed_updates():
    src = """
    data T : int
    model m {
      p : simplex[3]
      a ~ normal(0, 1)
      x = zeros(T)
      x[1] = a
      for t in 2:T { x[t] = 0.5 * x[t - 1] + 1 }
      x[2:3] = [a, 2 * a]
      c = sum(x[:]) + size(x)
      keep x, c
    }
    """
    prog = load_ppl(src, T=12)
    for rt in RUNTIMES:
        r = prog.sample("m", runtime=rt, particles=200, seed=0)
        a = r.samples["a"][0]
        x = r.samples["x"][0]
        want = [a]
        for _ in range(11):
            want.append(0.5 * want[-1] + 1)
        want = np.stack(want, 1)
        want[:, 1], want[:, 2] = a, 2 * a
        np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(r.samples["p"][0].sum(1), 1, rtol=1e-5)
        # flat on the simplex: the weights are constant (Dirichlet(1) reference + log (K-1)! correction)
        np.testing.assert_allclose(r.log_z, -np.log(2.0), atol=1e-5)


def test_read_before_last_update_is_an_error():
    src = "model m {\n a ~ normal(0, 1)\n x = zeros(3)\n y = x\n x[1] = a\n}"
    with pytest.raises(SourceError, match="read here before its last update at line 5"):
        load_ppl(src)


# ---- property test: only PPLError ---------------------------------------------
ARK_DATA = {"K": 5, "T": 200, "y": list(np.sin(np.arange(200.0)))}
VALID = [(EIGHT, EIGHT_DATA), (ARK_VECTORIZED, ARK_DATA),
         ("model m {\n  x ~ normal(0, 1)\n  factor -square(x)\n}\ntarget t = m ^ 2\n", {})]
TOKENS = ["model", "data", "target", "sample", "with", "on", "for", "in", "factor", "use", "from", "{", "}", "(", ")",
          "[", "]", "~", "=", "+=", ":", ",", "^", "*", "@", "<", ">", "|", "x", "y", "J", "normal", "exp", "1",
          "0.5", "-", "\"s\"", "#", "\n", "real", "int<lower=0>", "ordered[2]", "simplex[0]", "sum(", "1e99", "/0"]


def _mutate(text, ops):
    for kind, pos, tok in ops:
        pos = pos % (len(text) + 1)
        if kind == 0:
            text = text[:pos] + tok + text[pos:]
        elif kind == 1:
            text = text[:pos] + text[pos + len(tok):]
        else:
            text = text[:pos] + tok + text[pos + 1:]
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(
    st.text(max_size=80).map(lambda t: (t, {})),
    st.lists(st.sampled_from(TOKENS), max_size=30).map(lambda ts: (" ".join(ts), EIGHT_DATA)),
    st.tuples(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000),
                                                         st.sampled_from(TOKENS)), min_size=1, max_size=4)
              ).map(lambda a: (_mutate(a[0][0], a[1]), a[0][1])),
))
def test_only_ppl_errors(case):
    text, data = case
    try:
        prog = load_ppl(text, data=data)
        for name in list(prog.targets)[:1] or list(prog.models)[:1]:
            prog.compile(name)
    except PPLError:
        pass


FLAT_SIMPLEX = """
data n : int<lower=0>
data k : int[n]
model counts {
  p : simplex[3]
  k ~ categorical(p) [n]
}
sample counts with is(particles = 20000)
"""


@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
def test_flat_simplex_with_a_categorical_likelihood(runtime):
    """p flat on the simplex (density 1), k_i ~ Categorical(p) observed under a latent p: the posterior is
    Dirichlet(1 + counts), log Z = Σ log Γ(1 + c_j) − log Γ(K + n) (the categorical's values are indices)."""
    from scipy.special import gammaln
    k = [0, 1, 1, 2, 2, 2]
    counts = np.bincount(k, minlength=3)
    r = load_ppl(FLAT_SIMPLEX, n=len(k), k=k).sample("counts", runtime=runtime, seed=1)
    exact = gammaln(1 + counts).sum() - gammaln(3 + len(k))
    assert abs(r.log_z - exact) < 4 * r.log_z_se
    w = np.exp(r.log_weights[0] - r.log_weights[0].max())
    mean = (w[:, None] * r.samples["p"][0]).sum(0) / w.sum()
    np.testing.assert_allclose(mean, (1 + counts) / (3 + len(k)), atol=0.01)


def test_an_integer_bound_past_int32_is_a_real():
    """A bound of 1e11 written as an integer: JAX's 32-bit integers overflowed; it is read as a real."""
    src = "model m { a ~ normal(0, 1)\n x : real<lower=a, upper=100000000000> }\nsample m with is(particles = 100)\n"
    r = load_ppl(src).sample("m")
    assert np.all(r.samples["x"] > r.samples["a"]) and np.isfinite(r.log_z)


TRANSFORMED = {
    "factor": "  factor sum(logpdf(normal(mu, sigma), log(earn)))\n",
    "observed": "  log_earn = log(earn)\n  log_earn ~ normal(mu, sigma) [N]\n",
    "in a loop": "  log_earn = zeros(N)\n  for i in 1:N { log_earn[i] = log(earn[i]) }\n"
                 "  for i in 1:N { log_earn[i] ~ normal(mu, sigma) }\n",
}


def test_transformed_data_can_be_observed():
    """Stan's `log_earn = log(earn)` (transformed data) then `log_earn ~ normal(...)`: a value computed from data
    alone is data, so `~` observes it (issue 37: "'log_earn' is already defined", written as a factor instead)."""
    data = {"N": 3, "earn": [1.0, 2.0, 3.0]}
    head = "data N : int\ndata earn : real<lower=0>[N]\nmodel m {\n  mu ~ normal(0, 10)\n  sigma ~ half_normal(5)\n"
    # marginalize=False: the same draws in each form (the observed form's mu is a conjugate normal mean)
    runs = {k: load_ppl(head + body + "}", data=data).sample("m", method="is", particles=2000, seed=0,
                                                             marginalize=False)
            for k, body in TRANSFORMED.items()}
    for k, r in runs.items():
        assert list(r.samples) == ["mu", "sigma"]
        np.testing.assert_allclose(r.log_z, runs["factor"].log_z, rtol=0, atol=1e-5, err_msg=k)
