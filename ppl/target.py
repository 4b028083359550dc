"""The target algebra: unnormalized densities that compose.

A target is log γ(x) over named sites. The operators build a tree; the compiler
expands it into a sum of log-density terms, each with its own coefficient:

    model          log p(x) + log p(y | x)
    p ** beta      beta * log p
    p * q          log p + log q
    geometric      (1 - w) log p + w log q
    p.tilt(r, lam) log p + r(x) / lam
    energy(E)      -E(x)

Each node carries its meaning: `linear(c)` is its expansion log γ = Σ_i c_i log ℓ_i into leaves (models,
diffusion bases, rewards and energies; each says its `kind`), `label` names it in the inference graph,
`functions()` are the rewards it adds itself, and `folded()` is its simplified form. The compiler reads
only these, so a new operation is one class here (plus its syntax).
"""
import copy
import inspect
import itertools
import math
import numbers

import numpy as np

from .errors import NameResolutionError, PPLError, UserFunctionError, ValueRangeError
from .stdlib.distributions import Distribution


def _number(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueRangeError(f"{what} must be a finite real number, got {value!r}")
    return float(value)


def _positive(value, what):
    if _number(value, what) <= 0:
        raise ValueRangeError(f"{what} must be > 0, got {value!r}")
    return float(value)


def _numbers(value, what):
    """`value` as a numpy array of numbers (ints, floats or booleans), or a ValueRangeError naming `what`."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.dtype.kind not in "biuf":
        raise ValueRangeError(f"{what} must be a number or an array of numbers, got {value!r:.60}")
    return arr


def arg_names(fn, what):
    """Names a function reads: its positional parameters (no *args / **kwargs)."""
    if not callable(fn):
        raise PPLError(f"{what} must be callable, got {type(fn).__name__}")
    params = inspect.signature(fn).parameters.values()
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise PPLError(f"{what} reads sites by its argument names; *args / **kwargs name none "
                       f"(write e.g. lambda x, y: ...)")
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                 and p.default is inspect.Parameter.empty)


NUMPY_HINT = ("; numpy functions (np.sin, np.exp, ...) cannot run on the runtime's arrays (JAX tracers, torch "
              "tensors under vmap): use ppl.math (ppl.math.sin, ppl.math.exp, ...)")


def call_user(fn, kwargs, what, site=None):
    """fn(**kwargs) for a user function: an exception it raises becomes a `UserFunctionError` naming `what`
    (with a hint when numpy met a runtime array)."""
    try:
        return fn(**kwargs)
    except PPLError:
        raise
    except Exception as e:  # noqa: BLE001 (anything user code raises)
        text = f"{type(e).__name__}: {e}"
        hint = NUMPY_HINT if "Tracer" in type(e).__name__ or "__array__" in text or "data pointer" in text else ""
        raise UserFunctionError(f"{what} raised {text}{hint}", site=site) from e


class Site:
    """One named statement of a model: `latent` (x ~ dist), `deterministic` (x = f(...)) or `factor`.

    `fn(**parents)` returns a `Distribution` (latent), a value (deterministic) or a log density (factor).
    `name` is the site's name in its model (set by `Model` through `named`). A deterministic site with `keep`
    False is computed for the sites that read it but not saved in the draws (a `.ppl` model's local values).
    """

    name = None

    def __init__(self, role, fn, parents=None, source=None, keep=True):
        self.role, self.source, self.keep = role, source, keep
        if isinstance(fn, Distribution):
            self.fn, self.parents, self.constant = (lambda d=fn: d), (), fn
        else:
            self.fn, self.constant = fn, None
            self.parents = tuple(parents) if parents is not None else arg_names(fn, f"{role} site")

    def __call__(self, env):
        return call_user(self.fn, {p: env[p] for p in self.parents}, f"{self.role} site {self.name!r}", self.name)

    def named(self, name):
        """This site as it is called `name` in a model (a copy: one site object may serve several models)."""
        site = copy.copy(self)
        site.name = name
        return site


def deterministic(fn, parents=None):
    """A deterministic site: its value is `fn` of other sites and data."""
    return Site("deterministic", fn, parents)


def factor(fn, parents=None):
    """A log-density term `fn(...)` added to the model (one real per particle)."""
    return Site("factor", fn, parents)


class Target:
    """An unnormalized density γ. Combine with `**`, `*`, `geometric`, `.tilt`, `.condition`."""

    #: a leaf's kind ('model', 'diffusion'); None for an operator
    kind = None

    def __mul__(self, other):
        if not isinstance(other, Target):
            return NotImplemented
        return Product((self, other))

    def __pow__(self, beta):
        return Power(self, _positive(beta, "the exponent beta of p ** beta"))

    def tilt(self, reward, lam=1.0, schedule=None):
        """p · exp(r(x) / lam). `reward` reads sites by argument name and returns one real per particle.
        `schedule` (diffusion targets only): b(t), a numpy function of the diffusion time t (vectorized, b(0) = 1
        for the tilt at data time), so that the target at time t is q_t · exp(b(t) r / lam) (FKC, Prop 3.4)."""
        if schedule is not None and not callable(schedule):
            raise PPLError(f"schedule must be a function b(t) of the diffusion time, got {type(schedule).__name__}")
        return Tilt(self, Reward(reward, schedule=schedule), _positive(lam, "the temperature lam of p.tilt(r, lam)"))

    def condition(self, **data):
        """Observe sites: each name must be a latent site of some model in this target."""
        data = {k: _numbers(v, f"the observed value of {k!r}") for k, v in data.items()}
        missing = [k for k in data if not any(k in m.sites and m.sites[k].role == "latent" for m in self.models())]
        if missing:
            raise NameResolutionError(f"cannot condition on {', '.join(missing)}: no model in this target has "
                                      f"such a latent site (latent sites: {', '.join(sorted(self.latent_names()))})")
        return self._condition(data)

    def models(self):
        """Every `Model` in this target, in order."""
        return [m for c in self.children() for m in c.models()]

    def latent_names(self):
        return {n for m in self.models() for n, s in m.sites.items() if s.role == "latent" and n not in m.observed}

    def children(self):
        return ()

    def functions(self):
        """The rewards or energies this node adds itself (a tilt's reward)."""
        return ()

    def linear(self, coef=1.0):
        """The expansion of coef · log γ: [(leaf, c_i)] in order, leaves being models, diffusion bases and
        `Reward`s (kind 'reward' or 'energy')."""
        return [(self, coef)]

    def substitute(self, fn):
        """The same target with each leaf L (a model or a base) replaced by fn(L)."""
        children = self.children()
        return self._rebuild([c.substitute(fn) for c in children]) if children else fn(self)

    def folded(self):
        """The same target simplified ((p^a)^b = p^(ab), unit powers dropped, products flattened)."""
        return self._rebuild([c.folded() for c in self.children()]) if self.children() else self

    def _condition(self, data):
        return self._rebuild([c._condition(data) for c in self.children()])

    def __repr__(self):
        return self.describe()


class Model(Target):
    """A generative model: named sites, constant `data`, and `observed` values for some latent sites."""

    _ids = itertools.count()

    def __init__(self, sites, data=None, observed=None, name=None):
        self.name = name or f"m{next(self._ids)}"
        self.sites = {}
        for k, v in sites.items():
            if isinstance(v, Site):
                self.sites[k] = v.named(k)
            elif isinstance(v, Distribution) or callable(v):
                self.sites[k] = Site("latent", v).named(k)
            else:
                raise PPLError(f"site {k!r} of model {self.name}: expected a distribution, a function returning "
                               f"one, ppl.deterministic(...) or ppl.factor(...), got {type(v).__name__}")
        if not isinstance(data, (dict, type(None))) or any(not isinstance(k, str) for k in data or {}):
            raise PPLError(f"data of model {self.name} must be a dict of name -> value, got {data!r:.60}")
        self.data = {k: v if isinstance(v, (int, float)) else _numbers(v, f"data {k!r} of model {self.name}")
                     for k, v in (data or {}).items()}
        self.observed = dict(observed or {})
        both = sorted(set(self.data) & set(self.sites))
        if both:
            raise NameResolutionError(f"in model {self.name}, {', '.join(map(repr, both))} is both data and a site",
                                      hint="rename one; to observe a site, use .condition(name=value)")
        for k, s in self.sites.items():
            if k in s.parents:
                raise NameResolutionError(f"in model {self.name}, site {k!r} reads itself", site=k,
                                          hint="a site is computed from other sites and data")
            for p in s.parents:
                if p not in self.sites and p not in self.data:
                    raise NameResolutionError(
                        f"in model {self.name}, site {k!r} reads {p!r}, which is neither a site nor data of the model "
                        f"(sites: {', '.join(self.sites) or 'none'}; data: {', '.join(self.data) or 'none'})")

    def models(self):
        return [self]

    def _condition(self, data):
        mine = {k: v for k, v in data.items() if k in self.sites and self.sites[k].role == "latent"}
        if not mine:
            return self
        observed = dict(self.observed)
        observed.update(mine)
        return Model(self.sites, self.data, observed, name=self.name)

    def describe(self):
        return self.name

    @property
    def label(self):
        return f"model {self.name}"

    kind = "model"


class Power(Target):
    def __init__(self, base, beta):
        self.base, self.beta = base, beta

    def children(self):
        return (self.base,)

    def _rebuild(self, c):
        return Power(c[0], self.beta)

    def describe(self):
        return f"({self.base.describe()}) ** {self.beta:g}"

    @property
    def label(self):
        return f"power {self.beta:g}"

    def linear(self, coef=1.0):
        return self.base.linear(coef * self.beta)

    def folded(self):
        base = self.base.folded()
        if isinstance(base, Power):
            return Power(base.base, base.beta * self.beta).folded()
        return base if self.beta == 1.0 else Power(base, self.beta)


class Product(Target):
    def __init__(self, factors):
        self.factors = tuple(factors)

    def children(self):
        return self.factors

    def _rebuild(self, c):
        return Product(c)

    def describe(self):
        return " * ".join(f.describe() for f in self.factors)

    label = "product"

    def linear(self, coef=1.0):
        return [pair for f in self.factors for pair in f.linear(coef)]

    def folded(self):
        flat = []
        for f in (f.folded() for f in self.factors):
            flat.extend(f.factors if isinstance(f, Product) else (f,))
        return Product(flat)


class Geometric(Target):
    """(1 - w) log p + w log q; w may exceed 1 (classifier-free guidance)."""

    def __init__(self, p, q, w):
        self.p, self.q, self.w = p, q, w

    def children(self):
        return (self.p, self.q)

    def _rebuild(self, c):
        return Geometric(c[0], c[1], self.w)

    def describe(self):
        return f"geometric({self.p.describe()}, {self.q.describe()}, {self.w:g})"

    @property
    def label(self):
        return f"geometric w={self.w:g}"

    def linear(self, coef=1.0):
        return self.p.linear(coef * (1.0 - self.w)) + self.q.linear(coef * self.w)


class Reward:
    """A function of named sites returning one real per particle (written for one particle): a leaf of the
    expansion of kind 'reward' (a tilt's r) or 'energy' (an energy's E)."""

    def __init__(self, fn, parents=None, name=None, kind="reward", schedule=None):
        if isinstance(fn, Reward):
            fn, parents, name, schedule = fn.fn, fn.parents, fn.name, schedule or fn.schedule
        self.fn, self.kind, self.schedule = fn, kind, schedule
        what = "an energy" if kind == "energy" else "a reward"
        self.parents = tuple(parents) if parents is not None else arg_names(fn, what)
        self.name = name or getattr(fn, "__name__", kind)

    def __call__(self, env):
        return call_user(self.fn, {p: env[p] for p in self.parents}, f"{self.kind} {self.name}")


class Tilt(Target):
    def __init__(self, base, reward, lam):
        self.base, self.reward, self.lam = base, reward, lam

    def children(self):
        return (self.base,)

    def _rebuild(self, c):
        return Tilt(c[0], self.reward, self.lam)

    def describe(self):
        sched = ", schedule" if self.reward.schedule is not None else ""
        return f"({self.base.describe()}).tilt({self.reward.name}, {self.lam:g}{sched})"

    label = "tilt"

    def functions(self):
        return (self.reward,)

    def linear(self, coef=1.0):
        return self.base.linear(coef) + [(self.reward, coef / self.lam)]


class Energy(Target):
    """exp(-E(x)). `sites` declares the sites E reads when no other factor defines them (flat on their support)."""

    def __init__(self, fn, sites=None, parents=None):
        self.reward = Reward(fn, parents, getattr(fn, "__name__", "E"), kind="energy")
        self.model = Model(sites, name=f"{self.reward.name}_sites") if sites else None

    def children(self):
        return (self.model,) if self.model else ()

    label = "energy"

    def functions(self):
        return (self.reward,)

    def linear(self, coef=1.0):
        return (self.model.linear(coef) if self.model else []) + [(self.reward, -coef)]

    def folded(self):
        return self

    def _condition(self, data):
        return self

    def describe(self):
        return f"energy({self.reward.name})"


def model(name=None, data=None, **sites):
    """`ppl.model(x=ppl.Normal(0, 1), y=lambda x: ppl.Normal(x, 1))`: a model over named sites.

    A site is a `Distribution`, a function of earlier sites and data returning one
    (its argument names say what it reads), `ppl.deterministic(f)` or `ppl.factor(f)`.
    """
    return Model(sites, data=data, name=name)


def geometric(p, q, w):
    """The geometric average p^(1-w) q^w; with w > 1 this is classifier-free guidance."""
    if not (isinstance(p, Target) and isinstance(q, Target)):
        raise PPLError("geometric(p, q, w) takes two targets and a weight")
    return Geometric(p, q, _number(w, "the weight w of geometric(p, q, w)"))


def energy(E, **sites):
    """The target exp(-E(x)); `sites` (e.g. x=ppl.Flat(32)) declares sites E reads that no other factor has."""
    return Energy(E, sites or None)
