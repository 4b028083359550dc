"""Masked autoregressive flows on JAX (`rt.flow`, fitted by adaptive importance sampling) and their trainer."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..stdlib.resamplers import RESAMPLERS
from .runtime import get_runtime


def _pad(n):
    """How many rows pad n to a multiple of the largest power of two <= n / 4 (within 25% of n): arrays of few
    distinct sizes, so the jitted flow functions compile a few times, not once per size."""
    return -n % (1 << max(int(n).bit_length() - 3, 0))


@functools.lru_cache(maxsize=32)
def flow(device, dim, hidden, orders):
    return Flow(device, dim, hidden, orders)


class Flow:
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

        def run(state, key, s, w, lr, k, batch):
            from numpyro.optim import Adam
            opt = Adam(lr)
            rt = get_runtime("numpyro")

            def step(state, key):
                if batch is None:
                    loss = lambda p: -(w * log_prob(p, s)).sum()    # noqa: E731
                else:     # a minibatch resampled ∝ w: the same expected gradient, uniform weights
                    sb = s[RESAMPLERS["multinomial"](rt, key, w, batch)]
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
        return FlowTrainer(self, params, s, w, lr, batch, seed)


class FlowTrainer:
    """Adam on −Σ w log q(s) from `params`, on all draws (batch None) or on minibatches of `batch` resampled
    ∝ w; the draws are padded (weight 0) to one of a few sizes, so fits to growing pools reuse compiled steps."""

    def __init__(self, flow, params, s, w, lr, batch, seed):
        from numpyro.optim import Adam
        n = s.shape[0]
        pad = _pad(n)
        w = np.concatenate([w / w.sum(), np.zeros(pad)])     # a padded draw is never resampled
        put = functools.partial(jax.device_put, device=flow.device)
        self.flow, self.lr, self.batch = flow, put(jnp.float32(lr)), None if batch is None else int(batch)
        self.s = put(jnp.concatenate([jnp.asarray(s), jnp.zeros((pad, s.shape[1]), s.dtype)]))
        self.w = put(jnp.asarray(w, jnp.float32))
        self.state, self.key = put(Adam(lr).init(params)), put(jax.random.PRNGKey(int(seed)))

    def run(self, k):
        self.key, key = jax.random.split(self.key)
        self.state, params = self.flow._run(self.state, key, self.s, self.w, self.lr, k=int(k),
                                            batch=self.batch)
        return params
