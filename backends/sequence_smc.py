"""SMC over the steps of a sequence target (DESIGN §8): particle filtering ('pf'), particle Gibbs ('pg'), and
the no-resampling baselines best-of-N ('bon') and weighted best-of-N ('wbon').

A Feynman–Kac model on the core loop of `fk`: M_s generates step s of every sequence (`generation`), log G_s
is the step's proposal increment plus the reward potential (`generation`: 'diff' = ψ_s / ψ_{s−1}, consistent
for γ = p · exp(R(x)), or a named heuristic), and resampling happens when ESS < threshold · N at the steps the
schedule allows (`resample_every`, `resample_window`, steps numbered from 1); never after the last step, so
the final weights W are those of γ and log Z = Σ_s log c_s estimates log Σ_x γ(x). Under `potential='puri'`
the weights are replaced each step (Puri et al.), which with resampling every step (its default) targets
p · Π_s G_s. Models' states (recurrent states, key/value caches) are reordered with the particles.

Budget = generations: 'pf', 'bon', 'wbon' run `particles` sequences, 'pg' `particles` × `iterations`.
The chosen answer: `select='argmax'` the answer of the heaviest particle, `'vote'` the answer of largest total
weight (answers by `answer(sequence)`, else the sequence itself); 'bon' takes the largest final reward R and
'wbon' votes with weights R (rewards >= 0).
"""
import math
import weakref
from collections import defaultdict

import numpy as np

from ..errors import InferenceError, ValueRangeError
from ..result import Result, normalized
from ..target import call_user
from . import fk, integer, method
from .generation import Generator


class SequenceFK(fk.FeynmanKac):
    """Steps of sequence generation as a Feynman–Kac model; the generation itself runs in `sweep` (it calls
    the user's models), so log G_s is the `log_g` the generator left in the particles."""

    def __init__(self, gen, schedule, conditional=False):
        self.gen, self.rt, self.schedule, self.conditional = gen, gen.rt, schedule, conditional
        self.states = None

    def init(self, key, n):
        particles, self.states = self.gen.start(n)
        return particles, None

    def log_potential(self, t, particles, log_w, carry):
        return particles.log_g, particles, carry

    def can_resample(self, t):
        return self.rt.xp.take(self.schedule, self.rt.xp.clip(t, 0, self.schedule.shape[0] - 1), axis=0)

    def fix_ancestors(self, idx):
        """Conditional SMC: particle 0 is the reference and stays its own ancestor."""
        if not self.conditional:
            return idx
        xp = self.rt.xp
        return xp.where(self.rt.asindex(np.arange(idx.shape[0])) == 0, 0, idx)


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


def sweep(gen, key, n, step, final, model, reference=None):
    """One SMC pass over the steps: (final FKState, per-step (ESS, resampled, log c))."""
    rt, xp = gen.rt, gen.rt.xp
    k0, k1 = rt.split(key, 2)
    state = fk.init(model, k0, n)
    states = model.states
    force = forced = None
    if reference is not None:
        force, forced = rt.asarray(np.arange(n) == 0), rt.asindex(reference)
    records = []
    for k in rt.split(k1, gen.plan.length):
        k_gen, k_step = rt.split(k, 2)
        particles, states, stepped = gen.generate(k_gen, state.particles, states, force, forced)
        particles = gen.score(particles, stepped)
        last = gen.finished(particles)
        if gen.potential == "puri":      # Puri et al.: the weights are replaced, not multiplied
            state = state._replace(log_w=xp.full((n,), -math.log(n)))
        state, info = (final if last else step)(k_step, state._replace(particles=particles))
        if not last and bool(rt.to_numpy(info.resampled)):
            states = gen.reorder(states, info.ancestors)
        records.append((info.ess, info.resampled, info.log_c, info.rel_var))
        if last:
            break
    log_c = np.array([float(rt.to_numpy(r[2])) for r in records])
    if not np.all(np.isfinite(log_c)):
        t = int(np.argmin(np.isfinite(log_c))) + 1
        raise InferenceError(f"{gen.plan.target.describe()}: every weight vanished at step {t} (the potentials were "
                             f"-inf or NaN on all {n} particles)")
    ess = np.array([float(rt.to_numpy(r[0])) for r in records])
    resampled = np.array([bool(rt.to_numpy(r[1])) for r in records])
    return state, {"ess": ess, "resampled": resampled, "log_c": log_c,
                   "rel_var": float(rt.to_numpy(records[-1][3]))}


def decoded(plan, tokens, length):
    """Each sequence as a list of token ids (eos included), or its text when the plan has a decoder."""
    seqs = [tokens[i, plan.prompt_length:length[i]].tolist() for i in range(tokens.shape[0])]
    return [plan.decode(s) for s in seqs] if plan.decode is not None else seqs


def _key(a):
    return tuple(a) if isinstance(a, list) else a


def choose(answers, weights, select):
    """The answer of the heaviest particle ('argmax') or of the largest total weight ('vote')."""
    if select == "argmax":
        return answers[int(np.argmax(weights))]
    totals = defaultdict(float)
    for a, w in zip(answers, weights):
        totals[_key(a)] += w
    best = max(totals, key=totals.get)
    return next(a for a in answers if _key(a) == best)


def sequence_result(gen, chains, method, rt, answer=None, select="argmax", by=None, log_z=None, se=None,
                    diagnostics=None):
    """A `Result` of sequences: `chains` [(Sequences, log W or None)] (one per sweep), the chosen answer by
    `select` over the pooled weights, or over the final rewards (`by='reward'`)."""
    plan = gen.plan
    if select not in ("argmax", "vote"):
        raise ValueRangeError(f"select must be 'argmax' or 'vote', got {select!r}")
    toks = [rt.to_numpy(s.tokens) for s, _ in chains]
    lengths = [rt.to_numpy(s.length) for s, _ in chains]
    seqs = [decoded(plan, t, n) for t, n in zip(toks, lengths)]
    rewards = np.stack([rt.to_numpy(gen.reward(s)).astype(np.float64) for s, _ in chains])
    log_w = None if chains[0][1] is None else np.stack([rt.to_numpy(w).astype(np.float64) for _, w in chains])
    flat = [s for chain in seqs for s in chain]
    if answer is not None and not callable(answer):
        raise ValueRangeError(f"answer must be a function of one sequence, got {type(answer).__name__}")
    answers = flat if answer is None else [call_user(lambda: answer(s), {}, "the answer function") for s in flat]
    if by == "reward":
        weights = rewards.reshape(-1)
        if select == "vote" and np.any(weights < 0):
            raise InferenceError("weighted best-of-N votes with the final rewards as weights; they must be >= 0 "
                                 f"(min {weights.min():.3g})")
    elif log_w is None:
        weights = np.full(len(flat), 1.0 / len(flat))
    else:
        weights = (normalized(log_w) / len(chains)).reshape(-1)
    diagnostics = dict(diagnostics or {})
    diagnostics.update({"lengths": np.stack(lengths) - plan.prompt_length, "rewards": rewards,
                        "answers": answers, "generations": sum(len(c) for c in seqs)})
    if log_z is not None:
        diagnostics["log_z_per_chain"] = [log_z] * len(chains)
    return Result({"tokens": np.stack(toks)[:, :, plan.prompt_length:]}, log_w, log_z, se, method=method,
                  runtime=rt.name, device=rt.device, diagnostics=diagnostics, sequences=flat,
                  answer=choose(answers, weights, select))


_CACHE = weakref.WeakKeyDictionary()


def _smc(plan, rt, resampler, threshold, every, window, potential, aggregate, temperature, proposal,
         conditional=False):
    """(generator, model, jitted step, jitted last step), built once per target, runtime and options (a run is
    then the models' calls and jitted kernels); one generator for all of them."""
    cache = _CACHE.setdefault(plan.target, {})
    g_sig = (rt.name, str(rt.device), rt.precision, potential, aggregate, temperature, proposal)
    sig = g_sig + (resampler, threshold, every, window, conditional)
    if sig not in cache:
        if g_sig not in cache:
            cache[g_sig] = Generator(plan, rt, proposal, aggregate, potential, temperature)
        gen = cache[g_sig]
        model = SequenceFK(gen, schedule(rt, plan.length, every, window), conditional)
        step = fk.make_step(model, resampler, threshold, keep_ancestors=True, error_every_step=False)
        last = fk.make_step(model, resampler, 0.0, error_every_step=False)
        cache[sig] = gen, model, rt.jit(lambda k, s: step(k, s, move=False)), rt.jit(lambda k, s: last(k, s, move=False))
    return cache[sig]


def _particles(particles, what):
    return integer(particles, f"{what}: particles", 1)


@method("pf", kind="sequence")
def run(plan, rt, key, particles=64, progress=None, resampler="systematic", resample_threshold=None,
        potential="diff", aggregate="model", temperature=1.0, resample_every=1, resample_window=None, proposal=None,
        answer=None, select="argmax"):
    """Particle filtering of a sequence target (see the module docstring). `resample_threshold` is the ESS
    fraction (default 0.5; 1.0 under potential='puri': every step)."""
    n = _particles(particles, "pf")
    threshold = (1.0 if potential == "puri" else 0.5) if resample_threshold is None else resample_threshold
    gen, model, step, final = _smc(plan, rt, resampler, threshold, resample_every, resample_window, potential,
                                   aggregate, temperature, proposal)
    state, record = sweep(gen, key, n, step, final, model)
    log_z = float(rt.to_numpy(state.log_z))
    return sequence_result(gen, [(state.particles, state.log_w)], "pf", rt, answer, select, log_z=log_z,
                           se=math.sqrt(record.pop("rel_var")), diagnostics=record)


@method("pg", kind="sequence")
def run_pg(plan, rt, key, particles=16, progress=None, iterations=4, potential="diff", aggregate="model",
           temperature=1.0, proposal=None, answer=None, select="argmax"):
    """Particle Gibbs (Andrieu, Doucet & Holenstein 2010; Puri et al. §3): `iterations` sweeps of conditional
    SMC with multinomial resampling at every step, the reference (particle 0) drawn from the previous sweep's
    final weights. The result pools the sweeps (one chain each); log Z is the first (unconditional) sweep's."""
    n = _particles(particles, "pg")
    iterations = integer(iterations, "iterations", 1)
    options = (plan, rt, "multinomial", 1.0, 1, None, potential, aggregate, temperature, proposal)
    gen, model, step, final = _smc(*options)
    _, conditional, c_step, c_final = _smc(*options, conditional=True)
    keys = rt.split(key, 2 * iterations)
    chains, references, reference, first = [], [], None, None
    for i in range(iterations):
        kernels = (step, final, model) if reference is None else (c_step, c_final, conditional)
        state, record = sweep(gen, keys[2 * i], n, *kernels, reference)
        if first is None:
            first = (float(rt.to_numpy(state.log_z)), math.sqrt(record["rel_var"]), record)
        chains.append((state.particles, state.log_w))
        w = normalized(rt.to_numpy(state.log_w))
        u = float(rt.to_numpy(rt.uniform(keys[2 * i + 1], (1,)))[0])
        b = min(int(np.searchsorted(np.cumsum(w), u * w.sum())), n - 1)
        reference = rt.to_numpy(state.particles.tokens)[b]
        references.append(decoded(plan, reference[None], rt.to_numpy(state.particles.length)[b:b + 1])[0])
    log_z, se, record = first
    record.pop("rel_var")
    record["references"] = references
    return sequence_result(gen, chains, "pg", rt, answer, select, log_z=log_z, se=se, diagnostics=record)


def _best_of(plan, rt, key, particles, aggregate, proposal, answer, vote, name):
    n = _particles(particles, name)
    gen, model, step, final = _smc(plan, rt, "systematic", 0.0, 1, None, "diff", aggregate, 1.0, proposal)
    state, record = sweep(gen, key, n, step, final, model)
    record.pop("rel_var")
    return sequence_result(gen, [(state.particles, state.log_w)], name, rt, answer,
                           "vote" if vote else "argmax", by="reward", log_z=float(rt.to_numpy(state.log_z)),
                           diagnostics=record)


@method("bon", kind="sequence")
def run_bon(plan, rt, key, particles=64, progress=None, aggregate="model", proposal=None, answer=None):
    """Best-of-N: `particles` sequences from the proposal, the answer of the one with the largest final reward
    (weights and log Z are those of importance sampling of γ)."""
    return _best_of(plan, rt, key, particles, aggregate, proposal, answer, False, "bon")


@method("wbon", kind="sequence")
def run_wbon(plan, rt, key, particles=64, progress=None, aggregate="model", proposal=None, answer=None):
    """Weighted best-of-N: `particles` sequences from the proposal, the answer of largest total final reward
    (a reward-weighted majority vote; rewards >= 0)."""
    return _best_of(plan, rt, key, particles, aggregate, proposal, answer, True, "wbon")
