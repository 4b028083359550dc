"""Text-level generation of a sequence target whose bases are served models (`ppl.served`, issue 31): the
steps of `generation` with particles that are texts, on the same Feynman–Kac sweep (`sequence_smc`, `beam`).

A particle's text is a node of a tree of steps held here (node 0 is the empty text; each generated step is a
node whose parent is the text it continued), and the particle arrays carry the node ids, so resampling by the
ancestor indices of `fk` moves texts as it moves any array, and particle Gibbs' reference is its last node.
A step sends one request per particle that has not ended to the proposal base (base 0, or `proposal=i`), all
at once; the reference of conditional SMC (`pg`) takes its own next step instead. With a `lookahead` base a
request returns the rest of a generation: the node it continues keeps the steps after the first (`rest`) and
the first particle found at that node in a later step takes the next one instead of a request (resampling
never reads a rest, so it is still a draw from the model given the node's text; the node's other copies ask
afresh, in one request with n= where the server answers it: `ppl.served`). For log γ = Σ_i β_i log p_i
+ Σ_j c_j r_j the step's log-weight increment is

    Σ_i β_i log p_i(step | text) − log p_q(step | text)     (0 for one base with β = 1: the proposal is γ's base)

with log p_q from the sampled tokens' log-probabilities and the other bases' by scoring the step (`ppl.served`);
then the rewards read the texts after the step and are aggregated into the step's log potential exactly as on
tokens (`generation.Potentials`). The tree lives until the run's result is made (`sequences`).
"""
from typing import Any, NamedTuple

import numpy as np

from ..errors import ShapeError
from ..served import ServedError
from ..target import call_user
from .generation import Potentials


class Texts(NamedTuple):
    """N texts being generated (runtime arrays with leading axis N; resampling takes rows of all)."""
    tokens: Any     # [N] each particle's text: its node in the generator's tree of steps
    length: Any     # [N] steps so far
    done: Any       # [N] ended
    score: Any      # [N, J] each reward aggregated over the steps so far (A)
    memo: Any       # [N] what the potential carries over (R_{s−1}; the running max or sum)
    log_g: Any      # [N] the log potential of the current step
    nan: Any        # [N, B + J] whether base b / reward j gave NaN for the particle this step (`check`)


class ServedGenerator(Potentials):
    """Generation and scoring of texts of `plan`, whose bases are served models, on runtime `rt` (see the module
    docstring). The interface of `generation.Generator` that the sweeps use."""

    width, p, can_be_pure = 1, 0, False

    def __init__(self, plan, rt, proposal=None, aggregate="model", potential="diff", temperature=1.0):
        super().__init__(plan, rt, proposal, aggregate, potential, temperature)
        self.bases = [b for b, _ in plan.bases]
        self.betas = np.array([beta for _, beta in plan.bases])
        self.q = 0 if proposal is None else proposal
        self.prompt = self.bases[0].prompt_text
        self._clear()

    def _clear(self):
        self.parent, self.text, self.ended, self.rest = [0], [""], [None], {}

    def _steps(self, node):
        """The steps of the text at `node`, first to last."""
        out = []
        while node:
            out.append(self.text[node])
            node = self.parent[node]
        return out[::-1]

    def start(self, n):
        rt, xp = self.rt, self.rt.xp
        self.rest = {}
        init = {"prod": 1.0, "min": np.inf}.get(self.aggregate, 0.0)
        zeros = rt.asindex(np.zeros(n, dtype=int))
        false = xp.zeros((n,)) > 0
        s = Texts(zeros, zeros, false, rt.asarray(np.full((n, max(len(self.plan.rewards), 1)), init)),
                  rt.asarray(np.full(n, -np.inf if self.potential == "max" else 0.0)), xp.zeros((n,)),
                  xp.zeros((n, len(self.names))) > 0)
        return s, ()

    def reorder(self, states, idx):
        return states

    def step(self, key, s, states, force, forced, pure, u=None):
        """One step of every text that has not ended, and its scoring: (Texts with log_g the step's log
        potential and `nan` this step's flags, ()). (`u`, the token generator's uniforms, is unused: the server
        draws.)"""
        rt = self.rt
        nodes, steps, done, force = (rt.to_numpy(a) for a in (s.tokens, s.length, s.done, force))
        n = len(nodes)
        try:
            nodes, done, inc = self._generate(key, nodes, steps, done.copy(), force, forced)
            values = self._rewards(nodes, ~rt.to_numpy(s.done))
        except ServedError as e:
            finished = int(rt.to_numpy(s.done).sum())
            error = type(e)(f"{e.message}; the run stopped in step {int(steps.max()) + 1}: {finished} of {n} "
                            f"generations had completed", e.endpoint)
            error.completed = finished
            raise error from e
        stepped = ~s.done
        s = s._replace(tokens=rt.asindex(nodes), length=s.length + stepped, done=rt.asarray(done) > 0,
                       log_g=rt.asarray(inc), nan=s.nan & False)
        return self._update(s, stepped, rt.asarray(values)), ()

    def _generate(self, key, nodes, steps, done, force, forced):
        """(new nodes, done, log-weight increments) after one step of each live particle."""
        live = ~done
        drawn, kept = np.flatnonzero(live & ~force), np.flatnonzero(live & force)
        inc, new = np.zeros(len(nodes)), nodes.copy()
        seeds = (self.rt.to_numpy(self.rt.uniform(key, (len(nodes),))) * 2 ** 31).astype(np.int64)
        prefixes = {i: "".join(self._steps(nodes[i])) for i in np.flatnonzero(live)}
        base = self.bases[self.q]
        pieces = {i: self.rest.pop(nodes[i]) for i in drawn if nodes[i] in self.rest}    # first comer at a node
        ask = np.array([i for i in drawn if i not in pieces], dtype=int)
        answers = base.generate([prefixes[i] for i in ask], seeds[ask], logprobs=not self.plain,
                                steps_left=self.plan.length - steps[ask])
        pieces.update(zip(ask, answers))
        log_q = {}
        for i in drawn:
            (text, ended, log_p), *rest = pieces[i]
            new[i] = self._add(nodes[i], text, ended)
            log_q[i] = log_p
            if rest:
                self.rest[new[i]] = rest
        if kept.size:           # conditional SMC: the reference takes its own next step
            path = self._path(int(self.rt.to_numpy(forced).reshape(-1)[0]))
            for i in kept:
                new[i] = path[steps[i]]
            if not self.plain:
                log_q.update(zip(kept, base.score([prefixes[i] for i in kept], [self.text[new[i]] for i in kept],
                                                  [self.ended[new[i]] == "eos" for i in kept])))
        done = done | np.array([bool(self.ended[m]) for m in new]) | (steps + 1 >= self.plan.length)
        if not self.plain:
            order = np.flatnonzero(live)
            texts = [self.text[new[i]] for i in order]
            total = np.zeros(len(order))
            for b, (model, beta) in enumerate(zip(self.bases, self.betas)):
                if beta == 0.0:
                    continue
                log_p = ([log_q[i] for i in order] if b == self.q
                         else model.score([prefixes[i] for i in order], texts,
                                          [self.ended[new[i]] == "eos" for i in order]))
                total += beta * np.array(log_p)
            inc[order] = total - np.array([log_q[i] for i in order])
        return new, done, inc

    def _add(self, parent, text, ended):
        self.parent.append(int(parent))
        self.text.append(text)
        self.ended.append(ended)        # why it ended ("eos", "end") or None
        return len(self.text) - 1

    def _path(self, node):
        """The nodes from the first step to `node`."""
        out = []
        while node:
            out.append(node)
            node = self.parent[node]
        return out[::-1]

    def _rewards(self, nodes, stepped):
        """Each reward on the texts after the step: [N, J] (rows of particles that did not step are 0)."""
        values = np.zeros((len(nodes), max(len(self.plan.rewards), 1)))
        rows = np.flatnonzero(stepped)
        if not rows.size:
            return values
        steps = [self._steps(nodes[i]) for i in rows]
        for j, (r, _) in enumerate(self.plan.rewards):
            if len(r.parents) == 2:
                out = call_user(lambda: r.fn(self.prompt, steps), {}, f"reward {r.name}")
            else:
                out = call_user(lambda: r.fn(["".join(x) for x in steps]), {}, f"reward {r.name}")
            try:
                out = np.asarray(out, dtype=np.float64)
            except (TypeError, ValueError):
                raise ShapeError(f"reward {r.name} returned {type(out).__name__}; a reward on served text returns "
                                 f"one real per particle") from None
            if out.shape != (len(rows),):
                raise ShapeError(f"reward {r.name} returned shape {out.shape} for {len(rows)} texts; a reward on "
                                 f"served text returns one real per text, shape [N]")
            values[rows, j] = out
        return values

    def sequences(self, tokens, length):
        """(samples, steps [C, N], the texts flat over chains) from the host arrays of nodes and steps [C, N]; the
        tree of steps is then cleared."""
        texts = ["".join(self._steps(int(m))) for chain in tokens for m in chain]
        self._clear()
        return {"steps": length}, length, texts
