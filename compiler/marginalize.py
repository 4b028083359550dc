"""Integrating out what the model lets us integrate out: a rewrite of the target before it is planned.

A rule looks at one model and finds latent sites x whose only reader is an observed site y and whose sum or
integral has a closed form; it returns the model with x removed and y's distribution replaced by the marginal

    p(y | θ) = ∫ p(x | θ) p(y | x, θ) dx      (a sum for discrete x)

(the Kalman filter for a linear-Gaussian state path, `linear_gaussian.py`). The joint density of the other
sites is unchanged, p(θ, y) = ∫ p(θ, x, y) dx, so every method samples θ from the same posterior and finds
the same log Z, with less variance; the marginal's `posterior` draws x given θ and y afterwards.

A model is rewritten only where it enters the target once with exponent 1 (∫ p^β dx is not (∫ p dx)^β) and
no reward or energy reads x. Rules decide from the model as written: they evaluate its laws at `probes`,
environments of representative values of every site and datum (the shape trace's point, and two points
around it), and check there what they need (a family, a mean affine in x).
"""
from typing import NamedTuple

import numpy as np

from ..target import Energy, Model

#: the rules, in the order they are tried: (candidate(model) -> bool, a cheap test that decides whether probes
#: are needed; apply(model, probes, readers) -> (new model, [Marginal]) or None)
RULES = []


class Marginal(NamedTuple):
    """Latent `sites` of `model` integrated out into the observed site `observed`, by `how`."""
    model: str
    sites: tuple
    observed: str
    how: str

    def __str__(self):
        return f"{', '.join(self.sites)} of model {self.model}: integrated out by {self.how} (into {self.observed})"


def rule(candidate, methods=None):
    """Register a rule `apply(model, probes, readers)` (see the module docstring and `RULES`); with `methods`
    (names), it applies only when the target is compiled for one of them."""
    def register(apply):
        RULES.append((candidate, apply, methods))
        return apply
    return register


def marginalize(target, plain, method=None):
    """(target with the rules applied, [Marginal]). `plain()` compiles the target unmarginalized (for the
    probes; called only where some model has a candidate); `method`: the method it is compiled for (None: any,
    and the rules that name their methods do not apply)."""
    from . import linear_gaussian  # noqa: F401  (registers its rule)
    from . import discrete  # noqa: F401
    from . import conjugate  # noqa: F401
    leaves = target.linear()
    once = [m for m, c in leaves if isinstance(m, Model) and c == 1.0
            and sum(leaf is m for leaf, _ in leaves) == 1]
    readers = {p for leaf, _ in leaves if leaf.kind in ("reward", "energy") for p in leaf.parents}
    rules = [(candidate, apply) for candidate, apply, methods in RULES if methods is None or method in methods]
    if not any(candidate(m) for m in once for candidate, _ in rules):
        return target, []
    from .lower import probing
    with probing():     # a discrete latent site, which a rule may sum out, does not stop this trace
        probes = probe_environments(plain())
    replaced, found = {}, []
    for m in once:
        new = m
        while True:
            out = next((r for r in (apply(new, probes[m.name], readers) for candidate, apply in rules
                                    if candidate(new)) if r is not None), None)
            if out is None:
                break
            new, marginals = out
            found.extend(marginals)
        if new is not m:
            replaced[id(m)] = new
    return _replace(target, replaced), found


def _replace(target, replaced):
    if isinstance(target, Model):
        return replaced.get(id(target), target)
    if isinstance(target, Energy) or not target.children():
        return target
    return target._rebuild([_replace(c, replaced) for c in target.children()])


def probe_environments(compiled, n=2, scale=0.1, seed=0):
    """For each model: environments (name -> numpy value: data, observations, latent and deterministic sites)
    at the compiler's representative point (the shape trace), and `n` more with the latent and deterministic
    float values moved a little (x·e^{0.1 ε} where x ≠ 0, 0.1 ε where x = 0: inside any support that keeps
    its sign or stays near the representative point)."""
    import warnings
    from .lower import Evaluator
    from .shapes import ShapeRuntime, tracing
    with warnings.catch_warnings(), np.errstate(all="ignore"), tracing():
        warnings.simplefilter("ignore", RuntimeWarning)
        ev = Evaluator(compiled, ShapeRuntime())
        values, dets, _, _, _ = ev.latent_values(None)
        base = {m.name: dict(ev.env(m, values, dets)) for m in compiled.models}
    rng = np.random.default_rng(seed)
    moved = set(values) | {k for d in dets.values() for k in d}

    def move(v):
        a = np.asarray(v)
        if a.dtype.kind != "f":
            return v
        e = scale * rng.standard_normal(a.shape)
        return np.where(a != 0, a * np.exp(e), e)
    return {name: [env] + [{k: (move(v) if k in moved else v) for k, v in env.items()} for _ in range(n)]
            for name, env in base.items()}
