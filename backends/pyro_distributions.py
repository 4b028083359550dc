"""The torch runtime's own distribution classes: sorted i.i.d. draws, a truncated family, a Markov chain's path.

Each is made on first use (`functools.cache`): the truncation and the chain share their arithmetic with the JAX
runtime's through `stdlib`'s `_Truncation` and `_Lowered`, which import the language's distributions.
"""
import functools
import math

import pyro.distributions as dist
import torch

from ..errors import PPLError


@functools.cache
def sorted_class():
    """K i.i.d. draws of `base` (its last batch axis), sorted: density K! Π_k p(x_k)."""
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


@functools.cache
def truncated_class():
    """A family restricted to [lower, upper] (`stdlib.distributions.Truncated`)."""
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


@functools.cache
def markov_class():
    """The path of a `stdlib.markov.MarkovChain`."""
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
