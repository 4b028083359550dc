"""Batched generation of N sequences of a sequence target, one step at a time (DESIGN §8).

For log γ = Σ_i β_i log p_i + Σ_j c_j r_j, a token after prefix x_<t is proposed from

    q(v) ∝ exp(u(v)),   u = Σ_i β_i log p_i(· | x_<t)         (the normalized combination of the bases)

(or from one base, `proposal=i`), with log-weight increment u(x_t) − log q(x_t) (= logsumexp u for the
combination; 0 for one base with β = 1). A step is one token, or a chunk up to a delimiter: every particle
that has not ended emits tokens until its chunk ends, in one forward pass per token for all of them.

At the end of step s each reward is evaluated on the prefixes (a process reward) and aggregated over the steps
so far into A_s: `model` / `last` take its value as it is (the reward scores the whole prefix / its newest
step: the same computation), `prod` Π_{u≤s} r_u, `min` min_{u≤s} r_u. With R_s = Σ_j c_j A_{j,s}, the step's
log potential adds

    diff  R_s − R_{s−1}                 (twisted SMC, ψ_s / ψ_{s−1}: Π_s G_s = p-part · exp(R(x)) for the final x,
                                         so the sampler is consistent for γ whatever the intermediate rewards)
    max   max_{u≤s} R_u                 (FK steering's max potential: a heuristic, target p · Π_s G_s)
    sum   Σ_{u≤s} R_u                   (FK steering's sum potential: a heuristic, target p · Π_s G_s)
    puri  logit(clip(A_s)) / T          (Puri et al.'s weights, one reward with values in (0, 1); the caller
                                         replaces the weights each step instead of multiplying them)

Sequences that have ended add nothing (but under `puri`, as in Puri et al.'s code, they keep their last score).
A reward kept running (`sequence_tables.Running`: the token-pattern built-ins) is not evaluated on the prefixes:
its leaves are updated after every emitted token from the newest few tokens, and the step's value combines them.

Two ways to run a step, the same arithmetic. `pure`: every base is a stateful model with array states or a
prefix function of (prefixes, lengths), and every reward reads (prefixes, lengths): a step is then a pure
function of arrays with fixed shapes (prefixes are the whole buffer, left-padded), so a whole generation is
one compiled `scan` on JAX, with no host synchronization (checks are flags read at the end). `eager`: anything
else (Hugging Face models, functions of exact prefixes): host reads decide which models to call, prefixes are
cut to the longest, and a function of exact prefixes is called once per distinct length.
"""
from typing import Any, NamedTuple

import numpy as np

from ..collector import collector_paused
from ..errors import InferenceError, ShapeError, UnknownNameError, ValueRangeError
from ..result import LazySequences
from ..stdlib.language_models import CausalLM, PrefixModel, next_token
from ..target import call_user

POTENTIALS = ("diff", "max", "sum", "puri")
AGGREGATES = ("model", "last", "prod", "min")
CLIP = 1e-6


class Sequences(NamedTuple):
    """N sequences being generated (runtime arrays with leading axis N; resampling takes rows of all)."""
    tokens: Any     # [N, P + L] prompt and generated tokens, right-padded with pad
    length: Any     # [N] tokens so far, prompt included
    done: Any       # [N] ended (eos, or L generated tokens)
    stale: Any      # [N] the newest token is not yet fed to the models (it ended a chunk)
    rows: Any       # [N, B, V] each base's normalized log-probabilities of the next token (plain: up to a constant)
    score: Any      # [N, J] each reward aggregated over the steps so far (A)
    memo: Any       # [N] what the potential carries over (R_{s−1}; the running max or sum)
    log_g: Any      # [N] the log potential of the current step
    nan: Any        # [N, B + J] whether base b / reward j returned NaN for the particle this step (`check`)
    running: Any    # [N, K] the values of the rewards' leaves kept running token by token (`TokenPattern`)


def left_aligned(rt, tokens, length, cols, start, pad):
    """Rows tokens[i, start:length_i], right-aligned into [N, cols] and left-padded with pad: whole prefixes
    with cols = max_i length_i − start, each row's newest cols tokens with fewer."""
    xp = rt.xp
    n, width = tokens.shape
    pos = length.reshape(-1, 1) - cols + rt.asindex(np.arange(cols)).reshape(1, -1)
    # by (row, column) indices, not flat ones: a compiled gather then reads row i's columns without a division
    return xp.where(pos >= start, tokens[rt.asindex(np.arange(n)).reshape(-1, 1), xp.clip(pos, 0, width - 1)], pad)


class Potentials:
    """What the generators of a sequence target share (token-level here, text-level for a served base in
    `served_generation`): the options, each step's rewards aggregated into its log potential, the checks."""

    def __init__(self, plan, rt, proposal=None, aggregate="model", potential="diff", temperature=1.0):
        if potential not in POTENTIALS:
            raise UnknownNameError(f"unknown potential {potential!r}; choose one of {', '.join(POTENTIALS)}")
        if aggregate not in AGGREGATES:
            raise UnknownNameError(f"unknown aggregate {aggregate!r}; choose one of {', '.join(AGGREGATES)}")
        if potential == "puri" and len(plan.rewards) != 1:
            raise ValueRangeError(f"potential='puri' weights by one process reward with values in (0, 1); the "
                                  f"target has {len(plan.rewards)} rewards")
        if proposal is not None and (isinstance(proposal, bool) or proposal not in range(len(plan.bases))):
            raise ValueRangeError(f"proposal must be None (the normalized combination of the bases) or the index "
                                  f"of a base in 0..{len(plan.bases) - 1}, got {proposal!r}")
        if not temperature > 0:
            raise ValueRangeError(f"temperature must be > 0, got {temperature!r}")
        if temperature != 1.0 and potential != "puri":
            raise ValueRangeError(f"temperature is Puri et al.'s T and applies to potential='puri' only (the tilt's "
                                  f"lam scales the other potentials); got potential={potential!r}")
        self.plan, self.rt, self.proposal = plan, rt, proposal
        self.aggregate, self.potential, self.temperature = aggregate, potential, float(temperature)
        self.plain = len(plan.bases) == 1 and plan.bases[0][1] == 1.0
        self.coefs = rt.asarray(np.array([c for _, c in plan.rewards] or [0.0]))
        self.names = [b.name for b, _ in plan.bases] + [r.name for r, _ in plan.rewards]
        self._aranges = {}
        self._reward_of = rt.jit(self._reward)
        self._update = rt.jit_pure(self._update_scores)

    def prepare(self, n):
        """Make the index ranges that a run of n particles uses, outside any compiled function (they are then its
        constants, and torch does not copy them from the host at every call)."""
        for m in (n, self.width, len(self.names)):
            if m not in self._aranges:
                self._aranges[m] = self.rt.asindex(np.arange(m))

    def arange(self, n):
        """0..n−1 as indices."""
        return self._aranges[n] if n in self._aranges else self.rt.asindex(np.arange(n))

    def check(self, nan):
        """Raise on the first base or reward that has returned NaN (flags [(N,) B + J], read on the host)."""
        bad = np.flatnonzero(nan.any(axis=0) if nan.ndim == 2 else nan)
        if bad.size:
            i = int(bad[0])
            what = (f"sequence model {self.names[i]} returned NaN log-probabilities (or a row with no finite entry)"
                    if i < len(self.plan.bases) else f"a reward returned NaN ({self.names[i]})")
            raise InferenceError(what)

    def _flag(self, s, i, bad):
        """s with the flag of base or reward i raised for the particles `bad` [N]."""
        return s._replace(nan=s.nan | (self.arange(s.nan.shape[1]) == i).reshape(1, -1) & bad.reshape(-1, 1))

    def _update_scores(self, s, stepped, values):
        """Aggregate the step's reward values [N, J] and add the step's log potential to log_g (and NaN flags)."""
        xp = self.rt.xp
        a = {"prod": lambda: s.score * values, "min": lambda: xp.minimum(s.score, values)}.get(
            self.aggregate, lambda: values)()
        a = xp.where(stepped.reshape(-1, 1), a, s.score)
        total = self._total(a)
        if self.potential == "puri":
            p = xp.clip(a[:, 0], CLIP, 1.0 - CLIP)
            s = s._replace(score=a, memo=total, log_g=s.log_g + (xp.log(p) - xp.log(1.0 - p)) / self.temperature)
        else:
            memo = {"diff": total, "max": xp.maximum(s.memo, total), "sum": s.memo + total}[self.potential]
            log_g = memo - s.memo if self.potential == "diff" else memo
            s = s._replace(score=a, memo=memo, log_g=s.log_g + xp.where(stepped, log_g, 0.0))
        b = len(self.plan.bases)
        return s._replace(nan=xp.concatenate([s.nan[:, :b], s.nan[:, b:] | xp.isnan(a)], axis=1))

    def _total(self, a):
        return self.rt.xp.sum(self.coefs.reshape(1, -1) * a, axis=1)

    def _reward(self, s):
        return self._total(s.score) if self.plan.rewards else self.rt.xp.zeros((s.done.shape[0],))

    def reward(self, s):
        """R = Σ_j c_j A_j of each sequence (its aggregated reward so far)."""
        return self._reward_of(s)

    def finished(self, s):
        """Whether every sequence has ended (a host bool)."""
        return bool(self.rt.to_numpy(self.rt.xp.sum(~s.done) == 0))


class Generator(Potentials):
    """Generation and scoring of sequences of `plan` on runtime `rt` (see the module docstring)."""

    def __init__(self, plan, rt, proposal=None, aggregate="model", potential="diff", temperature=1.0):
        super().__init__(plan, rt, proposal, aggregate, potential, temperature)
        self.models = [next_token(b, rt, lockstep=plan.delimiters is None) for b, _ in plan.bases]
        self.betas = rt.asarray(np.array([beta for _, beta in plan.bases])).reshape(1, -1, 1)
        self.p, self.width = plan.prompt_length, plan.prompt_length + plan.length
        delim = np.zeros(plan.vocab, dtype=bool)
        delim[list(plan.delimiters or range(plan.vocab))] = True      # one-token steps: every token ends one
        self.delimiter = rt.asarray(delim)
        # rewards kept running (`sequence_tables.Running`): their leaves, columns of `running`, and (columns, combine)
        # by reward
        self.leaves, self.running = [], []
        for r, _ in plan.rewards:
            spec = getattr(r.fn, "running", None)
            self.running.append(None if spec is None else
                                (range(len(self.leaves), len(self.leaves) + len(spec.leaves)), spec.combine))
            self.leaves += [] if spec is None else list(spec.leaves)
        # the bookkeeping of the eager step as compiled kernels of fixed shapes (one compilation each per N; on
        # torch where that pays off)
        self.emit = rt.jit_pure(self._emit, vectorize=False)
        self._normalize = rt.jit_pure(self._normalize_rows)
        self._left = rt.jit(lambda tokens, length, cols, start: left_aligned(rt, tokens, length, cols, start, plan.pad),
                            static_argnames=("cols", "start"))

    @property
    def can_be_pure(self):
        """Whether a step can run as a pure function of arrays (see the module docstring): no causal LM, no
        function of exact prefixes."""
        return all(not isinstance(m, CausalLM) and not (isinstance(m, PrefixModel) and m.arity == 1)
                   for m in self.models) and self.rewards_of_arrays

    @property
    def rewards_of_arrays(self):
        """Whether every reward reads (prefixes, lengths), so that it can run inside a compiled kernel."""
        return all(len(r.parents) == 2 for r, _ in self.plan.rewards)

    # ---- the models ----------------------------------------------------------------------------------------

    def _normalize_rows(self, out):
        """(rows, which rows are bad: NaN, +inf or no finite entry). Rows are normalized log-probabilities, except
        for a plain target (one base, β = 1), where only the proposal's inverse CDF reads them: there they are
        shifted to a maximum of 0 (a max instead of a logsumexp: no exp and log per entry)."""
        xp = self.rt.xp
        if self.plain:
            top = xp.max(out, axis=-1, keepdims=True)
            return out - top, ~xp.isfinite(top[:, 0])
        rows = out - xp.logsumexp(out, axis=-1, keepdims=True)
        return rows, xp.sum(xp.isnan(rows), axis=-1) > 0

    def _logprobs(self, out, b, n):
        """What base b returned for n particles, checked: log-probabilities [n, V] of the runtime's float type."""
        rt, xp, plan = self.rt, self.rt.xp, self.plan
        name = plan.bases[b][0].name
        if not hasattr(out, "shape"):
            raise ShapeError(f"sequence model {name} returned {type(out).__name__}; expected log-probabilities, "
                             f"an array [N, vocab]")
        if tuple(out.shape) != (n, plan.vocab):
            raise ShapeError(f"sequence model {name} returned log-probabilities of shape {tuple(out.shape)}; "
                             f"expected [N, vocab] = [{n}, {plan.vocab}]")
        return xp.asarray(rt.asarray(out), rt.dtype)

    def apply(self, fn, arity, s, mask, start, check, pure):
        """fn of the prefixes tokens[i, start:length_i] of the particles in `mask`: [N, ...] (rows outside the
        mask are not to be read). arity 2: one call fn(left-padded prefixes, lengths), the prefixes the whole
        buffer when `pure`, else cut to the longest; arity 1 (eager only): fn on exact prefixes
        tokens[:, start:t], one call on all N rows per distinct length t among the masked particles (one call
        with token steps; fixed shapes, so JAX compiles each t once)."""
        rt, xp = self.rt, self.rt.xp
        n = mask.shape[0]
        if arity == 2:
            cols = self.width - start if pure else int(rt.to_numpy(xp.max(s.length))) - start
            return check(fn(self._left(s.tokens, s.length, cols=cols, start=start), s.length - start), n)
        lengths, m = rt.to_numpy(s.length), rt.to_numpy(mask)
        out = None
        for t in np.unique(lengths[m]) if m.any() else [lengths.max()]:
            part = check(fn(s.tokens[:, start:int(t)]), n)
            at = (s.length == int(t)).reshape((-1,) + (1,) * (part.ndim - 1))
            out = part if out is None else xp.where(at, part, out)
        return out

    def begin(self, n):
        """(Sequences of the empty generation for n particles, rows not yet filled, the models' states, their
        first outputs [(n, V)]): `start` without `absorb` (an eager sweep's kernel absorbs them)."""
        rt, xp, plan = self.rt, self.rt.xp, self.plan
        outs, states = [], []
        for b, m in enumerate(self.models):
            out, state = call_user(lambda: m.start(n), {}, f"sequence model {plan.bases[b][0].name}")
            outs.append(self._logprobs(out, b, n))
            states.append(() if state is None else state)
        tokens = np.full((n, self.width), plan.pad)
        if self.p:
            tokens[:, :self.p] = plan.bases[0][0].prompt
        init = {"prod": 1.0, "min": np.inf}.get(self.aggregate, 0.0)
        memo = -np.inf if self.potential == "max" else 0.0
        false = xp.zeros((n,)) > 0
        s = Sequences(rt.asindex(tokens), rt.asindex(np.full(n, self.p)), false, false,
                      xp.zeros((n, len(self.models), plan.vocab)),
                      rt.asarray(np.full((n, max(len(plan.rewards), 1)), init)), rt.asarray(np.full(n, memo)),
                      xp.zeros((n,)), xp.zeros((n, len(self.names))) > 0, xp.zeros((n, max(len(self.leaves), 1))))
        return s, states, outs

    def start(self, n):
        """(Sequences of the empty generation for n particles, the models' states)."""
        s, states, outs = self.begin(n)
        return self.absorb(s, outs, self.rt.xp.zeros((n,)) == 0), states

    def newest(self, s):
        """Each particle's newest token [N]."""
        return s.tokens[self.arange(s.length.shape[0]), self.rt.xp.clip(s.length - 1, 0, self.width - 1)]

    def feed(self, s, states, live, pure):
        """The models advanced by each `live` particle's newest token; the others keep their rows and state.
        Eager: nothing is called when no particle is live."""
        if not pure and not bool(self.rt.to_numpy(self.rt.xp.sum(live) > 0)):
            return s, states
        outs, states = self.call_models(s, states, live, pure)
        return self.absorb(s, outs, live), states

    def call_models(self, s, states, live, pure, newest=None):
        """(Each model's log-probabilities [N, V] after feeding the `live` particles their newest token (`newest`
        [N] if given), checked, the models' new states)."""
        n = live.shape[0]
        newest = self.newest(s) if newest is None else newest
        outs, new_states = [], []
        for b, m in enumerate(self.models):
            def on_prefixes(fn, arity, b=b):
                return self.apply(fn, arity, s, live, 0, lambda out, k: self._logprobs(out, b, k), pure)
            out, state = call_user(lambda: m.advance(newest, live, states[b], on_prefixes), {},
                                   f"sequence model {self.plan.bases[b][0].name}")
            outs.append(self._logprobs(out, b, n))
            new_states.append(() if state is None else state)
        return outs, new_states

    def absorb(self, s, outs, live):
        """s with the `live` particles' rows the models' outputs `outs` normalized (and flagged where bad); they
        are no longer stale."""
        xp = self.rt.xp
        rows = []
        for b, out in enumerate(outs):
            row, bad = self._normalize(out)
            s = self._flag(s, b, bad & live)
            rows.append(row)
        rows = xp.where(live.reshape(-1, 1, 1), xp.stack(rows, axis=1), s.rows)
        return s._replace(rows=rows, stale=s.stale & ~live)

    def reorder(self, states, idx):
        return [m.reorder(state, idx) for m, state in zip(self.models, states)]

    def sequences(self, tokens, length):
        """(samples, generated lengths [C, N], the sequences flat over chains as `LazySequences`) from the host
        arrays tokens [C, N, P + L] and length [C, N]: a sequence is its token ids (eos included), or its text when
        the plan has a decoder."""
        plan, p, n = self.plan, self.p, length.shape[1]

        def one(i):
            row = tokens[i // n, i % n, p:length[i // n, i % n]].tolist()
            return row if plan.decode is None else plan.decode(row)

        def every():
            with collector_paused():    # rows cut to their lengths unless all are whole (a copy per row: 2x slower)
                seqs = [s for t, m in zip(tokens, length) for s in
                        (t[:, p:].tolist() if np.all(m == self.width) else
                         [row[:k] for row, k in zip(t[:, p:].tolist(), (m - p).tolist())])]
            return seqs if plan.decode is None else [plan.decode(x) for x in seqs]
        return {"tokens": tokens[:, :, p:]}, length - p, LazySequences(length.size, one, every)

    # ---- one token, one step -------------------------------------------------------------------------------

    def _emit(self, uniform, s, active, force, forced):
        """One token for each `active` particle, by the uniforms [N, 1] (`forced[i]` where `force[i]`: particle
        Gibbs' reference): (Sequences, the particles still inside their chunk)."""
        rt, xp, plan = self.rt, self.rt.xp, self.plan
        n, v = s.rows.shape[0], s.rows.shape[2]
        if self.plain:          # one base, β = 1: the proposal is the model, no increment
            log_q, inc = s.rows[:, 0], 0.0
        else:
            # a base with β = 0 (a proposal outside the target) adds nothing, even where its row is −inf
            u = xp.sum(xp.where(self.betas == 0, 0.0, self.betas * s.rows), axis=1)
            log_q = u - xp.logsumexp(u, axis=-1, keepdims=True) if self.proposal is None else s.rows[:, self.proposal]
        # by the inverse CDF: one uniform per particle (N × V uniforms for a Gumbel argmax cost 8x more on JAX);
        # `<=` never picks a token of probability 0
        cdf = xp.cumsum(xp.exp(log_q), axis=-1)
        tok = xp.clip(xp.sum(cdf <= uniform * cdf[:, -1:], axis=-1), 0, v - 1)
        tok = xp.where(force, xp.take(forced, xp.clip(s.length, 0, self.width - 1), axis=0), rt.asindex(tok))
        if not self.plain:
            flat = self.arange(n) * v + tok
            inc = xp.take(u.reshape(-1), flat, axis=0) - xp.take(log_q.reshape(-1), flat, axis=0)
        # written by a scatter of N tokens (`where` over [N, P + L] made inductor compute each token P + L times)
        rows, at = self.arange(n), xp.clip(s.length, 0, self.width - 1)
        tokens = rt.set_index(s.tokens, (rows, at), xp.where(active, tok, s.tokens[rows, at]))
        length = s.length + active
        ended = active & ((length >= self.width) | ((tok == plan.eos) if plan.eos is not None else False))
        inside = active & ~(ended | xp.take(self.delimiter, tok, axis=0))
        s = s._replace(tokens=tokens, length=length, done=s.done | ended, stale=s.stale | (active & ~ended),
                       log_g=s.log_g + xp.where(active, inc, 0.0), running=self._run(s.running, tokens, length, active))
        return s, inside

    def _run(self, running, tokens, length, active):
        """The leaves' running values [N, K] after the `active` particles' newest token (`TokenPattern.update`:
        each reads its newest `width` tokens; one gather per distinct width)."""
        if not self.leaves:
            return running
        xp, values, windows = self.rt.xp, [], {}
        for k, leaf in enumerate(self.leaves):
            if leaf.width not in windows:
                windows[leaf.width] = left_aligned(self.rt, tokens, length, leaf.width, self.p, self.plan.pad)
            values.append(xp.where(active, leaf.update(running[:, k], windows[leaf.width], length - self.p),
                                   running[:, k]))
        return xp.stack(values, axis=1)

    def generate(self, key, s, states, force, forced, pure, u=None):
        """The next step of every particle that has not ended: (Sequences with log_g the step's proposal part,
        states, which particles stepped). A chunk is emitted token by token until every particle's chunk ends:
        a `while_loop` when pure, a host-checked loop when eager. `u`: the first token's uniforms [N, 1] (one-token
        steps; else they are drawn from `key`)."""
        rt, xp = self.rt, self.rt.xp
        stepped = ~s.done
        n = stepped.shape[0]
        s, states = self.feed(s, states, s.stale, pure)
        if u is None:
            k_first, k_rest = rt.split(key, 2)
            u = rt.uniform(k_first, (n, 1))
        s, inside = self.emit(u, s._replace(log_g=xp.zeros(stepped.shape)), stepped, force, forced)
        if self.plan.delimiters is None:            # a step is one token
            return s, states, stepped

        def chunk(loop):
            k, s, states, inside = loop
            k, k_tok = rt.split(k, 2)
            s, states = self.feed(s, states, inside, pure)
            s, inside = self.emit(rt.uniform(k_tok, (n, 1)), s, inside, force, forced)
            return k, s, states, inside

        def more(loop):
            return xp.sum(loop[3]) > 0

        loop = (k_rest, s, states, inside)
        if pure:
            loop = rt.while_loop(more, chunk, loop)
        else:
            while bool(rt.to_numpy(more(loop))):
                loop = chunk(loop)
        _, s, states, _ = loop
        return s, states, stepped

    def score(self, s, stepped, pure):
        """The rewards on the prefixes after a step, aggregated, and the step's log potential added to log_g."""
        rt, xp, plan = self.rt, self.rt.xp, self.plan
        if not plan.rewards:
            return s
        values = []
        for (r, _), running in zip(plan.rewards, self.running):
            def check(value, k, r=r):
                if not hasattr(value, "shape"):
                    raise ShapeError(f"reward {r.name} returned {type(value).__name__}; a reward on a sequence target "
                                     f"returns one real per prefix, an array [N]")
                if tuple(value.shape) != (k,):
                    raise ShapeError(f"reward {r.name} returned shape {tuple(value.shape)} for {k} prefixes; a reward "
                                     f"on a sequence target returns one real per prefix, shape [N]")
                return xp.asarray(rt.asarray(value), rt.dtype)

            def value(r=r, running=running, check=check):
                if running is None:
                    return self.apply(r.fn, len(r.parents), s, stepped, self.p, check, pure)
                columns, combine = running
                return check(combine([s.running[:, k] for k in columns]), s.length.shape[0])
            values.append(call_user(value, {}, f"reward {r.name}"))
        return self._update(s, stepped, xp.stack(values, axis=1))

    def step(self, key, s, states, force, forced, pure, u=None):
        """One step of generation and scoring: (Sequences with log_g the step's log potential and `nan` this
        step's flags, states); `u` as in `generate`."""
        s, states, stepped = self.generate(key, s._replace(nan=s.nan & False), states, force, forced, pure, u)
        return self.score(s, stepped, pure), states

    def step_fed(self, s, outs, live, force, forced, u):
        """`step` of one-token steps with the models' outputs for the `live` particles given (`call_models`), as
        a pure function of arrays (an eager sweep's kernel: rewards of (prefixes, lengths) on the whole buffer)."""
        s = s._replace(nan=s.nan & False)
        stepped = ~s.done
        s, _ = self.emit(u, self.absorb(s, outs, live)._replace(log_g=self.rt.xp.zeros(stepped.shape)), stepped,
                         force, forced)
        return self.score(s, stepped, True)


def generator(plan, rt, proposal=None, aggregate="model", potential="diff", temperature=1.0):
    """The generator of `plan`: token-level (`Generator`), or text-level for a served base
    (`served_generation.ServedGenerator`)."""
    if plan.bases[0][0].served:
        from .served_generation import ServedGenerator
        return ServedGenerator(plan, rt, proposal, aggregate, potential, temperature)
    return Generator(plan, rt, proposal, aggregate, potential, temperature)
