"""ppl.ode against exact solutions, on both runtimes (through their own vmap and gradient, in float64) and on numpy
constants: linear systems (decay, a coupled pair, a harmonic oscillator, a stiff decay) against the matrix exponential,
values and gradients (in A by the Fréchet derivative); the logistic equation (nonlinear) against its closed
form and finite differences; Robertson's stiff problem with the implicit methods against scipy's Radau at
rtol 1e-10; a failed solve as NaN per particle; the errors; and a model whose likelihood solves an ODE (the decay
rate of noisy observations): its posterior and log Z against quadrature.

The global error of a solve is held to C · (atol + rtol·|y|) per entry, with C about 3x the largest measured on
these problems: 1.4 and 5.3 for torch's Dormand–Prince and Rodas4 (C = 10), 6.1 and 28 for diffrax's Dopri5 and
Kvaerno5 (C = 20, 100), 36 for scipy's BDF (C = 100). A gradient's error is at most 25 rtol times its largest entry
(diffrax's Dopri5 on the logistic equation; torch's solver: 1.8), allowed 100.
"""
import sys
import warnings

import numpy as np
import pytest
import scipy.integrate as si

import ppl
from ppl.backends.runtime import get_runtime

C = {"dopri5": 10.0, "bdf": 10.0}
C_DIFFRAX = {"dopri5": 20.0, "bdf": 100.0}
C_SCIPY = 100.0
K = 4.5  # standard errors allowed for Monte Carlo estimates
TOL = {"dopri5": (1e-8, 1e-10), "bdf": (1e-6, 1e-8)}     # (rtol, atol): Rodas4 (order 4) needs 4x the steps at 1e-8
GRAD = 100.0    # a gradient's error allowed, in rtol times its largest entry (measured: at most 25)


#: (runtime, method): diffrax compiles for 5-10 s a case, so one numpyro case runs in the fast suite
CASES = ["pyro-dopri5", "pyro-bdf", "numpyro-dopri5", pytest.param("numpyro-bdf", marks=pytest.mark.slow)]
SLOW_NUMPYRO = ["pyro-dopri5", "pyro-bdf", *(pytest.param(c, marks=pytest.mark.slow)
                                             for c in ("numpyro-dopri5", "numpyro-bdf"))]


def within(ys, exact, rtol, atol, c):
    """Whether every entry of ys is within c · (atol + rtol·|exact|) of exact (with the worst ratio to say)."""
    ratio = np.max(np.abs(ys - exact) / (atol + rtol * np.abs(exact)))
    return ratio <= c, ratio


def value_and_grad(runtime, fn, z, arg):
    """The runtime's own batched `value_and_grad` (jit-compiled on JAX) of a per-particle `fn(z, arg) -> (value,
    aux)`, in float64: (values, aux, gradients) as numpy."""
    rt = get_runtime(runtime, precision="float64")
    with rt.scope():
        vg = rt.value_and_grad(fn)
        (v, aux), g = (rt.jit(vg) if runtime == "numpyro" else vg)(rt.asarray(z), rt.asarray(arg))
        return rt.to_numpy(v), rt.to_numpy(aux), rt.to_numpy(g)


# ---- linear systems: y(t) = expm(A t) y0 ----

TS = np.array([0.5, 1.0, 2.0, 4.0])
A = np.array([[[-0.5, 0.0], [0.0, -2.0]],       # decay
              [[-1.0, 0.5], [0.2, -2.0]],       # a coupled pair
              [[0.0, 1.0], [-4.0, 0.0]],        # a harmonic oscillator, ω = 2
              [[-1e4, 0.0], [0.0, -1.0]]])      # a stiff decay: Dormand–Prince needs ~1e4 steps
Y0 = np.array([[1.0, 2.0], [1.0, -1.0], [1.0, 0.0], [1.0, 1.0]])
W = np.array([[1.0, -0.5], [0.3, 2.0], [-1.0, 0.7], [0.2, 0.4]])     # the weights of the loss Σ W · y(TS)
MAX_STEPS = 300     # the others need at most 80


def linear_loss(method, rtol, atol):
    """Per particle z = (A [4], y0 [2]): (Σ W · y(TS), y(TS))."""
    def fn(z, w):
        a, y0 = z[:4].reshape(2, 2), z[4:]
        ys = ppl.ode(lambda t, y, a: ppl.math.matmul(a, y), y0, 0.0, TS, a, method=method, rtol=rtol, atol=atol,
                     max_steps=MAX_STEPS)
        return (ys * w).sum(), ys
    return fn


def expm(m):
    """exp(m) by scaling and squaring of its Taylor series, with einsum: scipy's expm solves with LAPACK, whose
    threads crawl on a loaded 2-core machine (40 ms a 2x2 call)."""
    s = max(0, int(np.ceil(np.log2(max(np.abs(m).sum(1).max(), 1e-300)))) + 3)
    x, out, term = m / 2.0 ** s, np.eye(len(m)), np.eye(len(m))
    for k in range(1, 25):
        term = np.einsum("ij,jk->ik", term, x) / k
        out = out + term
    for _ in range(s):
        out = np.einsum("ij,jk->ik", out, out)
    return out


def linear_exact(a, y0):
    """expm(A t) y0 at TS and the gradient of Σ W · y(TS) in (A, y0): in A by the Fréchet derivative of expm, the
    upper right block of expm([[A, E], [0, A]] t)."""
    ys = np.stack([expm(a * t) @ y0 for t in TS])
    zero = np.zeros((2, 2))
    grad_a = [sum(w @ expm(np.block([[a, e.reshape(2, 2)], [zero, a]]) * t)[:2, 2:] @ y0 for w, t in zip(W, TS))
              for e in np.eye(4)]
    grad_y0 = sum(expm(a * t).T @ w for w, t in zip(W, TS))
    return ys, np.concatenate([grad_a, grad_y0])


@pytest.mark.parametrize("case", CASES)
def test_linear_systems_values_and_gradients(case):
    """Four particles in one vmapped call of the runtime's value_and_grad. The stiff one runs out of steps with the
    explicit method: NaN there only; the implicit method solves it."""
    runtime, method = case.split("-")
    rtol, atol = TOL[method]
    c = (C_DIFFRAX if runtime == "numpyro" else C)[method]
    _, ys, grads = value_and_grad(runtime, linear_loss(method, rtol, atol), np.concatenate([A.reshape(4, 4), Y0], 1), W)
    for i in range(4):
        if i == 3 and method == "dopri5":
            assert np.isnan(ys[i]).all()
            continue
        exact, exact_grad = linear_exact(A[i], Y0[i])
        ok, ratio = within(ys[i], exact, rtol, atol, c)
        assert ok, (i, ratio)
        assert np.max(np.abs(grads[i] - exact_grad)) < GRAD * rtol * np.max(np.abs(exact_grad)), (i, grads[i])


@pytest.mark.parametrize("method", ["dopri5", "kvaerno5", "bdf"])
def test_numpy_constants_use_scipy(method):
    """All inputs constant: a numpy float64 array back (scipy's RK45, Radau, BDF)."""
    rtol, atol = 1e-8, 1e-10
    for a, y0 in zip(A[:3], Y0):
        ys = ppl.ode(lambda t, y, a: ppl.math.matmul(a, y), y0, 0.0, TS, a, method=method, rtol=rtol, atol=atol)
        assert isinstance(ys, np.ndarray) and ys.dtype == np.float64 and ys.shape == (4, 2)
        ok, ratio = within(ys, linear_exact(a, y0)[0], rtol, atol, C_SCIPY)
        assert ok, ratio


@pytest.mark.parametrize("method", ["dopri5", "bdf"])
def test_scalar_decay_on_torch_and_at_t0(method):
    """A scalar state (shape ()), the first output time at t0 itself, float32 in, float32 out."""
    import torch
    ts = np.array([0.0, 0.5, 3.0])
    ys = ppl.ode(lambda t, y, k: -k * y, torch.tensor(2.0), 0.0, ts, torch.tensor(0.7), method=method)
    assert ys.shape == (3,) and ys.dtype == torch.float32
    ok, ratio = within(ys.numpy(), 2.0 * np.exp(-0.7 * ts), 1e-6, 1e-6, C[method])
    assert ok, ratio


# ---- the logistic equation y' = r y (1 − y / K) ----

TS_LOGISTIC = np.array([0.5, 2.0, 5.0])
LOGISTIC = np.array([[1.5, 10.0, 0.5], [0.4, 3.0, 5.0]])      # (r, K, y0) per particle


def logistic(t, y, r, k):
    return r * y * (1.0 - y / k)


def logistic_exact(r, k, y0, t):
    e = ppl.math.exp(r * t)
    return k * y0 * e / (k + y0 * (e - 1.0))


@pytest.mark.parametrize("case", SLOW_NUMPYRO)
def test_logistic_gradient_matches_the_closed_form(case):
    """y(TS) and its gradient in (r, K, y0) against the runtime's own derivative of the closed form."""
    runtime, method = case.split("-")
    rtol, atol = TOL[method]
    ts = TS_LOGISTIC

    def solved(z, w):
        ys = ppl.ode(logistic, z[2], 0.0, ts, z[0], z[1], method=method, rtol=rtol, atol=atol)
        return (ys * w).sum(), ys

    def closed(z, w):
        ys = ppl.math.namespace(z).stack([logistic_exact(z[0], z[1], z[2], float(t)) for t in ts])
        return (ys * w).sum(), ys
    w = np.array([1.0, -2.0, 0.5])
    _, ys, grads = value_and_grad(runtime, solved, LOGISTIC, w)
    _, exact, exact_grads = value_and_grad(runtime, closed, LOGISTIC, w)
    ok, ratio = within(ys, exact, rtol, atol, (C_DIFFRAX if runtime == "numpyro" else C)[method])
    assert ok, ratio
    assert np.max(np.abs(grads - exact_grads)) < GRAD * rtol * np.max(np.abs(exact_grads)), (grads, exact_grads)


@pytest.mark.parametrize("method", ["dopri5", "bdf"])
def test_logistic_gradient_under_vmap_of_grad_on_torch(method):
    """torch.func.vmap(torch.func.grad(·)) (the solver's vmap rule inside a gradient) against the closed form's
    gradient and, for Dormand–Prince at rtol 1e-10, central differences of the solver itself."""
    import torch
    rtol, atol = (1e-10, 1e-12) if method == "dopri5" else TOL[method]
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    ts = TS_LOGISTIC

    def loss(z):
        return (ppl.ode(logistic, z[2], 0.0, ts, z[0], z[1], method=method, rtol=rtol, atol=atol) * w).sum()

    def closed(z):
        return (torch.stack([logistic_exact(z[0], z[1], z[2], float(t)) for t in ts]) * w).sum()
    z = torch.tensor(LOGISTIC, dtype=torch.float64)
    grads = torch.func.vmap(torch.func.grad(loss))(z).numpy()
    exact = torch.func.vmap(torch.func.grad(closed))(z).numpy()
    assert np.max(np.abs(grads - exact)) < GRAD * rtol * np.max(np.abs(exact)), (grads, exact)
    if method == "dopri5":
        eps = 1e-4
        fd = [(float(loss(z[0] + eps * e)) - float(loss(z[0] - eps * e))) / (2 * eps)
              for e in torch.eye(3, dtype=torch.float64)]
        assert np.allclose(grads[0], fd, rtol=1e-6, atol=1e-8), (grads[0], fd)


@pytest.mark.parametrize("method", ["dopri5", pytest.param("bdf", marks=pytest.mark.slow)])
def test_compiled_solver_equals_eager_on_torch(method):
    """The torch solver's compiled attempt and step adjoint (inductor, `compiling("on")`; 10 s for Dormand–Prince,
    40 s for Rodas4) against eager: the same solution and gradient under vmap(grad), particle by particle."""
    import torch

    from ppl.backends.pyro_runtime import CompileWarning, compiling
    rtol, atol = TOL[method]
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    z = torch.tensor(LOGISTIC, dtype=torch.float64)

    def loss(z):
        return (ppl.ode(logistic, z[2], 0.0, TS_LOGISTIC, z[0], z[1], method=method, rtol=rtol, atol=atol) * w).sum()
    value_and_grad = torch.func.vmap(torch.func.grad_and_value(loss))
    with compiling("off"):
        eager = value_and_grad(z)
    with compiling("on"), warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)      # a compile that falls back to eager warns
        value_and_grad(z)
        compiled = value_and_grad(z)
    solvers = [p for p in sys.modules["ppl.ode"]._PROBLEMS.values() if p.method == method]
    assert any(e.compiled is not None for p in solvers for f in (p.attempt, p.steps_vjp) for e in f.entries.values())
    for a, b in zip(compiled, eager):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=0)


# ---- Robertson's stiff chemical kinetics ----

TS_ROBERTSON = np.array([0.4, 4.0, 40.0, 400.0])
K_ROBERTSON = np.array([0.04, 3e7, 1e4])


def robertson(t, y, k):
    a, b, c = y[0], y[1], y[2]
    return ppl.math.namespace(y).stack([-k[0] * a + k[2] * b * c, k[0] * a - k[2] * b * c - k[1] * b * b, k[1] * b * b])


@pytest.fixture(scope="module")
def robertson_reference():
    return si.solve_ivp(robertson, (0.0, TS_ROBERTSON[-1]), [1.0, 0.0, 0.0], args=(K_ROBERTSON,), method="Radau",
                        rtol=1e-10, atol=1e-14, t_eval=TS_ROBERTSON).y.T


@pytest.mark.parametrize("runtime", [pytest.param("numpyro", marks=pytest.mark.slow), "pyro", "numpy"])
def test_robertson_with_the_implicit_method(runtime, robertson_reference):
    rtol, atol, y0 = 1e-6, 1e-10, np.array([1.0, 0.0, 0.0])
    if runtime == "numpy":
        ys = ppl.ode(robertson, y0, 0.0, TS_ROBERTSON, K_ROBERTSON, method="bdf", rtol=rtol, atol=atol)
    else:
        rt = get_runtime(runtime, precision="float64")
        with rt.scope():
            ys = rt.to_numpy(ppl.ode(robertson, rt.asarray(y0), 0.0, TS_ROBERTSON, rt.asarray(K_ROBERTSON),
                                     method="bdf", rtol=rtol, atol=atol))
    c = {"numpyro": C_DIFFRAX["bdf"], "pyro": C["bdf"], "numpy": C_SCIPY}[runtime]
    ok, ratio = within(ys, robertson_reference, rtol, atol, c)
    assert ok, ratio


# ---- failed solves and errors ----

def test_too_many_steps_with_constants_raises():
    with pytest.raises(ppl.PPLError, match="max_steps=100"):
        ppl.ode(lambda t, y, k: -k * y, 1.0, 0.0, [1.0], 1e5, max_steps=100)


def test_a_failed_solve_in_a_model_is_loud():
    """Particles whose solve fails have a NaN density, which importance sampling refuses with the term named."""
    stiff = ppl.model(k=ppl.LogNormal(9.0, 1.0),
                      y=lambda k: ppl.Normal(ppl.ode(lambda t, y, k: -k * y, 1.0, 0.0, [1.0], k, max_steps=50), 1.0))
    with pytest.raises(ppl.PPLError, match="y: loc = nan"):
        ppl.sample(stiff.condition(y=np.array([0.0])), method="is", runtime="pyro", particles=200, seed=0)


def _michaelis_menten(t, c, k_a, k_m, v_m):
    """one_comp_mm_elim_abs's right-hand side (D = 30, V = 2): stiff where K_m is small."""
    return ppl.math.exp(-k_a * t) * 15.0 * k_a - (v_m / 2.0) * c / (k_m + c)


@pytest.mark.slow
def test_implicit_gradient_where_the_density_is_not_finite_is_no_error():
    """The gradient of the implicit solve (diffrax Kvaerno5) is computed, not an error, at points that NUTS's
    warmup reaches in float32, where the density is not finite (NUTS: a divergence) or the solve meets a trial
    step whose right-hand side is not finite: a concentration solved to 0 (log C = −inf), parameters that
    overflow (e^110), a stiff point; lineax's linear solves of the gradient raised at each. A particle beside
    them keeps its finite value and gradient (against central differences of scipy's Radau). Slow: diffrax
    compiles the implicit gradient for about 10 s."""
    ts = np.array([0.5, 1.0, 2.0, 4.0, 8.0])

    def log_c(z, _):
        c = ppl.ode(_michaelis_menten, np.zeros(1, np.float32), 0.0, ts, *ppl.math.exp(z), method="bdf",
                    max_steps=2000)
        return ppl.math.sum(ppl.math.log(c)), ()
    z = np.array([[0.0, 0.5, 0.3], [14.226467, -8.755947, 25.818504], [109.52561, 11.396894, -90.132706],
                  [2.0, -3.0, 3.0]], np.float32)
    rt = get_runtime("numpyro")
    with rt.scope():
        (v, _), g = rt.jit(rt.value_and_grad(log_c))(rt.asarray(z), None)
    v, g = rt.to_numpy(v), rt.to_numpy(g)
    assert np.isfinite(v[0]) and np.isfinite(g[0]).all() and not np.isfinite(v[1:3]).any()
    def exact(p):
        sol = si.solve_ivp(lambda t, c: _michaelis_menten(t, c, *p), (0, 8), [0.0], method="Radau", t_eval=ts,
                           rtol=1e-10, atol=1e-12)
        return np.sum(np.log(sol.y[0]))
    h = 1e-5
    fd = [(exact(np.exp(z[0] + h * e)) - exact(np.exp(z[0] - h * e))) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(g[0], fd, rtol=1e-3)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(method="rk4"), ppl.UnknownNameError, "dopri5, kvaerno5, bdf"),
    (dict(rtol=0.0), ppl.ValueRangeError, "rtol"),
    (dict(atol=-1.0), ppl.ValueRangeError, "atol"),
    (dict(max_steps=0), ppl.ValueRangeError, "max_steps"),
    (dict(ts=[1.0, 0.5]), ppl.ValueRangeError, "ts\\[0\\] < ts\\[1\\]"),
    (dict(ts=[1.0, 1.0]), ppl.ValueRangeError, "ts\\[0\\] < ts\\[1\\]"),
    (dict(ts=[-1.0, 1.0]), ppl.ValueRangeError, "t0 <= ts\\[0\\]"),
    (dict(ts=[]), ppl.ValueRangeError, "non-empty 1-d"),
    (dict(ts=[[1.0]]), ppl.ValueRangeError, "non-empty 1-d"),
    (dict(t0=np.nan), ppl.ValueRangeError, "t0 must be a finite number"),
    (dict(rhs=3.0), ppl.PPLError, "rhs must be a function"),
    (dict(rhs=lambda t, y: y[:1]), ppl.ShapeError, "y's shape \\(2,\\)"),
])
@pytest.mark.parametrize("runtime", ["numpy", "pyro", "numpyro"])
def test_bad_arguments(kwargs, error, match, runtime):
    """Checked before any solve, on every runtime."""
    rt = get_runtime("pyro" if runtime == "numpy" else runtime)
    y0 = np.ones(2) if runtime == "numpy" else rt.asarray(np.ones(2))
    call = {**dict(rhs=lambda t, y: -y, y0=y0, t0=0.0, ts=[1.0, 2.0]), **kwargs}
    with pytest.raises(error, match=match):
        ppl.ode(call.pop("rhs"), call.pop("y0"), call.pop("t0"), call.pop("ts"), **call)


@pytest.mark.parametrize("runtime", ["pyro", "numpyro"])
def test_times_that_depend_on_the_sites_are_refused(runtime):
    rt = get_runtime(runtime)
    fn = rt.vmap(lambda s: ppl.ode(lambda t, y: -y, 1.0, 0.0, s * rt.asarray(np.array([1.0, 2.0])))[-1])
    with pytest.raises(ppl.PPLError, match="t0 and ts must be constants"):
        fn(rt.asarray(np.array([1.0, 2.0])))


def test_torch_closure_over_a_batched_value_is_refused():
    import torch
    solve = lambda k: ppl.ode(lambda t, y: -k * y, torch.tensor(1.0), 0.0, [1.0])  # noqa: E731
    with pytest.raises(ppl.PPLError, match="pass the value as an argument"):
        torch.func.vmap(solve)(torch.tensor([1.0, 2.0]))


def test_second_derivatives_on_torch_are_refused():
    import torch
    loss = lambda k: ppl.ode(lambda t, y, k: -k * y, torch.tensor(1.0), 0.0, [1.0], k)[0]  # noqa: E731
    assert np.isclose(float(torch.func.grad(loss)(torch.tensor(1.0))), -np.exp(-1.0), rtol=1e-5)
    with pytest.raises(ppl.PPLError, match="second derivatives"):
        torch.func.grad(torch.func.grad(loss))(torch.tensor(1.0))


def test_missing_diffrax_names_the_extra(monkeypatch):
    import jax.numpy as jnp
    monkeypatch.setitem(sys.modules, "diffrax", None)      # `import diffrax` raises ImportError
    with pytest.raises(ppl.PPLError, match='pip install "ppl\\[ode\\]"'):
        ppl.ode(lambda t, y: -y, jnp.ones(2), 0.0, [1.0])


# ---- a model whose likelihood solves an ODE ----

DECAY_TS = np.array([0.5, 1.0, 1.5, 2.0, 3.0])
DECAY_Y0, DECAY_SIGMA = 2.0, 0.1
DECAY_OBS = DECAY_Y0 * np.exp(-0.7 * DECAY_TS) + DECAY_SIGMA * np.random.default_rng(0).normal(size=DECAY_TS.size)
DECAY = ppl.model(
    data={"ts": DECAY_TS}, k=ppl.LogNormal(0.0, 0.5),
    y=lambda k, ts: ppl.Normal(ppl.ode(lambda t, y, k: -k * y, DECAY_Y0, 0.0, ts, k), DECAY_SIGMA),
).condition(y=DECAY_OBS)


@pytest.fixture(scope="module")
def decay_posterior():
    """log Z, the posterior mean and variance of k by quadrature of y0 exp(−k t)."""
    def density(k):
        log_prior = -0.5 * (np.log(k) / 0.5) ** 2 - np.log(k * 0.5 * np.sqrt(2 * np.pi))
        residual = (DECAY_OBS - DECAY_Y0 * np.exp(-k * DECAY_TS)) / DECAY_SIGMA
        return np.exp(log_prior - 0.5 * residual @ residual - DECAY_TS.size * np.log(DECAY_SIGMA * np.sqrt(2 * np.pi)))
    z = si.quad(density, 0.0, 5.0, epsabs=0, epsrel=1e-11, limit=200)[0]
    mean = si.quad(lambda k: k * density(k), 0.0, 5.0, epsabs=0, epsrel=1e-11, limit=200)[0] / z
    var = si.quad(lambda k: (k - mean) ** 2 * density(k), 0.0, 5.0, epsabs=0, epsrel=1e-11, limit=200)[0] / z
    return np.log(z), mean, var


@pytest.mark.parametrize("runtime", ["pyro", "numpyro"])
def test_decay_rate_posterior_by_importance_sampling(runtime, decay_posterior):
    """log Z within K se; the mean within K sd / √ESS; on torch with compiling on, which the solver refuses
    quietly (it runs eagerly, without a CompileWarning)."""
    from ppl.backends.pyro_runtime import CompileWarning, compiling
    log_z, mean, var = decay_posterior
    with compiling("on"), warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        r = ppl.sample(DECAY, method="is", runtime=runtime, particles=4000, seed=0)
    assert abs(r.log_z - log_z) < K * r.log_z_se, (r.log_z, log_z, r.log_z_se)
    assert abs(r.mean("k") - mean) < K * np.sqrt(var / r.ess), (r.mean("k"), mean, r.ess)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["pyro", "numpyro"])
def test_decay_rate_posterior_by_nuts(runtime, decay_posterior):
    """NUTS through the solver's gradient: the mean within K MCSE, the variance within K of its SE."""
    from ppl.backends.hmc import ConvergenceWarning
    _, mean, var = decay_posterior
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = ppl.sample(DECAY, method="nuts", runtime=runtime, seed=0, num_warmup=150, num_samples=200, chains=2)
    d = r.diagnostics
    assert d["divergences"] == 0
    assert abs(r.mean("k") - mean) < K * d["mcse_mean"]["k"], (r.mean("k"), mean, d["mcse_mean"]["k"])
    ess = min(d["ess_bulk"]["k"], d["ess_tail"]["k"])
    assert abs(r.var("k") - var) < K * var * np.sqrt(2 / ess), (r.var("k"), var, ess)
