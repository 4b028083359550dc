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
"""
from typing import Any, NamedTuple

import numpy as np

from ..errors import InferenceError, ShapeError, UnknownNameError, ValueRangeError
from ..stdlib.language_models import next_token
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
    rows: Any       # [N, B, V] each base's normalized log-probabilities of the next token
    score: Any      # [N, J] each reward aggregated over the steps so far (A)
    memo: Any       # [N] what the potential carries over (R_{s−1}; the running max or sum)
    log_g: Any      # [N] the log potential of the current step


def left_aligned(rt, tokens, length, cols, start, pad):
    """Rows tokens[i, start:length_i], right-aligned into [N, cols] (cols = max_i length_i − start) and
    left-padded with pad."""
    xp = rt.xp
    n, width = tokens.shape
    pos = length.reshape(-1, 1) - cols + rt.asindex(np.arange(cols)).reshape(1, -1)
    flat = xp.take(tokens.reshape(-1), (rt.asindex(np.arange(n)).reshape(-1, 1) * width + xp.clip(pos, 0, width - 1))
                   .reshape(-1), axis=0).reshape(n, cols)
    return xp.where(pos >= start, flat, pad)


class Generator:
    """Generation and scoring of sequences of `plan` on runtime `rt` (see the module docstring)."""

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
        self.models = [next_token(b, rt) for b, _ in plan.bases]
        self.betas = rt.asarray(np.array([beta for _, beta in plan.bases])).reshape(1, -1, 1)
        self.coefs = rt.asarray(np.array([c for _, c in plan.rewards] or [0.0]))
        self.p, self.width = plan.prompt_length, plan.prompt_length + plan.length
        delim = np.zeros(plan.vocab, dtype=bool)
        delim[list(plan.delimiters or range(plan.vocab))] = True      # one-token steps: every token ends one
        self.delimiter = rt.asarray(delim)
        # the bookkeeping as jitted kernels of fixed shapes (on JAX one compilation each per N)
        self._aranges = {}
        self.emit = rt.jit(self._emit)
        self._normalize = rt.jit(self._normalize_rows)
        self._newest = rt.jit(self._newest_tokens)
        self._keep = rt.jit(self._keep_rows)
        self._update = rt.jit(self._update_scores)
        self._left = rt.jit(lambda tokens, length, cols, start: left_aligned(rt, tokens, length, cols, start, plan.pad),
                            static_argnames=("cols", "start"))

    def arange(self, n):
        """0..n−1 as indices, made once per n by `start` (not a host-to-device copy per token; made outside the
        jitted kernels, so they capture a constant, not a tracer)."""
        return self._aranges[n]

    # ---- the models ----------------------------------------------------------------------------------------

    def _normalize_rows(self, out):
        rows = out - self.rt.xp.logsumexp(out, axis=-1, keepdims=True)
        return rows, self.rt.xp.sum(self.rt.xp.isnan(rows)) > 0

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

    def _rows(self, out, b):
        """Normalized log-probabilities, checked for NaN."""
        rows, bad = self._normalize(out)
        if bool(self.rt.to_numpy(bad)):
            raise InferenceError(f"sequence model {self.plan.bases[b][0].name} returned NaN log-probabilities (or a "
                                 f"row with no finite entry)")
        return rows

    def apply(self, fn, arity, s, mask, start, check):
        """fn of the prefixes tokens[i, start:length_i] of the particles in `mask`: [N, ...] (rows outside the
        mask are not to be read). arity 2: one call fn(left-padded prefixes, lengths); arity 1: fn on exact
        prefixes tokens[:, start:t], one call on all N rows per distinct length t among the masked particles
        (one call with token steps; fixed shapes, so JAX compiles each t once)."""
        rt, xp = self.rt, self.rt.xp
        n = mask.shape[0]
        if arity == 2:
            return check(fn(self.prefixes(s, start), s.length - start), n)
        lengths, m = rt.to_numpy(s.length), rt.to_numpy(mask)
        out = None
        for t in np.unique(lengths[m]) if m.any() else [lengths.max()]:
            part = check(fn(s.tokens[:, start:int(t)]), n)
            at = (s.length == int(t)).reshape((-1,) + (1,) * (part.ndim - 1))
            out = part if out is None else xp.where(at, part, out)
        return out

    def prefixes(self, s, start=0):
        """tokens[i, start:length_i] of every sequence, right-aligned and left-padded: [N, max length − start]."""
        cols = int(self.rt.to_numpy(self.rt.xp.max(s.length))) - start
        return self._left(s.tokens, s.length, cols=cols, start=start)

    def start(self, n):
        """(Sequences of the empty generation for n particles, the models' states)."""
        rt, xp, plan = self.rt, self.rt.xp, self.plan
        for m in (n, self.width):
            self._aranges.setdefault(m, rt.asindex(np.arange(m)))
        rows, states = [], []
        for b, m in enumerate(self.models):
            out, state = call_user(lambda: m.start(n), {}, f"sequence model {plan.bases[b][0].name}")
            rows.append(self._rows(self._logprobs(out, b, n), b))
            states.append(state)
        tokens = np.full((n, self.width), plan.pad)
        if self.p:
            tokens[:, :self.p] = plan.bases[0][0].prompt
        init = {"prod": 1.0, "min": np.inf}.get(self.aggregate, 0.0)
        memo = -np.inf if self.potential == "max" else 0.0
        false = rt.asarray(np.zeros(n, dtype=bool))
        s = Sequences(rt.asindex(tokens), rt.asindex(np.full(n, self.p)), false, false, xp.stack(rows, axis=1),
                      rt.asarray(np.full((n, max(len(plan.rewards), 1)), init)), rt.asarray(np.full(n, memo)),
                      xp.zeros((n,)))
        return s, states

    def _newest_tokens(self, s):
        n = s.length.shape[0]
        return self.rt.xp.take(s.tokens.reshape(-1), self.arange(n) * self.width
                               + self.rt.xp.clip(s.length - 1, 0, self.width - 1), axis=0)

    def _keep_rows(self, s, live, rows):
        xp = self.rt.xp
        return s._replace(rows=xp.where(live.reshape(-1, 1, 1), rows, s.rows), stale=s.stale & ~live)

    def feed(self, s, states, live):
        """The models advanced by each `live` particle's newest token; the others keep their rows and state."""
        n = live.shape[0]
        newest = self._newest(s)
        rows, new_states = [], []
        for b, m in enumerate(self.models):
            def on_prefixes(fn, arity, b=b):
                return self.apply(fn, arity, s, live, 0, lambda out, k: self._logprobs(out, b, k))
            out, state = call_user(lambda: m.advance(newest, live, states[b], on_prefixes), {},
                                   f"sequence model {self.plan.bases[b][0].name}")
            rows.append(self._rows(self._logprobs(out, b, n), b))
            new_states.append(state)
        return self._keep(s, live, self.rt.xp.stack(rows, axis=1)), new_states

    def reorder(self, states, idx):
        return [m.reorder(state, idx) for m, state in zip(self.models, states)]

    # ---- one token, one step -------------------------------------------------------------------------------

    def _emit(self, key, s, active, force, forced):
        """One token for each `active` particle (`forced[i]` where `force[i]`: particle Gibbs' reference):
        (Sequences, the particles still inside their chunk, whether there are any)."""
        rt, xp, plan = self.rt, self.rt.xp, self.plan
        n, v = s.rows.shape[0], s.rows.shape[2]
        u = xp.sum(self.betas * s.rows, axis=1)
        log_q = u - xp.logsumexp(u, axis=-1, keepdims=True) if self.proposal is None else s.rows[:, self.proposal]
        gumbel = -xp.log(-xp.log(xp.clip(rt.uniform(key, (n, v)), 1e-20, 1.0)))
        tok = xp.argmax(log_q + gumbel, axis=-1)
        tok = xp.where(force, xp.take(forced, xp.clip(s.length, 0, self.width - 1), axis=0), tok)
        flat = self.arange(n) * v + tok
        inc = xp.take(u.reshape(-1), flat, axis=0) - xp.take(log_q.reshape(-1), flat, axis=0)
        at = (self.arange(self.width).reshape(1, -1) == s.length.reshape(-1, 1)) & active.reshape(-1, 1)
        length = s.length + active
        ended = active & ((length >= self.width) | ((tok == plan.eos) if plan.eos is not None else False))
        inside = active & ~(ended | xp.take(self.delimiter, tok, axis=0))
        s = s._replace(tokens=xp.where(at, tok.reshape(-1, 1), s.tokens), length=length, done=s.done | ended,
                       stale=s.stale | (active & ~ended), log_g=s.log_g + xp.where(active, inc, 0.0))
        return s, inside, xp.sum(inside) > 0

    def generate(self, key, s, states, force=None, forced=None):
        """The next step of every particle that has not ended: (Sequences with log_g the step's proposal part,
        states, which particles stepped)."""
        rt, xp = self.rt, self.rt.xp
        n = s.done.shape[0]
        if force is None:
            force, forced = rt.asarray(np.zeros(n, dtype=bool)), rt.asindex(np.zeros(self.width, dtype=int))
        stepped = ~s.done
        if bool(rt.to_numpy(xp.sum(s.stale) > 0)):
            s, states = self.feed(s, states, s.stale)
        s = s._replace(log_g=xp.zeros((n,)))
        active = stepped
        for k in rt.split(key, self.plan.length):
            s, active, more = self.emit(k, s, active, force, forced)
            if not bool(rt.to_numpy(more)):
                break
            s, states = self.feed(s, states, active)
        return s, states, stepped

    def _update_scores(self, s, stepped, values):
        """Aggregate the step's reward values [N, J] and add the step's log potential to log_g (and a NaN flag)."""
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
        return s, xp.sum(xp.isnan(a)) > 0

    def score(self, s, stepped):
        """The rewards on the prefixes after a step, aggregated, and the step's log potential added to log_g."""
        rt, xp, plan = self.rt, self.rt.xp, self.plan
        if not plan.rewards:
            return s
        values = []
        for r, _ in plan.rewards:
            def check(value, k, r=r):
                if not hasattr(value, "shape"):
                    raise ShapeError(f"reward {r.name} returned {type(value).__name__}; a reward on a sequence target "
                                     f"returns one real per prefix, an array [N]")
                if tuple(value.shape) != (k,):
                    raise ShapeError(f"reward {r.name} returned shape {tuple(value.shape)} for {k} prefixes; a reward "
                                     f"on a sequence target returns one real per prefix, shape [N]")
                return xp.asarray(rt.asarray(value), rt.dtype)
            values.append(call_user(lambda: self.apply(r.fn, len(r.parents), s, stepped, self.p, check), {},
                                    f"reward {r.name}"))
        s, bad = self._update(s, stepped, xp.stack(values, axis=1))
        if bool(rt.to_numpy(bad)):
            raise InferenceError(f"a reward returned NaN ({', '.join(r.name for r, _ in plan.rewards)})")
        return s

    def _total(self, a):
        return self.rt.xp.sum(self.coefs.reshape(1, -1) * a, axis=1)

    def reward(self, s):
        """R = Σ_j c_j A_j of each sequence (its aggregated reward so far)."""
        return self._total(s.score) if self.plan.rewards else self.rt.xp.zeros((s.done.shape[0],))

    def finished(self, s):
        """Whether every sequence has ended (a host bool)."""
        return bool(self.rt.to_numpy(self.rt.xp.sum(~s.done) == 0))
