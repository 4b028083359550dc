"""The torch runtime (Pyro distributions and transforms); device-agnostic, eager but for `jit_pure`.

`jit_pure` (the log densities and gradients of a compiled target; in SMC also the kernel's whole move and the
tempering bisection) traces a pure function per input signature into one aten graph (`make_fx` over fake
tensors, so a branch on array values fails the trace instead of being baked in) and compiles it with inductor:
fused kernels where eager torch runs every op of the vmapped density on its own (German credit: 21 ms instead
of 65 ms a gradient of 1000 particles; the 10-d mixture 0.2 ms instead of 6 ms, per-op dispatch). The first
compiled result is checked against eager; a trace, compile or check that fails leaves that signature eager,
with one warning.
When to compile is `compile_mode` (environment PPL_TORCH_COMPILE, PPL_TORCH_COMPILE_AFTER): "auto" traces a
signature once its eager calls have taken PPL_TORCH_COMPILE_AFTER (2) seconds of CPU time and compiles it once
they have taken as long as its compile is expected to (`_Compiled`), so small runs (the test suite's) never pay
the seconds a compile takes; "on" compiles at the first call (benchmarks: the warm-up run pays it, as JAX's
jit); "off" never.
"""
import contextlib
import functools
import math
import os
import time
import types
import warnings

import numpy as np
import pyro.distributions as dist
import torch
from torch.distributions import biject_to

from ..errors import DeviceError, InferenceError, PPLError
from . import pyro_special
from .runtime import Runtime, active, register

# No argument/support checks under vmap (they call .item()). Through Pyro's own switch, not torch's: Pyro's
# MCMC restores torch's default from Pyro's flag when it returns, which re-enabled the checks for later runs.
dist.enable_validation(False)


_COMPILE = {"mode": os.environ.get("PPL_TORCH_COMPILE", "auto"),
            "after": float(os.environ.get("PPL_TORCH_COMPILE_AFTER", "2.0"))}
COMPILE_MODES = ("auto", "on", "off")


def compile_mode(mode=None, after=None):
    """The policy of `jit_pure` ("auto" | "on" | "off", and the CPU seconds of eager calls after which "auto"
    compiles a signature); with arguments, sets it. Returns the previous (mode, after)."""
    previous = _COMPILE["mode"], _COMPILE["after"]
    if mode is not None:
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode {mode!r}: choose one of {', '.join(COMPILE_MODES)}")
        _COMPILE["mode"] = mode
    if after is not None:
        _COMPILE["after"] = float(after)
    return previous


@contextlib.contextmanager
def compiling(mode, after=None):
    """`compile_mode(mode, after)` inside the block, the previous policy restored on exit."""
    previous = compile_mode(mode, after)
    try:
        yield
    finally:
        compile_mode(*previous)


class CompileWarning(RuntimeWarning):
    """A function could not be compiled by torch and runs eagerly (correct, slower)."""


class _Signature:
    """What a traced graph is specialized to: the shapes, dtypes and devices of the tensor leaves of the
    arguments, the values of the int/bool/None/str leaves, the tree structure, the default dtype. Float leaves
    become 0-d tensor inputs. None (eager only) for anything else or an input that requires grad."""

    @staticmethod
    def of(leaves, spec):
        parts = []
        grad = torch.is_grad_enabled()
        for a in leaves:
            if isinstance(a, torch.Tensor):
                if grad and a.requires_grad:
                    return None
                parts.append(("t", tuple(a.shape), a.stride(), a.dtype, a.device))
            elif isinstance(a, float):
                parts.append(("f",))
            elif a is None or isinstance(a, (bool, int, str)):
                parts.append(("c", type(a), a))
            else:
                return None
        return (str(spec), torch.get_default_dtype(), tuple(parts))


class _Entry:
    __slots__ = ("eager_s", "graph", "compiled", "failed")

    def __init__(self):
        self.eager_s, self.graph, self.compiled, self.failed = 0.0, None, None, False


#: inductor's CPU seconds per node of a traced graph, about (250 nodes: 6 s; 1300: 30 s, on one core): what
#: "auto" expects a compile to cost
COMPILE_S_PER_NODE = 0.025
_EAGER = [0]    # > 0 while a reference (eager) run or a trace is under way: nested compiled functions inline


class _Compiled:
    """`fn` with a compiled graph per input signature (see the module docstring). In "auto" mode a signature
    is traced once its eager calls have cost `after` seconds, and compiled once they have cost as much as the
    compile is expected to (COMPILE_S_PER_NODE × the graph's nodes): the ski-rental rule, so a run pays at most
    about twice what the better choice in hindsight would have cost."""

    def __init__(self, rt, fn):
        self.rt, self.fn, self.entries, self.warned = rt, fn, {}, False
        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args):
        mode = _COMPILE["mode"]
        if mode == "off" or _EAGER[0]:
            return self.fn(*args)
        from torch.utils._pytree import tree_flatten, tree_unflatten
        leaves, spec = tree_flatten(args)
        if _tracing(leaves):       # inside a trace (of an outer compiled function): inline
            return self.fn(*args)
        sig = _Signature.of(leaves, spec)
        if sig is None:
            return self.fn(*args)
        e = self.entries.get(sig)
        if e is None:
            e = self.entries[sig] = _Entry()
        if e.compiled is not None:
            compiled, out_spec = e.compiled
            try:
                return tree_unflatten(list(compiled(*self._inputs(leaves))), out_spec)
            except Exception as err:    # noqa: BLE001 -- a compiled graph that fails at run time: eager
                e.compiled = None
                self._fail(e, err)
                return self.fn(*args)
        if not e.failed:
            if mode == "on" or e.eager_s >= _COMPILE["after"]:
                if e.graph is None:
                    self._trace(e, args, leaves, spec)
                if e.graph is not None and (mode == "on" or
                                            e.eager_s >= COMPILE_S_PER_NODE * len(e.graph[0].graph.nodes)):
                    return self._compile(e, args, leaves)
        t0 = time.process_time()
        out = self.fn(*args)
        e.eager_s += time.process_time() - t0
        return out

    def _inputs(self, leaves):
        return [a if isinstance(a, torch.Tensor) else torch.tensor(a, dtype=self.rt.dtype,
                                                                      device=self.rt.torch_device)
                for a in leaves if isinstance(a, (torch.Tensor, float))]

    def _fail(self, e, err):
        """This signature stays eager; one warning per function (none for the function's own PPLError, which
        its eager call raises again)."""
        e.failed, e.graph = True, None
        if not self.warned and not isinstance(err, PPLError):
            self.warned = True
            msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            warnings.warn(f"torch compile of {getattr(self.fn, '__name__', 'a function')} fell back to eager "
                          f"({type(err).__name__}: {msg})", CompileWarning, stacklevel=4)

    def _trace(self, e, args, leaves, spec):
        """One aten graph of fn for this signature, over fake tensors (a branch on values fails it)."""
        from torch.fx.experimental.proxy_tensor import make_fx
        from torch.utils._pytree import tree_flatten, tree_unflatten
        slots = [isinstance(a, (torch.Tensor, float)) for a in leaves]
        out_spec = []

        def flat(*xs):
            it = iter(xs)
            out, spec_out = tree_flatten(self.fn(*tree_unflatten([next(it) if s else a for a, s in zip(leaves, slots)],
                                                                  spec)))
            out_spec.append(spec_out)
            return out
        t0 = time.process_time()
        _EAGER[0] += 1
        try:
            gm = make_fx(flat, tracing_mode="fake", _allow_non_fake_inputs=True)(*self._inputs(leaves))
        except Exception as err:    # noqa: BLE001 -- any failure to trace means: stay eager
            self._fail(e, err)
            return
        finally:
            _EAGER[0] -= 1
        e.graph = gm, out_spec[-1], time.process_time() - t0

    def _compile(self, e, args, leaves):
        """The traced graph compiled by inductor and checked against eager at these arguments."""
        from torch.utils._pytree import tree_flatten
        gm, out_spec, trace_s = e.graph
        inputs = self._inputs(leaves)
        t0 = time.process_time()
        try:
            compiled = _inductor(gm, inputs)
            got = list(compiled(*inputs))
        except Exception as err:    # noqa: BLE001 -- any failure to compile means: stay eager
            self._fail(e, err)
            return self.fn(*args)
        t1 = time.process_time()
        _EAGER[0] += 1
        try:
            want = self.fn(*args)
        finally:
            _EAGER[0] -= 1
        bad = _mismatch(got, tree_flatten(want)[0])
        if os.environ.get("PPL_TORCH_COMPILE_LOG"):
            print(f"ppl: compiled {getattr(self.fn, '__qualname__', '?')} for {sig_text(leaves)}: "
                  f"{len(gm.graph.nodes)} nodes, trace {trace_s:.1f} s, inductor {t1 - t0:.1f} s CPU"
                  f"{', MISMATCH ' + bad if bad else ''}", flush=True)
        if bad:
            self._fail(e, RuntimeError(f"the compiled result differs from eager ({bad})"))
            return want
        e.compiled, e.graph = (compiled, out_spec), None
        return want


def _mismatch(got, want):
    """Why two lists of output leaves differ beyond float rounding (relative to each leaf's largest finite
    magnitude), or '' if they agree."""
    if len(got) != len(want):
        return f"{len(got)} outputs instead of {len(want)}"
    for i, (a, b) in enumerate(zip(got, want)):
        if not isinstance(b, torch.Tensor):
            if a != b:
                return f"output {i}: {a!r} instead of {b!r}"
            continue
        if not isinstance(a, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return f"output {i}: shape or dtype"
        if not b.is_floating_point():
            if not torch.equal(a, b):
                return f"output {i}: integer values"
            continue
        fa, fb = torch.isfinite(a), torch.isfinite(b)
        if not torch.equal(fa, fb) or not torch.equal(torch.where(fb, 0, b).nan_to_num(1.0),
                                                      torch.where(fa, 0, a).nan_to_num(1.0)):
            return f"output {i}: non-finite entries"
        if fb.any():
            scale = 1.0 + b[fb].abs().max()
            tol = 1e-4 if b.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-9
            err = (a[fb] - b[fb]).abs().max()
            if err > tol * scale:
                return f"output {i}: max difference {float(err):.3g} at scale {float(scale):.3g}"
    return ""


def sig_text(leaves):
    return ", ".join(str(tuple(a.shape)) if isinstance(a, torch.Tensor) else type(a).__name__ for a in leaves)


def _traced(a):
    """Whether a is a tensor being traced (a fake tensor of make_fx, or anything under dynamo)."""
    from torch._subclasses.fake_tensor import is_fake
    return isinstance(a, torch.Tensor) and (is_fake(a) or torch.compiler.is_compiling())


def _tracing(leaves):
    """Whether any of the leaves is a traced tensor (`_traced`), cheaply: a tensor of the exact type
    `torch.Tensor` is not fake, so only dynamo's flag is asked then, once (a filter's step kernel is called 100
    times a run: 5 µs instead of 50 a call)."""
    tensors = False
    for a in leaves:
        if isinstance(a, torch.Tensor):
            if type(a) is not torch.Tensor and _traced(a):
                return True
            tensors = True
    return tensors and torch.compiler.is_compiling()


def _inductor(gm, inputs):
    """The aten graph `gm` compiled by inductor: directly (`torch._inductor.compile`, half the per-call overhead
    of torch.compile's guards and wrappers: 0.2 ms instead of 0.5), else through `torch.compile`."""
    try:
        import torch._inductor
        compile_fx = torch._inductor.compile
    except (AttributeError, ImportError):
        return torch.compile(gm, fullgraph=True, dynamic=False)
    return compile_fx(gm, inputs)


def _log_ndtr(z):
    """log Φ(z): log(erfcx(−z/√2) / 2) − z²/2 below 0, log1p(−erfc(z/√2) / 2) above (each branch finite on the
    other's side); torch's own `special.log_ndtr` has no batching rule, so under `vmap` it ran per particle."""
    below, above = torch.clamp(z, max=0.0), torch.clamp(z, min=0.0)
    return torch.where(z < 0, torch.log(0.5 * torch.special.erfcx(-below / math.sqrt(2.0))) - 0.5 * below * below,
                       torch.log1p(-0.5 * torch.special.erfc(above / math.sqrt(2.0))))


def _axis(kw):
    if "axis" in kw:
        kw["dim"] = kw.pop("axis")
    return kw


class _Numpy:
    """A numpy-like face on torch: the names jax.numpy uses, with `axis=`."""

    def __init__(self, rt):
        self._rt = rt

    def __getattr__(self, name):
        fn = getattr(torch, name)
        return lambda *a, **kw: fn(*a, **_axis(kw))

    def asarray(self, x, dtype=None):
        return self._rt.asarray(x, dtype)

    def sum(self, x, axis=None, keepdims=False):
        return x.sum() if axis is None else x.sum(dim=axis, keepdim=keepdims)

    def mean(self, x, axis=None, keepdims=False):
        return x.mean() if axis is None else x.mean(dim=axis, keepdim=keepdims)

    def max(self, x, axis=None, keepdims=False):
        return x.max() if axis is None else x.amax(dim=axis, keepdim=keepdims)

    def min(self, x, axis=None, keepdims=False):
        return x.min() if axis is None else x.amin(dim=axis, keepdim=keepdims)

    def var(self, x, axis=None, keepdims=False, ddof=0):
        return x.var(unbiased=bool(ddof)) if axis is None else x.var(dim=axis, keepdim=keepdims, correction=ddof)

    def std(self, x, axis=None, keepdims=False, ddof=0):
        return self.var(x, axis, keepdims, ddof).sqrt()

    def logsumexp(self, x, axis=None, keepdims=False):
        if axis is None:
            return torch.logsumexp(x.reshape(-1), 0)
        return torch.logsumexp(x, dim=axis, keepdim=keepdims)

    def cumsum(self, x, axis=0):
        return torch.cumsum(x, dim=axis)

    def take(self, x, idx, axis=0):
        return torch.index_select(x, axis, idx)

    def where(self, c, a, b):
        return torch.where(c, torch.as_tensor(a, device=c.device), torch.as_tensor(b, device=c.device))

    def clip(self, x, lo=None, hi=None):
        return torch.clamp(x, lo, hi)

    def sort(self, x, axis=-1):
        return torch.sort(x, dim=axis).values

    def searchsorted(self, a, v, side="left"):
        return torch.searchsorted(a, v, right=(side == "right"))

    def zeros(self, shape, dtype=None):
        return torch.zeros(shape, dtype=dtype or self._rt.dtype, device=self._rt.device)

    def ones(self, shape, dtype=None):
        return torch.ones(shape, dtype=dtype or self._rt.dtype, device=self._rt.device)

    def full(self, shape, value, dtype=None):
        return torch.full(shape if isinstance(shape, tuple) else (shape,), value,
                          dtype=dtype or self._rt.dtype, device=self._rt.device)

    def arange(self, n, dtype=None):
        return torch.arange(n, device=self._rt.device, dtype=dtype)

    def concatenate(self, xs, axis=0):
        return torch.cat(list(xs), dim=axis)

    def stack(self, xs, axis=0):
        return torch.stack(list(xs), dim=axis)

    def einsum(self, spec, *xs):
        return torch.einsum(spec, *xs)

    def isfinite(self, x):
        return torch.isfinite(x)

    def square(self, x):
        return x * x

    def floor(self, x):
        return torch.floor(x)

    def all(self, x):
        return torch.all(x)

    def any(self, x):
        return torch.any(x)

    def minimum(self, a, b):
        return torch.minimum(torch.as_tensor(a), torch.as_tensor(b))

    def maximum(self, a, b):
        return torch.maximum(torch.as_tensor(a), torch.as_tensor(b))

    def index_add(self, x, idx, value):
        """x with value[j] added at x[idx[j]] (repeated indices accumulate)."""
        return x.index_add(0, idx, value)

    def cov(self, x):
        """Covariance of the rows of x [N, D] (numpy's `cov(x, rowvar=False)`)."""
        return torch.atleast_2d(torch.cov(x.T))

    linalg = torch.linalg

    def prod(self, x, axis=None):
        return x.prod() if axis is None else x.prod(dim=axis)

    def diag(self, x):
        """A diagonal matrix from a vector, or the diagonal of a matrix (batched under vmap)."""
        return torch.diag_embed(x) if x.ndim == 1 else torch.diagonal(x, dim1=-2, dim2=-1)

    def cholesky(self, x):
        """The lower Cholesky factor; NaN entries for a matrix that is not positive-definite (as JAX: one
        particle's proposal outside the domain does not stop a batch)."""
        factor, info = torch.linalg.cholesky_ex(x)
        return torch.where((info == 0)[..., None, None], factor, torch.nan)

    def solve_triangular(self, a, b, lower=False):
        vector = b.ndim == 1
        x = torch.linalg.solve_triangular(a, b[:, None] if vector else b, upper=not lower)
        return x[:, 0] if vector else x

    def solve(self, a, b):
        return torch.linalg.solve(a, b)

    def flip(self, x, axis):
        return torch.flip(x, (axis,))


@register("pyro")
class PyroRuntime(Runtime):
    name = "pyro"
    framework = "torch"
    compiles_loops = False
    distributions = dist
    special_functions = torch.special
    special = types.SimpleNamespace(log_ndtr=_log_ndtr, gammainc=torch.special.gammainc,
                                    gammaincc=torch.special.gammaincc, betainc=pyro_special.betainc)

    def __init__(self, device="cpu", precision="float32", devices=None):
        super().__init__(device, precision)
        if devices not in (None, 1):
            raise DeviceError(f"devices={devices!r}: splitting particles over several devices needs the JAX "
                              f"runtime (runtime='numpyro'); the Pyro runtime runs on one device (device=...)")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise PPLError(f"device {device!r} requested but torch sees no CUDA device")
        self.torch_device = torch.device(device)
        self.dtype = torch.float64 if precision == "float64" else torch.float32
        self.xp = _Numpy(self)

    @contextlib.contextmanager
    def scope(self):
        """torch's default dtype set to `dtype` (for tensors made from Python floats, e.g. distribution
        parameters), the previous one restored on exit."""
        previous = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            with active(self):
                yield
        finally:
            torch.set_default_dtype(previous)

    # arrays
    def asarray(self, x, dtype=None):
        if isinstance(x, torch.Tensor):
            return x.to(self.torch_device) if dtype is None else x.to(self.torch_device, dtype)
        a = np.asarray(x)
        if dtype is None:
            dtype = self.dtype if a.dtype.kind in "fiu" else None
        return torch.as_tensor(a, dtype=dtype, device=self.torch_device)

    def asindex(self, x):
        """x as integer indices: a tensor is cast in place, anything else is put on the device."""
        if isinstance(x, torch.Tensor):
            return x.to(torch.long)
        return torch.as_tensor(np.asarray(x), dtype=torch.long, device=self.torch_device)

    def to_numpy(self, x):
        return x.detach().cpu().numpy()

    def shard(self, tree):
        """One device: the particles stay where they are."""
        return tree

    def replicate(self, tree):
        return tree

    def device_count(self, x):
        return 1

    @staticmethod
    def device_of(x):
        return str(x.device)

    def full_like(self, like, value, dtype=None):
        """The constant `value` as a tensor on `like`'s device, of its dtype (or the numpy `dtype`)."""
        if dtype is None:
            return torch.as_tensor(np.asarray(value), dtype=like.dtype, device=like.device)
        return torch.as_tensor(np.asarray(value, dtype=dtype), device=like.device)

    def set_index(self, x, idx, value):
        """x with x[idx] = value, out of place: an updated copy, or `index_put` where vmap refuses the copy's
        in-place update (x unbatched, value batched)."""
        like = next(a for a in (value, x, *idx) if isinstance(a, torch.Tensor))
        x = x if isinstance(x, torch.Tensor) else self.full_like(like, x, np.float32)
        value = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=x.dtype, device=x.device)
        try:
            y = x.clone()
            y[idx] = value
            return y
        except RuntimeError:
            pass
        if not any(isinstance(i, slice) for i in idx):
            return x.index_put(tuple(i if isinstance(i, torch.Tensor) else torch.tensor(i, device=x.device)
                                     for i in idx), value)
        axes = [torch.arange(x.shape[k], device=x.device)[i] if isinstance(i, slice) else
                torch.as_tensor(i, device=x.device).reshape(1) for k, i in enumerate(idx)]
        grid = torch.meshgrid(*axes, indexing="ij")
        keep = [len(a) if isinstance(i, slice) else 1 for a, i in zip(axes, idx)]
        return x.index_put(grid, value.reshape(tuple(keep)))

    def dynamic_slice(self, x, start, size):
        return torch.narrow(x, 0, start, size)

    def is_concrete(self, x):
        return True

    # distributions and transforms
    def biject_to(self, constraint):
        return biject_to(constraint)

    @staticmethod
    @functools.cache
    def _sorted_class():
        class Sorted(dist.TorchDistribution):
            arg_constraints = {}

            def __init__(self, base, support):
                self.base, self._support = base, support
                super().__init__(base.batch_shape[:-1], base.batch_shape[-1:], validate_args=False)

            @property
            def support(self):
                return self._support

            def sample(self, sample_shape=torch.Size()):
                return torch.sort(self.base.sample(sample_shape), dim=-1).values

            def log_prob(self, x):
                return self.base.log_prob(x).sum(-1) + math.lgamma(self.event_shape[0] + 1.0)
        return Sorted

    @staticmethod
    @functools.cache
    def _truncated_class():
        from ..stdlib.distributions import _Truncation

        class Truncated(_Truncation, dist.TorchDistribution):
            arg_constraints = {}

            def __init__(self, rt, family, params, lower, upper, shape):
                batch = torch.Size(self._setup(rt, family, params, lower, upper, shape))
                super().__init__(batch, validate_args=False)

            def sample(self, sample_shape=torch.Size()):
                m = self._log_mass
                with torch.no_grad():
                    return self._from_uniform(torch.rand(torch.Size(sample_shape) + self.batch_shape, dtype=m.dtype,
                                                         device=m.device))
        return Truncated

    @staticmethod
    @functools.cache
    def _markov_class():
        from ..stdlib.markov import _Lowered

        class Chain(_Lowered, dist.TorchDistribution):
            arg_constraints = {}

            def __init__(self, chain, rt, params):
                batch, event = self._setup(chain, rt, params)
                dist.TorchDistribution.__init__(self, torch.Size(batch), torch.Size(event), validate_args=False)

            @property
            def support(self):
                return dist.constraints.independent(dist.constraints.real, len(self.event_shape))

            def sample(self, sample_shape=torch.Size()):
                if sample_shape:
                    raise PPLError("a MarkovChain is sampled one path per particle (sample_shape=())")
                if not self.batch_shape:
                    return self._one_particle().sample()[0]
                xs = [self._init.sample()]
                for t in self._ts:
                    xs.append(self._step_batched(xs[-1], t).sample())
                return torch.stack(xs, 1)
        return Chain

    # function transforms
    def vmap(self, fn, in_axes=0):
        return torch.func.vmap(fn, in_dims=in_axes)

    def value_and_grad(self, fn):
        """`(value, aux), grad` batched over z of a per-particle scalar `fn(z, arg) -> (value, aux)`: the vmapped
        values, then one reverse pass of torch's autograd through their sum (the particles are independent, so
        its gradient is each particle's own; 30% less dispatch than `vmap(grad)`); `vmap(grad)` where z itself
        carries a gradient."""
        g = torch.func.vmap(torch.func.grad_and_value(fn, has_aux=True), in_dims=(0, None))
        f = torch.func.vmap(fn, in_dims=(0, None))

        def value_and_grad(z, arg):
            with torch.enable_grad():
                if z.requires_grad:
                    grad, (value, aux) = g(z, arg)
                    return (value, aux), grad
                z = z.detach().requires_grad_(True)
                value, aux = f(z, arg)
                grad = torch.autograd.grad(value.sum(), z, allow_unused=True)[0] if value.requires_grad else None
                grad = torch.zeros_like(z) if grad is None else grad     # a density that ignores z
            detach = lambda a: a.detach() if isinstance(a, torch.Tensor) else a  # noqa: E731
            return (value.detach(), self.tree_map(detach, aux)), grad
        return value_and_grad

    def jit(self, fn, static_argnames=()):
        return fn

    def jit_pure(self, fn):
        """fn traced and compiled per input signature where that pays off (see the module docstring)."""
        return _Compiled(self, fn)

    # keys and randomness: a key is an integer seed; a generator is made from it on use
    def key(self, seed):
        return int(seed) % (2 ** 63)

    def split(self, key, n=2):
        return [int(s) for s in np.random.SeedSequence(int(key)).generate_state(n, dtype=np.uint64) % (2 ** 63)]

    def _generator(self, key):
        return torch.Generator(device=self.torch_device).manual_seed(int(key))

    def normal(self, key, shape):
        return torch.randn(shape, generator=self._generator(key), device=self.torch_device, dtype=self.dtype)

    def sample(self, d, key):
        """A draw from the Pyro distribution `d`, with torch's global RNG seeded from `key` and then restored."""
        cuda = [self.torch_device.index or 0] if self.torch_device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(int(key))
            return d.sample()

    def uniform(self, key, shape):
        return torch.rand(shape, generator=self._generator(key), device=self.torch_device, dtype=self.dtype)

    @contextlib.contextmanager
    def stream(self, key):
        """A block whose `draw`s and `uniform_draw`s come from one random stream seeded from `key` (torch's global
        RNG, restored on exit), without autograd: a loop of many small draws (a particle filter's steps) forks
        and seeds the RNG once instead of once per draw."""
        cuda = [self.torch_device.index or 0] if self.torch_device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            torch.manual_seed(int(key))
            yield

    def draw(self, d):
        """A draw from the Pyro distribution `d` inside `stream`: reparameterized where `d` allows (the same law;
        torch's normal sampler with tensor parameters is 5-10x slower on CPU than randn and a multiply-add)."""
        return d.rsample() if d.has_rsample else d.sample()

    def uniform_draw(self, shape):
        """Uniforms on [0, 1) inside `stream`."""
        return torch.rand(shape, device=self.torch_device, dtype=self.dtype)

    # control flow (eager)
    def fori_loop(self, lower, upper, body, init):
        state = init
        for i in range(int(lower), int(upper)):
            state = body(i, state)
        return state

    def scan(self, f, init, xs, length=None):
        """`jax.lax.scan` for pytrees of tensors (None leaves stay None)."""
        from torch.utils._pytree import tree_flatten, tree_unflatten
        carry, ys = init, []
        n = length if xs is None else (xs.shape[0] if isinstance(xs, torch.Tensor) else len(next(iter(xs.values()))))
        for i in range(n):
            x = None if xs is None else (xs[i] if isinstance(xs, torch.Tensor) else {k: v[i] for k, v in xs.items()})
            carry, y = f(carry, x)
            ys.append(y)
        if not ys:
            return carry, ys
        spec = tree_flatten(ys[0])[1]
        columns = zip(*(tree_flatten(y)[0] for y in ys))
        return carry, tree_unflatten([None if c[0] is None else torch.stack(list(c)) for c in columns], spec)

    def while_loop(self, cond_fn, body_fn, init):
        state = init
        while bool(cond_fn(state)):
            state = body_fn(state)
        return state

    def cond(self, pred, true_fn, false_fn, *operands):
        return true_fn(*operands) if bool(pred) else false_fn(*operands)

    def tree_map(self, f, *trees):
        return torch.utils._pytree.tree_map(f, *trees)

    def no_grad(self):
        return torch.no_grad()

    def stop_gradient(self, x):
        return x.detach()

    def hvp(self, fn):
        """(z, v) -> ∇²fn(z) v for a scalar per-particle `fn(z)` (unbatched)."""
        def hvp(z, v):
            with torch.enable_grad():
                return torch.func.jvp(torch.func.grad(fn), (z,), (v,))[1]
        return hvp

    def batch(self, fn):
        """fn over the leading axis of its arguments: a loop (torch.func.vmap cannot trace functions that branch on
        values, as a particle filter's resampling does)."""
        def batched(*args):
            return torch.stack([self.asarray(fn(*a)) for a in zip(*args)])
        return batched

    # engines of the runtime's own libraries
    def mcmc(self, potential, key, z0, kind, warmup, draws, target_accept, max_tree_depth, num_steps, dense_mass,
             progress):
        """Pyro's HMC or NUTS (`kind`) on `potential(z)` = −log density, one chain after the other from z0 [C, D]
        (each seeded from `key`). Returns as NumPyro's (Pyro keeps no per-draw energy, tree size or acceptance
        probability: its acceptance rate per chain)."""
        from pyro.infer.mcmc import HMC, MCMC, NUTS
        fixed_steps = num_steps

        class FixedStepsHMC(HMC):
            """HMC with `num_steps` leapfrog steps of the adapted step size, as NumPyro's (Pyro's HMC reads
            num_steps as a trajectory length num_steps × the initial step size)."""
            num_steps = property(lambda self: fixed_steps)

        zs, stats, steps, accept = [], {"diverging": [], "step_size": []}, [], []
        seeds = self.split(key, z0.shape[0])
        for c in range(z0.shape[0]):  # Pyro runs one chain per process; chains are few, particles are not
            common = dict(potential_fn=lambda params: potential(params["z"]), target_accept_prob=target_accept,
                          full_mass=dense_mass)
            kernel = (NUTS(max_tree_depth=max_tree_depth, **common) if kind == "nuts"
                      else HMC(**common) if num_steps is None else FixedStepsHMC(**common))
            mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, initial_params={"z": z0[c]},
                        disable_progbar=not progress)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seeds[c]))
                try:
                    mcmc.run()
                except RuntimeError as e:  # Pyro's tree building fails on NaN energies
                    raise InferenceError(f"{kind} (Pyro) failed in chain {c}: {e}; the target density is probably "
                                         f"NaN somewhere in the region the chain explored") from None
            zs.append(mcmc.get_samples()["z"].detach())
            info = mcmc.diagnostics()
            diverging = np.zeros(draws, dtype=bool)
            diverging[np.asarray(info["divergences"]["chain 0"], dtype=int)] = True
            stats["diverging"].append(diverging)
            stats["step_size"].append(np.full(draws, float(kernel.step_size)))
            steps.append(float(kernel.step_size))
            accept.append(float(info["acceptance rate"]["chain 0"]))
        return torch.stack(zs), {k: np.stack(v) for k, v in stats.items()}, np.asarray(steps), accept

    def conditional_gaussian(self, context_shape, dim, hidden, depth, shift, scale, seed):
        from .pyro_proposals import conditional_gaussian
        return conditional_gaussian(context_shape, dim, hidden, depth, shift, scale, seed)

    def proposal_trainer(self, proposal, lr, dim):
        from .pyro_proposals import Trainer
        return Trainer(proposal, self, lr, dim)

    def flow(self, dim, hidden, orders):
        """A masked autoregressive flow from Pyro's `AffineAutoregressive` with `AutoRegressiveNN` (see `_Flow`)."""
        return _Flow(self, int(dim), [int(h) for h in hidden], [[int(i) for i in o] for o in orders])

    def temp_memory(self, step, init, key):
        raise PPLError("the memory of a compiled step is known on the JAX runtime only (runtime='numpyro')")


class _Flow:
    """u = T_K ∘ … ∘ T_1(s), each T_k Pyro's `AffineAutoregressive` u_i = exp(a_i) s_i + m_i with (m, a) from an
    `AutoRegressiveNN` over `orders[k]`; q(s) = N(u; 0, I) |det ∂u/∂s|. The density direction s → u is one pass
    (the transform's call), sampling s = T⁻¹(ε) is `dim` passes per layer (its `inv`). Params are an
    `nn.ModuleList` of the transforms, frozen (no gradients) and never changed in place once returned."""

    def __init__(self, rt, dim, hidden, orders):
        self.rt, self.dim, self.hidden, self.orders = rt, dim, hidden, orders

    def init(self, seed):
        from pyro.distributions.transforms import AffineAutoregressive
        from pyro.nn import AutoRegressiveNN
        cuda = [self.rt.torch_device.index or 0] if self.rt.torch_device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "ConditionalAutoRegressiveNN input_dim = 1")   # a 1-D flow is affine
            torch.manual_seed(int(seed))
            layers = torch.nn.ModuleList(
                AffineAutoregressive(AutoRegressiveNN(self.dim, self.hidden, permutation=torch.tensor(o)))
                for o in self.orders)
        with torch.no_grad():
            for t in layers:
                t.arn.layers[-1].weight.zero_()
                t.arn.layers[-1].bias.zero_()
        return _frozen(layers.to(device=self.rt.torch_device, dtype=self.rt.dtype))

    def log_prob(self, params, s):
        ladj = 0.0
        for t in params:
            u = t(s)
            ladj, s = ladj + t.log_abs_det_jacobian(s, u), u
        _clear(params)
        return -0.5 * self.dim * math.log(2 * math.pi) - 0.5 * (s * s).sum(-1) + ladj

    def sample(self, params, key, n):
        s = self.rt.normal(key, (n, self.dim))
        with torch.no_grad():
            for t in reversed(params):
                s = t.inv(s)
        _clear(params)
        return s

    def trainer(self, params, s, w, lr, batch, seed):
        return _Trainer(self, params, s, w, lr, batch, seed)


class _Trainer:
    """torch.optim.Adam on −Σ w log q(s), on a copy of `params`, on all draws (batch None) or on minibatches
    of `batch` resampled ∝ w."""

    def __init__(self, flow, params, s, w, lr, batch, seed):
        self.flow, self.s, self.batch = flow, s, None if batch is None else int(batch)
        self.w = flow.rt.asarray(w / w.sum())
        cdf = np.cumsum(w / w.sum())
        cdf[-1] = 1.0
        self.cdf = flow.rt.asarray(cdf)
        self.generator = flow.rt._generator(seed)
        self.params = _copy_params(params, grad=True)
        self.opt = torch.optim.Adam(self.params.parameters(), lr=float(lr))

    def run(self, k):
        n = self.s.shape[0]
        with torch.enable_grad():
            for _ in range(int(k)):
                self.opt.zero_grad(set_to_none=True)
                if self.batch is None:
                    loss = -(self.w * self.flow.log_prob(self.params, self.s)).sum()
                else:     # a minibatch resampled ∝ w: the same expected gradient, uniform weights
                    u = torch.rand(self.batch, generator=self.generator, device=self.s.device, dtype=self.s.dtype)
                    idx = torch.searchsorted(self.cdf, u, right=True).clamp_(max=n - 1)
                    loss = -self.flow.log_prob(self.params, self.s[idx]).mean()
                loss.backward()
                self.opt.step()
        return _copy_params(self.params)


def _clear(params):
    """Drops the transforms' one-entry caches (the last input and output), which would pin those tensors."""
    for t in params:
        t._cached_x_y, t._cached_log_scale = (None, None), None


def _frozen(params):
    for p in params.parameters():
        p.requires_grad_(False)
    return params


def _copy_params(params, grad=False):
    import copy
    _clear(params)
    out = copy.deepcopy(params)
    for p in out.parameters():
        p.requires_grad_(grad)
    return out
