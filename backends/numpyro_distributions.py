"""The JAX runtime's own distribution classes: sorted i.i.d. draws, a truncated family, a Markov chain's path.

Each is made on first use (`functools.cache`): the truncation and the chain share their arithmetic with the torch
runtime's through `stdlib`'s `_Truncation` and `_Lowered`, which import the language's distributions.
"""
import functools

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from ..errors import PPLError


@functools.cache
def sorted_class():
    """K i.i.d. draws of `base` (its last batch axis), sorted: density K! Π_k p(x_k)."""
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


@functools.cache
def truncated_class():
    """A family restricted to [lower, upper] (`stdlib.distributions.Truncated`)."""
    from ..stdlib.distributions import _Truncation

    class Truncated(_Truncation, dist.Distribution):
        def __init__(self, rt, family, params, lower, upper, shape):
            super().__init__(batch_shape=self._setup(rt, family, params, lower, upper, shape))

        def sample(self, key, sample_shape=()):
            return self._from_uniform(jax.random.uniform(key, tuple(sample_shape) + self.batch_shape))
    return Truncated


@functools.cache
def markov_class():
    """The path of a `stdlib.markov.MarkovChain`."""
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
