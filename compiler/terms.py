"""Expansion of a target tree into a weighted sum of log-density terms: log γ = Σ_t c_t ℓ_t.

A term's kind is its class: `Prior` log p(x | parents) of a latent site, `Likelihood` log p(y | parents) of an
observed one, `Factor` a model's log f, `Reward` r(x) and `Energy` E(x) of a tilt, and the two that folding
Gaussian priors leaves (`gaussian.py`): `Gaussian` N(x; m, s²) and `Constant`. Each owns its log density at one
particle (`Term.log_density` at a `lower.Point`), its compile-time checks and what it reads.
"""
import numpy as np

from ..errors import PlanError, PPLError, ShapeError, SupportError, UserFunctionError, ValueRangeError
from ..stdlib.distributions import LIBRARY, Distribution, concrete, invalid_parameter, outside_support
from ..target import Target
from .shapes import BOUNDED, support_name


class Term:
    """One log-density term ℓ_t with coefficient c_t. A subclass per kind owns what the kind means: its log density
    at one particle (`log_density`), its compile-time checks (`check`) and what it reads (`reads`); adding a kind is
    one class. `kind` is its name in labels, plans and graphs."""
    kind = None

    def __init__(self, coef, model=None, site=None, fn=None, value=None, origin=None):
        self.coef, self.model, self.site, self.fn, self.value = coef, model, site, fn, value
        self.origin = [] if origin is None else origin

    def __repr__(self):
        return f"{type(self).__name__}({self.coef!r}, {self.label!r})"

    @property
    def label(self):
        where = f"{self.model.name}." if self.model is not None else ""
        what = self.site if self.site is not None else getattr(self.fn, "name", "")
        return f"{self.kind} {where}{what}".strip()

    def log_density(self, point):
        """ℓ_t at one particle; `point` (`lower.Point`) gives the values, environments and distributions."""
        raise NotImplementedError

    def reads(self, name):
        """Whether the term reads the site `name` of its model (a reward: any site of that name)."""
        return False

    def check(self, got, layout):
        """Compile-time checks on one traced particle: `got` is the term's runtime distribution (a `Distributed`
        term) or its value (a `Valued` one)."""

    def fixed_error(self, point, d):
        """A located error where the term's distribution reads only data and is invalid there, else None."""
        return None

    def invalid(self, point, rt):
        """'parameter = value must be ...' (or 'value is outside its support') at the one particle `point`,
        evaluated eagerly after a run, else None."""
        return None

    @property
    def located(self):
        """The site errors about this term name (None for a reward, an energy, a constant or a folded term)."""
        return None


class Constant(Term):
    """A constant ℓ (the log normalizer left by folding Gaussians, `gaussian.py`)."""
    kind = "constant"

    def log_density(self, point):
        return self.value


class Valued(Term):
    """A term whose value is a user function's: one real per particle."""
    what = None

    def check(self, value, layout):
        kind = np.asarray(value).dtype.kind if isinstance(value, (int, float, np.ndarray, np.generic)) else "O"
        if kind not in "biuf":
            raise UserFunctionError(f"{self.what} must return one real per particle; {self.label} returned "
                                    f"{type(value).__name__} {value!r:.40}")
        if np.shape(value) != ():
            raise ShapeError(f"{self.what} must return one real per particle; {self.label} returned shape "
                             f"{tuple(np.shape(value))} (sum over the site's elements?)")


class OfSite:
    """A term of one site of its model: it reads the site's parents, and errors about it name the site."""

    def reads(self, name):
        return name in self.model.sites[self.site].parents

    @property
    def located(self):
        return self.site


class Factor(OfSite, Valued):
    """log f(·) of a factor site of a model, read in the model's environment."""
    kind, what = "factor", "a factor"

    def log_density(self, point):
        return self.model.sites[self.site](point.env(self.model))


class Reward(Valued):
    """r(x) of a tilt (coefficient 1/λ), reading latent and deterministic sites by name."""
    kind, what = "reward", "a reward"

    def log_density(self, point):
        return self.fn(point.glob)

    def reads(self, name):
        return name in self.fn.parents


class Energy(Reward):
    """E(x) of an energy (coefficient −1)."""
    kind, what = "energy", "an energy"


class Distributed(Term):
    """log p(x) of a distribution over one latent or observed site: its `spec` in an environment, its log
    density at the site's value."""

    def spec(self, env):
        """The `Distribution` of the term in environment `env`."""
        raise NotImplementedError

    def log_density(self, point):
        return point.dist(self).log_prob(point.latent(self.site)).sum()

    def check(self, d, layout):
        """A prior-like term of a laid-out site agrees with the site's reference factor in shape and support."""
        if self.site not in layout:
            return
        entry = layout[self.site]
        shape = tuple(d.batch_shape) + tuple(d.event_shape)
        if shape != entry["shape"]:
            raise ShapeError(f"site {self.site!r} has shape {entry['shape']} in {entry['from']} but {shape} in "
                             f"{self.label}; sites combined by * must agree in shape", site=self.site)
        if support_name(d.support) != entry["support"]:
            raise SupportError(f"site {self.site!r} has support {entry['support']} in {entry['from']} but "
                               f"{support_name(d.support)} in {self.label}; sites combined by * must agree in "
                               f"support", site=self.site)


class Gaussian(Distributed):
    """A folded product of constant-Normal priors of one site: N(x; m, s²) with value = (m, s) (`gaussian.py`)."""
    kind = "gaussian"

    def spec(self, env):
        loc, scale = self.value
        return Distribution("Normal", {"loc": loc, "scale": scale})


class SiteTerm(OfSite, Distributed):
    """The distribution a model's site returns: log p(x | parents)."""

    def spec(self, env):
        d = self.model.sites[self.site](env)
        if not isinstance(d, Distribution):
            raise PPLError(f"site {self.site!r} of model {self.model.name} must return a distribution "
                           f"(e.g. ppl.Normal(...)), got {type(d).__name__}")
        return d

    def fixed(self):
        """Whether the site reads only data and observations."""
        return set(self.model.sites[self.site].parents) <= set(self.model.data) | set(self.model.observed)

    def fixed_error(self, point, d):
        if not self.fixed():
            return None
        spec = self.spec(point.env(self.model))
        params = {k: concrete(v) for k, v in spec.params.items() if k != "support"}
        if all(v is not None for v in params.values()):
            error = invalid_parameter(getattr(spec, "base_family", spec.family), params)
            return error and ValueRangeError(f"{self.label}: parameter {error}", site=self.site)
        return None

    def invalid(self, point, rt):
        spec = self.spec(point.env(self.model))
        family = getattr(spec, "base_family", spec.family)   # a sorted (ordered) site: its elements' family
        if family not in LIBRARY:
            return None
        return invalid_parameter(family, {k: rt.to_numpy(rt.asarray(v)).astype(np.float64)
                                          for k, v in spec.params.items() if k != "support"})


class Prior(SiteTerm):
    """log p(x | parents) of a latent site."""
    kind = "prior"


class Likelihood(SiteTerm):
    """log p(y | parents) of an observed site at its observation y."""
    kind = "likelihood"

    def log_density(self, point):
        return point.observed_log_prob(self).sum()

    def check(self, d, layout):
        obs = np.shape(self.model.observed[self.site])
        shape = tuple(d.batch_shape) + tuple(d.event_shape)
        if obs != shape:
            raise ShapeError(f"observed {self.site!r} of model {self.model.name} has shape {obs}, but its "
                             f"distribution has shape {shape}", site=self.site)

    def fixed_error(self, point, d):
        error = super().fixed_error(point, d)
        if error is None:
            y = concrete(point.observed(self))
            bounds = d.support.params if self.fixed() and support_name(d.support) in BOUNDED else {}
            error = y is not None and outside_support(support_name(d.support), y, bounds.get("low"),
                                                      bounds.get("high"))
            error = error and SupportError(f"observed {self.site!r} of model {self.model.name}: {error}",
                                           site=self.site)
        return error

    def invalid(self, point, rt):
        said = super().invalid(point, rt)
        if said is None:
            d, y = point.dist(self), point.observed(self)
            support = support_name(d.support)
            bounds = [rt.to_numpy(getattr(d.support, b)) if hasattr(d.support, b) else None
                      for b in ("lower_bound", "upper_bound")] if support in BOUNDED else [None, None]
            said = outside_support(support, rt.to_numpy(y).astype(np.float64), *bounds)
        return said


def model_terms(model, coef):
    """The terms of one model: a prior or likelihood per latent site, a factor per factor site."""
    out = []
    for name, s in model.sites.items():
        if s.role == "latent":
            out.append((Likelihood if name in model.observed else Prior)(coef, model, name))
        elif s.role == "factor":
            out.append(Factor(coef, model, name))
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
            out.append((Energy if leaf.kind == "energy" else Reward)(coef, fn=leaf))
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
