"""The JAX runtime (NumPyro distributions and transforms); per-step kernels are jit-compiled.

XLA:CPU's concurrency-optimized scheduler deadlocks (every thread idle, the call never returns) on the jitted SMC
step of a model with batched Cholesky factors from about 1000 particles up (gp_pois_regr, jax 0.10.2), so it is
switched off here unless XLA_FLAGS already sets it; that takes effect if JAX has not started its CPU backend yet.
"""
import os

_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
if _SCHEDULER_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_SCHEDULER_FLAG}=false".strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from jax.scipy.special import logsumexp  # noqa: E402
from numpyro.distributions.transforms import biject_to  # noqa: E402

from ..errors import PPLError  # noqa: E402
from .runtime import Runtime, register  # noqa: E402


class _Numpy:
    """jax.numpy plus the few names the algorithms use that it spells differently."""

    def __getattr__(self, name):
        return getattr(jnp, name)

    logsumexp = staticmethod(logsumexp)

    @staticmethod
    def take(x, idx, axis=0):
        return jnp.take(x, idx, axis=axis)

    @staticmethod
    def index_update(x, idx, value):
        return x.at[idx].set(value)

    @staticmethod
    def index_add(x, idx, value):
        """x with value[j] added at x[idx[j]] (repeated indices accumulate)."""
        return x.at[idx].add(value)

    @staticmethod
    def cholesky(x):
        return jnp.linalg.cholesky(x)


@register("numpyro")
class NumPyroRuntime(Runtime):
    name = "numpyro"
    framework = "jax"
    xp = _Numpy()
    distributions = dist

    def __init__(self, device="cpu"):
        super().__init__(device)
        platform = "gpu" if str(device).startswith("cuda") else "cpu"
        try:
            devices = jax.devices(platform)
        except RuntimeError:
            raise PPLError(f"device {device!r} requested but JAX sees no {platform} device") from None
        index = int(str(device).split(":")[1]) if ":" in str(device) else 0
        self.jax_device = devices[index]
        self.dtype = jnp.float32

    # arrays
    def asarray(self, x, dtype=None):
        """x on this runtime's device (committed there, as torch's `.to(device)`; a committed and an
        uncommitted array are different jit inputs); tracers pass through."""
        if isinstance(x, jax.core.Tracer) and dtype is None:
            return x
        if isinstance(x, jax.Array) and dtype is None:
            return jax.device_put(x, self.jax_device)
        a = np.asarray(x)
        if dtype is None:
            dtype = self.dtype if a.dtype.kind in "fbiu" and a.dtype.kind != "b" else a.dtype
        return jax.device_put(jnp.asarray(a, dtype=dtype), self.jax_device)

    def asindex(self, x):
        """x as integer indices: a traced or device array is cast in place, anything else is put on the device."""
        if isinstance(x, jax.Array):
            return x.astype(jnp.int32)
        return jax.device_put(jnp.asarray(np.asarray(x), dtype=jnp.int32), self.jax_device)

    def to_numpy(self, x):
        return np.asarray(jax.device_get(x))

    def block(self, x):
        return jax.block_until_ready(x)

    # distributions and transforms
    def biject_to(self, constraint):
        return biject_to(constraint)

    # function transforms
    def vmap(self, fn, in_axes=0):
        return jax.vmap(fn, in_axes=in_axes)

    def value_and_grad(self, fn):
        """`(value, aux), grad` batched over z of a per-particle scalar `fn(z, arg) -> (value, aux)`."""
        return jax.vmap(jax.value_and_grad(fn, has_aux=True), in_axes=(0, None))

    def jit(self, fn, static_argnames=()):
        return jax.jit(fn, static_argnames=static_argnames)

    # keys and randomness
    def key(self, seed):
        return jax.device_put(jax.random.PRNGKey(int(seed)), self.jax_device)

    def split(self, key, n=2):
        return jax.random.split(key, n)

    def normal(self, key, shape):
        return jax.random.normal(key, shape, dtype=self.dtype)

    def sample(self, d, key):
        """A draw from the runtime distribution `d` (its batch shape is the particle axis)."""
        return d.sample(key)

    def uniform(self, key, shape):
        return jax.random.uniform(key, shape, dtype=self.dtype)

    # control flow
    def fori_loop(self, lower, upper, body, init):
        return jax.lax.fori_loop(lower, upper, body, init)

    def while_loop(self, cond, body, init):
        return jax.lax.while_loop(cond, body, init)

    def scan(self, f, init, xs, length=None):
        return jax.lax.scan(f, init, xs, length=length)

    def cond(self, pred, true_fn, false_fn, *operands):
        return jax.lax.cond(pred, true_fn, false_fn, *operands)

    def tree_map(self, f, *trees):
        return jax.tree_util.tree_map(f, *trees)

    def stop_gradient(self, x):
        return jax.lax.stop_gradient(x)

    def hvp(self, fn):
        """(z, v) -> ∇²fn(z) v for a scalar per-particle `fn(z)` (unbatched)."""
        return lambda z, v: jax.jvp(jax.grad(fn), (z,), (v,))[1]
