"""The state-space structure of a compiled target, for particle filters (DESIGN §8).

A target is sequential when one of its latent sites is a `ppl.markov` path x[0:T]. Its log density splits as

    log γ(θ, x) = log p(θ) + log p0(x_0 | θ) + Σ_{t≥1} log p(x_t | x_{t−1}, θ) + Σ_t log p(y_t | x_t, θ)

where θ are the other (static) sites and each observation y read by x is elementwise in time: its element t
depends on x_t only (data read with a leading axis of length T are sliced at t). The particle filter runs over
t with θ fixed; PMMH samples θ around it.
"""
import numpy as np

from .. import advice
from ..errors import PlanError
from .terms import Likelihood, Prior, Reward


class StateSpace:
    """The Markov site, its model, the static latent sites θ, the observations of x, and the rest."""

    def __init__(self, compiled):
        found = [(m, n) for m in compiled.models for n, s in m.sites.items()
                 if getattr(s, "markov", None) is not None and n not in m.observed]
        if not found and compiled.marginals:
            raise PlanError(f"the compiler integrated the state path out ({compiled.marginals[0]}); this method needs "
                            f"it sampled", hint="pass marginalize=False")
        if not found:
            raise PlanError("a particle filter needs a latent state that evolves over time (a ppl.markov site, "
                            "or x[t] ~ ... in a loop of a .ppl model); this target has none",
                            hint=f"use {advice.options('smc', True)} or {advice.options('nuts', True)}")
        if len(found) > 1:
            raise PlanError(f"a particle filter runs over one state path; this target has "
                            f"{', '.join(repr(n) for _, n in found)}")
        self.compiled = compiled
        self.model, self.name = found[0]
        self.site = self.model.sites[self.name]
        self.static = [n for n in compiled.latent if n != self.name]
        self.observations = []
        for t in compiled.terms:
            if isinstance(t, Likelihood) and t.model is self.model and t.reads(self.name):
                self.observations.append(t)
            elif isinstance(t, Prior) and t.site == self.name:
                if t.coef != 1.0:
                    raise PlanError(f"the state path {self.name!r} enters the target with exponent {t.coef:g}; a "
                                    f"particle filter needs it once (anneal the observations instead)", site=self.name)
            elif self._reads_state(t):
                raise PlanError(f"{t.label} reads the whole state path {self.name!r}; a particle filter needs every "
                                f"term that reads it to be an observation elementwise in time "
                                f"(y ~ f(x) with y observed)", site=self.name)
        self.rest = [t for t in compiled.terms if t not in self.observations and not
                     (isinstance(t, Prior) and t.site == self.name)]
        for m in compiled.models:
            for n, s in m.sites.items():
                if s.role == "deterministic" and self.name in s.parents and m is self.model:
                    raise PlanError(f"deterministic site {n!r} reads the state path {self.name!r}; a particle "
                                    f"filter cannot evaluate it one time step at a time: write it into the "
                                    f"observation's distribution", site=n)

    @staticmethod
    def has_path(compiled):
        """Whether the target has a latent state path left (the compiler may have integrated it out)."""
        return any(getattr(s, "markov", None) is not None and n not in m.observed
                   for m in compiled.models for n, s in m.sites.items())

    def _reads_state(self, t):
        return (isinstance(t, Reward) or t.model is self.model) and t.reads(self.name)

    def check_fixed(self):
        """A filter with θ fixed: every static site must be observed (conditioned) or data."""
        if self.static:
            raise PlanError(f"method 'pf' filters with the static parameters fixed, but "
                            f"{', '.join(repr(n) for n in self.static)} {'is' if len(self.static) == 1 else 'are'} "
                            f"latent", site=self.static[0],
                            hint=f"condition on {'it' if len(self.static) == 1 else 'them'} "
                                 f"({advice.condition(self.static[0])}) or sample them with "
                                 f"{advice.options('pmmh', True)}")

    def observed_value(self, term, length):
        y = np.asarray(term.model.observed[term.site])
        if y.ndim == 0 or y.shape[0] != length:
            raise PlanError(f"observation {term.site!r} has shape {y.shape}; a particle filter needs its leading "
                            f"axis to be time (length {length} of {self.name!r})", site=term.site)
        return y

    def __str__(self):
        return (f"state path {self.name!r} of model {self.model.name}; static sites: "
                f"{', '.join(self.static) or 'none'}; observations: "
                f"{', '.join(t.site for t in self.observations) or 'none'}")
