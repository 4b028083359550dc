"""Normalizing-flow proposals on the unconstrained space: a masked autoregressive flow (MAF; Papamakarios,
Pavlakou & Murray 2017) after the affine map of the weighted Gaussian,

    s = L⁻¹(z − m),   u = T_K ∘ … ∘ T_1(s),   log q(z) = log N(u; 0, I) + Σ_k log|det ∂T_k| − Σ_i log L_ii,

with (m, L L') the weighted mean and covariance of the draws it is fitted to, and each T_k the runtime
library's affine autoregressive transform (NumPyro's `InverseAutoregressiveTransform`, Pyro's
`AffineAutoregressive`) u_i = exp(a_i(s_<i)) s_i + μ_i(s_<i) with a MADE net (`AutoregressiveNN`) over its
own variable order (consecutive layers in opposite orders). Scoring given draws (the fit, and log q in
importance weights) is one pass per layer; sampling inverts each layer in D sequential passes.

The fit is the cross-entropy update of `proposals.py`: Adam on −Σ_i w_i log q(z_i) over the draws' first
1 − `holdout` share (in random order), from the identity map (q = the Gaussian) or, warm, from the previous
flow's parameters (on the new standardization). The params returned are the best on the held-out share's
weighted log-likelihood among the Gaussian, the start and the iterate after every tenth of `steps`, so a fit
is never worse there than the Gaussian of the same draws. With fewer than `min_ess` effective draws, or D = 1
(an autoregressive affine map of one variable is affine), the fit is the Gaussian.

The runtime is fixed at creation (the parameters live there): `Flow.start(rt, z, w)`, then `flow.fit(z, w)`.
"""
import math
import numbers
import time

import numpy as np

from ..errors import PPLError, ValueRangeError
from ..weights import Weights
from . import integer
from .proposals import Gaussian, Proposal, _weights


class Flow(Proposal):
    """A masked autoregressive flow q(z) after the weighted Gaussian's affine map, on the runtime `rt`.

    `gaussian` is the Gaussian of the draws it was last fitted to (its standardization); `info` records that
    fit: `steps` run, `best_step` (0: the start; None: the Gaussian), `holdout_nll` of the returned flow and
    `gaussian_holdout_nll` (−Σ w log q over the held-out draws, in z), `ess` of the weights and `seconds`."""

    family = "flow"

    def __init__(self, rt, gaussian, params, spec, options, info, generation=0):
        self.rt, self.gaussian, self.params, self.spec = rt, gaussian, params, spec
        self.options, self.info, self.generation = dict(options), dict(info), generation
        self._engine = rt.flow(*spec)
        self._log_det = float(np.log(np.diag(gaussian.chol)).sum())

    @property
    def dim(self):
        return self.spec[0]

    @property
    def hidden(self):
        return self.spec[1]

    @property
    def layers(self):
        return len(self.spec[2])

    @classmethod
    def start(cls, rt, z, w, hidden=None, layers=4, steps=300, lr=5e-3, batch=1024, holdout=0.2, min_ess=None,
              seed=0):
        """A flow on runtime `rt` fitted to draws z [n, D] with weights w [n]: `layers` autoregressive layers
        with MADE nets of hidden widths `hidden` (an int: two layers that wide; default max(32, 2D); each at
        least D), `steps` Adam steps of rate `lr` on minibatches of `batch` draws resampled ∝ w (None: all
        draws, weighted, every step), `holdout` share of the draws for choosing the iterate,
        no training below `min_ess` effective draws (default max(50, 5D)); `seed` fixes the variable orders,
        the initial nets and the splits."""
        z, w = _draws(z, w)
        d = z.shape[1]
        layers = integer(layers, "layers", 1)
        seed = integer(seed, "seed", 0, 2 ** 63)
        hidden = _hidden(hidden, d)
        spec = (d, hidden, _orders(d, layers, seed))
        options = _options(steps=steps, lr=lr, batch=batch, holdout=holdout, min_ess=min_ess, seed=seed)
        return _train(rt, spec, options, z, w, None, 0)

    def fit(self, z, w, previous=None, **options):
        """The flow fitted to draws z [n, D] with weights w, warm-started from `previous` where that is a flow
        of the same shape on the same runtime, else from this one (a fresh start with this one's settings
        if the dimension differs); `options` (steps, lr, batch, holdout, min_ess, seed) override this one's."""
        z, w = _draws(z, w)
        options = _options(**{**self.options, **options})
        warm = previous if isinstance(previous, Flow) and previous.spec == self.spec and \
            _same(previous.rt, self.rt) else self
        if z.shape[1] != self.dim:
            return Flow.start(self.rt, z, w, hidden=None, layers=self.layers, **options)
        return _train(self.rt, self.spec, options, z, w, warm.params, warm.generation + 1)

    def _check(self, rt):
        if not _same(rt, self.rt):
            raise PPLError(f"this flow was fitted on {self.rt!r}; its parameters live there, so it samples and "
                           f"scores on that runtime only (got {rt!r}): fit one with Flow.start(rt, z, w)")

    def sample(self, rt, key, n):
        self._check(rt)
        s = self._engine.sample(self.params, key, int(n))
        return rt.asarray(self.gaussian.mean) + rt.xp.einsum("ij,nj->ni", rt.asarray(self.gaussian.chol), s)

    def log_prob(self, rt, z):
        self._check(rt)
        return self._engine.log_prob(self.params, self.gaussian._std(rt, z)) - self._log_det

    def __repr__(self):
        return f"flow(dim={self.dim}, layers={self.layers}, hidden={self.hidden})"


def _same(a, b):
    return a.name == b.name and str(a.device) == str(b.device)


def _draws(z, w):
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 1 or not np.all(np.isfinite(z)):
        raise PPLError(f"a flow is fitted to finite draws z [n, D], got an array of shape {z.shape}")
    return z, _weights(w, len(z))


def _hidden(hidden, d):
    if hidden is None:
        hidden = max(32, 2 * d)
    hidden = (hidden, hidden) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
    if not hidden:
        raise ValueRangeError("hidden must be a width or a non-empty sequence of widths")
    return tuple(max(integer(h, "a hidden width", 1), d) for h in hidden)


def _orders(d, layers, seed):
    """The variable order of each layer: the identity, then alternately reversed and shuffled."""
    rng = np.random.default_rng(seed)
    orders = [np.arange(d)]
    for k in range(1, layers):
        orders.append(orders[-1][::-1] if k % 2 else rng.permutation(d))
    return tuple(tuple(int(i) for i in o) for o in orders)


def _real(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _options(steps, lr, batch, holdout, min_ess, seed):
    steps = integer(steps, "steps", 0)
    batch = None if batch is None else integer(batch, "batch", 1)
    if not (_real(lr) and 0 < lr < math.inf):
        raise ValueRangeError(f"lr must be a positive learning rate, got {lr!r}")
    if not (_real(holdout) and 0 <= holdout < 1):
        raise ValueRangeError(f"holdout must be a share in [0, 1), got {holdout!r}")
    if min_ess is not None and not (_real(min_ess) and min_ess >= 0):
        raise ValueRangeError(f"min_ess must be None or a number >= 0, got {min_ess!r}")
    return {"steps": steps, "lr": float(lr), "batch": batch, "holdout": float(holdout), "min_ess": min_ess,
            "seed": integer(seed, "seed", 0, 2 ** 63)}


def _train(rt, spec, options, z, w, start, generation):
    """The flow of `spec` fitted to (z, w) from the params `start` (None: the identity), as the module doc says."""
    t0 = time.perf_counter()
    d = spec[0]
    engine = rt.flow(*spec)
    gauss = Gaussian.fit(z, w)
    s = (z - gauss.mean) @ gauss.prec_chol.T
    log_det = float(np.log(np.diag(gauss.chol)).sum())
    identity = engine.init(options["seed"])
    ess = float(Weights.from_normalized(w).ess())
    min_ess = options["min_ess"] if options["min_ess"] is not None else max(50, 5 * d)
    info = {"steps": 0, "best_step": None, "holdout_nll": None, "gaussian_holdout_nll": None, "ess": ess}

    def done(params, **more):
        info.update(more, seconds=time.perf_counter() - t0)
        return Flow(rt, gauss, params, spec, options, info, generation)

    steps, holdout = options["steps"], options["holdout"]
    if d == 1 or steps == 0 or ess < min_ess:
        return done(identity)
    start = identity if start is None else start
    rng = np.random.default_rng([options["seed"], generation])
    order = rng.permutation(len(z))
    cut = int(round(holdout * len(z)))
    held, kept = order[:cut], order[cut:]
    seed = int(rng.integers(2 ** 62))
    batch = options["batch"] if options["batch"] is not None and options["batch"] < len(kept) else None
    if cut == 0 or w[held].sum() <= 0 or w[kept].sum() <= 0:   # no selection: train on all draws
        trainer = engine.trainer(start, rt.asarray(s), w, options["lr"], batch, seed)
        return done(trainer.run(steps), steps=steps, best_step=steps)
    s_held, w_held = rt.asarray(s[held]), w[held] / w[held].sum()

    def score(params):
        lp = np.asarray(rt.to_numpy(engine.log_prob(params, s_held)), dtype=np.float64)
        nll = -float(w_held @ lp) + log_det
        return nll if math.isfinite(nll) else math.inf

    trainer = engine.trainer(start, rt.asarray(s[kept]), w[kept] / w[kept].sum(), options["lr"], batch, seed)
    gaussian_nll = score(identity)
    best, best_nll, best_step = identity, gaussian_nll, None
    if start is not identity:
        nll = score(start)
        if nll < best_nll:
            best, best_nll, best_step = start, nll, 0
    every = max(1, -(-steps // 10))
    run = 0
    while run < steps:
        k = min(every, steps - run)
        params = trainer.run(k)
        run += k
        nll = score(params)
        if nll < best_nll:
            best, best_nll, best_step = params, nll, run
        elif not math.isfinite(nll):
            break
    return done(best, steps=run, best_step=best_step, holdout_nll=best_nll, gaussian_holdout_nll=gaussian_nll)
