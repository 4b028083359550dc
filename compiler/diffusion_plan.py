"""Planning for diffusion targets: γ_t(x) = Π_i q_{i,t}(x)^{β_i} · exp(Σ_j c_j r_j(x)).

The target tree (`**`, `*`, `geometric`, `tilt` over `ppl.diffusion` bases) is walked into
constant exponents β_i per distinct base and coefficients c_j per reward (c = β/λ for a tilt
under a power β). Ordinary models cannot be mixed in: FKC needs a score for every factor.
"""
from ..diffusion import SITE, DiffusionModel
from ..errors import PlanError, ShapeError
from ..target import Energy, Geometric, Model, Power, Product, Target, Tilt


def has_diffusion(target):
    """Whether `target` contains a `ppl.diffusion` base."""
    return isinstance(target, DiffusionModel) or any(has_diffusion(c) for c in target.children())


def _walk(target, coef, bases, rewards):
    if isinstance(target, DiffusionModel):
        bases[target] = bases.get(target, 0.0) + coef
    elif isinstance(target, Power):
        _walk(target.base, coef * target.beta, bases, rewards)
    elif isinstance(target, Product):
        for f in target.factors:
            _walk(f, coef, bases, rewards)
    elif isinstance(target, Geometric):
        _walk(target.p, coef * (1.0 - target.w), bases, rewards)
        _walk(target.q, coef * target.w, bases, rewards)
    elif isinstance(target, Tilt):
        _walk(target.base, coef, bases, rewards)
        if len(target.reward.parents) != 1:
            raise PlanError(f"a reward on a diffusion target reads the one site {SITE!r}; reward "
                            f"{target.reward.name} reads {', '.join(target.reward.parents) or 'nothing'}")
        rewards.append((target.reward, coef / target.lam))
    elif isinstance(target, (Model, Energy)):
        raise PlanError(f"the target mixes diffusion models with the ordinary {target.__class__.__name__.lower()} "
                        f"{target.describe()}; FKC needs a score for every factor (combine only ppl.diffusion "
                        f"bases with **, *, geometric and tilt)")
    else:
        raise PlanError(f"cannot plan {target!r} for diffusion sampling")


class DiffusionPlan:
    """`bases` [(DiffusionModel, β)], `rewards` [(Reward, c)], the shared `sde` and `dim`, B = Σ β_i."""

    def __init__(self, target):
        if not isinstance(target, Target):
            raise PlanError(f"expected a target, got {type(target).__name__}")
        bases, rewards = {}, []
        _walk(target, 1.0, bases, rewards)
        self.target = target
        self.bases = [(b, beta) for b, beta in bases.items() if beta != 0.0]
        self.rewards = [(r, c) for r, c in rewards if c != 0.0]
        if not self.bases:
            raise PlanError(f"{target.describe()}: every diffusion base has exponent 0")
        first = self.bases[0][0]
        for b, _ in self.bases:
            if b.dim != first.dim:
                raise ShapeError(f"diffusion models {first.name} (d={first.dim}) and {b.name} (d={b.dim}) "
                                 f"combined by * must agree in dimension")
            if repr(b.sde) != repr(first.sde):
                raise PlanError(f"diffusion models {first.name} ({first.sde!r}) and {b.name} ({b.sde!r}) use "
                                f"different forward SDEs; FKC needs one SDE for all factors")
        self.sde, self.dim = first.sde, first.dim
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


def plan_diffusion(target):
    """The diffusion plan of `target` (raises PlanError for targets FKC cannot sample)."""
    return DiffusionPlan(target)
