"""`ppl.amortize` on JAX: the default conditional proposal (an MLP c -> (mean, log σ) of a diagonal Gaussian, a
pure function of its parameters) and the trainer of a pair (params, apply) by Adam on BRAIn's loss
(`ppl.amortize`), its steps jitted or fused into one scan. Used through the NumPyro runtime's
`conditional_gaussian` and `proposal_trainer`."""
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.example_libraries import optimizers

from ..amortize_brain import _stats, brain_loss
from ..amortize_proposal import _check_gaussian, _diag_normal_log_prob
from ..errors import PPLError


def _init_mlp(rng, sizes):
    """[(W [in, out], b [out])] with torch's default uniform(±1/sqrt(in)) initialization; the last layer 0."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        s = 1.0 / math.sqrt(a)
        last = i == len(sizes) - 2
        layers.append((np.zeros((a, b)) if last else rng.uniform(-s, s, (a, b)),
                       np.zeros(b) if last else rng.uniform(-s, s, b)))
    return layers


def conditional_gaussian(context_shape, dim, hidden, depth, shift, scale, seed):
    """(params, apply): the default proposal of `ppl.amortize` on JAX, the same network as the torch default
    (`pyro_proposals.conditional_gaussian`) as a pure function."""
    rng = np.random.default_rng(seed)
    k = int(np.prod(context_shape))
    params = {"linear": [(np.zeros((k, 2 * dim)), np.zeros(2 * dim))],
              "mlp": _init_mlp(rng, [k] + [hidden] * depth + [2 * dim])}
    params = {n: [(jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)) for w, b in v]
              for n, v in params.items()}
    shift, scale = jnp.asarray(shift, jnp.float32), jnp.asarray(scale, jnp.float32)

    def apply(params, c):
        x = (c.reshape(c.shape[0], -1) - shift) / scale
        (w, b), = params["linear"]
        out, h = x @ w + b, x
        for i, (w, b) in enumerate(params["mlp"]):
            h = h @ w + b
            if i < len(params["mlp"]) - 1:
                h = jnp.tanh(h)
        out = out + h
        return out[:, :dim], out[:, dim:]
    return params, apply


class Trainer:
    """Training on JAX: a pure pair (params pytree, apply(params, c) -> (mean, log σ)), Adam from
    `jax.example_libraries.optimizers`; drawing and the step are jitted."""

    general = False

    def __init__(self, pair, rt, lr, dim):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and callable(pair[1])):
            raise PPLError("on runtime 'numpyro' the proposal must be a pair (params, apply) with "
                           "apply(params, c [B, ...]) -> (mean [B, D], log_scale [B, D]) in JAX")
        self.rt, self.apply, self.dim, self.checked = rt, pair[1], dim, False
        init, update, self.get_params = optimizers.adam(lr)
        self.state, self.i = init(jax.tree_util.tree_map(lambda a: rt.asarray(a), pair[0])), 0
        xp, apply = rt.xp, self.apply

        def log_prob(params, c, y):
            mean, log_scale = apply(params, c)
            return _diag_normal_log_prob(xp, y, mean[:, None], log_scale[:, None])

        def draw(params, c, key, n):
            mean, log_scale = apply(params, c)
            eps = jax.random.normal(key, (c.shape[0], n, mean.shape[-1]), dtype=mean.dtype)
            return jax.lax.stop_gradient(mean[:, None] + xp.exp(log_scale)[:, None] * eps)

        def loss(params, c, y, log_gamma, log_r):
            log_q = log_prob(params, c, y)
            return brain_loss(log_gamma, log_q, log_r), log_q

        def step(i, state, c, y, log_gamma, log_r):
            (value, log_q), grads = jax.value_and_grad(loss, has_aux=True)(self.get_params(state), c, y,
                                                                            log_gamma, log_r)
            return update(i, grads, state), value, _stats(xp, log_gamma, log_q, log_r)

        self._draw = jax.jit(draw, static_argnames=("n",))
        self._step = jax.jit(step)
        self._log_prob = jax.jit(log_prob)
        self._raw = (draw, step)

    @property
    def params(self):
        return self.get_params(self.state)

    @property
    def proposal(self):
        """The trained pair (params, apply)."""
        return self.params, self.apply

    def _check(self, c):
        if not self.checked:
            c = c[:1]
            out = self.apply(self.params, c)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise PPLError("apply(params, c) must return (mean [B, D], log_scale [B, D])")
            _check_gaussian(*out, 1, self.dim)
            self.checked = True

    def draw(self, c, key, n):
        self._check(c)
        return self._draw(self.params, c, key, n=n)

    def log_prob(self, c, y):
        self._check(c)
        return self._log_prob(self.params, c, y)

    log_density = log_prob

    def step(self, c, y, log_gamma, log_r):
        """One Adam step; returns the minibatch's (loss, ESS/n) as device scalars (no synchronization)."""
        self._check(c)
        self.state, _, stats = self._step(self.i, self.state, c, y, log_gamma, log_r)
        self.i += 1
        return stats

    def train_fused(self, parts, stacked, ctx, idx, keys, n):
        """All steps in one compiled scan (drawing from q, the shared log γ evaluation `parts`, the Adam step),
        for minibatches `idx` [steps, B] and keys [steps]; returns (losses, ESS/n) [steps]."""
        draw, step = self._raw
        self._check(ctx)

        def train(state, xs, stacked, ctx):    # the data are arguments, not constants of the compilation
            def body(state, x):
                i, b, key = x
                c = ctx[b]
                y = draw(self.get_params(state), c, key, n)
                ref, rest = parts(stacked, b, y)
                state, _, stats = step(i, state, c, y, ref + rest, None)
                return state, stats
            return jax.lax.scan(body, state, xs)

        steps = len(idx)
        xs = (self.i + jnp.arange(steps), idx, keys)
        self.state, (losses, esses) = jax.jit(train)(self.state, xs, stacked, ctx)
        self.i += steps
        return np.asarray(losses, dtype=np.float64), np.asarray(esses, dtype=np.float64)

    def parameters_at(self, c):
        mean, log_scale = self.apply(self.params, self.rt.asarray(c[None]))
        return np.asarray(mean[0], dtype=np.float64), np.asarray(log_scale[0], dtype=np.float64)
