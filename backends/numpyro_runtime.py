"""The JAX runtime (NumPyro distributions and transforms); per-step kernels are jit-compiled.

XLA:CPU's concurrency-optimized scheduler deadlocks (every thread idle, the call never returns) on the jitted SMC
step of a model with batched Cholesky factors from about 1000 particles up (gp_pois_regr, jax 0.10.2), so it is
switched off here unless XLA_FLAGS already sets it; that takes effect if JAX has not started its CPU backend yet.
"""
import contextlib
import functools
import math
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
from jax.scipy.special import logsumexp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402
from numpyro.distributions.transforms import biject_to  # noqa: E402

from ..errors import DeviceError, PPLError, ValueRangeError  # noqa: E402
from .runtime import Runtime, active, module_owner, register  # noqa: E402


class _Numpy:
    """jax.numpy plus the few names the algorithms use that it spells differently."""

    def __getattr__(self, name):
        return getattr(jnp, name)

    logsumexp = staticmethod(logsumexp)

    @staticmethod
    def arange(n, dtype=None):
        """int32 (the index type of `asindex`) unless told otherwise, also under x64."""
        return jnp.arange(n, dtype=dtype or jnp.int32)

    @staticmethod
    def take(x, idx, axis=0):
        return jnp.take(x, idx, axis=axis)

    @staticmethod
    def index_add(x, idx, value):
        """x with value[j] added at x[idx[j]] (repeated indices accumulate)."""
        return x.at[idx].add(value)

    @staticmethod
    def cholesky(x):
        return jnp.linalg.cholesky(x)

    @staticmethod
    def solve(a, b):
        return jnp.linalg.solve(a, b)

    @staticmethod
    def solve_triangular(a, b, lower=False):
        return jax.scipy.linalg.solve_triangular(a, b, lower=lower)


@register("numpyro")
class NumPyroRuntime(Runtime):
    name = "numpyro"
    framework = "jax"
    compiles_loops = True
    xp = _Numpy()
    distributions = dist
    special = types.SimpleNamespace(log_ndtr=jax_special.log_ndtr, gammainc=jax_special.gammainc,
                                    gammaincc=jax_special.gammaincc, betainc=jax_special.betainc)
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
        self.mesh = _mesh(devices, available)
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
        return np.array(jax.device_get(x))

    def shard(self, tree):
        """The leaves of `tree` (each with a leading particle axis) split along the mesh's particle axis, inside
        jit (a sharding constraint for XLA's partitioner) or outside (placed); unchanged on one device."""
        if self.mesh is None:
            return tree
        spec = NamedSharding(self.mesh, PartitionSpec(AXIS))
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

    @staticmethod
    @functools.cache
    def _sorted_class():
        from jax.scipy.special import gammaln

        class Sorted(dist.Distribution):
            def __init__(self, base, support):
                self.base, self._support = base, support
                super().__init__(batch_shape=tuple(base.batch_shape[:-1]), event_shape=tuple(base.batch_shape[-1:]))

            @property
            def support(self):
                return self._support

            def sample(self, key, sample_shape=()):
                return jnp.sort(self.base.sample(key, sample_shape), axis=-1)

            def log_prob(self, x):
                return self.base.log_prob(x).sum(-1) + gammaln(self.event_shape[0] + 1.0)
        return Sorted

    @staticmethod
    @functools.cache
    def _truncated_class():
        from ..stdlib.distributions import _Truncation

        class Truncated(_Truncation, dist.Distribution):
            def __init__(self, rt, family, params, lower, upper, shape):
                super().__init__(batch_shape=self._setup(rt, family, params, lower, upper, shape))

            def sample(self, key, sample_shape=()):
                return self._from_uniform(jax.random.uniform(key, tuple(sample_shape) + self.batch_shape))
        return Truncated

    @staticmethod
    @functools.cache
    def _markov_class():
        from ..stdlib.markov import _Lowered

        class Chain(_Lowered, dist.Distribution):
            def __init__(self, chain, rt, params):
                batch, event = self._setup(chain, rt, params)
                dist.Distribution.__init__(self, batch_shape=batch, event_shape=event)

            @property
            def support(self):
                return dist.constraints.independent(dist.constraints.real, len(self.event_shape))

            def sample(self, key, sample_shape=()):
                if sample_shape:
                    raise PPLError("a MarkovChain is sampled one path per particle (sample_shape=())")
                if not self.batch_shape:
                    return self._one_particle().sample(key)[0]
                k0, k1 = jax.random.split(key)
                x0 = self._init.sample(k0)

                def step(prev, tk):
                    x = self._step_batched(prev, tk[0]).sample(tk[1])
                    return x, x
                _, xs = jax.lax.scan(step, x0, (self._ts, jax.random.split(k1, self._chain.length - 1)))
                return jnp.concatenate([x0[:, None], jnp.moveaxis(xs, 0, 1)], axis=1)
        return Chain

    # function transforms
    def vmap(self, fn, in_axes=0):
        return jax.vmap(fn, in_axes=in_axes)

    def value_and_grad(self, fn):
        """`(value, aux), grad` batched over z of a per-particle scalar `fn(z, arg) -> (value, aux)`."""
        return jax.vmap(jax.value_and_grad(fn, has_aux=True), in_axes=(0, None))

    def jit(self, fn, static_argnames=()):
        return jax.jit(fn, static_argnames=static_argnames)

    def jit_pure(self, fn):
        return jax.jit(fn)

    # keys and randomness
    def key(self, seed):
        return jax.device_put(jax.random.PRNGKey(int(seed)), self.placement)

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
    def mcmc(self, potential, key, z0, kind, warmup, draws, target_accept, max_tree_depth, num_steps, dense_mass,
             progress):
        """NumPyro's HMC or NUTS (`kind`) on `potential(z)` = −log density, chains vectorized from z0 [C, D]
        (on a mesh: split over its devices, C / devices vectorized chains on each).
        Returns z [C, S, D], per-draw stats [C, S] (with "log_density" [C, S] and "grad" [C, S, D] at each draw,
        which NumPyro records at no cost), the adapted step size [C] and the mean acceptance probability [C]."""
        from numpyro.infer import HMC, MCMC, NUTS
        common = dict(potential_fn=potential, target_accept_prob=target_accept, dense_mass=dense_mass)
        # a fixed num_steps needs trajectory_length=None, or NumPyro does not adapt the step size
        steps = {} if num_steps is None else {"num_steps": num_steps, "trajectory_length": None}
        kernel = NUTS(max_tree_depth=max_tree_depth, **common) if kind == "nuts" else HMC(**steps, **common)
        chains = z0.shape[0]
        # several devices: each runs its share of the chains, vectorized (NumPyro's callable chain_method)
        across = None if self.mesh is None else _chains_across(self.mesh)
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
        (jitted; see `_Flow`)."""
        return _flow(self.placement, int(dim), tuple(int(h) for h in hidden),
                     tuple(tuple(int(i) for i in o) for o in orders))

    def temp_memory(self, step, init, key):
        """Bytes of temporary buffers XLA allocates for the jitted `step(key, init(key))`, from its compiled
        memory analysis: nothing is allocated or run."""
        state = jax.eval_shape(init, key)
        return step.lower(key, state).compile().memory_analysis().temp_size_in_bytes


# ------------------------------------------------------------------------------------------ particles over devices
#: the name of the mesh's one axis, along which particles (or chains) are split
AXIS = "particles"

# The particle axis is split along a 1-d `jax.sharding.Mesh` with axis name "particles": every array with a
# leading particle axis is placed with `NamedSharding(mesh, PartitionSpec("particles"))`, everything else (keys,
# β, step sizes, log Z) replicated on the mesh. The jitted step of `fk` is then partitioned by XLA (GSPMD):
# densities, gradients and MCMC moves run on each device's own particles; the global reductions (logsumexp of the
# weights, ESS, the conditional ESS of the tempering bisection, the resampler's cumulative sum) and the gathers of
# resampling become collectives. Resampling is therefore global, exactly as on one device: the estimator, and so
# its variance, is the one-device estimator (the same draws, up to the order of floating-point sums), not an
# average of independent per-device runs. (SMC's cross moves split the particles into blocks, [:N/2] and
# [N/2:]; XLA redistributes each half over all devices, collective permutes of N/(2k) particles per move phase,
# so that every device moves its share; the compiled IS step has no collective on the particles but the
# reductions and the resampling branch.)


def _mesh(devices, available):
    """The 1-d mesh over `devices` (an integer: the first that many of the JAX devices `available`; "all"; a list
    of JAX devices), or None for one device (None, 1, or a list of one)."""
    from jax.sharding import Mesh
    if devices is None or devices == 1:
        return None
    if devices == "all":
        chosen = available
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if devices < 1:
            raise ValueRangeError(f"devices must be >= 1, 'all' or a list of JAX devices, got {devices!r}")
        if devices > len(available):
            raise DeviceError(f"devices={devices} requested but JAX sees {len(available)} "
                              f"{available[0].platform} device(s); on CPU set the environment variable "
                              f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} before JAX starts")
        chosen = available[:devices]
        processes = sorted({d.process_index for d in available})
        if len(processes) > 1:      # several processes (ppl.distributed): devices / processes of each
            if devices % len(processes):
                raise ValueRangeError(f"devices={devices} must be divisible by the number of processes "
                                      f"({len(processes)}), each giving devices / processes of its own, or 'all'")
            chosen = [d for p in processes for d in [d for d in available if d.process_index == p]
                      [:devices // len(processes)]]
            if len(chosen) < devices:
                raise DeviceError(f"devices={devices} requested but the {len(processes)} processes have "
                                  f"{len(available)} devices in all, not as many on each")
    elif isinstance(devices, (list, tuple)) and devices and all(isinstance(d, jax.Device) for d in devices):
        chosen = list(devices)
    else:
        raise ValueRangeError(f"devices must be an integer, 'all' or a list of JAX devices, got {devices!r}")
    return None if len(chosen) == 1 else Mesh(np.array(chosen), (AXIS,))


def _chains_across(mesh):
    """A NumPyro `chain_method` (a transform of the one-chain sampler f) that runs chains [C, ...] on the devices
    of `mesh`: `shard_map` over the mesh's particle axis of `vmap` over each device's C / devices chains, so that
    each device draws its own chains and nothing passes between them."""
    def transform(f):
        return jax.jit(jax.shard_map(jax.vmap(f), mesh=mesh, in_specs=PartitionSpec(AXIS),
                                     out_specs=PartitionSpec(AXIS), check_vma=False))
    return transform


def _pad(n):
    """How many rows pad n to a multiple of the largest power of two <= n / 4 (within 25% of n): arrays of few
    distinct sizes, so the jitted flow functions compile a few times, not once per size."""
    return -n % (1 << max(int(n).bit_length() - 3, 0))


@functools.lru_cache(maxsize=32)
def _flow(device, dim, hidden, orders):
    return _Flow(device, dim, hidden, orders)


class _Flow:
    """u = T_K ∘ … ∘ T_1(s), each T_k NumPyro's `InverseAutoregressiveTransform` u_i = exp(a_i) s_i + m_i with
    (m, a) from a MADE net over `orders[k]`; q(s) = N(u; 0, I) |det ∂u/∂s|. The density direction s → u is one
    pass (the library's forward call), sampling s = T⁻¹(ε) is `dim` passes per layer (its `inv`). Params are
    a list per layer of the stax parameters, committed to `device` (as the runtime's arrays, so every jitted
    call sees committed inputs and compiles once); `init` zeroes each net's output layer (T = identity)."""

    def __init__(self, device, dim, hidden, orders):
        from jax.example_libraries import stax
        from numpyro.distributions.flows import InverseAutoregressiveTransform
        from numpyro.nn import AutoregressiveNN
        self.device, self.dim = device, dim
        nets = [AutoregressiveNN(dim, list(hidden), permutation=np.asarray(o), nonlinearity=stax.Relu)
                for o in orders]
        inits = [init for init, _ in nets]
        layers = [functools.partial(lambda apply, p: InverseAutoregressiveTransform(functools.partial(apply, p)),
                                    apply) for _, apply in nets]
        const = -0.5 * dim * float(np.log(2 * np.pi))

        def log_prob(params, s):
            ladj = 0.0
            for layer, p in zip(layers, params):
                t = layer(p)
                u, log_scale = t.call_with_intermediates(s)
                ladj, s = ladj + t.log_abs_det_jacobian(s, u, log_scale), u
            return const - 0.5 * (s * s).sum(-1) + ladj

        def sample(params, key, n):
            s = jax.random.normal(key, (n, dim), dtype=jnp.float32)
            for layer, p in reversed(list(zip(layers, params))):
                s = layer(p).inv(s)
            return s

        def run(state, key, s, w, cdf, lr, k, batch):
            from numpyro.optim import Adam
            opt = Adam(lr)

            def step(state, key):
                if batch is None:
                    loss = lambda p: -(w * log_prob(p, s)).sum()    # noqa: E731
                else:     # a minibatch resampled ∝ w: the same expected gradient, uniform weights
                    idx = jnp.searchsorted(cdf, jax.random.uniform(key, (batch,)), side="right")
                    sb = s[jnp.minimum(idx, s.shape[0] - 1)]
                    loss = lambda p: -log_prob(p, sb).mean()    # noqa: E731
                value, g = jax.value_and_grad(loss)(opt.get_params(state))
                return opt.update(g, state), value
            state, _ = jax.lax.scan(step, state, jax.random.split(key, k))
            return state, opt.get_params(state)

        # the nets' parameter shapes, traced only (XLA takes seconds to compile the library's initializers)
        self._shapes = [jax.eval_shape(lambda k, i=i: i(k, (dim,))[1], jax.random.PRNGKey(0)) for i in inits]
        self._log_prob = jax.jit(log_prob)
        self._sample = jax.jit(sample, static_argnums=2)
        self._run = jax.jit(run, static_argnames=("k", "batch"))

    def init(self, seed):
        """Normal weights of Glorot scale and N(0, 0.01²) biases (as `MaskedDense` draws them), in numpy; the
        output layer of each net zero."""
        rng = np.random.default_rng(int(seed))

        def draw(shape):
            if len(shape.shape) == 2:
                return rng.normal(0.0, math.sqrt(2.0 / sum(shape.shape)), shape.shape)
            return rng.normal(0.0, 0.01, shape.shape)
        params = []
        for net in self._shapes:
            p = [jax.tree_util.tree_map(draw, layer) for layer in net]
            p[-1] = jax.tree_util.tree_map(np.zeros_like, p[-1])
            params.append(p)
        return jax.device_put(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params), self.device)

    def log_prob(self, params, s):
        if isinstance(s, jax.core.Tracer):      # inside a caller's jit: its shapes are fixed already
            return self._log_prob(params, s)
        n = s.shape[0]
        return self._log_prob(params, jnp.concatenate([s, jnp.zeros((_pad(n), s.shape[1]), s.dtype)]))[:n]

    def sample(self, params, key, n):
        return self._sample(params, key, n + _pad(n))[:n]

    def trainer(self, params, s, w, lr, batch, seed):
        return _Trainer(self, params, s, w, lr, batch, seed)


class _Trainer:
    """Adam on −Σ w log q(s) from `params`, on all draws (batch None) or on minibatches of `batch` resampled
    ∝ w; the draws are padded (weight 0) to one of a few sizes, so fits to growing pools reuse compiled steps."""

    def __init__(self, flow, params, s, w, lr, batch, seed):
        from numpyro.optim import Adam
        n = s.shape[0]
        pad = _pad(n)
        w = np.concatenate([w / w.sum(), np.zeros(pad)])
        cdf = np.cumsum(w)
        cdf[n - 1:] = 1.0     # uniform draws < 1 never pick a padded draw
        put = functools.partial(jax.device_put, device=flow.device)
        self.flow, self.lr, self.batch = flow, put(jnp.float32(lr)), None if batch is None else int(batch)
        self.s = put(jnp.concatenate([jnp.asarray(s), jnp.zeros((pad, s.shape[1]), s.dtype)]))
        self.w, self.cdf = put(jnp.asarray(w, jnp.float32)), put(jnp.asarray(cdf, jnp.float32))
        self.state, self.key = put(Adam(lr).init(params)), put(jax.random.PRNGKey(int(seed)))

    def run(self, k):
        self.key, key = jax.random.split(self.key)
        self.state, params = self.flow._run(self.state, key, self.s, self.w, self.cdf, self.lr, k=int(k),
                                            batch=self.batch)
        return params
