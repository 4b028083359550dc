"""SMC over the steps of a sequence target (DESIGN §8): particle filtering ('pf'), particle Gibbs ('pg'), and
the no-resampling baselines best-of-N ('bon') and weighted best-of-N ('wbon').

A Feynman–Kac model on the core loop of `fk`: M_s generates step s of every sequence (`generation`), log G_s
is the step's proposal increment plus the reward potential (`generation`: 'diff' = ψ_s / ψ_{s−1}, consistent
for γ = p · exp(R(x)), or a named heuristic), and resampling happens when ESS < threshold · N at the steps the
schedule allows (`resample_every`, `resample_window`, steps numbered from 1); never after the last step, so
the final weights W are those of γ and log Z = Σ_s log c_s estimates log Σ_x γ(x). Under `potential='puri'`
the weights are replaced each step (Puri et al.), which with resampling every step (its default) targets
p · Π_s G_s. Models' states (recurrent states, key/value caches) are reordered with the particles.

A step is pure where the models allow (`generation`): then a whole sweep is one compiled function (init,
a `scan` over the steps, one host read at the end; torch: a Python loop around one compiled kernel per step);
else it runs step by step. `compile=False` forces the latter; both use the same random draws for the same
key. One-token steps run `KernelSweep` (one kernel per step on uniforms drawn once per run); chunked steps
(`step=`), `fk.make_step` on keys split per step (`pure_sweep`, `eager_sweep`).

`resample_temperature` ("ess", "entropy" or a number T) resamples by p̃ ∝ W^{1/T} while the step is within
the first `early_phase` fraction of the length (its_hub's entropic particle filter: T = max(1, (N / ESS)(1 −
s/L)) for "ess", T = max(1, 1/β) with β = H + (1 − H) s/L and H the weights' entropy / log N for "entropy"),
and gives the survivors the weights W/p̃ (`fk.make_step`), so that the sampler still targets γ. Progress s/L
counts steps against L, the length in tokens (the most steps a sequence can take; with chunked steps fewer are
taken, so `early_phase` covers more of them).

Budget = generations: 'pf', 'bon', 'wbon' run `particles` sequences, 'pg' `particles` × `iterations`.
The chosen answer: `select='argmax'` the answer of the heaviest particle, `'vote'` the answer of largest total
weight (answers by `answer(sequence)`, else the sequence itself); 'bon' takes the largest final reward R and
'wbon' votes with weights R (rewards >= 0).
"""
import math
from collections import defaultdict
from typing import Any, NamedTuple

import numpy as np

from ..errors import InferenceError, ValueRangeError
from ..result import Result
from ..target import call_user
from ..weights import Weights
from . import fk, integer, method, run_cache
from .generation import Generator, generator


class Generation(NamedTuple):
    """The particles of a sequence sweep: the sequences, the models' states when they travel with the
    particles (a pure step; else ()), and (eager step; else ()) each particle's row before the last
    resampling, which tells the held states how to follow."""
    seqs: Any
    states: Any
    slot: Any


class SequenceFK(fk.FeynmanKac):
    """Steps of sequence generation as a Feynman–Kac model: M0 and M_s generate step s of every sequence
    (`Generator.step`), log G_s is the `log_g` it left in the particles. Pure: the models' states are in the
    particles (resampling takes their rows); eager: they are held here and reordered after a resampling."""

    def __init__(self, gen, schedule, conditional=False, pure=False):
        self.gen, self.rt, self.schedule, self.conditional, self.pure = gen, gen.rt, schedule, conditional, pure
        self.states = None

    def init(self, key, n, forced=None):
        return self._step(key, *self.start(n, forced))

    def begin(self, n, forced=None):
        """(Sequences, states, carry, the models' first outputs) of the empty generation, its rows not yet filled
        (`Generator.begin`: the first `fed_step` absorbs them)."""
        seqs, states, outs = self.gen.begin(n)
        return (seqs, states) + self._carry(n, forced, seqs) + (outs,)

    def start(self, n, forced=None):
        """(Sequences, states, carry) of the empty generation (the models' `start`)."""
        seqs, states = self.gen.start(n)
        return seqs, states, self._carry(n, forced, seqs)

    def _carry(self, n, forced, seqs):
        rt, gen = self.rt, self.gen
        force = (gen.arange(n) == 0) if self.conditional else rt.xp.zeros((n,)) > 0
        forced = rt.asindex(np.zeros(gen.width, dtype=int)) if forced is None else forced
        return force, forced, rt.xp.sum(seqs.nan, axis=0) > 0

    def fed_step(self, seqs, outs, live, carry, u):
        """(Generation, carry) after the next one-token step, the models' outputs for the `live` particles given
        (`Generator.step_fed`: a pure function; the held states are the caller's)."""
        force, forced, _ = carry
        seqs = self.gen.step_fed(seqs, outs, live, force, forced, u)
        return Generation(seqs, (), self.gen.arange(seqs.done.shape[0])), self._gathered(carry, seqs)

    def _gathered(self, carry, seqs):
        """The carry with the step's NaN flags [B + J] added to every earlier step's."""
        force, forced, nan = carry
        return force, forced, nan | (self.rt.xp.sum(seqs.nan, axis=0) > 0)

    def _step(self, key, seqs, states, carry, u=None):
        """(Generation, carry) after the next step (`_gathered`). `u`: the token's uniforms [N, 1]
        (`Generator.generate`)."""
        force, forced, _ = carry
        seqs, states = self.gen.step(key, seqs, states, force, forced, self.pure, u)
        carry = self._gathered(carry, seqs)
        if self.pure:
            return Generation(seqs, states, ()), carry
        self.gen.check(self.rt.to_numpy(seqs.nan))
        self.states = states
        return Generation(seqs, (), self.gen.arange(seqs.done.shape[0])), carry

    def log_potential(self, t, p, log_w, carry):
        log_g = p.seqs.log_g
        if self.gen.potential == "puri":      # Puri et al.: the weights are replaced, not multiplied
            log_g = log_g - self.rt.xp.where(log_w > -math.inf, log_w, 0.0) - math.log(log_w.shape[0])
        return log_g, p, carry

    def can_resample(self, t, p=None):
        """At the steps the schedule allows, and never after the last one (the final weights are γ's)."""
        xp = self.rt.xp
        allowed = xp.take(self.schedule, xp.clip(t, 0, self.schedule.shape[0] - 1).reshape(1), axis=0).reshape(())
        return allowed & (xp.sum(~p.seqs.done) > 0)

    def move(self, key, t, p, log_w, carry, u=None):
        if not self.pure and bool(self.rt.to_numpy(self.rt.xp.sum(p.slot != self.gen.arange(p.slot.shape[0])) > 0)):
            self.states = self.gen.reorder(self.states, p.slot)
        return self._step(key, p.seqs, p.states if self.pure else self.states, carry, u) + (None, None)

    def track(self, p, log_w, carry):
        """Whether every sequence has ended (the steps after that change nothing)."""
        return self.rt.xp.sum(~p.seqs.done) == 0


def schedule(rt, length, every, window):
    """Which steps may resample, indexed by step − 1."""
    every = integer(every, "resample_every", 1)
    steps = np.arange(1, length + 1)
    allowed = steps % every == 0
    if window is not None:
        if len(window) != 2 or not 1 <= window[0] <= window[1]:
            raise ValueRangeError(f"resample_window must be (first, last) steps with 1 <= first <= last, "
                                  f"got {window!r}")
        allowed &= (steps >= window[0]) & (steps <= window[1])
    return rt.asarray(allowed)


def resampling_temperature(rt, spec, early_phase, length):
    """`temperature(t, log W, ESS) -> T` for `fk.make_step` (see the module docstring), or None."""
    if isinstance(early_phase, bool) or not isinstance(early_phase, (int, float)) or not 0 < early_phase <= 1:
        raise ValueRangeError(f"early_phase must be a fraction of the steps in (0, 1], got {early_phase!r}")
    if spec is None:
        return None
    named = isinstance(spec, str) and spec in ("ess", "entropy")
    number = isinstance(spec, (int, float)) and not isinstance(spec, bool) and spec > 0
    if not (named or number):
        raise ValueRangeError(f"resample_temperature must be 'ess', 'entropy' or a number > 0, got {spec!r}")
    xp = rt.xp

    def temperature(t, log_w, ess):
        n = log_w.shape[0]
        progress = (t + 1) / length
        if spec == "ess":
            value = xp.maximum(1.0, n / ess * (1.0 - progress))
        elif spec == "entropy":
            w = xp.exp(log_w)
            h = -xp.sum(xp.where(w > 0, w * log_w, 0.0)) / math.log(n) if n > 1 else 1.0
            value = xp.maximum(1.0, 1.0 / (h + (1.0 - h) * progress))
        else:
            value = float(spec)
        return xp.where(progress <= early_phase, value, 1.0)
    return temperature


def outcome(rt, key, state, info):
    """What a sweep returns: (final FKState, StepInfo [L], Var(Ẑ)/Ẑ², one particle drawn from the final W)."""
    xp = rt.xp
    gumbel = -xp.log(-xp.log(xp.clip(rt.uniform(key, state.log_w.shape), 1e-20, 1.0)))
    return state, info, fk.relative_variance(rt, state.log_w, state.eve), xp.argmax(state.log_w + gumbel)


def pure_sweep(model, step, length):
    """`sweep(key, forced, n) -> outcome`: a whole sweep as one function of arrays (to compile): M0, then L − 1
    weight–resample–generate steps in a `scan`, then the last weighting. Steps after every sequence has ended
    change nothing (their log c is 0; they never resample)."""
    rt = model.rt

    def sweep(key, forced, n):
        k0, k1, k2, k3 = rt.split(key, 4)
        state = fk.init(model, k0, n, forced=forced)
        state, info = fk.scan(rt, step, state, rt.split(k1, length - 1) if length > 1 else None, k2)
        return outcome(rt, k3, state, info._replace(rel_var=None))
    return sweep


def eager_sweep(model, step, length):
    """The same sweep step by step on the host (`fk.run`: the weighting and resampling jitted, then the models'
    generation, the model's move, called from Python), with the same keys; it stops at the step where every
    sequence has ended. Its record comes back on the host, checked step by step."""
    rt = model.rt

    def move(key, s):
        particles, carry, _, _ = model.move(rt.split(key, 2)[1], s.t, s.particles, s.log_w, s.carry)
        return s._replace(particles=particles, carry=carry)

    def sweep(key, forced, n):
        k0, k1, k2, k3 = rt.split(key, 4)
        state = fk.init(model, k0, n, forced=forced)
        keys = list(rt.split(k1, length - 1)) if length > 1 else []
        state, infos = fk.run(rt, step, state, keys + [k2], until=lambda info: bool(info.tracked), move=move,
                              vanished=vanished(model.gen, n))
        return outcome(rt, k3, state, rt.tree_map(lambda *a: None if a[0] is None else np.stack(a), *infos))
    return sweep


class KernelSweep:
    """A sweep of one-token steps as one pure kernel per step. Kernel t is step t of `fk.make_step`: weight by
    log G_t, ESS, resample where ESS < threshold · N (`_resampled`), then, for a pure step, M_{t+1}, the next token
    of every sequence; the last kernel adds the relative variance and the final pick (`outcome`). The uniforms
    (the resampler's, one per particle for each token and for the pick) are one draw per run, row t + 1 for
    kernel t, so every form below gives the same draws for the same key (the law of `pure_sweep`, not its random
    numbers):
      - pure, JAX: the whole sweep one compiled function (the caller's `jit`), the kernels in a `scan` and the
        resampling a branch;
      - pure, torch (whose `scan` is a Python loop of eager operations, about 100 a step at 5–10 µs each): a
        Python loop over the steps around kernels compiled by `rt.jit_pure` (as `pf.StepwiseFilter`), rotated
        (`_after`: resample, M_t, weigh) so that the host, having read whether step t − 1 resamples (one flag a
        step), calls the kernel with or without the resampler and the gathers; the state passes from one kernel to
        the next as the compiled graph's leaves (`CompiledFunction.loop`);
      - eager (models that cannot be traced; rewards of (prefixes, lengths)): the models are called on the host
        between kernels; kernel t first finishes step t from their outputs (`SequenceFK.fed_step`), and returns
        the flags the host reads, once a step: whether it resampled (the held states are reordered), every
        sequence ended (the sweep stops), a NaN arose."""

    def __init__(self, model, resampler, threshold, temperature, length):
        rt = model.rt
        self.model, self.rt, self.threshold, self.temperature = model, rt, threshold, temperature
        self.resample = fk.check_resampling(resampler, threshold)
        self.draw = fk.conditional_ancestors if model.conditional else fk.ancestors
        self.first = rt.jit_pure(self._first, vectorize=False)
        self.after = rt.jit_pure(self._after, vectorize=False)
        self.closing = rt.jit_pure(self._outcome, vectorize=False)
        self.fed_kernel = rt.jit_pure(lambda *a: self._kernel(*a[:7], False, a[7]), vectorize=False)
        self.ts = [rt.asindex(t) for t in range(length)]
        self.n_uniform = {}     # N -> how many uniforms the resampler reads

    def _kernel(self, t, p, log_w, eve, carry, u, u_pick, generate, fed=None):
        """Step t on uniforms u [N + the resampler's]: ((particles, log W, Eves, carry), (log c_t, ESS,
        resampled, every sequence ended)), and with u_pick [N] (Var(Ẑ)/Ẑ², the particle picked from W). `fed`
        (eager): (the models' outputs, which particles they advanced, the token's uniforms [N, 1]), step t is
        finished from them first, and (the flags: resampled, ended, a NaN so far; each particle's newest token) come
        last."""
        xp, model = self.rt.xp, self.model
        n = log_w.shape[0]
        if fed is not None:
            p, carry = model.fed_step(p.seqs, *fed[:2], carry, fed[2])
        p, log_w, carry, record = self._weigh(t, p, log_w, carry)
        log_w, (p, eve) = self._resampled(record[2], u[n:], t, log_w, record[1], (p, eve))
        if generate:
            p, carry = model.move(None, t, p, log_w, carry, u[:n].reshape(n, 1))[:2]
        if u_pick is None:
            return (p, log_w, eve, carry), record
        last = self._outcome(t, p, log_w, eve, carry, u_pick)
        if fed is None:
            return (p, log_w, eve, carry), record, last
        flags = xp.stack([record[2], record[3], xp.sum(carry[2]) > 0])
        return (p, log_w, eve, carry), record, last, (flags, model.gen.newest(p.seqs))

    def _weigh(self, t, p, log_w, carry):
        """Step t's weighting: (particles, log W, carry, (log c_t, ESS, whether it resamples, every sequence
        ended))."""
        model, n = self.model, log_w.shape[0]
        log_g, p, carry = model.log_potential(t, p, log_w, carry)
        log_w, log_c, ess, _, _ = fk.weigh(self.rt.xp, log_w, log_g)
        resampled = (ess < self.threshold * n) & model.can_resample(t, p)
        return p, log_w, carry, (log_c, ess, resampled, model.track(p, log_w, carry))

    def _outcome(self, t, p, log_w, eve, carry, u_pick):
        """(Var(Ẑ)/Ẑ², the particle picked from W by the uniforms u_pick)."""
        return outcome(fk.GivenUniforms(self.rt, u_pick), None, fk.FKState(p, log_w, None, eve, carry, t), None)[2:]

    def _first(self, n, forced, u, t=None, log_w=None):
        """The models' start and M_0, the first token of every sequence (by the uniforms u [N, 1]); with t (the
        host-decided form), then step 0's weighting (`_weigh`)."""
        p, carry = self.model._step(None, *self.model.start(n, forced), u)
        return (p, carry) if t is None else self._weigh(t, p, log_w, carry)

    def _after(self, p, log_w, eve, carry, t, ess, u, resample):
        """Step t of the host-decided form (torch's pure sweep): resample if step t − 1 decided so (`resample`,
        read on the host: a step that keeps its particles runs no resampler and no gathers), M_t, then step t's
        weighting."""
        n = log_w.shape[0]
        if resample:
            log_w, (p, eve) = self._resampled(True, u[n:], t - 1, log_w, ess, (p, eve))
        p, carry = self.model.move(None, t - 1, p, log_w, carry, u[:n].reshape(n, 1))[:2]
        p, log_w, carry, record = self._weigh(t, p, log_w, carry)
        return (p, log_w, eve, carry), record

    def _resampled(self, resampled, u, t, log_w, ess, tree):
        """(log W, tree: the particles' arrays) after resampling where `resampled`, by p̃ = W (or W^{1/T} under a
        resampling temperature) on the uniforms u, the survivors weighted W / (N p̃). `resampled` True (decided
        on the host): unconditionally; else, where the runtime compiles loops, a branch (the resampler and the
        gathers run only at the steps that resample: a third of JAX's sweep at N = 2000); else a select by
        `where`, computed at every step (`fk.ancestors_where`)."""
        rt, xp, n = self.rt, self.rt.xp, log_w.shape[0]
        log_p = log_w if self.temperature is None else fk.tempered(rt, log_w, self.temperature(t, log_w, ess))

        def select(idx):
            survivors = (xp.full((n,), -math.log(n), dtype=log_w.dtype) if self.temperature is None else
                         xp.take(log_w - log_p, idx, axis=0) - math.log(n))
            return survivors, rt.tree_map(lambda a: xp.take(a, idx, axis=0), tree)

        def resample():
            return select(self.draw(fk.GivenUniforms(rt, u), self.resample, None, xp.exp(log_p), n))
        if resampled is True:
            return resample()
        if rt.compiles_loops:
            return rt.cond(resampled, resample, lambda: (log_w, tree))
        survivors, tree = select(fk.ancestors_where(rt, self.resample, u, xp.exp(log_p), resampled, self.draw))
        return xp.where(resampled, survivors, log_w), tree

    def __call__(self, key, forced, n):
        rt, xp, model, length = self.rt, self.rt.xp, self.model, len(self.ts)
        if n not in self.n_uniform:
            self.n_uniform[n] = fk.uniforms_read(rt, self.resample, n, self.draw)
        u = rt.uniform(key, (length + 2, n + self.n_uniform[n]))
        log_w, eve = rt.asarray(np.full(n, -math.log(n))), model.gen.arange(n)    # `prepare`d once per N
        state, rows, (rel_var, pick) = (self._pure if model.pure else self._eager)(u, forced, n, log_w, eve)
        p, log_w, eve, carry = state
        log_c, ess, resampled, ended = rows
        state = fk.FKState(p, log_w, xp.sum(log_c), eve, carry, self.ts[log_c.shape[0] - 1] + 1)
        return state, fk.StepInfo(log_c, ess, resampled, None, None, None, ended, None), rel_var, pick

    def _pure(self, u, forced, n, log_w, eve):
        """The pure sweep (see the class docstring): (last state, records stacked over the steps, (rel_var,
        pick))."""
        rt, xp, ts = self.rt, self.rt.xp, self.ts
        length, first = len(ts), u[0, :n].reshape(n, 1)
        if rt.compiles_loops:
            p, carry = self._first(n, forced, first)
            state, rows = rt.scan(lambda s, x: self._kernel(x[0], *s, x[1], None, True), (p, log_w, eve, carry),
                                  (xp.arange(length - 1), u[1:length]))
            state, row, last = self._kernel(ts[-1], *state, u[length], u[-1, :n], False)
            return state, [xp.concatenate([a, b[None]]) for a, b in zip(rows, row)], last
        # torch: the resampling decided on the host, one flag read a step (free on the CPU; on a GPU, the one sync
        # a step), so that the ~4 in 5 steps that keep their particles run no resampler and no gathers
        p, log_w, carry, row = self.first(n, forced, first, ts[0], log_w)
        after, rows, steps = self.after.loop((p, log_w, eve, carry)), [row], u.unbind(0)
        for t in range(1, length):
            row = after(ts[t], row[1], steps[t], bool(row[2]))
            rows.append(row)
        state = after.state
        return state, [xp.stack(c) for c in zip(*rows)], self.closing(ts[-1], *state, steps[-1][:n])

    def _eager(self, u, forced, n, log_w, eve):
        """The eager sweep (see the class docstring): (last state, records stacked over the steps taken,
        (rel_var, pick))."""
        rt, model, gen = self.rt, self.model, self.model.gen
        seqs, states, *carry, outs = model.begin(n, forced)
        state, live, rows = (Generation(seqs, (), gen.arange(n)), log_w, eve, tuple(carry)), ~seqs.done, []
        steps, tokens = list(u), list(u[:, :n].reshape(-1, n, 1))     # rows made once (torch: views, `unbind`)
        pick = tokens[-1][:, 0]
        for t in range(len(self.ts)):
            state, row, last, (flags, newest) = self.fed_kernel(self.ts[t], *state, steps[t + 1], pick,
                                                                (outs, live, tokens[t]))
            rows.append(row)
            resampled, ended, nan = rt.to_numpy(flags)
            if nan:
                gen.check(rt.to_numpy(state[3][2]))
            if t + 1 == len(self.ts) or ended:
                break
            p = state[0]
            if resampled:
                states = gen.reorder(states, p.slot)
            live = p.seqs.stale
            outs, states = gen.call_models(p.seqs, states, live, False, newest)
        return state, [rt.xp.stack(c) for c in zip(*rows)], last


def vanished(gen, n):
    """The `fk.check` hook of a sweep of n particles whose weights all vanished at step t (numbered from 1)."""
    return lambda t, info, before: InferenceError(
        f"{gen.plan.target.describe()}: every weight vanished at step {t} (the potentials were -inf or NaN on all "
        f"{n} particles)")


def reported(state, info):
    """(state, the step's record without what a sweep neither reports nor checks: non-finite counts, the
    relative variance of a step, NaN or +inf counts), so that the host reads only the rest. (A NaN is flagged
    where it arises, `gen.check`; a particle's +inf potential is a zero weight.)"""
    return state, info._replace(non_finite=None, rel_var=None, invalid=None)


def sweep(runner, key, n, forced=None):
    """One SMC pass over the steps: (final FKState, the particle drawn from its weights, per-step record: ESS,
    resampled, log c, and Var(Ẑ)/Ẑ²), with one read of the host per array."""
    gen = runner.gen
    rt = gen.rt
    state, info, rel_var, pick = runner(key, forced, n)
    info = fk.to_host(rt, reported(None, info)[1])
    nan, rel_var, pick, log_z = rt.tree_map(rt.to_numpy, (state.carry[2], rel_var, pick, state.log_z))
    ended = np.atleast_1d(info.tracked)
    steps = int(np.argmax(ended)) + 1 if ended.any() else len(ended)
    gen.check(nan)
    info = info._replace(**{f: np.atleast_1d(getattr(info, f))[:steps] for f in ("log_c", "ess", "resampled")})
    fk.check(info, 1, vanished=vanished(gen, n))
    return state, int(pick), {"ess": info.ess.astype(np.float64), "resampled": info.resampled.astype(bool),
                              "log_c": info.log_c.astype(np.float64), "rel_var": float(rel_var),
                              "log_z": float(log_z), "compiled": runner.pure}


def _key(a):
    return tuple(a) if isinstance(a, list) else a


def choose(answers, weights, select):
    """The index of the answer of the heaviest particle ('argmax') or of the first particle whose answer has the
    largest total weight ('vote')."""
    if select == "argmax":
        return int(np.argmax(weights))
    totals = defaultdict(float)
    for a, w in zip(answers, weights):
        totals[_key(a)] += w
    best = max(totals, key=totals.get)
    return next(i for i, a in enumerate(answers) if _key(a) == best)


def sequence_result(gen, chains, method, rt, answer=None, select="argmax", by=None, log_z=None, se=None,
                    diagnostics=None):
    """A `Result` of sequences: `chains` [(Sequences, log W or None)] (one per sweep), the chosen answer by
    `select` over the pooled weights, or over the final rewards (`by='reward'`); `diagnostics['chosen']` its
    index among the sequences (flat over chains). The sequences are decoded when first read (`LazySequences`)."""
    if select not in ("argmax", "vote"):
        raise ValueRangeError(f"select must be 'argmax' or 'vote', got {select!r}")
    def host(arrays):        # [C, N, ...] in one transfer (one chain: no stack, an op dispatch on JAX)
        return rt.to_numpy(arrays[0])[None] if len(arrays) == 1 else rt.to_numpy(rt.xp.stack(arrays))
    samples, lengths, seqs = gen.sequences(host([s.tokens for s, _ in chains]), host([s.length for s, _ in chains]))
    rewards = host([gen.reward(s) for s, _ in chains]).astype(np.float64)
    log_w = None if chains[0][1] is None else host([w for _, w in chains]).astype(np.float64)
    if answer is not None and not callable(answer):
        raise ValueRangeError(f"answer must be a function of one sequence, got {type(answer).__name__}")
    answers = seqs if answer is None else [call_user(lambda: answer(s), {}, "the answer function") for s in seqs]
    if by == "reward":
        weights = rewards.reshape(-1)
        if select == "vote" and np.any(weights < 0):
            raise InferenceError("weighted best-of-N votes with the final rewards as weights; they must be >= 0 "
                                 f"(min {weights.min():.3g})")
    elif log_w is None:
        weights = np.full(len(seqs), 1.0 / len(seqs))
    else:
        weights = Weights(log_w).pooled().normalized()
    chosen = choose(answers, weights, select)
    diagnostics = dict(diagnostics or {})
    diagnostics.update({"lengths": lengths, "rewards": rewards, "generations": len(seqs), "chosen": chosen})
    if answer is not None:
        diagnostics["answers"] = answers
    if log_z is not None:
        diagnostics["log_z_per_chain"] = [log_z] * len(chains)
    return Result(samples, log_w, log_z, se, method=method, runtime=rt.name, device=rt.device,
                  diagnostics=diagnostics, sequences=seqs, answer=answers[chosen])


class Runner:
    """A sweep of one target, runtime and set of options: `runner(key, forced, n)`; pure (compiled) when the
    models allow and `compile` is not False, falling back to eager if tracing the models fails."""

    def __init__(self, gen, schedule, resampler, threshold, temperature, conditional, compiled):
        self.gen, self.rt = gen, gen.rt
        if compiled and not gen.can_be_pure:
            raise ValueRangeError("compile=True needs models with array states or functions of (prefixes, "
                                  "lengths), and rewards of (prefixes, lengths); this target has a causal LM or a "
                                  "function of exact prefixes")
        self.pure = gen.can_be_pure if compiled is None else bool(compiled)
        self.strict = compiled is not None
        self.make = lambda pure: self._build(schedule, resampler, threshold, temperature, conditional, pure)
        self.run = self.make(self.pure)

    def _build(self, schedule, resampler, threshold, temperature, conditional, pure):
        model = SequenceFK(self.gen, schedule, conditional, pure)
        step = fk.make_step(model, resampler, threshold, error_every_step=False, temperature=temperature)
        if (isinstance(self.gen, Generator) and self.gen.plan.delimiters is None
                and (pure or self.gen.rewards_of_arrays)):
            sweep = KernelSweep(model, resampler, threshold, temperature, self.gen.plan.length)
            return self.rt.jit(sweep.__call__, static_argnames=("n",), unroll_threefry=True) if pure else sweep
        if pure:
            return self.rt.jit(pure_sweep(model, step, self.gen.plan.length), static_argnames=("n",))
        return eager_sweep(model, self.rt.jit(lambda k, s: reported(*step(k, s, move=False))), self.gen.plan.length)

    def __call__(self, key, forced, n):
        self.gen.prepare(n)
        try:
            return self.run(key, forced, n=n)
        except Exception:  # noqa: BLE001 (a model that cannot be traced runs eagerly, and raises there if it must)
            if not self.pure or self.strict:
                raise
            self.pure, self.run = False, self.make(False)
            return self.run(key, forced, n=n)


def with_proposal(plan, proposal):
    """(plan, proposal index): a sequence model outside the target (e.g. `ppl.amortize(...)(c)`) joins the plan's
    bases with exponent 0, so it proposes and the weights carry γ / q (the target and its log Z unchanged)."""
    if getattr(proposal, "kind", None) != "sequence":
        return plan, proposal
    import copy

    from ..compiler.sequence_plan import check_agree
    first = plan.bases[0][0]
    check_agree(proposal, first, f"the proposal {proposal.name} and the target's sequence model {first.name}")
    plan = copy.copy(plan)
    plan.bases = plan.bases + [(proposal, 0.0)]
    return plan, len(plan.bases) - 1


def _runner(plan, rt, resampler, threshold, every, window, potential, aggregate, temperature, proposal,
            conditional=False, compiled=None, resample_temperature=None, early_phase=0.5):
    """The `Runner` of a target, runtime and options, built once (then a run is one compiled call, or the
    models' calls and jitted kernels); one generator for all of them."""
    plan, proposal = with_proposal(plan, proposal)
    if compiled not in (None, True, False):
        raise ValueRangeError(f"compile must be None (when the models allow), True or False, got {compiled!r}")
    if potential == "puri" and resample_temperature is not None:
        raise ValueRangeError("potential='puri' replaces the weights each step; resample_temperature does not apply")
    temper = resampling_temperature(rt, resample_temperature, early_phase, plan.length)   # checked before hashed
    cache = run_cache(plan.target, "sequences")
    g_sig = (rt.name, str(rt.device), rt.precision, potential, aggregate, temperature, proposal)
    sig = g_sig + (resampler, threshold, every, window, conditional, compiled, resample_temperature, early_phase)
    if sig not in cache:
        if g_sig not in cache:
            cache[g_sig] = generator(plan, rt, proposal, aggregate, potential, temperature)
        gen = cache[g_sig]
        cache[sig] = Runner(gen, schedule(rt, plan.length, every, window), resampler, threshold, temper, conditional,
                            compiled)
    return cache[sig]


def _particles(particles, what):
    return integer(particles, f"{what}: particles", 1)


@method("pf", kind="sequence")
def run(plan, rt, key, particles=64, progress=None, resampler="systematic", resample_threshold=None,
        potential="diff", aggregate="model", temperature=1.0, resample_every=1, resample_window=None, proposal=None,
        answer=None, select="argmax", resample_temperature=None, early_phase=0.5, compile=None):
    """Particle filtering of a sequence target (see the module docstring). `resample_threshold` is the ESS
    fraction (default 0.5; 1.0 under potential='puri': every step)."""
    n = _particles(particles, "pf")
    threshold = (1.0 if potential == "puri" else 0.5) if resample_threshold is None else resample_threshold
    runner = _runner(plan, rt, resampler, threshold, resample_every, resample_window, potential, aggregate,
                     temperature, proposal, compiled=compile, resample_temperature=resample_temperature,
                     early_phase=early_phase)
    state, _, record = sweep(runner, key, n)
    return sequence_result(runner.gen, [(state.particles.seqs, state.log_w)], "pf", rt, answer, select,
                           log_z=record.pop("log_z"), se=math.sqrt(record.pop("rel_var")), diagnostics=record)


@method("pg", kind="sequence")
def run_pg(plan, rt, key, particles=16, progress=None, iterations=4, potential="diff", aggregate="model",
           temperature=1.0, proposal=None, answer=None, select="argmax", compile=None):
    """Particle Gibbs (Andrieu, Doucet & Holenstein 2010; Puri et al. §3): `iterations` sweeps of conditional
    SMC with multinomial resampling at every step, the reference (particle 0) drawn from the previous sweep's
    final weights and the other N − 1 ancestors i.i.d. (`fk.conditional_ancestors`). The result pools the
    sweeps (one chain each); log Z is the first (unconditional) sweep's."""
    n = _particles(particles, "pg")
    iterations = integer(iterations, "iterations", 1)
    options = (plan, rt, "multinomial", 1.0, 1, None, potential, aggregate, temperature, proposal)
    first_sweep = _runner(*options, compiled=compile)
    conditional = _runner(*options, conditional=True, compiled=compile)
    chains, picks, reference, first = [], [], None, None
    for k in rt.split(key, iterations):
        state, b, record = sweep(first_sweep if reference is None else conditional, k, n, reference)
        first = first or record
        seqs = state.particles.seqs
        chains.append((seqs, state.log_w))
        picks.append(b)
        reference = seqs.tokens[b]
    se = math.sqrt(first.pop("rel_var"))
    log_z = first.pop("log_z")
    result = sequence_result(first_sweep.gen, chains, "pg", rt, answer, select, log_z=log_z, se=se,
                             diagnostics=first)
    result.diagnostics["references"] = [result.sequences[c * n + b] for c, b in enumerate(picks)]
    return result


def _best_of(plan, rt, key, particles, aggregate, proposal, answer, vote, name, compile):
    n = _particles(particles, name)
    runner = _runner(plan, rt, "systematic", 0.0, 1, None, "diff", aggregate, 1.0, proposal, compiled=compile)
    state, _, record = sweep(runner, key, n)
    record.pop("rel_var")
    return sequence_result(runner.gen, [(state.particles.seqs, state.log_w)], name, rt, answer,
                           "vote" if vote else "argmax", by="reward", log_z=record.pop("log_z"), diagnostics=record)


@method("bon", kind="sequence")
def run_bon(plan, rt, key, particles=64, progress=None, aggregate="model", proposal=None, answer=None,
            compile=None):
    """Best-of-N: `particles` sequences from the proposal, the answer of the one with the largest final reward
    (weights and log Z are those of importance sampling of γ)."""
    return _best_of(plan, rt, key, particles, aggregate, proposal, answer, False, "bon", compile)


@method("wbon", kind="sequence")
def run_wbon(plan, rt, key, particles=64, progress=None, aggregate="model", proposal=None, answer=None,
             compile=None):
    """Weighted best-of-N: `particles` sequences from the proposal, the answer of largest total final reward
    (a reward-weighted majority vote; rewards >= 0)."""
    return _best_of(plan, rt, key, particles, aggregate, proposal, answer, True, "wbon", compile)
