"""Expansion of a target tree into a weighted sum of log-density terms: log γ = Σ_t c_t ℓ_t."""
from dataclasses import dataclass, field

from ..errors import PlanError
from ..target import Model, Target


@dataclass
class Term:
    """One log-density term ℓ_t with coefficient c_t.

    kind: 'prior' (log p(x | parents) of a latent site), 'likelihood' (an observed site),
    'factor', 'reward' (r(x), coefficient 1/λ), 'energy' (E(x), coefficient −1),
    'gaussian' (a folded product of Gaussian priors, see gaussian.py) or 'constant'.
    """
    kind: str
    coef: float
    model: Model = None
    site: str = None
    fn: object = None
    value: object = None
    origin: list = field(default_factory=list)

    @property
    def label(self):
        where = f"{self.model.name}." if self.model is not None else ""
        what = self.site if self.site is not None else getattr(self.fn, "name", "")
        return f"{self.kind} {where}{what}".strip()


def model_terms(model, coef):
    """The terms of one model: a prior or likelihood per latent site, a factor per factor site."""
    out = []
    for name, s in model.sites.items():
        if s.kind == "latent":
            out.append(Term("likelihood" if name in model.observed else "prior", coef, model, name))
        elif s.kind == "factor":
            out.append(Term("factor", coef, model, name))
    return out


def _no_schedule(reward, kind):
    if reward.schedule is not None:
        raise PlanError(f"reward {reward.name} has a schedule b(t), which only diffusion targets (method 'fkc') "
                        f"have; a {kind} target's tilt is constant")


def expand(target):
    """The terms of `target`, in order, each with its coefficient (from the nodes' own `linear` expansion)."""
    out = []
    for leaf, coef in target.linear():
        if leaf.kind == "model":
            out.extend(model_terms(leaf, coef))
        elif leaf.kind in ("reward", "energy"):
            _no_schedule(leaf, "model")
            out.append(Term(leaf.kind, coef, fn=leaf))
        else:
            raise PlanError(f"{leaf.describe()} is a {leaf.kind} base; it cannot be expanded into log-density terms")
    return out


def exponents(target, reference, kind, constructor, reads, arities, why=""):
    """For targets over bases of one `kind` ('diffusion', 'sequence'): exponents β_i per distinct base and
    coefficients c_j per reward, from the nodes' `linear` expansion (zero ones dropped): ([(base, β)],
    [(reward, c)]). A reward must read `arities` names (`reads` says what); any other leaf is a PlanError."""
    if not isinstance(target, Target):
        raise PlanError(f"expected a target, got {type(target).__name__}")
    if reference is not None:
        raise PlanError(f"a reference applies to model targets, not to a target of {kind} models")
    bases, rewards = {}, []
    for leaf, coef in target.linear():
        if leaf.kind == kind:
            bases[leaf] = bases.get(leaf, 0.0) + coef
        elif leaf.kind == "reward":
            if len(leaf.parents) not in arities:
                raise PlanError(f"a reward on a {kind} target reads {reads}; reward {leaf.name} reads "
                                f"{', '.join(leaf.parents) or 'nothing'}")
            if kind != "diffusion":
                _no_schedule(leaf, kind)
            rewards.append((leaf, coef))
        else:
            what = leaf.describe() if leaf.kind in ("model", "diffusion", "sequence") else leaf.name
            raise PlanError(f"the target mixes {kind} models with the ordinary {leaf.kind} {what}; {why}combine only "
                            f"{constructor} bases with **, *, geometric and tilt")
    bases = [(b, beta) for b, beta in bases.items() if beta != 0.0]
    if not bases:
        raise PlanError(f"{target.describe()}: every {kind} base has exponent 0")
    return bases, [(r, c) for r, c in rewards if c != 0.0]
