"""Special functions whose JAX version lacks a derivative.

`betainc(a, b, x)`: JAX's regularized incomplete beta, whose derivative in x JAX has and in a and b it has not
(it raises); here ∂/∂a and ∂/∂b are those of the continued fraction (`special.incomplete_beta`, computed in the
arguments' dtype), so that a truncated student_t with a latent df or a truncated beta with latent
concentrations samples under gradient methods. The value is JAX's.
"""
import functools

import jax
import jax.numpy as jnp
from jax.scipy import special as jax_special

from .special import incomplete_beta


def _fori(steps, body, carry):
    return jax.lax.fori_loop(1, steps + 1, body, carry)


@jax.custom_jvp
def betainc(a, b, x):
    """I_x(a, b) = B(x; a, b) / B(a, b), broadcast over its arguments."""
    return jax_special.betainc(a, b, x)


@betainc.defjvp
def _betainc_jvp(primals, tangents):
    a, b, x = jnp.broadcast_arrays(*(jnp.asarray(v, dtype=jnp.result_type(*primals, float)) for v in primals))
    da, db, dx = (jnp.broadcast_to(t, a.shape).astype(a.dtype) for t in tangents)
    steps = 48 if a.dtype == jnp.float64 else 28
    in_ab = functools.partial(incomplete_beta, jnp, jax_special.gammaln, x=x, steps=steps, loop=_fori)
    _, d_ab = jax.jvp(lambda a, b: in_ab(a=a, b=b), (a, b), (da, db))
    value, d_x = jax.jvp(lambda x: jax_special.betainc(a, b, x), (x,), (dx,))
    return value, d_ab + d_x
