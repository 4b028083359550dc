"""One Feynman–Kac loop for every particle method (Chopin & Papaspiliopoulos 2020; BlackJAX `smc/base`).

A particle method is a Feynman–Kac model: initial draws M0, Markov kernels M_t and log potentials log G_t.
The model supplies them (`FeynmanKac`); this module owns everything else. One step t of `make_step`:

1. weight:   log w_i = log W_i + log G_t(x_i) (non-finite → −inf, counted; NaN and +inf also apart: −inf is a
             zero density, NaN or +inf one the model failed to define, which a backend refuses),
             log c_t = logsumexp(log w),  log W = log w − log c_t,  log Z += log c_t
             (so log Z = Σ_t log Σ_i W_{t−1}^i G_t(x^i), and with W_{−1} = 1/N, log c_0 = logmeanexp log G_0);
2. resample: when ESS = 1 / Σ W² < threshold · N (and the model allows it at t): ancestors
             a = resampler(W, M), x ← x[a], W ← 1/M; M = N unless the model resamples fewer
             (waste-free SMC: M = N/P, then its move grows them back to N and says where each came from);
3. move:     x ← M_{t+1}(x) (skipped with `move=False`, e.g. after the last observation of a filter).

The loop over the steps is here too, in two forms that read back and check the same record: `scan`, a known
number of steps inside one compiled function (a filter's observations, FKC's time grid, a compiled sequence
sweep), and `run`, a loop on the host until the model is done (SMC until β = 1, a sweep until every sequence
ended; importance sampling's one step), each step's record read to numpy once. `check` raises at the first step
whose potentials were NaN or +inf, else at the first where every weight vanished, with the method's own message.

On several devices (`sharding`) the state's particle arrays are split along the particle axis, after `init`
and after every step (a sharding constraint inside the jitted step): the sums of 1–2 are then global
collectives and resampling draws ancestors from all N particles, so the estimator is the one-device one.

The state carries each particle's time-0 ancestor ("Eve") for the single-run standard error of log Z
(Chan & Lai 2013; Lee & Whiteley 2018): with F_k = Σ_{i: E_i = k} W_i,

    Var(Ẑ)/Ẑ² ≈ Σ_k F_k²,    se(log Ẑ) ≈ sqrt of that,

computed after every weighting (`StepInfo.rel_var`), or at the last step only. Before any resampling (every
particle its own Eve: importance sampling, or an SMC run whose weights never degenerated) it is the delta
method's Σ W² − 1/N, which Lee & Whiteley's estimator also gives there: Σ W² alone overstated the se by
sqrt(1 + 1/cv²), 3.5x on a 1-d normal-normal model (N = 2000, cv² = 0.09: se 0.023, spread over seeds 0.008).
After resampling it is Σ_k F_k², as `particles` computes it (Var_logLt). Lee & Whiteley's unbiased version,
1 − (N/(N−1))^(R+1) (1 − Σ_k F_k²) after R resampling events, is too small on the log scale under adaptive
systematic resampling: on a linear-Gaussian filter (d = 1, T = 30, N = 1000, 50 seeds) its 2-se coverage of
the exact log-likelihood was 0.88 with var(log Ẑ) / mean(se²) = 2.2; without the factor the coverage is
0.93–0.955 (tests/test_particle_filter.py).
"""
import math
import sys
from typing import Any, NamedTuple

import numpy as np

from ..errors import UNDEFINED_DENSITY_HINT, InferenceError, UnknownNameError, ValueRangeError
from ..stdlib.resamplers import RESAMPLERS
from . import check_value

NEG_INF = -float("inf")


class FKState(NamedTuple):
    """The loop's state: particles (a pytree with leading axis N), normalized log weights [N], log Z,
    time-0 ancestors [N], the model's own carry (e.g. β, a step size), step t."""
    particles: Any
    log_w: Any
    log_z: Any
    eve: Any
    carry: Any
    t: Any


class StepInfo(NamedTuple):
    """What one step reports: log c_t, ESS after weighting, whether it resampled, the number of non-finite
    potentials, the relative variance of Ẑ_t (above), the ancestors (when kept), what the model's `track`
    saw after weighting (e.g. filtering moments), the model's own record from its move, and the number of
    potentials that were NaN or +inf (`invalid`: the non-finite ones that are not −inf)."""
    log_c: Any
    ess: Any
    resampled: Any
    non_finite: Any
    rel_var: Any
    ancestors: Any
    tracked: Any
    model: Any
    invalid: Any = None


class FeynmanKac:
    """The interface of a Feynman–Kac model on runtime `rt` (all methods pure, batched over particles)."""

    rt = None

    def init(self, key, n):
        """M0: (particles, carry) for n particles."""
        raise NotImplementedError

    def log_potential(self, t, particles, log_w, carry):
        """(log G_t [N], particles, carry): the potential may adapt to the current weights (tempering chooses
        β_t here) and cache per-particle values that the move reuses."""
        raise NotImplementedError

    def move(self, key, t, particles, log_w, carry):
        """M_{t+1}: (particles, carry, origin, info). `origin` [N] maps each new particle to the one it came
        from when the move changes their number (else None); `info` is the model's typed per-step record."""
        return particles, carry, None, None

    def num_resampled(self, n):
        """How many particles resampling draws (N; N/P for waste-free SMC, which then always resamples)."""
        return n

    def can_resample(self, t, particles=None):
        """Whether step t may resample the weighted `particles` (a boolean, or a runtime boolean array)."""
        return True

    conditional = False
    """Conditional SMC (particle Gibbs): particle 0 is a fixed reference path that keeps its own lineage."""

    def track(self, particles, log_w, carry):
        """Anything to record after weighting and before resampling (filtering moments, ...): a pytree or None."""
        return None


def weigh(xp, log_w, log_g):
    """Step 1 (weight): (normalized log W, log c_t, ESS, the number of non-finite log G, the number of those that
    are NaN or +inf) from the normalized log W and the potentials log G, non-finite ones taken as −inf."""
    finite = xp.isfinite(log_g)
    invalid = xp.sum(~finite & (log_g != NEG_INF))
    log_w = log_w + xp.where(finite, log_g, NEG_INF)
    top = xp.max(log_w)
    shift = xp.where(xp.isfinite(top), top, 0.0)
    w = xp.exp(log_w - shift)       # one exp: log c and ESS = (Σw)² / Σw² from it
    total = xp.sum(w)
    log_c = shift + xp.log(total)
    return log_w - log_c, log_c, total * total / xp.sum(w * w), xp.sum(~finite), invalid


def check_resampling(resampler, threshold):
    if resampler not in RESAMPLERS:
        raise UnknownNameError(f"unknown resampler {resampler!r}; choose one of {', '.join(sorted(RESAMPLERS))}")
    check_value("resample_threshold", threshold)
    return RESAMPLERS[resampler]


def init(model, key, n, **options):
    """The loop's initial state: M0 draws with uniform weights, log Z = 0, each particle its own Eve (`options`
    go to the model's `init`)."""
    rt = model.rt
    particles, carry = model.init(key, n, **options)
    return shard(rt, FKState(particles, rt.asarray(np.full(n, -math.log(n))), rt.asarray(0.0),
                             rt.asindex(np.arange(n)), carry, rt.asindex(0)))


def shard(rt, s):
    """The state with its particle arrays (particles, weights, Eves) split over the runtime's devices
    (`sharding`); the rest is replicated."""
    return s._replace(particles=rt.shard(s.particles), log_w=rt.shard(s.log_w), eve=rt.shard(s.eve))


def relative_variance(rt, log_w, eve):
    """Σ_k F_k², F_k the total normalized weight of the descendants of time-0 particle k; Σ_k F_k² − 1/N while
    every particle is still its own Eve (no resampling yet)."""
    xp, n = rt.xp, log_w.shape[0]
    families = xp.index_add(xp.zeros((n,)), eve, xp.exp(log_w))
    unresampled = xp.sum(eve != rt.asindex(np.arange(n))) == 0
    return xp.maximum(xp.sum(families * families) - xp.where(unresampled, 1.0 / n, 0.0), 0.0)   # ≥ 0 in rounding


class GivenUniforms:
    """The runtime `rt` whose `uniform` reads the given uniforms u instead of drawing (a resampler inside a pure
    kernel whose randomness comes in as an argument); with u None it draws from a fixed key and records the
    shapes asked for (`shapes`: how many uniforms the resampler reads)."""

    def __init__(self, rt, u):
        self._rt, self._u, self.shapes = rt, u, []

    def __getattr__(self, name):
        return getattr(self._rt, name)

    def uniform(self, key, shape):
        self.shapes.append(tuple(shape))
        if self._u is None:
            return self._rt.uniform(self._rt.key(0), shape)
        return self._u[:math.prod(shape)].reshape(shape)


def ancestors(rt, resample, key, w, m):
    """M ancestors from the normalized weights w. On several devices the weights are gathered and every device
    draws all M (O(N) work): XLA partitions the resamplers' cumulative sums along a sharded axis badly (0.8 s
    instead of 5 ms for 10^5 weights on 2 CPU devices)."""
    return rt.replicate(resample(rt, key, rt.replicate(w), m))


def ancestors_where(rt, resample, u, w, resampled, draw=None):
    """The ancestors that `draw` (`ancestors`, the default, or `conditional_ancestors`) gives from the weights w
    on the given uniforms u where `resampled`, else the identity: computed at every step, with no branch on
    values (a pure kernel). Where it does not resample (NaN weights where every one vanished) the resampler
    reads uniform weights, so that its indices are in range (they are discarded there)."""
    xp, n = rt.xp, w.shape[0]
    idx = (draw or ancestors)(GivenUniforms(rt, u), resample, None, xp.where(resampled, w, 1.0 / n), n)
    return xp.where(resampled, idx, xp.arange(n))


def uniforms_read(rt, resample, n, draw=None):
    """How many uniforms `draw` (as in `ancestors_where`) reads for N ancestors."""
    probe = GivenUniforms(rt, None)
    (draw or ancestors)(probe, resample, None, rt.xp.full((n,), 1.0 / n), n)
    return sum(math.prod(shape) for shape in probe.shapes)


def conditional_ancestors(rt, resample, key, w, n):
    """Conditional SMC's ancestors (Andrieu, Doucet & Holenstein 2010): slot 0, the reference, keeps its own
    and the other N − 1 are drawn i.i.d. from W (multinomial), so the reference lineage has 1 + Bin(N − 1, W_0)
    copies. (Drawing N and overwriting slot 0 gives max(K, 1), K ~ Bin(N, W_0): a bias toward the proposal.)"""
    xp = rt.xp
    zero = rt.asindex(np.zeros(1, dtype=int))
    if n == 1:
        return zero
    return xp.concatenate([zero, rt.asindex(ancestors(rt, resample, key, w, n - 1))])


def tempered(rt, log_w, temperature):
    """log p̃ with p̃ ∝ W^{1/T}: the resampling law flattened (T > 1) or sharpened (T < 1)."""
    u = log_w / temperature
    return u - rt.xp.logsumexp(u)


def make_step(model, resampler="systematic", threshold=1.0, keep_ancestors=False, error_every_step=True,
              temperature=None):
    """`step(key, state, move=True) -> (state, StepInfo)`: one weight–resample–move step of `model`.
    `temperature(t, log W, ESS) -> T` (or None: T = 1) resamples by p̃ ∝ W^{1/T} and gives the survivors the
    weights W_a / (N p̃_a), unnormalized (their sum, of expectation 1, enters the next log c_t), so the
    weighted particles and log Z still estimate the target (entropic resampling, made consistent).
    With `error_every_step=False` the relative variance (a scatter over the Eves, a fifth of a bootstrap
    filter's step on CPU) is computed only at steps with `move=False`, the last ones; elsewhere it is None."""
    rt, xp = model.rt, model.rt.xp
    resample = check_resampling(resampler, threshold)
    if model.conditional and resampler != "multinomial":
        raise ValueRangeError(f"conditional SMC draws the N − 1 free ancestors i.i.d.: resampler='multinomial', "
                              f"got {resampler!r}")
    if model.conditional and temperature is not None:
        raise ValueRangeError("conditional SMC resamples by the weights themselves: no resampling temperature")
    draw = conditional_ancestors if model.conditional else ancestors

    def step(key, s, move=True):
        k_res, k_move = rt.split(key, 2)
        log_g, x, carry = model.log_potential(s.t, s.particles, s.log_w, s.carry)
        log_w, log_c, ess, non_finite, invalid = weigh(xp, s.log_w, log_g)
        n = log_w.shape[0]
        rel_var = relative_variance(rt, log_w, s.eve) if error_every_step or not move else None
        tracked = model.track(x, log_w, carry)
        m = model.num_resampled(n)
        if m == n:
            resampled = (ess < threshold * n) & model.can_resample(s.t, x)
            # a branch, not a select: the resampler and the gathers run only at the steps that resample
            # (under vmap, e.g. PMMH's chains, JAX turns it back into a select)
            def select(log_w, x, eve):
                if temperature is None:
                    idx = draw(rt, resample, k_res, xp.exp(log_w), n)
                    log_w = xp.full((n,), -math.log(n))
                else:
                    log_p = tempered(rt, log_w, temperature(s.t, log_w, ess))
                    idx = draw(rt, resample, k_res, xp.exp(log_p), n)
                    log_w = xp.take(log_w - log_p, idx, axis=0) - math.log(n)
                return (idx, log_w) + rt.tree_map(lambda a: xp.take(a, idx, axis=0), (x, eve))
            idx, log_w, x, eve = rt.cond(resampled, select, lambda log_w, x, eve: (xp.arange(n), log_w, x, eve),
                                         log_w, x, s.eve)
        else:
            resampled = 1.0 + 0.0 * log_c > 0
            idx = ancestors(rt, resample, k_res, xp.exp(log_w), m)
            log_w = xp.full((m,), -math.log(m))
            x, eve = rt.tree_map(lambda a: xp.take(a, idx, axis=0), (x, s.eve))
        info = None
        if move:
            x, carry, origin, info = model.move(k_move, s.t, x, log_w, carry)
            if origin is not None:
                eve = xp.take(eve, origin, axis=0)
                log_w = xp.full((origin.shape[0],), -math.log(origin.shape[0]))
        state = shard(rt, FKState(x, log_w, s.log_z + log_c, eve, carry, s.t + 1))
        return state, StepInfo(log_c, ess, resampled, non_finite, rel_var,
                               idx if keep_ancestors else None, tracked, info, invalid)
    return step


# ---- the driver: a known number of steps in the graph, or a loop on the host ---------------------------------
def scan(rt, step, state, keys=None, last_key=None):
    """A known number of steps inside one compiled function (the caller's `jit`): `step(key, state)` (with its
    move) once per key of `keys` [T] in a `scan` (None: no such steps), then with `last_key` one more without a
    move (a filter's last observation, the weighting that closes a sweep). (state, StepInfo stacked over the
    steps): each field with a leading axis [T (+ 1)], None where the steps give none, and `rel_var` the last
    step's (its only one when the step computes it at the steps without a move, `error_every_step=False`)."""
    infos = None
    if keys is not None:
        state, infos = rt.scan(lambda s, k: step(k["key"], s), state, {"key": keys})
    if last_key is None:
        return state, infos
    state, last = step(last_key, state, move=False)
    rel_var, last = last.rel_var, last._replace(rel_var=None)
    if infos is None:
        stacked = rt.tree_map(lambda a: None if a is None else a[None], last)
    else:
        stacked = rt.tree_map(lambda a, b: None if a is None else rt.xp.concatenate([a, b[None]]),
                              infos._replace(rel_var=None), last)
    return state, stacked._replace(rel_var=rel_var)


def to_host(rt, info):
    """The step's record as numpy, one read per array (None stays None, numpy stays; a 0-d array a Python
    number)."""
    def host(v):
        v = np.asarray(v) if isinstance(v, (np.ndarray, np.generic, int, float)) else rt.to_numpy(v)
        return v.item() if v.ndim == 0 else v
    return rt.tree_map(lambda v: None if v is None else host(v), info)


def _first(flags):
    flags = np.atleast_1d(flags)
    return int(np.argmax(flags)) if flags.any() else None


def check(info, t=0, invalid=None, vanished=None, before=None):
    """Raise what the method says (`invalid`, `vanished`: `(t, info, before) -> error or None`) at the first step
    of the host record `info` (one step, or stacked over steps numbered from t) whose potentials were NaN or +inf
    (`info.invalid` > 0: a density the model failed to define), else at the first where every weight vanished
    (log c_t not finite). `before`: the state before the step (a host loop), or None. The default errors say
    that much; a method's hook names its own cause (None: not an error of this method there)."""
    bad = None if info.invalid is None else _first(np.asarray(info.invalid) > 0)
    if bad is not None:
        error = (invalid or _invalid)(t + bad, info, before)
        if error is not None:
            raise error
    bad = _first(~np.isfinite(np.asarray(info.log_c, dtype=np.float64)))
    if bad is not None:
        error = (vanished or _vanished)(t + bad, info, before)
        if error is not None:
            raise error


def _invalid(t, info, before):
    return InferenceError(f"the log potential was NaN or +inf at step {t}", hint=UNDEFINED_DENSITY_HINT)


def _vanished(t, info, before):
    return InferenceError(f"every weight vanished at step {t} (the log potential was -inf on all particles)")


def run(rt, step, state, keys, until=None, max_steps=None, exhausted=None, move=None, on_step=None, bar=None,
        invalid=None, vanished=None):
    """The loop on the host, for a number of steps not known in advance: for each key of `keys` (any iterable,
    e.g. `chained_keys`), `step(key, state) -> (state, info)` (compiled), its info read to the host once
    (`to_host`) and checked (`check`, with the method's `invalid` and `vanished` hooks and the state before the
    step), then `on_step(t, info, bar)` (t from 1; a progress bar, a method's own checks); it stops after the step
    where `until(info)`, or raises `exhausted(t, state)` before a step t > `max_steps`. `move(key, state) ->
    state`: the model's move run on the host after the step (models that cannot be traced, e.g. generation by a
    language model; the step then runs without its move), not after the last step. `bar` (e.g. `progress_bar`)
    is closed at the end. (final state, [host info of each step])."""
    infos = []
    try:
        for key in keys:
            if max_steps is not None and len(infos) >= max_steps:
                raise exhausted(len(infos), state)
            before, (state, info) = state, step(key, state)
            info = to_host(rt, info)
            t = len(infos) + 1
            check(info, t, invalid, vanished, before)
            if on_step is not None:
                on_step(t, info, bar)
            infos.append(info)
            if until is not None and until(info):
                break
            if move is not None:
                state = move(key, state)
    finally:
        if bar is not None:
            bar.close()
    return state, infos


def chained_keys(rt, key):
    """Endless keys for `run`: key, sub = split(key) at every step, sub the step's."""
    while True:
        key, sub = rt.split(key, 2)
        yield sub


def progress_bar(progress, desc, **options):
    """A tqdm bar (`options`: its total, bar_format...) where `progress` is true, or None (None: on a terminal)."""
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(desc=desc, **options)
