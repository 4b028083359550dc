"""Term kinds as classes and the site interpreter's handler stack (compiler/terms.py, compiler/handlers.py)."""
import numpy as np
import pytest

import ppl
from ppl.compiler import handlers as H
from ppl.compiler import terms as T
from ppl.compiler.lower import Constrain

RUNTIMES = ["numpyro", "pyro"]


def _model(y, scale=1.0):
    return ppl.model(name="m", data={"s": scale}, mu=ppl.Normal(0.0, 1.0), tau=ppl.HalfNormal(1.0),
                     d=ppl.deterministic(lambda mu, tau: mu * tau),
                     y=lambda mu, s: ppl.Normal(mu, s, shape=(3,))).condition(y=y)


def test_each_kind_is_a_class_that_owns_its_log_density():
    m = _model(np.array([0.5, -1.0, 2.0]))
    c = ppl.compile(m * ppl.energy(lambda mu: mu ** 2) * p_factor(), fold=False)
    kinds = {type(t): t.kind for t in c.terms}
    assert kinds == {T.Prior: "prior", T.Likelihood: "likelihood", T.Energy: "energy", T.Factor: "factor"}
    assert all(isinstance(t, T.Term) and t.label.startswith(t.kind) for t in c.terms)
    folded = ppl.compile(ppl.model(x=ppl.Normal(0.0, 1.0), name="p") ** 2)
    assert [type(t) for t in folded.terms] == [T.Gaussian, T.Constant]
    assert folded.terms[1].log_density(None) == folded.terms[1].value


def p_factor():
    return ppl.model(name="f", x=ppl.Normal(0.0, 1.0), w=ppl.factor(lambda x: -0.5 * x ** 2))


@pytest.mark.parametrize("rt", RUNTIMES)
def test_condition_and_substitute_equal_the_target_with_those_inputs(rt):
    """One program evaluated under condition(obs) and substitute(data) = the program of the target with them."""
    y0, y1 = np.array([0.5, -1.0, 2.0], np.float32), np.array([1.5, 0.0, -0.5], np.float32)
    prog, other = ppl.compile(_model(y0)).lower(rt), ppl.compile(_model(y1, 2.0)).lower(rt)
    z = prog.rt.asarray(np.array([0.3, -0.2], np.float32))
    swapped = {"m": {"y": prog.rt.asarray(y1)}}, {"m": {"s": prog.rt.asarray(np.float32(2.0))}}
    with prog.ev.handlers(H.condition(swapped[0]), H.substitute(data=swapped[1])):
        got = [float(prog.rt.to_numpy(v)) for v in prog.log_parts(z)]
        assert prog.ev.inputs()[1]["m"]["s"] is swapped[1]["m"]["s"]
    want = [float(other.rt.to_numpy(v)) for v in other.log_parts(z)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    mine = [float(prog.rt.to_numpy(v)) for v in prog.log_parts(z)]   # popped: the program's own inputs again
    assert not np.allclose(mine, want)


def test_trace_block_and_substitute_compose():
    prog = ppl.compile(_model(np.zeros(3))).lower("numpyro")
    ev, rt = prog.ev, prog.rt
    z = rt.asarray(np.array([0.3, -0.2], np.float32))
    tr = H.trace()
    values, dets = ev.run(tr, Constrain(ev, z, prog.layout))
    assert list(tr.steps) == [n.name for n in prog.compiled.order]
    assert float(tr.steps["d"]["value"]) == pytest.approx(float(values["mu"] * values["tau"]))
    # the innermost handler that gives a value wins: mu substituted, tau constrained from z
    values, dets = ev.run(Constrain(ev, z, prog.layout), H.substitute(values={"mu": 2.0}))
    assert values["mu"] == 2.0 and float(dets["m"]["d"]) == pytest.approx(2.0 * float(values["tau"]))
    # block: the hidden steps are not evaluated
    values, dets = ev.run(Constrain(ev, z, prog.layout), H.block(lambda msg: msg["name"] in ("tau", "d")))
    assert set(values) == {"mu"} and dets == {}
    with pytest.raises(ppl.PlanError, match="no handler gives latent site 'mu' a value"):
        ev.run(H.trace())


def test_model_env_substitutes_sites_whose_reference_is_another_model():
    """`model_env` (pf's, the marginals') at given latent values computes the model's deterministic sites, where
    the sites' reference factors belong to a `reference` model."""
    m = _model(np.zeros(3))
    ref = ppl.model(name="r", mu=ppl.Normal(0.0, 2.0), tau=ppl.HalfNormal(2.0))
    ev = ppl.compile(m, reference=ref).lower("numpyro").ev
    assert all(n.model is ref for n in ev.c.order if n.role == "latent")
    assert float(ev.model_env(m, {"mu": 1.5, "tau": 2.0})["d"]) == 3.0
