"""Amortized proposals: one conditional density q_θ(z | c) for a family of targets γ_c indexed by a context c,
trained with BRAIn's self-normalized gradient (Pandey et al. 2024, arXiv 2402.02479).

For a context c with target π_c = γ_c / Z_c on the unconstrained latent space (log γ_c(z) = log π0(z) +
log|J(z)| + log L(z), the compiled program's `log_densities`), draw y_1..y_n ~ r (detached) and set

    α̂_i = normalized γ_c(y_i) / r(y_i),      β̂_i = normalized q_θ(y_i | c) / r(y_i),
    ĝ(θ) = Σ_i (α̂_i − β̂_i) ∇_θ log q_θ(y_i | c).

ĝ estimates −∇_θ of the self-normalized KL between π_c and q_θ; the β̂ term is a baseline that leaves its
mean unchanged but removes the part of Σ α̂_i ∇ log q_θ that is noise (for r = q_θ, β̂_i = 1/n and it
subtracts the score's sample mean, whose expectation is 0). The sampler r is q_θ itself at the current θ
(default), the target's reference π0 (`sampler="prior"`), or any fixed `Proposal`. Each step averages ĝ over
a minibatch of training contexts and takes an Adam step on the loss −Σ (α̂ − β̂) log q_θ (weights held
fixed).

The targets of the family share one latent layout. Each training context is compiled once; when the targets
differ only in their data and observed values (the usual `model.condition(y=c)`), one runtime function
evaluates all of them, batched over contexts (jitted once on JAX; there all the steps run as one compiled
scan), and that shared evaluation is checked against the contexts' own programs on `verify` of them: thousands
of training contexts are fine (2000 set up in ~3 s on CPU, mostly `ppl.compile`). Otherwise (a site reads c
through a closure, or the structure changes with c) every context is lowered to its own program, with an
`AmortizeWarning`: one JAX compilation (~0.3 s) per context, so keep to a few dozen contexts there.
`Amortized.evaluate` runs importance sampling from q(· | c) on many new contexts in the same batched way.
"""
import math
import time

import numpy as np

from . import advice
from .errors import PPLError, ShapeError, UnknownNameError, UserFunctionError, ValueRangeError


class AmortizeWarning(UserWarning):
    """Amortized training fell back to a slower path (one program per training context)."""


# ------------------------------------------------------------------------------------------ the estimator
def _xp(x):
    from .math import namespace
    return namespace(x)


def _detach(x):
    from .math import runtime
    rt = runtime(x)
    return x if rt is None else rt.stop_gradient(x)


def _normalized(xp, a):
    """exp(a − logsumexp(a)) over the last axis; non-finite entries get weight 0 (an all-non-finite row: nan)."""
    a = xp.where(xp.isfinite(a), a, -math.inf)
    return xp.exp(a - xp.logsumexp(a, axis=-1, keepdims=True))


def brain_weights(log_target, log_q, log_r=None):
    """(α̂, β̂) [..., n]: α̂ = normalized γ(y)/r(y), β̂ = normalized q(y)/r(y) over the last axis, for draws
    y ~ r. `log_r=None` means r = q (then β̂ = 1/n). A row whose target weights are all non-finite gets
    α̂ = β̂ (no gradient). Works on numpy, torch and JAX arrays (no gradient flows through the weights)."""
    log_target, log_q = _detach(log_target), _detach(log_q)
    xp = _xp(log_target)
    n = log_q.shape[-1]
    if log_r is None:
        log_r = log_q
        beta = xp.ones_like(log_q) / n
    else:
        log_r = _detach(log_r)
        beta = _normalized(xp, log_q - log_r)
    alpha = _normalized(xp, log_target - log_r)
    alpha = xp.where(xp.isfinite(alpha), alpha, beta)
    return alpha, beta


def brain_gradient(grad_log_q, log_target, log_q, log_r=None, baseline=True):
    """Σ_i (α̂_i − β̂_i) ∇ log q(y_i) [..., P] from the scores `grad_log_q` [..., n, P] of draws y ~ r (an
    estimate of −∇_θ KL(π ‖ q_θ), the ascent direction); `baseline=False` gives the plain self-normalized
    importance-sampling gradient Σ_i α̂_i ∇ log q(y_i)."""
    alpha, beta = brain_weights(log_target, log_q, log_r)
    w = alpha - beta if baseline else alpha
    return (w[..., None] * grad_log_q).sum(-2)


def brain_loss(log_target, log_q, log_r=None):
    """The surrogate loss −mean_c Σ_i (α̂_i − β̂_i) log q_θ(y_i | c) over contexts (rows): its gradient in θ is
    −(mean over contexts of `brain_gradient`). `log_q` [B, n] carries the gradient; the weights do not."""
    alpha, beta = brain_weights(log_target, log_q, log_r)
    return -((alpha - beta) * log_q).sum(-1).mean()


def _diag_normal_log_prob(xp, y, mean, log_scale):
    u = (y - mean) * xp.exp(-log_scale)
    return (-0.5 * u * u - log_scale).sum(-1) - 0.5 * y.shape[-1] * math.log(2 * math.pi)


def _stats(xp, log_gamma, log_q, log_r):
    """(loss, ESS/n) of a minibatch: loss = Σ β̂ (log q − log γ), the self-normalized estimate of
    KL(q ‖ π_c) − log Z_c, averaged over contexts; ESS/n = 1 / (n Σ α̂²), averaged."""
    alpha, beta = brain_weights(log_gamma, log_q, log_r)
    n = log_q.shape[-1]
    d = xp.where(xp.isfinite(log_gamma), log_q - log_gamma, 0.0 * log_q)
    return (beta * d).sum(-1).mean(), (1.0 / (n * (alpha * alpha).sum(-1))).mean()


# ------------------------------------------------------------------------------------------ the family
def _contexts(contexts):
    if hasattr(contexts, "detach"):
        contexts = contexts.detach().cpu().numpy()
    if isinstance(contexts, (str, bytes, dict)) or contexts is None:
        raise PPLError(f"contexts must be an array [M, ...] (one context per row), got {type(contexts).__name__}")
    try:
        a = np.asarray(contexts)
    except (TypeError, ValueError):
        raise PPLError("contexts must be an array [M, ...] (one context per row) of numbers") from None
    if a.dtype.kind not in "biuf":
        raise PPLError(f"contexts must be an array [M, ...] of numbers, got dtype {a.dtype}")
    if a.ndim == 0 or len(a) == 0:
        raise PPLError(f"contexts must be a non-empty array [M, ...] (one context per row), got shape {a.shape}")
    return a.astype(np.float64) if a.dtype.kind == "f" else a


def _call_family(family, c, where, kind="model"):
    """family(c) compiled, checked to be a target of `kind` ("model" or "sequence")."""
    from .compiler import compile
    from .target import Target
    try:
        target = family(c)
    except PPLError:
        raise
    except Exception as e:
        raise UserFunctionError(f"the family raised on {where}: {type(e).__name__}: {e}") from e
    if not isinstance(target, Target):
        raise PPLError(f"the family must return a ppl target (e.g. ppl.model(...).condition(y=c)); on {where} it "
                       f"returned {type(target).__name__}")
    compiled = compile(target)
    if getattr(compiled, "kind", None) != kind:
        if kind == "sequence":
            raise PPLError(f"the family mixes sequence targets with others: on {where} it gave a "
                           f"{getattr(compiled, 'kind', type(compiled).__name__)} target")
        raise PPLError(f"amortize trains proposals for model targets; on {where} the family gave a "
                       f"{compiled.kind} target")
    return compiled


def _signature(ev):
    """The structure of an evaluator's data and observations, by model position: (keys, shapes, scalars)."""
    out = []
    for part in (ev.data, ev.obs):
        for values in part.values():
            out.append(tuple((k, ("scalar", v) if isinstance(v, (int, float)) else
                              ("array", tuple(v.shape), str(v.dtype))) for k, v in values.items()))
    return tuple(out)


class _Family:
    """The targets of a set of contexts on one runtime: log γ_c for a minibatch of them, and their priors π0.
    `like`: a _Family whose shared evaluation (and its compilations) these contexts reuse."""

    def __init__(self, family, contexts, rt, verify, like=None, what="training context"):
        from .backends.proposals import layout_of
        from .compiler.lower import Evaluator
        self.rt, self.family = rt, family
        self.compiled = [_call_family(family, c, f"{what} {j}") for j, c in enumerate(contexts)]
        base = like.compiled[0] if like is not None else self.compiled[0]
        self.sites, self.dim = layout_of(base.layout), base.dim
        for j, comp in enumerate(self.compiled):
            if layout_of(comp.layout) != self.sites:
                raise ShapeError(f"every target of the family must have the same latent layout: "
                                 f"{'the training contexts have' if like is not None else 'context 0 has'} "
                                 f"{self.sites}, {what} {j} has {layout_of(comp.layout)}")
        if self.dim == 0:
            raise ShapeError("the family's targets have no latent sites: there is nothing to propose")
        self.program = like.program if like is not None else self.compiled[0].lower(rt)
        self.programs = {} if like is not None else {0: self.program}
        evs = [Evaluator(c, rt) for c in self.compiled]
        if like is None:
            self.shared = self._share(evs) and self._verify(verify)
        else:
            self._parts, self._sample = getattr(like, "_parts", None), getattr(like, "_sample", None)
            self.shared = like.shared and self._stack(evs) and self._verify(verify)
        if not self.shared:
            advice.warn(f"the family's targets differ beyond their data and observed values (or in their "
                        f"structure): each of the {len(contexts)} {what}s is lowered to its own "
                        f"program{' (one compilation each)' if rt.compiles_loops else ''}",
                        AmortizeWarning)

    def _stack(self, evs):
        """The contexts' data and observations, stacked [M, ...] under the base program's model names; False
        when their structure differs from the base program's."""
        base = self.program.compiled
        if any(len(c.models) != len(base.models) or [t.kind for t in c.terms] != [t.kind for t in base.terms]
               for c in self.compiled):
            return False
        sig = _signature(self.program.ev)
        if any(_signature(ev) != sig for ev in evs):
            return False
        names = [m.name for m in base.models]

        def rename(part, comp):
            return {n: {k: v for k, v in part[m.name].items() if not isinstance(v, (int, float))}
                    for n, m in zip(names, comp.models)}
        rt = self.rt
        per = [(rename(ev.obs, c), rename(ev.data, c)) for ev, c in zip(evs, self.compiled)]
        def stack(*a):     # in numpy: a JAX stack of thousands of arrays is one huge compilation
            x = np.stack([rt.to_numpy(v) for v in a])
            return rt.asindex(x) if x.dtype.kind in "iub" else rt.asarray(x)
        self.stacked = rt.tree_map(stack, *per)
        return True

    # shared evaluation: the base program with the data and observations of another context
    def _share(self, evs):
        if not self._stack(evs):
            return False
        rt, ev, program = self.rt, self.program.ev, self.program

        def swapped(fn):
            def call(arrays, *args):
                with ev.substituted(*arrays):
                    return fn(*args)
            return call

        one = swapped(lambda z: rt.vmap(program.log_parts)(z))
        self._parts = rt.jit(lambda stacked, idx, y: rt.vmap(one)(rt.tree_map(lambda a: a[idx], stacked), y))
        sample = swapped(lambda key, n: program._sample(key, n))
        self._sample = rt.jit(lambda stacked, j, key, n: sample(rt.tree_map(lambda a: a[j], stacked), key, n),
                              static_argnames=("n",))
        return True

    def _verify(self, verify):
        """The shared evaluation equals each context's own program at 4 points, on `verify` contexts spread
        over the training set (all when verify=None)."""
        m = len(self.compiled)
        k = m if verify is None else max(1, min(int(verify), m))
        idx = np.unique(np.round(np.linspace(0, m - 1, k)).astype(int))
        rt = self.rt
        z = rt.asarray(np.random.default_rng(12345).normal(size=(4, self.dim)))
        ref, rest = self._parts(self.stacked, rt.asindex(idx), rt.xp.stack([z] * len(idx)))
        owns = [self.compiled[j].lower(rt) for j in idx]
        mine = rt.jit(lambda z: [rt.vmap(own.log_parts)(z) for own in owns])(z)   # one compilation for all
        for b, (r2, l2) in enumerate(mine):
            for a, e in ((ref[b], r2), (rest[b], l2)):
                a, e = self.rt.to_numpy(a).astype(np.float64), self.rt.to_numpy(e).astype(np.float64)
                if not np.allclose(a, e, rtol=1e-4, atol=1e-3, equal_nan=True):
                    return False
        return True

    def _own(self, j):
        if j not in self.programs:
            self.programs[j] = self.compiled[j].lower(self.rt)
        return self.programs[j]

    def log_parts(self, idx, y):
        """(log π0 + log|J|, log L) [B, n] at y [B, n, D] for the training contexts `idx` [B] (numpy ints)."""
        if self.shared:
            return self._parts(self.stacked, self.rt.asindex(idx), y)
        parts = [self._own(int(j)).log_densities(y[b]) for b, j in enumerate(idx)]
        return self.rt.xp.stack([p[0] for p in parts]), self.rt.xp.stack([p[1] for p in parts])

    def sample_prior(self, idx, key, n):
        """y [B, n, D] from each context's reference π0."""
        keys = self.rt.split(key, len(idx))
        if self.shared:
            return self.rt.xp.stack([self._sample(self.stacked, self.rt.asindex(int(j)), k, n=n)
                                     for j, k in zip(idx, keys)])
        return self.rt.xp.stack([self._own(int(j)).sample_reference(k, n) for j, k in zip(idx, keys)])


# ------------------------------------------------------------------------------------------ proposals
def _standardization(contexts):
    flat = contexts.reshape(len(contexts), -1).astype(np.float64)
    shift = flat.mean(0)
    scale = flat.std(0)
    return shift, np.where(scale > 1e-8 * (1 + np.abs(shift)), scale, 1.0)


def raise_nonfinite():
    from .errors import InferenceError
    raise InferenceError("the amortized training loss became non-finite (a diverging proposal scale, or target "
                         "densities overflowing): lower lr, or start closer (sampler='prior')")


def _check_gaussian(mean, log_scale, b, dim):
    for name, a in (("mean", mean), ("log_scale", log_scale)):
        if tuple(a.shape) != (b, dim):
            raise ShapeError(f"the proposal returned {name} of shape {tuple(a.shape)} for {b} contexts; expected "
                             f"({b}, {dim}), the dimension of the targets' unconstrained latent space")


def _check_draws(y, b, n, dim):
    if tuple(y.shape) != (b, n, dim):
        raise ShapeError(f"the proposal's sample(n, c) returned shape {tuple(y.shape)}; expected [B, n, D] = "
                         f"{(b, n, dim)}")


# ------------------------------------------------------------------------------------------ the result
class Amortized:
    """A trained conditional proposal. `amortized(c)` is the fitted `Proposal` for context c (a diagonal
    `proposals.Gaussian` on the unconstrained space for Gaussian proposals), bound to the family's layout:
    `ppl.sample(family(c), method="is", reference=amortized(c))`.

    Attributes: `history` ({"loss": [steps], "ess": [steps]}: the minibatch's self-normalized estimate of
    KL(q ‖ π_c) − log Z_c and the sampler's ESS / n, averaged over its contexts), `seconds` (training time),
    `proposal` (the trained module, or (params, apply) on JAX), `runtime`, `sites`, `dim`, `contexts`,
    `shared` (whether one shared function evaluated all the training contexts)."""

    def __init__(self, family, trainer, fam, contexts, history, seconds, runtime):
        self.family, self._trainer, self._fam = family, trainer, fam
        self.sites, self.dim, self.shared = fam.sites, fam.dim, fam.shared
        self.contexts, self.history, self.seconds, self.runtime = contexts, history, seconds, runtime
        self.context_shape = contexts.shape[1:]
        self.proposal = trainer.proposal

    def _context(self, c):
        if hasattr(c, "detach"):
            c = c.detach().cpu().numpy()
        c = np.asarray(c, dtype=np.float64)
        if c.shape != self.context_shape:
            raise ShapeError(f"a context of this amortized proposal has shape {self.context_shape}, got {c.shape}")
        return c

    def evaluate(self, contexts, particles=1000, seed=0, verify=2):
        """Importance sampling of family(c) from q(· | c) for each of `contexts` [K, ...], batched over them
        (one shared evaluation when the family allows, as in training): log w = log γ_c(y) − log q(y | c),
        y ~ q(· | c); log Ẑ_c = logmeanexp(log w), se = sqrt(Σ W²), ESS = 1 / Σ W² (W the normalized
        weights; method "is"'s estimates), Pareto k̂ of the weights. Returns numpy arrays [K] by name:
        "log_z", "log_z_se", "ess", "pareto_k"."""
        from .backends.importance import pareto_khat
        contexts = _contexts(contexts)
        if contexts.shape[1:] != self.context_shape:
            raise ShapeError(f"contexts of this amortized proposal have shape {self.context_shape}, got "
                             f"{contexts.shape[1:]}")
        if isinstance(particles, bool) or not isinstance(particles, (int, np.integer)) or particles < 2:
            raise ValueRangeError(f"particles must be an integer >= 2, got {particles!r}")
        rt, t = self._fam.rt, self._trainer
        fam = _Family(self.family, contexts, rt, verify, like=self._fam, what="context")
        c = rt.asarray(contexts.astype(np.float32))
        y = t.draw(c, rt.key(seed), particles)
        log_q = t.log_density(c, y)
        ref, rest = fam.log_parts(np.arange(len(contexts)), y)
        log_w = rt.to_numpy(ref + rest - log_q).astype(np.float64)
        log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
        top = log_w.max(axis=1, keepdims=True)
        w = np.exp(log_w - top)
        log_z = top[:, 0] + np.log(w.mean(axis=1))
        w = w / w.sum(axis=1, keepdims=True)
        s2 = (w * w).sum(axis=1)
        return {"log_z": log_z, "log_z_se": np.sqrt(s2), "ess": 1.0 / s2,
                "pareto_k": np.array([pareto_khat(row) for row in log_w])}

    def __call__(self, c):
        """The proposal q(· | c) for context c, checked against family(c)'s layout."""
        from .backends.proposals import Gaussian, layout_of
        c = self._context(c)
        comp = _call_family(self.family, c, "the new context")
        if layout_of(comp.layout) != self.sites:
            raise ShapeError(f"family(c) has the latent layout {layout_of(comp.layout)}; the amortized proposal "
                             f"was trained on {self.sites}")
        if self._trainer.general:
            return self._trainer.conditional(c, self.sites)
        mean, log_scale = self._trainer.parameters_at(c)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(log_scale))):
            raise PPLError(f"the amortized proposal is not finite at this context (mean {mean}, log σ {log_scale})")
        return Gaussian(mean, np.diag(np.exp(2 * log_scale))).bound(self.sites)

    def __repr__(self):
        return (f"Amortized(dim={self.dim}, contexts={len(self.contexts)}, runtime={self.runtime!r}, "
                f"steps={len(self.history['loss'])}, final ESS/n={self.history['ess'][-1]:.3f})")


# ------------------------------------------------------------------------------------------ entry point
def amortize(family, contexts, proposal=None, runtime=None, steps=1000, particles=32, batch=16, lr=3e-3,
             sampler=None, hidden=64, depth=2, seed=0, device="cpu", verify=8, **options):
    """Train a conditional proposal q_θ(z | c) for the targets `family(c)`, c in `contexts`, with BRAIn's
    self-normalized gradient (module docstring): each of `steps` Adam steps (learning rate `lr`) draws
    `batch` training contexts and `particles` draws y ~ r per context, and follows
    mean_c Σ_i (α̂_i − β̂_i) ∇_θ log q_θ(y_i | c).

    family: c -> a ppl model target (e.g. `lambda c: m.condition(y=c)`), the same latent layout for every c.
    contexts: array [M, ...] of training contexts (leading axis = contexts).
    proposal: None (an MLP conditional diagonal Gaussian, `hidden` units x `depth` tanh layers plus a linear
        map, on standardized contexts); on 'pyro' a torch module c [B, ...] -> (mean [B, D], log_scale [B, D]),
        or one with `sample(n, c) -> z [B, n, D]` and `log_prob(z, c) -> [B, n]`; on 'numpyro' a pair
        (params, apply) with `apply(params, c) -> (mean, log_scale)` in JAX.
    sampler: None (r = q_θ at the current θ), "prior" (each target's reference π0) or a fixed `Proposal`.
    verify: how many training contexts check the shared evaluation against their own programs (None: all).
    runtime: 'numpyro' (None) or 'pyro'.
    Returns an `Amortized`: `amortized(c)` is the `Proposal` for a new context c.

    When family(c) is a sequence target (`ppl.autoregressive` ...), q_θ is a sequence model (`proposal`: a torch
    module or Hugging Face causal LM, by default a copy of the base) and `options` are those of
    `amortize_sequences.amortize_sequences` (baseline, held_out, eval_every, patience, progress); it returns an
    `AmortizedSequences`.
    """
    from .amortize_sequences import amortize_sequences, is_sequence_family
    from .backends.proposals import Proposal
    from .backends.runtime import DEFAULT, get_runtime
    if is_sequence_family(family, contexts):
        return amortize_sequences(family, contexts, model=proposal, runtime=runtime, device=device, steps=steps,
                                  particles=particles, batch=batch, lr=lr, sampler=sampler, seed=seed, **options)
    if options:
        raise UnknownNameError(f"amortize has no option(s) {', '.join(sorted(options))} for a family of model "
                               f"targets (they apply to sequence families)")
    runtime = DEFAULT if runtime is None else runtime
    if not callable(family):
        raise PPLError(f"family must be a callable context -> ppl target, got {type(family).__name__}")
    contexts = _contexts(contexts)
    for name, v, lo in (("steps", steps, 1), ("particles", particles, 2), ("batch", batch, 1),
                        ("hidden", hidden, 1), ("depth", depth, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueRangeError(f"{name} must be an integer >= {lo}, got {v!r}")
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueRangeError(f"lr must be a positive number, got {lr!r}")
    if verify is not None and (isinstance(verify, bool) or not isinstance(verify, (int, np.integer)) or verify < 1):
        raise ValueRangeError(f"verify must be None (all) or an integer >= 1, got {verify!r}")
    if not (sampler is None or isinstance(sampler, Proposal) or (isinstance(sampler, str) and sampler == "prior")):
        raise UnknownNameError(f"sampler must be None (the proposal itself), 'prior' or a fitted Proposal, got "
                               f"{sampler!r}")
    rt = get_runtime(runtime, device)
    fam = _Family(family, contexts, rt, verify)
    if isinstance(sampler, Proposal):
        sampler.check(fam.program)
    shift, scale = _standardization(contexts)
    if proposal is None:
        proposal = rt.conditional_gaussian(contexts.shape[1:], fam.dim, hidden, depth, shift, scale, seed)
    trainer = rt.proposal_trainer(proposal, lr, fam.dim)

    ctx = rt.asarray(contexts.astype(np.float32))
    rng = np.random.default_rng(seed)
    keys = rt.split(rt.key(seed), steps)
    m, b = len(contexts), min(batch, len(contexts))
    batches = np.stack([np.sort(rng.choice(m, size=b, replace=False)) for _ in range(steps)])
    start = time.perf_counter()
    if sampler is None and fam.shared and hasattr(trainer, "train_fused"):     # one compiled scan over all steps
        losses, esses = trainer.train_fused(fam._parts, fam.stacked, ctx, rt.asindex(batches), keys, particles)
    else:
        stats = []
        for s, idx in enumerate(batches):
            c = ctx[rt.asindex(idx)]
            log_r = None
            if sampler is None:
                y = trainer.draw(c, keys[s], particles)
            elif isinstance(sampler, str):     # "prior"
                y = fam.sample_prior(idx, keys[s], particles)
            else:
                y = sampler.sample(rt, keys[s], b * particles).reshape(b, particles, fam.dim)
                log_r = sampler.log_prob(rt, y.reshape(b * particles, fam.dim)).reshape(b, particles)
            ref, rest = fam.log_parts(idx, y)
            if isinstance(sampler, str):
                log_r = ref
            stats.append(trainer.step(c, y, ref + rest, log_r))
        losses, esses = (np.array([float(v[k]) for v in stats]) for k in (0, 1))
    seconds = time.perf_counter() - start
    if not np.all(np.isfinite(losses)):
        raise_nonfinite()
    return Amortized(family, trainer, fam, contexts, {"loss": losses, "ess": esses}, seconds, rt.name)
