"""Ordinary differential equations: `ode(rhs, y0, t0, ts, *args)` is the solution at the times `ts` of

    dy/dt = rhs(t, y, *args),    y(t0) = y0,

an array of shape (len(ts),) + y0.shape. It is written for one particle (the runtime vmaps it over particles and
chains) and is differentiable in y0 and args (NUTS, HMC and MALA need the gradient). Each step's error estimate e
is held to ‖e / (atol + rtol·|y|)‖ ≤ 1 in the RMS norm over y's entries, with a step size per particle.

* JAX arrays: diffrax (the `ode` extra). "dopri5" is the explicit Dormand–Prince 5(4) pair, "kvaerno5" Kværnø's
  implicit, L-stable ESDIRK 5(4) for stiff systems; diffrax has no BDF, so "bdf" is Kvaerno5 as well.
* torch tensors: the solver of this module. "dopri5" is the same Dormand–Prince pair; "kvaerno5" and "bdf" are
  Rodas4 (Hairer & Wanner), a linearly implicit Rosenbrock method of order 4(3), L-stable and stiffly accurate:
  each stage solves one linear system with the exact Jacobian (torch.func) instead of Newton iterations. It runs
  in a torch.autograd.Function whose vmap rule solves the whole batch of particles as one system of independent
  solves (a step size each), so no adaptive control flow runs under torch.func.vmap; the gradient is the discrete
  adjoint of the accepted steps (the exact derivative of the computed solution) and works under torch.func.grad.
  An attempted step with its controller, and the adjoint of a few steps, each run as one graph compiled by
  inductor once the solves have run long enough to pay for it (`PPL_TORCH_COMPILE`).
  On torch, `rhs` must receive every value that depends on the sites through `args`, not through its closure.
* numpy (every input a constant): scipy, in float64: RK45 (the same Dormand–Prince pair), Radau ("kvaerno5") or
  BDF ("bdf").

A solve that fails (more than `max_steps` steps, a step size too small to make progress, or a solution that is not
finite) is NaN for that particle, never a number: SMC and importance sampling refuse NaN densities with the term
named, NUTS rejects the proposal as a divergence. With constant inputs a failed solve raises PPLError.
"""
import functools
import math
import types

import numpy as np

from .errors import PPLError, ShapeError, UnknownNameError, ValueRangeError
from .math import framework

METHODS = ("dopri5", "kvaerno5", "bdf")
ADJOINT_STEPS = 4   # steps of the torch solver's adjoint per compiled call


def ode(rhs, y0, t0, ts, *args, method="dopri5", rtol=1e-6, atol=1e-6, max_steps=4096):
    """y(ts) for dy/dt = rhs(t, y, *args), y(t0) = y0 (see the module docstring). `rhs` uses ppl.math and array
    operators; `t0` and `ts` are constants (data) with t0 ≤ ts[0] < ts[1] < ...; `args` may be arrays of the
    runtime (the values the gradient is taken with respect to) or constants."""
    if not callable(rhs):
        raise PPLError(f"ode: rhs must be a function rhs(t, y, *args), got {type(rhs).__name__}")
    if method not in METHODS:
        raise UnknownNameError(f"ode: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < math.inf:
            raise ValueRangeError(f"ode: {name} must be a positive number, got {tol!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise ValueRangeError(f"ode: max_steps must be a positive integer, got {max_steps!r}")
    t0, ts = _times(t0, ts)
    solve = {"jax": _jax, "torch": _torch, "numpy": _numpy}[framework(y0, *args)]
    return solve(rhs, y0, t0, ts, args, method, float(rtol), float(atol), int(max_steps))


def _times(t0, ts):
    """t0 as a float and ts as a float64 numpy vector, checked: constants, finite, t0 ≤ ts[0] < ts[1] < ..."""
    try:
        t0, ts = (np.asarray(x.detach().cpu() if _is_plain_tensor(x) else x, dtype=np.float64) for x in (t0, ts))
    except Exception:  # noqa: BLE001 -- a tracer or a batched tensor: a value that depends on the sites
        raise PPLError("ode: t0 and ts must be constants (numbers or data), not values that depend on the sites")
    if t0.ndim != 0 or not np.isfinite(t0):
        raise ValueRangeError(f"ode: t0 must be a finite number, got {t0!r}")
    if ts.ndim != 1 or ts.size == 0 or not np.isfinite(ts).all():
        raise ValueRangeError(f"ode: ts must be a non-empty 1-d array of finite times, got shape {ts.shape}")
    if ts[0] < t0 or (np.diff(ts) <= 0).any():
        raise ValueRangeError(f"ode: the times must satisfy t0 <= ts[0] < ts[1] < ... (t0 = {float(t0):g}, "
                              f"ts = {np.array2string(ts, threshold=8)})")
    return float(t0), ts


def _is_plain_tensor(x):
    """A torch tensor that is a constant: neither batched nor tracked by a torch.func transform, nor requiring grad."""
    if not type(x).__module__.startswith("torch"):
        return False
    import torch
    return not (x.requires_grad or torch._C._functorch.is_functorch_wrapped_tensor(x))


def _check_shape(out, shape):
    if tuple(np.shape(out)) != tuple(shape):
        raise ShapeError(f"ode: rhs(t, y, *args) must return an array of y's shape {tuple(shape)}, "
                         f"got shape {tuple(np.shape(out))}")


# ---- JAX: diffrax ----

def _jax(rhs, y0, t0, ts, args, method, rtol, atol, max_steps):
    try:
        import diffrax
    except ImportError:
        raise PPLError("ode on JAX needs the package 'diffrax', which is not installed",
                       hint='pip install "ppl[ode]"') from None
    import jax.numpy as jnp
    floating = framework(y0) == "jax" and jnp.issubdtype(y0.dtype, jnp.floating)
    dtype = y0.dtype if floating else jnp.result_type(float)    # JAX's default float (float64 under x64)
    y0 = jnp.asarray(y0, dtype=dtype)
    _check_shape(rhs(jnp.asarray(t0, dtype), y0, *args), y0.shape)
    term = diffrax.ODETerm(_inert_where_not_finite(lambda t, y, a: jnp.asarray(rhs(t, y, *a), dtype=dtype)))
    solver = diffrax.Dopri5() if method == "dopri5" else diffrax.Kvaerno5()
    sol = diffrax.diffeqsolve(term, solver, t0, float(ts[-1]), None, y0, args=args,
                              saveat=diffrax.SaveAt(ts=jnp.asarray(ts, dtype=dtype)),
                              stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                              max_steps=max_steps, throw=False)
    ok = (sol.result == diffrax.RESULTS.successful) & jnp.all(jnp.isfinite(sol.ys))
    return jnp.where(ok, _shielded(sol.ys, (y0, args)), jnp.nan)


def _inert_where_not_finite(f):
    """f(t, y, args), differentiated through its Jacobian, which is taken as 0 wherever f or its Jacobian is not
    finite. Such a point is met by a trial step that the controller rejects (its error is not finite), which adds
    nothing to the solution, or where a derivative overflows (K_m² below float32's range in a Michaelis–Menten
    rate); reverse mode took 0 × ∞ there, NaN, and the implicit solver's linear solves of the gradient raised on it
    (lineax refuses a non-finite operator or right-hand side). The tangent is J · (dt, dy, dargs) over the floating
    inputs, J from jacfwd: n + len(args) evaluations of f's tangent per evaluation, small for the systems ODE
    models solve."""
    import jax
    import jax.numpy as jnp

    guarded = jax.custom_jvp(f)

    @guarded.defjvp
    def _jvp(primals, tangents):
        leaves, tree = jax.tree_util.tree_flatten(primals)
        dleaves = jax.tree_util.tree_leaves(tangents)
        floating = [i for i, x in enumerate(leaves) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]

        def of(*xs):
            full = list(leaves)
            for i, x in zip(floating, xs):
                full[i] = x
            return f(*jax.tree_util.tree_unflatten(tree, full))
        xs = [leaves[i] for i in floating]
        out = of(*xs)
        jacs = jax.jacfwd(of, argnums=tuple(range(len(xs))))(*xs)
        bad = ~jnp.all(jnp.isfinite(out))
        for jac in jacs:
            bad = bad | ~jnp.all(jnp.isfinite(jac))
        tangent = jnp.zeros_like(out)
        for i, jac in zip(floating, jacs):
            tangent = tangent + jnp.tensordot(jnp.where(bad, 0.0, jac), dleaves[i], axes=jnp.ndim(leaves[i]))
        return out, tangent
    return guarded


def _shielded(ys, inputs):
    """ys, whose cotangent, where it is not finite (a density of −inf at the solution: log C at C = 0), is not
    passed into the solver's reverse pass (whose linear solves, in the implicit methods, raise on a non-finite
    right-hand side: lineax) but made the gradient of `inputs` directly: NaN, which NUTS takes as a divergence."""
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def shield(ys, inputs):
        return ys

    def forward(ys, inputs):
        return ys, inputs

    def backward(inputs, g):
        bad = ~jnp.all(jnp.isfinite(g))
        def poison(x):
            if jnp.issubdtype(x.dtype, jnp.inexact):
                return jnp.where(bad, jnp.nan, jnp.zeros_like(x))
            return np.zeros(x.shape, jax.dtypes.float0)
        return jnp.where(bad, jnp.zeros_like(g), g), jax.tree_util.tree_map(poison, inputs)
    shield.defvjp(forward, backward)
    return shield(ys, jax.tree_util.tree_map(jnp.asarray, inputs))


# ---- numpy: scipy ----

def _numpy(rhs, y0, t0, ts, args, method, rtol, atol, max_steps):
    from scipy.integrate import BDF, RK45, Radau
    y0 = np.asarray(y0, dtype=np.float64)
    _check_shape(rhs(t0, y0, *args), y0.shape)
    out = [y0.reshape(-1)] * int(np.sum(ts == t0))
    if len(out) < len(ts):
        fun = lambda t, y: np.asarray(rhs(t, y.reshape(y0.shape), *args), dtype=np.float64).reshape(-1)  # noqa: E731
        solver = {"dopri5": RK45, "kvaerno5": Radau, "bdf": BDF}[method](fun, t0, y0.reshape(-1), ts[-1],
                                                                        rtol=rtol, atol=atol)
    for step in range(max_steps + 1):
        if len(out) == len(ts):
            break
        if step == max_steps:
            raise PPLError(f"ode: more than max_steps={max_steps} steps to reach t = {ts[-1]:g} (at t = "
                           f"{solver.t:g})", hint="raise max_steps, or use method='bdf' if the system is stiff")
        message = solver.step()
        if solver.status == "failed":
            raise PPLError(f"ode: the solve failed at t = {solver.t:g}: {message}")
        if ts[len(out)] <= solver.t:
            dense = solver.dense_output()
            while len(out) < len(ts) and ts[len(out)] <= solver.t:
                out.append(dense(ts[len(out)]))
    ys = np.stack(out).reshape((len(ts),) + y0.shape)
    if not np.isfinite(ys).all():
        raise PPLError("ode: the solution is not finite")
    return ys


# ---- torch: the solver of this module ----

# Dormand–Prince 5(4): stages c, A; the 5th-order weights B (the last stage is f at the new point) and the error
# weights E = B − B̂ (B̂ the embedded 4th-order weights)
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
         (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_E = (35 / 384 - 5179 / 57600, 0.0, 500 / 1113 - 7571 / 16695, 125 / 192 - 393 / 640,
         -2187 / 6784 + 92097 / 339200, 11 / 84 - 187 / 2100, -1 / 40)

# Rodas4 (Hairer & Wanner, Solving ODEs II, §VI.4): with W = I − hγJ, stage i solves
#   W k_i = hγ f(t + c_i h, y + Σ_j a_ij k_j) + γ Σ_j C_ij k_j + h²γ d_i ∂f/∂t,
# the new point is y + Σ_j a_6j k_j + k_6 (stiffly accurate) and k_6 is the error estimate.
_RO_GAMMA = 0.25
_RO_C = (0.0, 0.386, 0.21, 0.63, 1.0, 1.0)
_RO_D = (0.25, -0.1043, 0.1035, -0.0362, 0.0, 0.0)
_RO_A = ((), (1.544,), (0.9466785280815826, 0.2557011698983284),
         (3.314825187068521, 2.896124015972201, 0.9986419139977817),
         (1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950),
         (1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950, 1.0))
_RO_CC = ((), (-5.6688,), (-2.430093356833875, -0.2063599157091915),
          (-0.1073529058151375, -9.594562251023355, -20.47028614809616),
          (7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160),
          (8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136, -6.058818238834054))


def _combine(coefficients, ks):
    """Σ c_j k_j over the nonzero coefficients (numbers: a compiled step fuses the sums into its kernel)."""
    return sum(c * k for c, k in zip(coefficients, ks) if c)


def _dopri5_step(p, t, y, h, *args):
    """One Dormand–Prince step of one particle, of size h from (t, y [n]): (new y, error estimate)."""
    ks = []
    for c, row in zip(_DP_C, _DP_A):
        ks.append(p.f(t + c * h, y + h * _combine(row, ks) if ks else y, *args))
    return y + h * _combine(_DP_B, ks), h * _combine(_DP_E, ks)


def _rodas4_step(p, t, y, h, *args):
    """One Rodas4 step of one particle, of size h from (t, y [n]): (new y, error estimate)."""
    import torch
    ft, jac = p.jac(t, y, *args)
    hg = h * _RO_GAMMA
    lu = torch.linalg.lu_factor(torch.eye(y.shape[0], dtype=y.dtype, device=y.device) - hg * jac)
    ks = []
    for c, d, row, crow in zip(_RO_C, _RO_D, _RO_A, _RO_CC):
        r = hg * p.f(t + c * h, y + _combine(row, ks) if ks else y, *args)
        if ks:
            r = r + _combine([_RO_GAMMA * x for x in crow], ks)
        if d:
            r = r + (h * h * (_RO_GAMMA * d)) * ft
        ks.append(torch.linalg.lu_solve(*lu, r[:, None])[:, 0])
    return y + _combine(_RO_A[-1], ks) + ks[-1], ks[-1]


class _Problem:
    """One solve besides its arrays: the per-particle rhs `f(t, y, *args)` on flat states y [n] and its Jacobian
    `jac` (∂f/∂t, ∂f/∂y); over a batch (t, h [B], y [B, n]): `batch(t, y, h, *args) -> (new y, error ratio)`,
    one step, the ratio ‖error / (atol + rtol·max(|y|, |new y|))‖ (RMS; +inf where it or the new y is not finite;
    a step of size h = 0 returns y itself), `first_step`, `attempt` (one attempted step and the controller's
    answer, `_attempt`) and `steps_vjp` (the adjoint through ADJOINT_STEPS steps). The last three are compiled by
    the torch runtime (one fused graph per batch shape once their eager calls have cost more than the compile,
    `pyro_compile`: a gradient of lotka_volterra's solve in 6 ms instead of 170). Besides: the order of the error
    estimate, the times, the tolerances, and the last schedule `_integrate` made (the gradient walks it back). One
    problem serves every solve of the same rhs, times, options and constants (`_PROBLEMS`), so the compiled
    functions outlive a density evaluation."""

    def __init__(self, f, method, t0, ts, rtol, atol, max_steps, like):
        import torch
        from torch.func import jacrev, vjp

        from .backends.pyro_compile import CompiledFunction
        from .backends.runtime import get_runtime
        self.f, self.jac, self.F = f, jacrev(f, argnums=(0, 1)), _batched(f)
        self.method, self.order = method, 4 if method == "dopri5" else 3
        step = _dopri5_step if method == "dopri5" else _rodas4_step

        def one(t, y, h, *args):
            y_new, err = step(self, t, y, h, *args)
            scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
            ratio = (err / scale).square().mean().sqrt()
            return y_new, torch.where(torch.isfinite(y_new).all(), ratio.nan_to_num(nan=math.inf), math.inf)
        batch = _batched(one)

        def step_vjp(t, y, h, g, *args):
            floating = [i for i, a in enumerate(args) if a.is_floating_point()]

            def new_y(y, *xs):
                full = list(args)
                for i, x in zip(floating, xs):
                    full[i] = x
                return batch(t, y, h, *full)[0]
            return vjp(new_y, y, *(args[i] for i in floating))[1](g)

        def steps_vjp(times, starts, sizes, at, g, *args):
            """The adjoint through ADJOINT_STEPS steps, last first: g ← gᵀ ∂(step j)/∂y + at[j], and the args'
            cotangents summed."""
            total = None
            for j in range(ADJOINT_STEPS - 1, -1, -1):
                g, *ga = step_vjp(times[j], starts[j], sizes[j], g, *args)
                g = g + at[j]
                total = ga if total is None else [x + d for x, d in zip(total, ga)]
            return (g, *total)
        rt = get_runtime("pyro", device=str(like.device), precision="float64" if like.dtype == torch.float64
                         else "float32")
        self.batch = batch
        self.first_step = CompiledFunction(rt, functools.partial(_first_step, self), check=_same_first_step)
        self.attempt = CompiledFunction(rt, self._attempt, check=_same_attempt)
        self.steps_vjp = rt.jit_pure(steps_vjp)
        self.t0, self.ts, self.rtol, self.atol, self.max_steps = t0, ts, rtol, atol, max_steps
        self.h_min = 1e-14 * max(abs(t0), abs(ts[-1]), ts[-1] - t0)    # below it a step makes no progress
        self.last = None

    def _attempt(self, ts, state, *args):
        """One attempted step of every particle still solving, and the controller's response: the state (t, y, h,
        the next output time k, accepted and attempted steps, failed, the solution [B, T, n] and its step counts
        [B, T]) after it, and the attempt (t, h, y before it, accepted). A particle lands on each output time
        and keeps the larger of the step it had and the one its error allows after landing; its step size follows
        h ← h · clamp(0.9 ratio^(-1/(order+1)), 0.2, 10)."""
        import torch
        t, y, h, k, accepted, attempts, failed, out, hit = state
        T = ts.shape[0]
        active = (k < T) & ~failed
        target = ts[k.clamp(max=T - 1)]
        land = active & (h >= target - t)
        h_try = torch.where(land, target - t, torch.where(active, h, 0.0))
        y_new, ratio = self.batch(t.to(y.dtype), y, h_try.to(y.dtype), *args)
        ratio = ratio.double()
        accept = active & (ratio <= 1)
        record = (t, h_try, y, accept)
        t = torch.where(accept, torch.where(land, target, t + h_try), t)
        accepted = accepted + accept
        reached = accept & land
        at = reached[:, None] & (torch.arange(T, device=k.device) == k[:, None])      # [B, T]
        out = torch.where(at[..., None], y_new[:, None], out)
        hit = torch.where(at, accepted[:, None], hit)
        k = k + reached
        factor = torch.clamp(0.9 * ratio ** (-1.0 / (self.order + 1)), 0.2, 10.0)
        h = torch.where(active, torch.where(reached, torch.maximum(h, h_try * factor), h_try * factor), h)
        attempts = attempts + active
        failed = failed | ((k < T) & ((attempts >= self.max_steps) | ~(h >= self.h_min)))   # (h NaN: failed too)
        return (t, torch.where(accept[:, None], y_new, y), h, k, accepted, attempts, failed, out, hit), record

    def schedule(self, y0, args):
        """The schedule of the solve from (y0, args): the last one if it was made from these values."""
        import torch
        if self.last is not None and len(self.last[0]) == len(args) + 1 and all(
                a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
                for a, b in zip(self.last[0], (y0, *args))):
            return self.last[1]
        return _integrate(self, y0, args)[1]


def _same_first_step(got, want):
    """Why a compiled first step size differs from eager ('' if it does not), to float32's rounding: it is made
    from differences of the rhs, rounded in the state's precision."""
    from .backends.pyro_compile import mismatch
    return mismatch([x.float() for x in got], [x.float() for x in want])


def _same_attempt(got, want):
    """Why a compiled attempt differs from eager ('' if it does not), its next step size aside: the step size
    follows the error ratio, a difference of nearly equal stages that rounding moves by more than the check's
    tolerance (3e-4 of a ratio near 1 in float32, compiled against eager, measured), and any step size is a valid
    next try."""
    from .backends.pyro_compile import mismatch
    return mismatch(got[:2] + got[3:], want[:2] + want[3:])


def _batched(fn):
    """fn of one particle over a batch (the leading axis of every argument): torch.func.vmap, or a direct call for
    a batch of one (a vmap call costs ~15x the call of a small rhs; Pyro's NUTS runs one chain at a time)."""
    from torch.func import vmap
    many = vmap(fn)

    def batched(*xs):
        if xs[1].shape[0] != 1:
            return many(*xs)
        out = fn(*(x[0] for x in xs))
        return tuple(o[None] for o in out) if isinstance(out, tuple) else out[None]
    return batched


def _first_step(p, y0, t, *args):
    """Hairer's initial step size per particle [B] (Solving ODEs I, §II.4)."""
    import torch
    f0 = p.F(t.to(y0.dtype), y0, *args)
    scale = p.atol + p.rtol * y0.abs()
    rms = lambda x: (x / scale).square().mean(1).sqrt()  # noqa: E731
    d0, d1 = rms(y0).double(), rms(f0).double()
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
    f1 = p.F((t + h0).to(y0.dtype), y0 + h0[:, None].to(y0.dtype) * f0, *args)
    d2 = rms(f1 - f0).double() / h0
    big = torch.maximum(d1, d2)
    h1 = torch.where(big <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / big) ** (1.0 / (p.order + 1)))
    return torch.minimum(torch.minimum(100 * h0, h1), torch.full_like(h0, float(p.ts[-1] - p.t0)))


def _integrate(p, y0, args):
    """The adaptive solve of a batch y0 [B, n] (without autograd), a step size per particle: the solution [B, T, n]
    (NaN where a solve failed: more than max_steps steps, or a step size too small to make progress) and the
    schedule that `_vjp` walks back: per particle, the time, size and starting point of each accepted step ([S, B],
    [S, B], [S, B, n]; h = 0 past a particle's last step), the number of accepted steps before each output time
    [B, T] and whether the solve failed [B]."""
    import torch
    B, dev = y0.shape[0], y0.device
    ts = torch.as_tensor(p.ts, dtype=torch.float64, device=dev)
    T = len(p.ts)
    t = torch.full((B,), p.t0, dtype=torch.float64, device=dev)
    k = torch.full((B,), int(np.sum(p.ts == p.t0)), dtype=torch.long, device=dev)  # the next output time
    zeros = torch.zeros(B, dtype=torch.long, device=dev)
    state = (t, y0, p.first_step(y0, t, *args), k, zeros, zeros, torch.zeros(B, dtype=torch.bool, device=dev),
             y0[:, None].repeat(1, T, 1), torch.zeros((B, T), dtype=torch.long, device=dev))
    log = []
    while bool(((state[3] < T) & ~state[6]).any()):
        state, record = p.attempt(ts, state, *args)
        log.append(record)
    _, _, _, _, accepted, _, failed, out, hit = state
    schedule = _compact(log, accepted) + (hit, failed)
    p.last = ((y0, *args), schedule)
    return out.masked_fill(failed[:, None, None], math.nan), schedule


def _compact(log, accepted):
    """The accepted steps of each particle, in order: times and sizes [S, B] (h = 0 past a particle's last) and
    starting points [S, B, n]."""
    import torch
    S = int(accepted.max())
    if not log:     # every output time at t0
        return (torch.zeros((0, len(accepted)), dtype=torch.float64, device=accepted.device),) * 2 + (None,)
    t, h, y, acc = (torch.stack(x) for x in zip(*log))
    first = torch.argsort((~acc).to(torch.int8), dim=0, stable=True)[:S]     # the accepted iterations, in order
    h = h.gather(0, first).masked_fill(torch.arange(S, device=h.device)[:, None] >= accepted, 0.0)
    return t.gather(0, first), h, y.gather(0, first[..., None].expand(-1, -1, y.shape[-1]))


def _vjp(p, y0, g, args, schedule):
    """gᵀ ∂y(ts)/∂y0 and gᵀ ∂y(ts)/∂a for each floating arg a (g [B, T, n]): the discrete adjoint of the accepted
    steps (the exact derivative of the computed solution), walked back from the cotangent of the last point,
    adding each output time's cotangent at its step, ADJOINT_STEPS steps a call (the schedule padded in front
    with steps of size 0, which pass the cotangent through). A failed particle's gradient is 0 (its solution is
    NaN)."""
    import torch
    times, sizes, starts, hit, failed = schedule
    S, (B, T, n) = len(times), g.shape
    g = g.masked_fill(failed[:, None, None], 0.0)
    at = torch.zeros((S + 1, B, n), dtype=g.dtype, device=g.device)       # the cotangent of the point after s steps
    at.index_put_((hit, torch.arange(B, device=g.device)[:, None].expand(B, T)), g, accumulate=True)
    gy, gargs = at[S], [torch.zeros_like(a) for a in args if a.is_floating_point()]
    if S:
        pad = -S % ADJOINT_STEPS
        times, sizes, starts, at = (torch.cat([x[:1].expand(pad, *x.shape[1:]), x]) for x in (times, sizes, starts,
                                                                                              at[:S]))
        sizes[:pad], at[:pad] = 0.0, 0.0
        for s in range(len(times) - ADJOINT_STEPS, -1, -ADJOINT_STEPS):
            part = slice(s, s + ADJOINT_STEPS)
            gy, *ga = p.steps_vjp(times[part].to(y0.dtype), starts[part], sizes[part].to(y0.dtype), at[part], gy,
                                  *args)
            gargs = [x + d for x, d in zip(gargs, ga)]
    return (gy, *gargs)


def _untraced(*xs):
    from .backends.pyro_compile import traced
    if any(traced(x) for x in xs):
        raise PPLError("ode: an adaptive solve cannot be traced into a graph (it runs eagerly)")


def _flat_batch(x, dim, size):
    """x [..B..] batched by vmap along `dim` (None: not batched) as [size · B, ...]."""
    x = x.expand(size, *x.shape) if dim is None else x.movedim(dim, 0)
    return x.reshape(size * x.shape[1], *x.shape[2:])


@functools.cache
def _solve_function():
    """The autograd.Function of the torch solver (made on first use: torch is imported only then)."""
    import torch

    class Solve(torch.autograd.Function):
        """(problem, y0 [B, n], *args [B, ...]) -> y(ts) [B, T, n]."""

        @staticmethod
        def forward(problem, y0, *args):
            _untraced(y0, *args)
            return _integrate(problem, y0, args)[0]

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.problem = inputs[0]
            ctx.save_for_backward(*inputs[1:])

        @staticmethod
        def backward(ctx, g):
            y0, *args = ctx.saved_tensors
            grads = iter(SolveVJP.apply(ctx.problem, y0, g, *args))
            return (None, next(grads), *(next(grads) if a.is_floating_point() else None for a in args))

        @staticmethod
        def vmap(info, in_dims, problem, y0, *args):
            n = info.batch_size
            out = Solve.apply(problem, *(_flat_batch(x, d, n) for x, d in zip((y0, *args), in_dims[1:])))
            return out.reshape(n, -1, *out.shape[1:]), 0

    class SolveVJP(torch.autograd.Function):
        """(problem, y0, g [B, T, n], *args) -> the vector–Jacobian products gᵀ ∂y(ts)/∂y0 and gᵀ ∂y(ts)/∂a for
        each floating-point arg a."""

        @staticmethod
        def forward(problem, y0, g, *args):
            _untraced(y0, g, *args)
            schedule = problem.schedule(y0, args)
            problem.last = None     # used once: a cached problem holds no particle's steps past its gradient
            return _vjp(problem, y0, g, args, schedule)

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, *grads):
            raise PPLError("ode: second derivatives of the solution are not available on torch")

        @staticmethod
        def vmap(info, in_dims, problem, y0, g, *args):
            n = info.batch_size
            out = SolveVJP.apply(problem, *(_flat_batch(x, d, n) for x, d in zip((y0, g, *args), in_dims[1:])))
            return tuple(x.reshape(n, -1, *x.shape[1:]) for x in out), (0,) * len(out)

    return Solve


def _torch(rhs, y0, t0, ts, args, method, rtol, atol, max_steps):
    import torch
    like = next(x for x in (y0, *args) if isinstance(x, torch.Tensor))
    dtype = y0.dtype if isinstance(y0, torch.Tensor) and y0.is_floating_point() else torch.get_default_dtype()
    y0 = torch.as_tensor(y0, dtype=dtype, device=like.device)
    _check_closure(rhs)
    _check_shape(rhs(torch.tensor(t0, dtype=dtype, device=like.device), y0, *args), y0.shape)
    shape, slots = y0.shape, [isinstance(a, torch.Tensor) for a in args]

    constants = [None if s else a for a, s in zip(args, slots)]
    key = (_identity(rhs), tuple(_identity(a) for a in constants), tuple(shape), dtype, str(like.device), method,
           t0, ts.tobytes(), rtol, atol, max_steps)
    problem = _PROBLEMS.pop(key, None)
    if problem is None:
        def f(t, y, *tensors):
            it = iter(tensors)
            out = rhs(t, y.reshape(shape), *(next(it) if s else a for a, s in zip(constants, slots)))
            out = (out.to(dtype) if isinstance(out, torch.Tensor)
                   else torch.as_tensor(out, dtype=dtype, device=y.device))
            return out.reshape(-1)
        problem = _Problem(f, method, t0, ts, rtol, atol, max_steps, y0)
        problem.keep = (rhs, constants)     # alive while cached: the identities in the key stay theirs
    _PROBLEMS[key] = problem
    while len(_PROBLEMS) > 32:
        _PROBLEMS.pop(next(iter(_PROBLEMS)))
    ys = _solve_function().apply(problem, y0.reshape(1, -1), *(a[None] for a, s in zip(args, slots) if s))
    return ys[0].reshape((len(ts),) + tuple(shape))


#: the problems of recent solves, least recently used first, by what a solve is made of (`_identity`)
_PROBLEMS = {}


def _identity(x):
    """What stands for x in a problem's key: its value for a number, string or None; for a Python function its
    code, globals and the identities of its closure's and defaults' contents (a lambda written inside a model is a
    new object at every evaluation, the same solve each time); otherwise the object's identity."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return (type(x), x)
    if isinstance(x, types.FunctionType):
        cells = []
        for cell in x.__closure__ or ():
            try:
                cells.append(id(cell.cell_contents))
            except ValueError:      # an empty cell
                cells.append(None)
        return (x.__code__, id(x.__globals__), tuple(cells), tuple(map(id, x.__defaults__ or ())),
                tuple(map(id, (x.__kwdefaults__ or {}).values())))
    return id(x)


def _check_closure(rhs):
    """A PPLError where rhs reads, from its closure, a tensor that a gradient or a vmap tracks: the torch solver sees
    only its arguments, so such a value would be neither batched nor differentiated."""
    import torch
    for cell in getattr(rhs, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:      # an empty cell
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, torch.Tensor) and not _is_plain_tensor(v) for v in values):
            raise PPLError("ode: rhs reads, from its closure, a tensor made under the runtime's vmap or grad (a value "
                           "of the sites, or a constant made in a site function); the torch solver batches and "
                           "differentiates only the arguments of rhs",
                           hint="pass the value as an argument: ppl.ode(lambda t, y, k: -k * y, y0, t0, ts, k)")
