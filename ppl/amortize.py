"""`ppl.amortize`: one conditional density q_θ(z | c) for a family of targets γ_c indexed by a context c,
trained with BRAIn's self-normalized gradient (`amortize_brain`).

For a context c with target π_c = γ_c / Z_c on the unconstrained latent space (log γ_c(z) = log π0(z) +
log|J(z)| + log L(z), the compiled program's `log_densities`), each step draws a minibatch of training
contexts and y_1..y_n ~ r per context (detached), and takes an Adam step on −Σ (α̂ − β̂) log q_θ. The sampler
r is q_θ itself at the current θ (default), the target's reference π0 (`sampler="prior"`), or any fixed
`Proposal`. The targets (`amortize_family`) are evaluated batched over contexts where they share their
structure (on JAX all the steps then run as one compiled scan); the proposal and its trainer are the runtime's
(`conditional_gaussian`, `proposal_trainer`); the result is an `Amortized` (`amortize_result`), whose
`evaluate` runs importance sampling from q(· | c) on many new contexts in the same batched way. Families of
sequence targets go to `amortize_sequences`.
"""
import math
import time

import numpy as np

from .amortize_brain import brain_gradient, brain_loss, brain_weights
from .amortize_family import AmortizeWarning, _contexts, _Family
from .amortize_proposal import _standardization, raise_nonfinite
from .amortize_result import Amortized
from .errors import PPLError, UnknownNameError, ValueRangeError

__all__ = ["amortize", "Amortized", "AmortizeWarning", "brain_weights", "brain_gradient", "brain_loss"]


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
