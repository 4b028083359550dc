"""Expansion of a target tree into a weighted sum of log-density terms: log γ = Σ_t c_t ℓ_t."""
from dataclasses import dataclass, field

from ..target import Energy, Geometric, Model, Power, Product, Tilt


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


def expand(target, coef=1.0):
    """The terms of `target`, in order, each with its coefficient."""
    if isinstance(target, Model):
        out = []
        for name, s in target.sites.items():
            if s.kind == "latent":
                kind = "likelihood" if name in target.observed else "prior"
                out.append(Term(kind, coef, target, name))
            elif s.kind == "factor":
                out.append(Term("factor", coef, target, name))
        return out
    if isinstance(target, Power):
        return expand(target.base, coef * target.beta)
    if isinstance(target, Product):
        return [t for f in target.factors for t in expand(f, coef)]
    if isinstance(target, Geometric):
        return expand(target.p, coef * (1.0 - target.w)) + expand(target.q, coef * target.w)
    if isinstance(target, Tilt):
        return expand(target.base, coef) + [Term("reward", coef / target.lam, fn=target.reward)]
    if isinstance(target, Energy):
        sites = expand(target.model, coef) if target.model else []
        return sites + [Term("energy", -coef, fn=target.reward)]
    raise TypeError(f"not a target: {target!r}")
