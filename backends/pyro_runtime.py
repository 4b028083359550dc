"""The torch runtime (Pyro distributions and transforms); device-agnostic, eager but for `jit_pure`.

Its parts: `jit_pure`'s per-signature compile by inductor (`pyro_compile`, with its policy `compile_mode` /
`compiling`), the numpy-like namespace `xp` (`pyro_numpy`), its own distribution classes
(`pyro_distributions`), masked autoregressive flows (`pyro_flows`), the default proposal nets and their trainer
(`pyro_proposals`), special functions (`pyro_special`).
"""
import contextlib
import types

import numpy as np
import pyro.distributions as dist
import torch
from torch.distributions import biject_to

from ..errors import DeviceError, InferenceError, PPLError
from . import pyro_distributions, pyro_special
from .pyro_compile import CompiledFunction
from .pyro_compile import CompileWarning, compile_mode, compiling  # noqa: F401 (the compile policy, public here)
from .pyro_numpy import Numpy
from .runtime import Runtime, active, register

# No argument/support checks under vmap (they call .item()). Through Pyro's own switch, not torch's: Pyro's
# MCMC restores torch's default from Pyro's flag when it returns, which re-enabled the checks for later runs.
dist.enable_validation(False)

@register("pyro")
class PyroRuntime(Runtime):
    name = "pyro"
    framework = "torch"
    compiles_loops = False
    distributions = dist
    special_functions = torch.special
    special = types.SimpleNamespace(log_ndtr=pyro_special.log_ndtr, gammainc=pyro_special.gammainc,
                                    gammaincc=pyro_special.gammaincc, betainc=pyro_special.betainc)

    def __init__(self, device="cpu", precision="float32", devices=None):
        super().__init__(device, precision)
        if devices not in (None, 1):
            raise DeviceError(f"devices={devices!r}: splitting particles over several devices needs the JAX "
                              f"runtime (runtime='numpyro'); the Pyro runtime runs on one device (device=...)")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise PPLError(f"device {device!r} requested but torch sees no CUDA device")
        self.torch_device = torch.device(device)
        self.dtype = torch.float64 if precision == "float64" else torch.float32
        self.xp = Numpy(self)

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
        """x[start:start + size] along the first axis, for a `start` batched by vmap (a gather, `start` clamped to
        [0, len(x) − size] as JAX's `dynamic_slice`)."""
        x = self.asarray(x)
        start = torch.clamp(torch.as_tensor(start, device=x.device), 0, x.shape[0] - size)
        return torch.index_select(x, 0, start + torch.arange(size, device=x.device))

    def is_concrete(self, x):
        """Whether x's value is known: False for a tensor batched by `torch.func.vmap` (under any of torch.func's
        wrappers), whose value per particle `int()` cannot read."""
        functorch = torch._C._functorch
        while isinstance(x, torch.Tensor) and functorch.is_functorch_wrapped_tensor(x):
            if functorch.is_batchedtensor(x):
                return False
            x = functorch.get_unwrapped(x)
        return True

    # distributions and transforms
    def biject_to(self, constraint):
        return biject_to(constraint)

    _sorted_class = staticmethod(pyro_distributions.sorted_class)
    _truncated_class = staticmethod(pyro_distributions.truncated_class)
    _markov_class = staticmethod(pyro_distributions.markov_class)

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

    def jit(self, fn, static_argnames=(), unroll_threefry=False):
        return fn

    def jit_pure(self, fn, vectorize=True):
        """fn traced and compiled per input signature where that pays off (see the module docstring)."""
        return CompiledFunction(self, fn, vectorize=vectorize)

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
    def mcmc(self, potential, key, z0, sampler, warmup, draws, target_accept, max_tree_depth, num_steps, dense_mass,
             progress, value_and_grad=None):
        """Pyro's HMC or NUTS (`sampler`) on `potential(z)` = −log density, one chain after the other from z0 [C, D]
        (each seeded from `key`). Returns as NumPyro's (Pyro keeps no per-draw energy, tree size or acceptance
        probability: its acceptance rate per chain). With `value_and_grad`, Pyro's integrator takes the gradient
        from it (`_Given`: one compiled pass, where autograd through the eager evaluator costs milliseconds)."""
        if value_and_grad is not None:
            potential = lambda z: _Given.apply(z, value_and_grad)  # noqa: E731
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
            kernel = (NUTS(max_tree_depth=max_tree_depth, **common) if sampler == "nuts"
                      else HMC(**common) if num_steps is None else FixedStepsHMC(**common))
            mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, initial_params={"z": z0[c]},
                        disable_progbar=not progress)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seeds[c]))
                try:
                    mcmc.run()
                except RuntimeError as e:  # Pyro's tree building fails on NaN energies
                    raise InferenceError(f"{sampler} (Pyro) failed in chain {c}: {e}; the target density is probably "
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
        """A masked autoregressive flow from Pyro's `AffineAutoregressive` with `AutoRegressiveNN`
        (`pyro_flows.Flow`)."""
        from .pyro_flows import Flow
        return Flow(self, int(dim), [int(h) for h in hidden], [[int(i) for i in o] for o in orders])

    def temp_memory(self, step, init, key):
        raise PPLError("the memory of a compiled step is known on the JAX runtime only (runtime='numpyro')")


class _Given(torch.autograd.Function):
    """A scalar f(z) whose value and gradient both come from `value_and_grad(z)` (one call; the gradient is kept
    for the backward pass)."""

    @staticmethod
    def forward(ctx, z, value_and_grad):
        value, grad = value_and_grad(z.detach())
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    def backward(ctx, g):
        grad, = ctx.saved_tensors
        return g * grad, None
