"""`backends.pyro_special.betainc` (torch has no regularized incomplete beta) against scipy over a grid of a, b
in [0.1, 100] and x in (0, 1), in float64 and float32, under `torch.func.vmap`, with gradients in x against the
beta density and in a, b against central differences of scipy's."""
import numpy as np
import scipy.special as sp
import scipy.stats as st
import torch

from ppl.backends.pyro_special import betainc

G = np.geomspace(0.1, 100.0, 16)
X = np.concatenate([np.geomspace(1e-6, 1e-2, 5), np.linspace(0.02, 0.98, 25), 1.0 - np.geomspace(1e-6, 1e-2, 5)])
A, B, XS = (v.ravel() for v in np.meshgrid(G, G, X, indexing="ij"))


def _rounded(dtype):
    """The grid's arguments in `dtype`, and scipy's I at exactly those (rounded) arguments, in float64."""
    args = [torch.tensor(v, dtype=dtype) for v in (A, B, XS)]
    return args, sp.betainc(*(v.double().numpy() for v in args))


def test_betainc_matches_scipy():
    """Relative error over the grid (values below float32's smallest normal, 1.2e-38, excepted there): measured
    2e-12 in float64 (the prefactor x^a (1 − x)^b / B(a, b) at a, b ≈ 100), 6e-8 in float32 (its rounding);
    the edges x = 0, 1 exact, arguments outside the domain NaN as scipy's."""
    for dtype, rtol in ((torch.float64, 1e-11), (torch.float32, 2e-7)):
        args, want = _rounded(dtype)
        got = betainc(*args)
        assert got.dtype == dtype
        got = got.double().numpy()
        normal = want > 1.2e-38
        np.testing.assert_allclose(got[normal], want[normal], rtol=rtol, atol=0, err_msg=str(dtype))
    edges = betainc(torch.tensor([2.0, 2.0, 0.5, -1.0, 2.0]), torch.tensor([3.0, 3.0, 0.5, 1.0, 0.0]),
                    torch.tensor([0.0, 1.0, 1.5, 0.5, 0.5]))
    np.testing.assert_array_equal(edges.numpy(), [0.0, 1.0, np.nan, np.nan, np.nan])


def test_betainc_under_vmap_and_its_gradients():
    """vmap over the grid's points equals the broadcast call; ∂I/∂x (autograd through the vmapped call, as
    the runtime's value_and_grad) is the beta density (measured 1e-13 relative); ∂I/∂a and ∂I/∂b (7e-14 relative
    against mpmath at 60 random points) within 1e-8 of scipy's central differences (whose own rounding is
    ~1e-10) on 300 points."""
    (a, b, x), want = _rounded(torch.float64)
    x.requires_grad_()
    batched = torch.func.vmap(betainc)(a, b, x)
    np.testing.assert_array_equal(batched.detach().numpy(), betainc(a, b, x).detach().numpy())
    inside = np.flatnonzero((want > 1e-250) & (want < 1.0 - 1e-6))
    np.testing.assert_allclose(torch.autograd.grad(batched.sum(), x)[0].numpy()[inside],
                               st.beta.pdf(XS, A, B)[inside], rtol=1e-11)
    k = inside[::len(inside) // 300]
    a, b, x = (v[k].clone().requires_grad_() for v in (a, b, x))
    ga, gb = torch.autograd.grad(betainc(a, b, x).sum(), (a, b))
    for g, e in ((ga, np.array([1.0, 0.0])), (gb, np.array([0.0, 1.0]))):
        h = 1e-5 * (e[0] * A[k] + e[1] * B[k])
        fd = (sp.betainc(A[k] + e[0] * h, B[k] + e[1] * h, XS[k]) - sp.betainc(A[k] - e[0] * h, B[k] - e[1] * h,
                                                                              XS[k])) / (2 * h)
        np.testing.assert_allclose(g.numpy(), fd, atol=1e-8, rtol=1e-5)
