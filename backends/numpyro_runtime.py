"""The JAX runtime (NumPyro distributions and transforms); per-step kernels are jit-compiled.

Its parts: the numpy-like namespace `xp` (`numpyro_numpy`), its own distribution classes
(`numpyro_distributions`), the mesh that splits particles and chains over devices (`numpyro_mesh`), masked
autoregressive flows (`numpyro_flows`), the default proposal nets and their trainer (`numpyro_proposals`).

XLA:CPU's concurrency-optimized scheduler deadlocks (every thread idle, the call never returns) on the jitted SMC
step of a model with batched Cholesky factors from about 1000 particles up (gp_pois_regr, jax 0.10.2), so it is
switched off here unless XLA_FLAGS already sets it; that takes effect if JAX has not started its CPU backend yet.

JAX lowers the threefry2x32 hash (every `jax.random` draw) on CPU as a loop of 5 trips over the whole array, 4
rounds each, where on GPU the 20 rounds are unrolled. Unrolled on CPU too (`unrolled_threefry`), they fuse into one
pass: the same bits, 3-4x faster (36k uniforms 290 -> 75 µs). Only functions jitted with `unroll_threefry=True`
get it, those that draw their random numbers in one block (a sequence sweep: 15% faster at N = 2000,
benchmarks/sequence_pf.py): with draws inside a loop, XLA's compile can take minutes instead of seconds (ppl.amortize's
training scan: 4 s, and more than 600 s unrolled).
"""
import contextlib
import functools
import os
import types

_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
if _SCHEDULER_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_SCHEDULER_FLAG}=false".strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from jax.scipy import special as jax_special  # noqa: E402
from . import numpyro_special  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402
from numpyro.distributions.transforms import biject_to  # noqa: E402

from ..errors import PPLError  # noqa: E402
from . import numpyro_distributions, numpyro_mesh  # noqa: E402
from .numpyro_numpy import Numpy  # noqa: E402
from .runtime import Runtime, active, module_owner, register  # noqa: E402


@contextlib.contextmanager
def unrolled_threefry():
    """Inside the block, threefry2x32 is lowered on CPU as JAX lowers it on GPU, unrolled (see the module
    docstring), through JAX's private lowering table, which is restored on exit; a JAX without that table keeps
    its own lowering (the bits are the same either way)."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32
        prim, table = threefry2x32.threefry2x32_p, mlir._platform_specific_lowerings["cpu"]
        before = table.get(prim)
        mlir.register_lowering(prim, threefry2x32._threefry2x32_lowering_rule, platform="cpu")
    except (ImportError, AttributeError, KeyError):
        yield
        return
    try:
        yield
    finally:
        if before is None:
            table.pop(prim, None)
        else:
            table[prim] = before


@register("numpyro")
class NumPyroRuntime(Runtime):
    name = "numpyro"
    framework = "jax"
    compiles_loops = True
    xp = Numpy()
    distributions = dist
    special = types.SimpleNamespace(log_ndtr=jax_special.log_ndtr, gammainc=jax_special.gammainc,
                                    gammaincc=jax_special.gammaincc, betainc=numpyro_special.betainc)
    special_functions = jax_special

    def __init__(self, device="cpu", precision="float32", devices=None):
        super().__init__(device, precision)
        platform = "gpu" if str(device).startswith("cuda") else "cpu"
        try:
            available = jax.devices(platform)
        except RuntimeError:
            raise PPLError(f"device {device!r} requested but JAX sees no {platform} device") from None
        index = int(str(device).split(":")[1]) if ":" in str(device) else 0
        self.jax_device = jax.local_devices(backend=platform)[index]    # this process's (ppl.distributed)
        self.mesh = numpyro_mesh.mesh(devices, available)
        self.n_devices = 1 if self.mesh is None else self.mesh.size
        # where the runtime's arrays live: its device, or replicated on every device of the mesh
        self.placement = self.jax_device if self.mesh is None else NamedSharding(self.mesh, PartitionSpec())
        self.dtype = jnp.float64 if precision == "float64" else jnp.float32

    @contextlib.contextmanager
    def scope(self):
        """JAX's x64 switch (global config) set for this precision, restored on exit: jitted functions are cached
        per setting, so a float32 run after a float64 one compiles (or reuses) float32 code."""
        with jax.enable_x64(self.precision == "float64"), active(self):
            yield

    # arrays
    def asarray(self, x, dtype=None):
        """x on this runtime's device (committed there, as torch's `.to(device)`; a committed and an
        uncommitted array are different jit inputs); tracers pass through."""
        if isinstance(x, jax.core.Tracer) and dtype is None:
            return x
        if isinstance(x, jax.Array) and dtype is None:
            return jax.device_put(x, self.placement)
        a = np.asarray(x)
        if dtype is None:
            dtype = self.dtype if a.dtype.kind in "fbiu" and a.dtype.kind != "b" else a.dtype
        return jax.device_put(jnp.asarray(a, dtype=dtype), self.placement)

    def asindex(self, x):
        """x as integer indices: a traced or device array is cast in place, anything else is put on the device."""
        if isinstance(x, jax.Array):
            return x.astype(jnp.int32)
        return jax.device_put(jnp.asarray(np.asarray(x), dtype=jnp.int32), self.placement)

    def to_numpy(self, x):
        """a writable numpy copy (device_get's array is read-only). An array split over the devices of several
        processes is gathered from all of them first (a collective: every process reads it, in the same order)."""
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils
            return np.array(multihost_utils.process_allgather(x, tiled=True))
        return np.array(x)      # a copy made by numpy (jax.device_get costs 8 µs more per array)

    def shard(self, tree):
        """The leaves of `tree` (each with a leading particle axis) split along the mesh's particle axis, inside
        jit (a sharding constraint for XLA's partitioner) or outside (placed); unchanged on one device."""
        if self.mesh is None:
            return tree
        spec = NamedSharding(self.mesh, PartitionSpec(numpyro_mesh.AXIS))
        return jax.tree_util.tree_map(lambda a: jax.lax.with_sharding_constraint(a, spec), tree)

    def replicate(self, tree):
        """The leaves of `tree` whole on every device of the mesh (inside jit: an all-gather); unchanged on one."""
        if self.mesh is None:
            return tree
        return jax.tree_util.tree_map(lambda a: jax.lax.with_sharding_constraint(a, self.placement), tree)

    def device_count(self, x):
        """How many devices hold parts of the array x."""
        return len(x.sharding.device_set)

    @staticmethod
    def device_of(x):
        """'cpu': jax.numpy computes where its inputs are, so one namespace serves every device."""
        return "cpu"

    def full_like(self, like, value, dtype=None):
        """The constant `value` as an array of `like`'s dtype (or `dtype`), uncommitted (a jit constant)."""
        return jnp.asarray(value, dtype=like.dtype) if dtype is None else jnp.asarray(np.asarray(value, dtype))

    def set_index(self, x, idx, value):
        """x with x[idx] = value, out of place (`.at[idx].set`)."""
        return jnp.asarray(x).at[idx].set(value)

    def dynamic_slice(self, x, start, size):
        """x[start:start + size] along the first axis, for a traced `start`."""
        return jax.lax.dynamic_slice_in_dim(x, start, size)

    def is_concrete(self, x):
        """Whether x's value is known (not a tracer of a function being compiled or transformed)."""
        return not isinstance(x, jax.core.Tracer)

    def bind(self, module, params=None):
        """A flax module's `apply` bound to its `params`; anything else as it is."""
        if module_owner(module) == self.name:
            return lambda *args: module.apply(params, *args)
        return module

    # distributions and transforms
    def biject_to(self, constraint):
        return biject_to(constraint)

    _sorted_class = staticmethod(numpyro_distributions.sorted_class)
    _truncated_class = staticmethod(numpyro_distributions.truncated_class)
    _markov_class = staticmethod(numpyro_distributions.markov_class)

    # function transforms
    def vmap(self, fn, in_axes=0):
        return jax.vmap(fn, in_axes=in_axes)

    def value_and_grad(self, fn):
        """`(value, aux), grad` batched over z of a per-particle scalar `fn(z, arg) -> (value, aux)`."""
        return jax.vmap(jax.value_and_grad(fn, has_aux=True), in_axes=(0, None))

    def jit(self, fn, static_argnames=(), unroll_threefry=False):
        jitted = jax.jit(fn, static_argnames=static_argnames)
        if not unroll_threefry:
            return jitted

        @functools.wraps(fn)
        def call(*args, **kwargs):
            with unrolled_threefry():      # lowered (compiled) at a call with new static arguments or shapes
                return jitted(*args, **kwargs)
        return call

    def jit_pure(self, fn, vectorize=True):
        return jax.jit(fn)

    # keys and randomness
    def key(self, seed):
        """`jax.random.PRNGKey(seed)`'s threefry key, made by numpy (the same two words: the seed's 64 bits under
        x64, else its low 32 bits; 60 µs less than building it by JAX operations). On JAX's default device it
        stays a numpy array, which a jitted call copies in as it starts: a key put on the device first is an
        asynchronous transfer the call then waits for (0.1-0.2 ms of a 1.3 ms compiled sweep,
        benchmarks/sequence_pf.py); elsewhere (another device, a mesh, several processes) it is put there."""
        seed = int(seed) % 2 ** (64 if jax.config.jax_enable_x64 else 32)
        words = np.array([seed >> 32, seed & 0xFFFFFFFF], dtype=np.uint32)
        return words if self.placement == jax.devices()[0] else jax.device_put(words, self.placement)

    def split(self, key, n=2):
        return jax.random.split(key, n)

    def normal(self, key, shape):
        return jax.random.normal(key, shape, dtype=self.dtype)

    def sample(self, d, key):
        """A draw from the runtime distribution `d` (its batch shape is the particle axis)."""
        return d.sample(key)

    def uniform(self, key, shape):
        return jax.random.uniform(key, shape, dtype=self.dtype)

    @contextlib.contextmanager
    def stream(self, key):
        """A block whose `draw`s and `uniform_draw`s split one key (held here until the block ends)."""
        self._stream = [key]
        try:
            yield
        finally:
            self._stream = None

    def _next_key(self):
        self._stream[0], key = jax.random.split(self._stream[0])
        return key

    def draw(self, d):
        return d.rsample(self._next_key()) if d.has_rsample else d.sample(self._next_key())

    def uniform_draw(self, shape):
        return self.uniform(self._next_key(), shape)

    # control flow
    def fori_loop(self, lower, upper, body, init):
        return jax.lax.fori_loop(lower, upper, body, init)

    def scan(self, f, init, xs, length=None):
        return jax.lax.scan(f, init, xs, length=length)

    def while_loop(self, cond_fn, body_fn, init):
        return jax.lax.while_loop(cond_fn, body_fn, init)

    def cond(self, pred, true_fn, false_fn, *operands):
        return jax.lax.cond(pred, true_fn, false_fn, *operands)

    def tree_map(self, f, *trees):
        return jax.tree_util.tree_map(f, *trees)

    def no_grad(self):
        """No gradient is recorded outside a transform: nothing to switch off."""
        return contextlib.nullcontext()

    def stop_gradient(self, x):
        return jax.lax.stop_gradient(x)

    def hvp(self, fn):
        """(z, v) -> ∇²fn(z) v for a scalar per-particle `fn(z)` (unbatched)."""
        return lambda z, v: jax.jvp(jax.grad(fn), (z,), (v,))[1]

    def batch(self, fn):
        """fn over the leading axis of its arguments: vmapped and jitted."""
        return jax.jit(jax.vmap(fn))

    # engines of the runtime's own libraries
    def mcmc(self, potential, key, z0, sampler, warmup, draws, target_accept, max_tree_depth, num_steps, dense_mass,
             progress, value_and_grad=None):
        """NumPyro's HMC or NUTS (`sampler`) on `potential(z)` = −log density, chains vectorized from z0 [C, D]
        (on a mesh: split over its devices, C / devices vectorized chains on each).
        Returns z [C, S, D], per-draw stats [C, S] (with "log_density" [C, S] and "grad" [C, S, D] at each draw,
        which NumPyro records at no cost), the adapted step size [C] and the mean acceptance probability [C]."""
        from numpyro.infer import HMC, MCMC, NUTS
        common = dict(potential_fn=potential, target_accept_prob=target_accept, dense_mass=dense_mass)
        # a fixed num_steps needs trajectory_length=None, or NumPyro does not adapt the step size
        steps = {} if num_steps is None else {"num_steps": num_steps, "trajectory_length": None}
        kernel = NUTS(max_tree_depth=max_tree_depth, **common) if sampler == "nuts" else HMC(**steps, **common)
        chains = z0.shape[0]
        # several devices: each runs its share of the chains, vectorized (NumPyro's callable chain_method)
        across = None if self.mesh is None else numpyro_mesh.chains_across(self.mesh)
        mcmc = MCMC(kernel, num_warmup=warmup, num_samples=draws, num_chains=chains,
                    chain_method=across or "vectorized", progress_bar=bool(progress) and across is None)
        fields = ("diverging", "energy", "num_steps", "accept_prob", "adapt_state.step_size", "z_grad",
                  "potential_energy")
        mcmc.run(key, init_params=z0 if chains > 1 else z0[0], extra_fields=fields)
        z = mcmc.get_samples(group_by_chain=True)
        if not z.is_fully_addressable:     # chains of several processes (ppl.distributed): every one gets all
            z = self.asarray(self.to_numpy(z))
        extra = jax.tree_util.tree_map(self.to_numpy, mcmc.get_extra_fields(group_by_chain=True))
        stats = {"diverging": extra["diverging"], "energy": extra["energy"], "n_steps": extra["num_steps"],
                 "acceptance_rate": extra["accept_prob"], "step_size": extra["adapt_state.step_size"],
                 "grad": -extra["z_grad"], "log_density": -extra["potential_energy"]}
        stats = {k: np.asarray(v) for k, v in stats.items()}
        return z, stats, stats["step_size"][:, -1], stats["acceptance_rate"].mean(axis=1)

    def conditional_gaussian(self, context_shape, dim, hidden, depth, shift, scale, seed):
        from .numpyro_proposals import conditional_gaussian
        return conditional_gaussian(context_shape, dim, hidden, depth, shift, scale, seed)

    def proposal_trainer(self, proposal, lr, dim):
        from .numpyro_proposals import Trainer
        return Trainer(proposal, self, lr, dim)

    def flow(self, dim, hidden, orders):
        """A masked autoregressive flow from NumPyro's `InverseAutoregressiveTransform` with `AutoregressiveNN`
        (jitted; `numpyro_flows.Flow`)."""
        from .numpyro_flows import flow
        return flow(self.placement, int(dim), tuple(int(h) for h in hidden),
                     tuple(tuple(int(i) for i in o) for o in orders))

    def temp_memory(self, step, init, key):
        """Bytes of temporary buffers XLA allocates for the jitted `step(key, init(key))`, from its compiled
        memory analysis: nothing is allocated or run."""
        state = jax.eval_shape(init, key)
        return step.lower(key, state).compile().memory_analysis().temp_size_in_bytes
