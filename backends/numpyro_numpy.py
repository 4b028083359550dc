"""The JAX runtime's numpy-like namespace `rt.xp`: jax.numpy plus the few names the algorithms spell
differently."""
import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp


class Numpy:
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
