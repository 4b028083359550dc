"""The torch runtime's compiled path (`PyroRuntime.jit_pure`: make_fx + inductor) against eager torch."""
import warnings

import numpy as np
import pytest
import torch

import ppl
from ppl.backends import get_runtime
from ppl.backends.pyro_runtime import compiling
from ppl.stdlib import targets as T


def _program():
    rt = get_runtime("pyro")
    try:
        known = T.german_credit(rows=200)
    except ppl.PPLError as e:
        pytest.skip(f"shared reference data absent: {e}")
    return rt, ppl.compile(known.target).lower(rt)


def test_compiled_log_density_and_gradient_equal_eager():
    rt, prog = _program()
    with rt.scope():
        zs = [0.3 * rt.normal(rt.key(s), (64, prog.dim)) for s in (0, 1)]
        beta = rt.asarray(0.3)
        with compiling("off"):
            eager = [(prog.value_and_grad(z, beta), prog.log_densities(z)) for z in zs]
        with compiling("on"):
            prog.value_and_grad(zs[0], beta), prog.log_densities(zs[0])      # traced, compiled, checked
            assert all(e.compiled is not None for e in prog.value_and_grad.entries.values())
            assert all(e.compiled is not None for e in prog.log_densities.entries.values())
            compiled = [(prog.value_and_grad(z, beta), prog.log_densities(z)) for z in zs]
    for (((v0, (r0, s0)), g0), (a0, b0)), (((v1, (r1, s1)), g1), (a1, b1)) in zip(eager, compiled):
        for a, b in ((v0, v1), (r0, r1), (s0, s1), (a0, a1), (b0, b1)):
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(g1.numpy(), g0.numpy(), rtol=1e-4, atol=1e-3)
        assert not g1.requires_grad


def test_a_branch_on_values_stays_eager_with_one_warning():
    rt = get_runtime("pyro")
    f = rt.jit_pure(lambda x: x * 2.0 if bool((x > 0).all()) else x - 1.0)
    with compiling("on"), pytest.warns(RuntimeWarning, match="fell back to eager"):
        assert torch.equal(f(torch.ones(3)), torch.full((3,), 2.0))
    with compiling("on"), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(f(-torch.ones(3)), torch.full((3,), -2.0))     # the same signature: eager, no warning


def test_auto_leaves_small_work_eager():
    rt, prog = _program()
    with rt.scope(), compiling("auto", after=30.0):
        z = rt.normal(rt.key(0), (8, prog.dim))
        for _ in range(3):
            prog.value_and_grad(z, rt.asarray(1.0))
    assert all(e.compiled is None and e.graph is None for e in prog.value_and_grad.entries.values())


def test_a_tensor_passed_twice_at_the_trace_is_two_inputs():
    """A signature traced from f(x, x) reads both arguments at later calls (make_fx maps one object to one input)."""
    rt = get_runtime("pyro")
    f = rt.jit_pure(lambda a, b: a + 2.0 * b)
    x, y = torch.ones(3), torch.arange(3.0)
    with compiling("on"):
        f(x, x)
        assert torch.equal(f(x, y), x + 2.0 * y)


def test_nested_arguments_and_results_keep_their_structure():
    """The compiled path's own flattening (tuples, lists, NamedTuples, dicts, constants) round-trips, compiled and
    scalar-loop (`vectorize=False`) alike, and a structure it does not know (a torch.Size leaf) goes through
    torch's pytree."""
    from typing import NamedTuple

    from ppl.backends.pyro_compile import flatten, unflatten

    class Pair(NamedTuple):
        a: object
        b: object

    tree = (Pair(torch.ones(2), [torch.zeros(3), None]), {"k": 2.5, "n": 3}, "s", True)
    leaves, spec = flatten(tree)
    back = unflatten(leaves, spec)
    assert len(leaves) == 7 and type(back[0]) is Pair and back[0].a is tree[0].a and back[0].b[0] is tree[0].b[0]
    assert back[0].b[1] is None and back[1] == {"k": 2.5, "n": 3} and back[2:] == ("s", True)
    leaves, spec = flatten((torch.Size([2]), torch.ones(1)))
    assert unflatten(leaves, spec)[0] == torch.Size([2])

    rt = get_runtime("pyro")

    def fn(p, d, flag):
        out = Pair(p.a * d["k"] + (1.0 if flag else 0.0), {"sum": p.b[0].sum() + d["n"]})
        return out, [p.a.flip(0)]

    x = Pair(torch.arange(4.0), [torch.ones(5), None])
    want = fn(x, {"k": 2.0, "n": 1}, True)
    for vectorize in (True, False):
        f = rt.jit_pure(fn, vectorize=vectorize)
        with compiling("on"):
            f(x, {"k": 2.0, "n": 1}, True)
            got = f(x, {"k": 2.0, "n": 1}, True)
        assert all(e.compiled is not None for e in f.entries.values())
        assert isinstance(got[0], Pair) and isinstance(got[0].b, dict) and isinstance(got[1], list)
        assert torch.equal(got[0].a, want[0].a) and torch.equal(got[0].b["sum"], want[0].b["sum"])
        assert torch.equal(got[1][0], want[1][0])


def test_a_state_loop_passes_the_graphs_leaves_on():
    """`CompiledFunction.loop`: after the first call with each signature of the other arguments, the compiled graph
    is called on the state's leaves (no flatten, signature or unflatten); the states and outputs are eager's, with
    a static flag switching graphs; a state whose dtype changes on the way out keeps structured calls."""
    rt = get_runtime("pyro")

    def step(x, pair, t, flag):
        a, b = pair
        x = x * 0.5 + t if flag else x - t
        return (x, (a + x, b * 2)), (x.sum(), t + 1.0)
    f = rt.jit_pure(step)
    widen = rt.jit_pure(lambda x, t: (((x + t).double(),), (x * t).sum()))
    x0, pair0 = torch.arange(4.0), (torch.zeros(4), torch.ones(4, dtype=torch.int64))
    flags = [True, False, True, True, False, False, True]
    runs = {}
    for mode in ("off", "on"):
        with compiling(mode):
            loop = f.loop((x0, pair0))
            outs = [loop(torch.tensor(float(k)), flag) for k, flag in enumerate(flags)]
            runs[mode] = loop.state, outs
            if mode == "on":
                assert len(loop.graphs) == 2 and all(g is not None for g in loop.graphs.values())
                wide = widen.loop((x0.float(),))
                for _ in range(3):
                    wide(torch.tensor(2.0))
                assert list(wide.graphs.values()) == [None]
                assert wide.state[0].dtype == torch.float64
    (s_off, o_off), (s_on, o_on) = runs["off"], runs["on"]
    for a, b in zip(torch.utils._pytree.tree_leaves((s_off, o_off)), torch.utils._pytree.tree_leaves((s_on, o_on))):
        assert a.dtype == b.dtype and torch.allclose(a.double(), b.double())
