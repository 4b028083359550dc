"""Planning for diffusion targets: γ_t(x) = Π_i q_{i,t}(x)^{β_i} · exp(Σ_j c_j r_j(x)).

The target tree (`**`, `*`, `geometric`, `tilt` over `ppl.diffusion` bases) is walked into
constant exponents β_i per distinct base and coefficients c_j per reward (c = β/λ for a tilt
under a power β). Ordinary models cannot be mixed in: FKC needs a score for every factor.
"""
from ..diffusion import SITE
from ..errors import PlanError, ShapeError
from .graph import build_graph
from .terms import exponents


def agree(bases):
    """Diffusion bases combined in one target must share their dimension and forward SDE (else an error)."""
    first = bases[0]
    for b in bases:
        if b.dim != first.dim:
            raise ShapeError(f"diffusion models {first.name} (d={first.dim}) and {b.name} (d={b.dim}) "
                             f"combined by * must agree in dimension")
        if repr(b.sde) != repr(first.sde):
            raise PlanError(f"diffusion models {first.name} ({first.sde!r}) and {b.name} ({b.sde!r}) use "
                            f"different forward SDEs; FKC needs one SDE for all factors")


class DiffusionPlan:
    """`bases` [(DiffusionModel, β)], `rewards` [(Reward, c)], the shared `sde` and `dim`, B = Σ β_i."""

    kind = "diffusion"     # the methods registered for this kind sample it (backends.get_method)

    def __init__(self, target, reference=None, fold=True):
        self.target = target
        self.bases, self.rewards = exponents(target, reference, "diffusion", "ppl.diffusion", f"the one site {SITE!r}",
                                             (1,), why="FKC needs a score for every factor: ")
        agree([b for b, _ in self.bases])
        self.sde, self.dim = self.bases[0][0].sde, self.bases[0][0].dim
        self.graph = build_graph(target, [], {})   # no models: a reward reads the site x itself
        self.total_beta = sum(beta for _, beta in self.bases)
        if self.total_beta <= 0:
            raise PlanError(f"the exponents of the diffusion bases sum to {self.total_beta:g} <= 0; the target "
                            f"at t = T is not normalizable")

    def __str__(self):
        lines = [f"target: {self.target.describe()}", f"site: {SITE} [{self.dim}]  sde: {self.sde!r}",
                 "diffusion factors (log γ_t = Σ β_i log q_i,t + Σ c_j r_j):"]
        lines += [f"  {beta:+g} x log {b.name}" for b, beta in self.bases]
        lines += [f"  {c:+g} x reward {r.name}" for r, c in self.rewards]
        lines.append(f"start: N(0, {self.sde.prior_var:.4g} / {self.total_beta:g} I) at t = T; "
                     f"path: reverse SDE with Feynman-Kac weights (method 'fkc')")
        return "\n".join(lines)
