"""The compiler: graph, folding, planning, and every validation error naming its problem."""
import networkx as nx
import numpy as np
import pytest

import ppl
from ppl.compiler.fold import fold
from ppl.target import Power, Product

p = ppl.model(x=ppl.Normal(0.0, 1.0), name="p")
q = ppl.model(x=ppl.Normal(1.0, 2.0), name="q")


def test_graph_has_typed_nodes_and_dependency_edges():
    m = ppl.model(name="m", data={"sigma": np.ones(3)}, mu=ppl.Normal(0.0, 1.0),
                  theta=lambda mu: ppl.Normal(mu, 1.0, shape=(3,)),
                  y=lambda theta, sigma: ppl.Normal(theta, sigma)).condition(y=np.zeros(3))
    c = ppl.compile(m.tilt(lambda theta: -(theta ** 2).sum(), 2.0))
    g = c.graph
    assert isinstance(g, nx.DiGraph) and nx.is_directed_acyclic_graph(g)
    kinds = nx.get_node_attributes(g, "kind")
    assert kinds["mu"] == kinds["theta"] == "latent"
    assert kinds["m.y"] == "observed" and kinds["m.sigma"] == "data"
    assert g.has_edge("mu", "m:prior theta") and g.has_edge("m.sigma", "m:lik y")
    assert any(k == "combinator" for k in kinds.values()) and "target" in g
    text = str(c)
    assert "reference pi0" in text and "prior m.mu" in text and "+1 x likelihood m.y" in text


def test_fold_powers_and_products():
    t = fold((p ** 2) ** 0.25 * (p * (q * p)))
    assert isinstance(t, Product) and len(t.factors) == 4
    assert isinstance(t.factors[0], Power) and t.factors[0].beta == 0.5
    assert fold(p ** 2 ** 1) is not None and fold((p ** 0.5) ** 2) is p


def test_gaussian_closed_form_is_the_reference():
    c = ppl.compile(p * q)
    assert [t.kind for t in c.terms] == ["gaussian", "constant"]
    assert "folded" in str(c)
    unfolded = ppl.compile(p * q, fold=False)
    assert [t.kind for t in unfolded.terms] == ["prior", "prior"] and list(unfolded.rest_coef) == [0.0, 1.0]


def test_annealing_never_scales_the_reference():
    c = ppl.compile(ppl.model(s=ppl.HalfNormal(1.0)) ** 0.3)
    assert list(c.ref_coef) == [1.0] and np.allclose(c.rest_coef, [-0.7])


@pytest.mark.parametrize("make, error, words", [
    (lambda: p ** 0, ppl.ValueRangeError, "beta"),
    (lambda: p ** -1.5, ppl.ValueRangeError, "beta"),
    (lambda: p.tilt(lambda x: x, 0.0), ppl.ValueRangeError, "lam"),
    (lambda: p.tilt(lambda x: x, -2), ppl.ValueRangeError, "lam"),
    (lambda: ppl.geometric(p, q, float("nan")), ppl.ValueRangeError, "weight w"),
    (lambda: ppl.model(x=ppl.Normal(0, 1), y=lambda z: ppl.Normal(z, 1)), ppl.NameResolutionError, "'z'"),
    (lambda: ppl.compile(p.tilt(lambda w: w, 1.0)), ppl.NameResolutionError, "'w'"),
    (lambda: p.condition(nope=1.0), ppl.NameResolutionError, "nope"),
    (lambda: ppl.compile(p * ppl.model(x=ppl.Normal(0.0, 1.0, shape=(3,)))), ppl.ShapeError, "site 'x'"),
    (lambda: ppl.compile(p * ppl.model(x=ppl.HalfNormal(1.0))), ppl.SupportError, "site 'x'"),
    (lambda: ppl.compile(ppl.model(x=ppl.Normal(0.0, 1.0, shape=(3,))).tilt(lambda x: x, 1.0)),
     ppl.ShapeError, "one real per particle"),
    (lambda: ppl.compile(ppl.model(x=ppl.Normal(0.0, 1.0), y=lambda x: ppl.Normal(x, 1.0, shape=(4,)))
                         .condition(y=np.zeros(5))), ppl.ShapeError, "observed 'y'"),
    (lambda: ppl.compile(ppl.energy(lambda x: x ** 2, x=ppl.Flat())), ppl.PlanError, "reference="),
    (lambda: ppl.Normal(0.0, 1.0, scal=2.0), ppl.UnknownNameError, "scal"),
    (lambda: ppl.sample(p, method="magic"), ppl.UnknownNameError, "magic"),
    (lambda: ppl.sample(p, runtime="tensorflow"), ppl.UnknownNameError, "tensorflow"),
    (lambda: ppl.model(x=3.0), ppl.PPLError, "site 'x'"),
])
def test_validation_errors_name_the_problem(make, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(")):
        make()


def test_energy_with_a_reference():
    """exp(-x²/2) over a flat site, with a N(0, 2²) reference: log Z = log √(2π)."""
    target = ppl.energy(lambda x: 0.5 * x ** 2, x=ppl.Flat())
    r = ppl.sample(target, method="is", particles=50_000, seed=0, reference=ppl.model(x=ppl.Normal(0.0, 2.0)))
    assert abs(r.log_z - 0.5 * np.log(2 * np.pi)) < 4.5 * r.log_z_se


def test_all_weights_vanishing_is_an_error(runtime):
    target = ppl.model(x=ppl.Normal(0.0, 1.0), f=ppl.factor(lambda x: x * float("-inf")))
    with pytest.raises(ppl.InferenceError, match="weights vanished"):
        ppl.sample(target, method="is", runtime=runtime, particles=100)


def test_cuda_request_without_a_gpu_is_a_clear_error(runtime):
    import jax
    import torch
    has_gpu = torch.cuda.is_available() if runtime == "pyro" else any(d.platform == "gpu" for d in jax.devices())
    if has_gpu:
        r = ppl.sample(p, method="is", runtime=runtime, device="cuda", particles=100)
        assert r.device == "cuda"
    else:
        with pytest.raises(ppl.PPLError, match="cuda"):
            ppl.sample(p, method="is", runtime=runtime, device="cuda", particles=100)
