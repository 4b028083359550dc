"""Latent states that evolve over time: `ppl.markov(init, step, length)`.

The site's value is the whole path x[0:T] (shape (T, *E), E the shape of one state) with

    log p(x) = log p0(x[0]) + Σ_{t=1}^{T-1} log p(x[t] | x[t-1], t)

`init` and `step` are written for one particle and return the `Distribution` of one
state: continuous on the reals, or finite discrete (categorical, bernoulli; the state's values are
`offset` + its law's category), which no sampler moves and the compiler sums out by the forward
algorithm (`compiler/discrete.py`, `stdlib/hidden_markov.py`). The lowered `MarkovChain` evaluates the T-1 transitions at once (vmapped over t)
and samples by ancestral simulation (a scan on JAX, a loop over t on torch), batched over
particles. A particle filter reads `site.markov` (a `MarkovSpec`) to propose and weight
one step at a time.
"""
import numbers
from typing import Callable, NamedTuple, Tuple, Union

import numpy as np

from ..compiler.lower import probing_now, support_name
from ..errors import NameResolutionError, PPLError, ShapeError, SupportError, ValueRangeError
from ..target import Site, arg_names
from .distributions import Distribution, per_particle, repeated
from .hidden_markov import FINITE

SPECIAL = ("prev", "t")


class MarkovSpec(NamedTuple):
    """What defines the chain. `init(**env)` and `step(prev=..., t=..., **env)` (t passed only when
    `reads_t`) return `Distribution`s of one state; `env` holds the named parents (never prev or t);
    `t` is the 0-based index of the state drawn (1..T-1); `length` is T or the name of an int data item;
    `offset` is the value of a discrete state's first category (prev is passed as a value)."""
    init: Callable
    init_parents: Tuple[str, ...]
    step: Callable
    step_parents: Tuple[str, ...]
    length: Union[int, str]
    reads_t: bool
    offset: int = 0


def _spec(init, step, length, init_parents, step_parents, offset=0):
    if isinstance(init, Distribution):
        init_fn, init_parents = (lambda d=init: d), ()
    else:
        init_fn = init
        init_parents = tuple(init_parents) if init_parents is not None else arg_names(init, "init")
    step_parents = tuple(step_parents) if step_parents is not None else arg_names(step, "step")
    if "prev" not in step_parents:
        raise NameResolutionError(f"step must read the previous state through an argument named prev; it reads "
                                  f"({', '.join(step_parents)})")
    if not (isinstance(length, str) or isinstance(length, numbers.Integral) and not isinstance(length, bool)
            and length > 0):
        raise ValueRangeError(f"length must be a positive int or the name of an int data item, got {length!r}")
    if not isinstance(offset, numbers.Integral) or isinstance(offset, bool):
        raise ValueRangeError(f"offset must be an int (the value of a discrete state's first category), got "
                              f"{offset!r}")
    return MarkovSpec(init_fn, init_parents, step, tuple(p for p in step_parents if p not in SPECIAL),
                      length if isinstance(length, str) else int(length), "t" in step_parents, int(offset))


class MarkovSite(Site):
    """The latent site of a Markov chain path: `.markov` is its `MarkovSpec`, `site(env)` its `MarkovChain`.

    A bad argument is reported when a model names the site (or when it is used unnamed)."""

    def __init__(self, init, step, length, init_parents=None, step_parents=None, offset=0):
        super().__init__("latent", None, parents=())
        self.problem = None
        try:
            self.markov = _spec(init, step, length, init_parents, step_parents, offset)
        except PPLError as e:
            self.markov, self.problem = None, e
            return
        by_name = (self.markov.length,) if isinstance(self.markov.length, str) else ()
        self.parents = tuple(dict.fromkeys(self.markov.init_parents + self.markov.step_parents + by_name))

    def _label(self):
        return f"site {self.name!r} (ppl.markov)" if self.name else "ppl.markov"

    def named(self, name):
        site = super().named(name)
        if site.problem is not None:
            raise type(site.problem)(f"{site._label()}: {site.problem}")
        return site

    def __call__(self, env):
        if self.problem is not None:
            raise type(self.problem)(f"{self._label()}: {self.problem}")
        spec = self.markov
        length = spec.length
        if isinstance(length, str):
            try:
                value = np.asarray(env[length])
            except Exception:  # noqa: BLE001 (a parameter: not known before sampling)
                value = None
            if value is None or value.ndim != 0 or value.dtype.kind not in "iu" or int(value) < 1:
                raise ValueRangeError(f"{self._label()}: its length {length!r} must be a positive int, got "
                                      f"{value!r}", site=self.name)
            length = int(value)
        reads = dict.fromkeys(spec.init_parents + spec.step_parents)
        return MarkovChain(spec, {p: env[p] for p in reads}, length, self.name or "ppl.markov")


def markov(init, step, length, init_parents=None, step_parents=None, offset=0):
    """A latent state path x[0:T]: x[0] ~ init, x[t] ~ step(prev=x[t-1], t) for t = 1..T-1.

    `init` is a `Distribution` or a function of other sites/data returning one (its batch + event
    shape is the state shape E); `step` reads `prev` (x[t-1]), optionally `t` (0-based index of the
    state drawn) and other sites/data by argument name; `length` is a positive int or the name of an
    int data item. `init_parents` / `step_parents` override the argument names (step's include prev, t).
    A discrete state (categorical, bernoulli laws) takes the values `offset` + category (the `.ppl` language's
    states are 1-based); the compiler sums it out where one observed site reads the path.
    """
    return MarkovSite(init, step, length, init_parents, step_parents, offset)


def _static(v):
    return isinstance(v, numbers.Number) and not hasattr(v, "shape")


def _integer(v):
    """Whether v is an array of integers (a discrete path another state reads, e.g. a regime s[t]): kept as indices."""
    dtype = getattr(v, "dtype", None)
    try:
        return dtype is not None and np.dtype(str(dtype).replace("torch.", "")).kind in "iu"
    except TypeError:
        return False


class MarkovChain(Distribution):
    """The distribution of the path x[0:T] (shape (T, *E)); `params` are the values init and step read."""

    def __init__(self, spec, env, length, site):
        super().__init__("MarkovChain", {})
        self.params = dict(env)     # what init and step read: not one law's parameters, so not broadcast together
        self.spec, self.length, self.site = spec, length, site

    def init_dist(self, env):
        return self._checked(self.spec.init(**{p: env[p] for p in self.spec.init_parents}), "init")

    def step_dist(self, prev, t, env):
        kw = {p: env[p] for p in self.spec.step_parents}
        if self.spec.reads_t:
            kw["t"] = t
        return self._checked(self.spec.step(prev=prev, **kw), "step")

    def _checked(self, d, what):
        if not isinstance(d, Distribution) or isinstance(d, MarkovChain):
            raise PPLError(f"site {self.site!r} (ppl.markov): {what} must return the distribution of one state "
                           f"(e.g. ppl.Normal(...)), got {type(d).__name__}", site=self.site)
        if d.family in FINITE:
            return d
        if d.is_discrete or not d.is_normalized:
            raise SupportError(f"site {self.site!r} (ppl.markov): {what} returned {d.family}; a state needs a "
                               f"normalized continuous distribution on the reals, or a finite discrete one "
                               f"(categorical, bernoulli) that the compiler sums out", site=self.site)
        return d

    def arrays(self, rt):
        """The array-valued parents as runtime arrays (Python numbers stay static)."""
        return {k: (rt.asindex(v) if _integer(v) else rt.asarray(v)) for k, v in self.params.items() if not _static(v)}

    def static(self):
        return {k: v for k, v in self.params.items() if _static(v)}

    def broadcast_params(self, rt):
        """The array parents and the initial distribution's parameters ('init.NAME'), stacked over particles."""
        init = self.init_dist({**self.static(), **self.arrays(rt)}).broadcast_params(rt)
        return {**{f"init.{k}": v for k, v in init.items()}, **self.arrays(rt)}

    def lower(self, rt, params=None):
        """The runtime distribution; with `params` (from `broadcast_params`, batched) its batch is the particles."""
        return rt.markov_distribution(self, params)

    def __repr__(self):
        return f"MarkovChain({self.site}, T={self.length})"


class _Lowered:
    """The part of the lowered chain shared by the runtimes: mixed into each runtime's distribution class
    (`rt.markov_distribution`)."""

    def _setup(self, chain, rt, params):
        """(batch_shape, event_shape); checks the initial distribution."""
        self._chain, self._rt, self._static = chain, rt, chain.static()
        init = chain.init_dist({**self._static, **chain.arrays(rt)})
        one = init.lower(rt)
        self._discrete = init.family in FINITE
        if self._discrete and not probing_now():
            raise SupportError(f"site {chain.site!r} (ppl.markov): its states are discrete ({init.family}) and no "
                               f"sampler moves a discrete state", site=chain.site,
                               hint="the compiler sums the path out by the forward algorithm where one observed "
                                    "site reads it and nothing else does, unless marginalize=False; keep "
                                    "marginalize on (the default)")
        if not self._discrete and support_name(one.support) != "Real":
            raise SupportError(f"site {chain.site!r} (ppl.markov): init has support {support_name(one.support)}; "
                               f"a state needs a distribution on the reals", site=chain.site)
        self._state_shape = tuple(one.batch_shape) + tuple(one.event_shape)
        self._ts = rt.asindex(np.arange(1, chain.length))
        if params is None:
            self._arrays, self._init = chain.arrays(rt), one
            return (), (chain.length,) + self._state_shape
        self._arrays = {k: v for k, v in params.items() if not k.startswith("init.")}
        self._init = init.lower(rt, {k[5:]: v for k, v in params.items() if k.startswith("init.")})
        return tuple(self._init.batch_shape[:1]), (chain.length,) + self._state_shape

    def _step(self, prev, t, arrays):
        """The runtime distribution of x[t] given x[t-1] = prev (one particle)."""
        return self._checked_step(self._chain.step_dist(prev, t, {**self._static, **arrays}).lower(self._rt))

    def _checked_step(self, d, batch_dims=0):
        """`d` (a lowered step, with `batch_dims` leading particle axes), checked against the state's shape and
        support."""
        shape = tuple(d.batch_shape[batch_dims:]) + tuple(d.event_shape)
        if shape != self._state_shape:
            raise ShapeError(f"site {self._chain.site!r} (ppl.markov): step returns a state of shape {shape}, "
                             f"but init's has shape {self._state_shape}", site=self._chain.site)
        if (bool(d.support.is_discrete) != self._discrete
                or not self._discrete and support_name(d.support) != "Real"):
            raise SupportError(f"site {self._chain.site!r} (ppl.markov): step has support "
                               f"{support_name(d.support)}; a state needs a distribution on the reals",
                               site=self._chain.site)
        return d

    def _log_prob_one(self, arrays, path):
        rt = self._rt
        env = {**self._static, **arrays}
        lp = self._chain.init_dist(env).lower(rt).log_prob(path[0]).sum()
        if self._chain.length == 1:
            return lp
        steps = rt.vmap(lambda prev, x, t: self._step(prev, t, arrays).log_prob(x).sum())(path[:-1], path[1:],
                                                                                          self._ts)
        return lp + steps.sum()

    def log_prob(self, path):
        """log p0(x[0]) + Σ_t log p(x[t] | x[t-1], t), per particle."""
        if not self.batch_shape:
            return self._log_prob_one(self._arrays, path)
        return self._rt.vmap(self._log_prob_one)(self._arrays, path)

    def _step_batched(self, prev, t):
        """x[t] | x[t-1] = prev for every particle, as one batched runtime distribution."""
        d = per_particle(self._rt, lambda a, p: self._chain.step_dist(p, t, {**self._static, **a}),
                         self._arrays, prev)
        return self._checked_step(d, batch_dims=1)

    def _one_particle(self):
        """This chain batched over one particle (to sample an unbatched chain)."""
        return repeated(self._rt, self._chain, 1)
