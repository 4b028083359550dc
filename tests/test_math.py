"""ppl.math on the arrays of both runtimes: Stan's built-ins against numpy/scipy values on numpy, JAX and torch, and
vmapped (jax.vmap, torch.func.vmap) with gradients against central differences of the float64 reference."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sp
import torch
from scipy.spatial.distance import cdist

import ppl
import ppl.math as pm
from ppl.backends import get_runtime

X = np.array([-1.3, -0.2, 0.4, 2.1])
Y = np.array([0.7, -0.5, 1.9, -2.2])
P = np.array([0.1, 0.45, 0.8, 0.95])
POS = np.array([0.3, 1.1, 2.5, 4.0])
NEG = np.array([-3.0, -1.2, -0.4, -0.05])
M = np.array([[1.0, -0.5], [0.3, 2.0], [-1.2, 0.7]])                 # 3 x 2
S = np.array([[2.0, 0.3, -0.4], [0.3, 1.5, 0.2], [-0.4, 0.2, 1.0]])   # symmetric positive-definite
L = np.linalg.cholesky(S)
V3, V2 = np.array([0.5, -1.0, 2.0]), np.array([1.5, -0.3])
PTS = np.array([[0.0, 1.0], [0.5, -0.2], [1.5, 0.3], [-0.7, 0.9]])
ALPHA, RHO, RHO2 = np.array(1.3), np.array(0.8), np.array([0.8, 1.7])


def gp(kernel):
    """K = α² k(r) with r the Euclidean distance of the points scaled by ρ (scipy's cdist)."""
    def ref(*args):
        x1, x2, alpha, rho = args if len(args) == 4 else (args[0],) + args
        pts = lambda x: x[:, None] if x.ndim == 1 else x  # noqa: E731
        return alpha ** 2 * kernel(cdist(pts(x1) / rho, pts(x2) / rho))
    return ref


SQ3, SQ5 = math.sqrt(3), math.sqrt(5)
KERNELS = {"gp_exp_quad_cov": gp(lambda r: np.exp(-r ** 2 / 2)),
           "gp_matern32_cov": gp(lambda r: (1 + SQ3 * r) * np.exp(-SQ3 * r)),
           "gp_matern52_cov": gp(lambda r: (1 + SQ5 * r + 5 * r ** 2 / 3) * np.exp(-SQ5 * r)),
           "gp_exponential_cov": gp(lambda r: np.exp(-r))}

# id -> (function name, arguments (float arrays; ints stay Python ints), float64 reference)
ELEMENTWISE = {
    "exp2": ("exp2", (X,), np.exp2), "log2": ("log2", (POS,), np.log2), "log10": ("log10", (POS,), np.log10),
    "erf": ("erf", (X,), sp.erf), "erfc": ("erfc", (X,), sp.erfc), "Phi": ("Phi", (X,), sp.ndtr),
    "inv_Phi": ("inv_Phi", (P,), sp.ndtri), "digamma": ("digamma", (POS,), sp.digamma),
    "lgamma": ("lgamma", (POS,), sp.gammaln), "inv_logit": ("inv_logit", (X,), sp.expit),
    "tgamma": ("tgamma", (np.array([-1.5, -0.5, 0.7, 3.2]),), sp.gamma), "cbrt": ("cbrt", (X,), np.cbrt),
    "inv": ("inv", (POS,), lambda x: 1 / x), "inv_sqrt": ("inv_sqrt", (POS,), lambda x: x ** -0.5),
    "inv_square": ("inv_square", (POS,), lambda x: x ** -2.0), "log1m": ("log1m", (P,), lambda p: np.log(1 - p)),
    "log1m_exp": ("log1m_exp", (NEG,), lambda x: np.log(1 - np.exp(x))),
    "Phi_approx": ("Phi_approx", (X,), lambda x: sp.expit(0.07056 * x ** 3 + 1.5976 * x)),
    "hypot": ("hypot", (X, Y), np.hypot), "fmin": ("fmin", (X, Y), np.fmin), "fmax": ("fmax", (X, Y), np.fmax),
    "fma": ("fma", (X, Y, POS), lambda x, y, z: x * y + z),
    "log_diff_exp": ("log_diff_exp", (Y, Y - POS), lambda a, b: np.log(np.exp(a) - np.exp(b))),
    "lmultiply": ("lmultiply", (X, POS), lambda a, b: a * np.log(b)),
    "lbeta": ("lbeta", (POS, P), sp.betaln),
    "binomial_coefficient_log": ("binomial_coefficient_log", (POS + 2, POS / 2), lambda n, k: np.log(sp.binom(n, k))),
    "lchoose": ("lchoose", (POS + 2, POS / 2), lambda n, k: np.log(sp.binom(n, k))),
}
ARRAYS = {
    "sort_asc": ("sort_asc", (X,), np.sort), "sort_desc": ("sort_desc", (X,), lambda x: np.sort(x)[::-1]),
    "dot_self": ("dot_self", (X,), lambda x: x @ x), "cumulative_sum": ("cumulative_sum", (X,), np.cumsum),
    "crossprod": ("crossprod", (M,), lambda m: m.T @ m), "tcrossprod": ("tcrossprod", (M,), lambda m: m @ m.T),
    "add_diag_vector": ("add_diag", (S, V3), lambda s, d: s + np.diag(d)),
    "add_diag_number": ("add_diag", (S, np.array(0.7)), lambda s, d: s + d * np.eye(3)),
    "quad_form_matrix": ("quad_form", (S, M), lambda a, b: b.T @ a @ b),
    "quad_form_vector": ("quad_form", (S, V3), lambda a, b: b @ a @ b),
    "diag_pre_multiply": ("diag_pre_multiply", (V3, M), lambda v, m: np.diag(v) @ m),
    "diag_post_multiply": ("diag_post_multiply", (M, V2), lambda m, v: m @ np.diag(v)),
    "mdivide_left_tri_low_vector": ("mdivide_left_tri_low", (L, V3), lambda t, b: np.linalg.solve(np.tril(t), b)),
    "mdivide_left_tri_low_matrix": ("mdivide_left_tri_low", (L, M), lambda t, b: np.linalg.solve(np.tril(t), b)),
    "inverse": ("inverse", (S,), np.linalg.inv),
    "log_determinant": ("log_determinant", (S,), lambda a: np.linalg.slogdet(a)[1]),
    "append_row_vectors": ("append_row", (X, V3), lambda x, y: np.concatenate([x, y])),
    "append_row_number": ("append_row", (np.array(0.5), X), lambda x, y: np.concatenate([[x], y])),
    "append_row_matrix": ("append_row", (M, V2), lambda m, v: np.vstack([m, v])),
    "append_col_matrix": ("append_col", (M, V3), lambda m, v: np.hstack([m, v[:, None]])),
    "append_col_vectors": ("append_col", (V3, V3 ** 2), lambda x, y: np.stack([x, y], axis=1)),
    "rep_vector": ("rep_vector", (np.array(2.5), 3), lambda x, n: np.full(n, x)),
    "rep_matrix_number": ("rep_matrix", (np.array(2.5), 2, 3), lambda x, m, n: np.full((m, n), x)),
    "rep_matrix_vector": ("rep_matrix", (V3, 2), lambda v, n: np.stack([v, v], axis=1)),
    "diag_matrix": ("diag_matrix", (X,), np.diag), "diagonal": ("diagonal", (S,), np.diag),
    "segment": ("segment", (X, 2, 2), lambda x, i, n: x[i - 1:i - 1 + n]),
    # jax and torch differentiate a Cholesky factor as a function of a symmetric matrix
    "cholesky_decompose": ("cholesky_decompose", (S,), lambda a: np.linalg.cholesky((a + a.T) / 2)),
}
GP = {f"{name}_{form}": (name, args, ref) for name, ref in KERNELS.items() for form, args in (
    ("vector", (X, ALPHA, RHO)), ("points", (PTS, ALPHA, RHO2)), ("cross", (X, Y[:3], ALPHA, RHO)),
    ("cross_points", (PTS, PTS[:2] + 0.3, ALPHA, RHO2)))}
CASES = {**ELEMENTWISE, **ARRAYS, **GP}
GROUPS = {"elementwise": ELEMENTWISE, "arrays": ARRAYS, "gp": GP}
CONVERT = {"numpy": lambda a: a, "jax": lambda a: jnp.asarray(a, jnp.float32),
           "torch": lambda a: torch.as_tensor(a, dtype=torch.float32)}


BATCH = 3   # particles k = 0, 1, 2: every float argument scaled by 1 + k / 100
VMAP = {"jax": jax.vmap, "torch": torch.func.vmap}
VJP = {"jax": jax.vjp, "torch": torch.func.vjp}
# XLA's backend optimizations take most of the compilation and change no value this test compares
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def floats(args):
    return [j for j, a in enumerate(args) if isinstance(a, np.ndarray)]


def on(fw, args):
    return [CONVERT[fw](a) if isinstance(a, np.ndarray) else a for a in args]


def scaled(args):
    return [[a * (1 + k / 100) if isinstance(a, np.ndarray) else a for a in args] for k in range(BATCH)]


def of_floats(name, args):
    """ppl.math.`name` as a function of the float arguments of `args` only (the integers stay fixed)."""
    fn, idx = getattr(pm, name), floats(args)

    def f(*values):
        full = list(args)
        for j, v in zip(idx, values):
            full[j] = v
        return fn(*full)
    return f


def compute(fw, cases):
    """{id: (value, vmapped values, vmapped gradients of the sum of the values per float argument)} of every case
    on framework `fw` (numpy: the value only); on JAX one compiled call for the group, without the unbatched value
    (the first particle's)."""
    def values_and_grads(f):
        def one(*a):
            out, pullback = VJP[fw](f, *a)
            return out, pullback(out * 0 + 1)
        return VMAP[fw](one)

    def run(inputs):
        out = {}
        for k, (name, args, _) in cases.items():
            f, (one, batched) = of_floats(name, args), inputs[k]
            out[k] = (f(*one),) if fw == "numpy" else (() if fw == "jax" else (f(*one),)) + values_and_grads(f)(
                *batched)
        return out
    convert = CONVERT[fw]
    inputs = {k: ([convert(args[j]) for j in floats(args)],
                  [convert(np.stack([a[j] for a in scaled(args)])) for j in floats(args)])
              for k, (_, args, _) in cases.items()}
    if fw == "jax":
        return {k: (v[0][0],) + v for k, v in
                jax.jit(run).lower(inputs).compile(compiler_options=FAST_COMPILE)(inputs).items()}
    return run(inputs)


def _central(ref, args, j, h=1e-6):
    """d/d args[j] of Σ ref(args), by central differences in float64."""
    out = np.zeros(np.shape(args[j]))
    for e in np.ndindex(out.shape):
        up, down = (np.array(args[j], dtype=np.float64) for _ in range(2))
        up[e] += h
        down[e] -= h
        out[e] = (np.sum(ref(*[up if i == j else a for i, a in enumerate(args)]))
                  - np.sum(ref(*[down if i == j else a for i, a in enumerate(args)]))) / (2 * h)
    return out


def check_group(group, fw):
    """Each function of the group against its float64 reference on `fw`; on JAX and torch also vmapped over
    particles, with the gradient of the sum of its values in each float argument against central differences."""
    cases = GROUPS[group]
    got = compute(fw, cases)
    close = lambda a, b, msg, tol=2e-5: np.testing.assert_allclose(  # noqa: E731
        np.asarray(a, dtype=np.float64), b, rtol=tol, atol=tol / 10 if tol < 1e-4 else tol, err_msg=msg)
    for k, (_, args, ref) in cases.items():
        close(got[k][0], ref(*args), f"{k} on {fw}")
        if fw == "numpy":
            continue
        batch = scaled(args)
        close(got[k][1], np.stack([ref(*a) for a in batch]), f"{k} vmapped on {fw}")
        for i, j in enumerate(floats(args)):
            close(got[k][2][i], np.stack([_central(ref, a, j) for a in batch]),
                  f"{k} on {fw}: gradient in argument {j + 1}", tol=1e-3)


@pytest.mark.parametrize("fw", list(CONVERT))
def test_elementwise_functions(fw):
    check_group("elementwise", fw)


@pytest.mark.parametrize("fw", list(CONVERT))
def test_vector_and_matrix_functions(fw):
    check_group("arrays", fw)


@pytest.mark.parametrize("fw", list(CONVERT))
def test_gp_covariance_functions(fw):
    check_group("gp", fw)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_constants_shapes_and_special_values():
    b = pm.BUILTINS
    assert b["pi"]() == math.pi and b["e"]() == math.e and b["sqrt2"]() == math.sqrt(2)
    assert math.isnan(b["not_a_number"]()) and b["positive_infinity"]() == -b["negative_infinity"]() == math.inf
    assert b["machine_precision"]() == np.finfo(np.float64).eps
    assert pm.pi == math.pi and pm.e == math.e     # the module's constants are the functions' values
    assert b["log2"]() == math.log(2) and b["log10"]() == math.log(10)
    for fw in CONVERT:
        m, x = on(fw, (M, X))
        assert (pm.rows(m), pm.cols(m), pm.num_elements(m), pm.rows(x), pm.cols(x)) == (3, 2, 6, 4, 1)
        assert float(pm.lmultiply(*on(fw, (np.array(0.0), np.array(0.0))))) == 0.0
        assert float(pm.log_diff_exp(*on(fw, (np.array(1.0), np.array(-np.inf))))) == pytest.approx(1.0)
        assert float(pm.log1m_exp(*on(fw, (np.array(0.0),)))) == -np.inf


@pytest.mark.parametrize("fw", ["jax", "torch"])
def test_constants_mix_with_runtime_arrays(fw):
    """A numpy constant beside a runtime array is converted to the runtime's dtype and device."""
    x = CONVERT[fw](X)
    for got, want in ((pm.append_row(V3, x), np.concatenate([V3, X])), (pm.hypot(Y, x), np.hypot(Y, X)),
                      (pm.quad_form(S, CONVERT[fw](V3)), V3 @ S @ V3), (pm.rep_vector(2.0, 3, like=x), np.full(3, 2.0)),
                      (pm.rep_matrix(V3, 2, like=x), np.stack([V3, V3], axis=1)),
                      (pm.gp_exp_quad_cov(X, 1.3, CONVERT[fw](RHO)), KERNELS["gp_exp_quad_cov"](X, 1.3, RHO))):
        assert pm.framework(got) == fw
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=2e-5, atol=2e-6)


def test_segment_is_one_based_and_checked():
    np.testing.assert_array_equal(pm.segment(X, 1, 4), X)
    for i, n in ((0, 2), (4, 2), (1, -1)):
        with pytest.raises(ppl.ValueRangeError, match="segment"):
            pm.segment(X, i, n)
    # an index traced by JAX (a compiled loop's variable): a dynamic slice
    got = jax.jit(lambda i: pm.segment(jnp.asarray(X), i, 2))(3)
    np.testing.assert_allclose(got, X[2:4], rtol=1e-6)


def test_segment_at_a_per_particle_index(runtime):
    """segment(x, k, 3) with k = floor(z₀) per particle under the runtime's vmap, x the rest of z: the numpy slice
    (an index batched by torch's vmap is no longer read by int()), and a gradient of sum(segment²) that is 2x on
    the slice and 0 elsewhere (k itself is piecewise constant)."""
    rt = get_runtime(runtime, precision="float64")
    x = np.array([-1.3, -0.2, 0.4, 2.1, 0.9])
    z0 = np.array([np.concatenate([[k + 0.5], x]) for k in (1, 2, 3)])

    def log_p(z, _):
        s = pm.segment(z[1:], pm.floor(z[0]), 3)
        return (s * s).sum(), s
    with rt.scope():
        (value, s), grad = rt.value_and_grad(log_p)(rt.asarray(z0), None)
        fixed = rt.vmap(lambda k: pm.segment(rt.asarray(x), k, 3))(rt.asarray(np.array([1, 2, 3])))
    want = np.stack([x[k - 1:k + 2] for k in (1, 2, 3)])
    np.testing.assert_array_equal(rt.to_numpy(s), want)
    np.testing.assert_array_equal(rt.to_numpy(fixed), want)
    np.testing.assert_allclose(rt.to_numpy(value), (want ** 2).sum(axis=1), rtol=1e-15)
    np.testing.assert_array_equal(rt.to_numpy(grad), [np.concatenate([[0.0], np.where(np.isin(np.arange(5), range(
        k - 1, k + 2)), 2 * x, 0.0)]) for k in (1, 2, 3)])


@pytest.mark.parametrize("asarray", [jnp.asarray, torch.as_tensor], ids=["jax", "torch"])
def test_cholesky_is_nan_where_not_positive_definite(asarray):
    """A proposal outside the domain gives NaN (then a −inf density, a rejection), not an exception that stops
    the batch (torch.linalg.cholesky raised on one of 10⁴ particles in gp_pois_regr)."""
    good = np.array([[4.0, 2.0], [2.0, 3.0]])
    batch = asarray(np.stack([good, -np.eye(2), np.full((2, 2), np.nan)]))
    factor = np.asarray(ppl.math.cholesky(batch))
    np.testing.assert_allclose(factor[0], np.linalg.cholesky(good), rtol=1e-6)
    assert np.isnan(factor[1:]).any(axis=(-2, -1)).all()
