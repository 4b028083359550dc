"""Shapes and supports without a runtime: the compiler's abstract interpreter.

`ShapeRuntime` is the part of the runtime interface that one traced particle uses (`Evaluator.trace`), on
numpy: each family of `stdlib.distributions` is described by its batch and event shapes (NumPyro's
broadcasting rules), its support (named as NumPyro names it) and the shape of its unconstrained
parameterization. A latent site takes a representative value of its support (0 on the reals, 1 on the
positive reals, the centre of an interval, the uniform point of a simplex), so deterministic sites,
rewards and factors run on numpy and show their shapes. Nothing is imported from JAX or torch: the
plan of a target is the same whichever runtime will run it.
"""
import contextlib
import contextvars
import functools
import os

import numpy as np

from ..errors import PPLError, ShapeError
from ..math import _NUMPY
from ..stdlib.distributions import PARAM_EVENT_DIMS, truncated_batch_shape, truncated_support


def memory_bytes():
    """The memory this process can still allocate without swapping: MemAvailable of /proc/meminfo (Linux), else
    the free physical pages, else the physical memory; None where the OS says none of these."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf(pages)
        except (AttributeError, ValueError, OSError):
            continue
    return None


#: arrays up to this many bytes are not checked against the memory available
UNCHECKED = 2 ** 26


def check_size(what, elements, bytes_per_element, hint=None, site=None):
    """Refuse `elements` numbers of `bytes_per_element` bytes each (all the copies that will be held at once)
    that do not fit in the memory available now, before allocating them (from `UNCHECKED` bytes: the OS is not
    asked about less, so that a model of many small sites compiles without a read of /proc per site)."""
    total = elements * bytes_per_element
    memory = memory_bytes() if total > UNCHECKED else None
    if memory is not None and total > memory:
        raise ShapeError(f"{what} needs {elements:.3g} numbers ({total / 2 ** 30:.3g} GiB), more than the memory "
                         f"available ({memory / 2 ** 30:.3g} GiB)", site=site, hint=hint)


def support_name(constraint):
    """A constraint's name, seen through `independent(...)` wrappers: 'Real', 'Positive', 'Simplex', ..."""
    if isinstance(constraint, Support):
        return constraint.name
    while hasattr(constraint, "base_constraint"):
        constraint = constraint.base_constraint
    return type(constraint).__name__.lstrip("_")


#: the supports an observation is checked against with their bounds (an interval, a one-sided truncation)
BOUNDED = ("Interval", "GreaterThan", "LessThan")


#: bytes per element of a latent site that the compiler's trace holds at once: its unconstrained value, its
#: constrained value and a log density, float64 numpy arrays of its shape
TRACE_BYTES = 3 * 8


_TRACING = contextvars.ContextVar("ppl_shape_trace", default=False)


@contextlib.contextmanager
def tracing():
    """While the compiler traces a particle on numpy: code that would evaluate constants on a runtime (a `.ppl`
    log density of numpy values) uses the shape runtime instead (`tracing_shapes()`)."""
    token = _TRACING.set(True)
    try:
        yield
    finally:
        _TRACING.reset(token)


def tracing_shapes():
    return _TRACING.get()


class Support:
    """A support by NumPyro's name ('Real', 'Positive', 'Simplex', ...), with its event rank and whether it is
    discrete; `value(shape, params)` is a representative point and `ushape` the unconstrained shape."""

    def __init__(self, name, event_dim=0, discrete=False, params=None):
        self.name, self.event_dim, self.is_discrete, self.params = name, event_dim, discrete, params or {}

    def value(self, shape):
        if self.name == "Positive":
            return np.ones(shape)
        if self.name == "UnitInterval":
            return np.full(shape, 0.5)
        if self.name == "Interval":
            return np.broadcast_to((np.asarray(self.params["low"]) + np.asarray(self.params["high"])) / 2.0, shape)
        if self.name == "GreaterThan":     # truncations open above, below
            return np.broadcast_to(np.asarray(self.params["low"]) + 1.0, shape)
        if self.name == "LessThan":
            return np.broadcast_to(np.asarray(self.params["high"]) - 1.0, shape)
        if self.name == "Simplex":
            return np.full(shape, 1.0 / shape[-1])
        if self.name in ("OrderedVector", "PositiveOrderedVector"):
            start = 1.0 if self.name == "PositiveOrderedVector" else 0.0
            return np.broadcast_to(start + np.arange(shape[-1], dtype=float), shape)
        return np.zeros(shape)

    def ushape(self, shape):
        return tuple(shape[:-1]) + (shape[-1] - 1,) if self.name == "Simplex" else tuple(shape)


_POSITIVE = ("HalfNormal", "HalfCauchy", "HalfStudentT", "LogNormal", "Exponential", "Gamma", "InverseGamma")
_REAL = ("Normal", "Cauchy", "StudentT", "Laplace")
#: support of the flat density by its `.ppl` name
_FLAT = {"real": "Real", "positive": "Positive", "unit_interval": "UnitInterval", "simplex": "Simplex",
         "ordered": "OrderedVector", "positive_ordered": "PositiveOrderedVector"}


def _support(family, params):
    if family in _REAL:
        return Support("Real")
    if family in _POSITIVE:
        return Support("Positive")
    return {"Beta": lambda: Support("UnitInterval"),
            "Uniform": lambda: Support("Interval", params=params),
            "Dirichlet": lambda: Support("Simplex", 1),
            "MultivariateNormal": lambda: Support("Real", 1),
            "Bernoulli": lambda: Support("Boolean", discrete=True),
            "Binomial": lambda: Support("IntegerInterval", discrete=True),
            "Categorical": lambda: Support("IntegerInterval", discrete=True),
            "Poisson": lambda: Support("IntegerNonnegative", discrete=True)}[family]()


class AbstractDistribution:
    """A distribution known by its shapes and support: `log_prob` gives zeros of the batch shape."""

    def __init__(self, batch_shape, event_shape, support):
        self.batch_shape, self.event_shape, self.support = tuple(batch_shape), tuple(event_shape), support

    def expand(self, shape):
        shape = tuple(shape)
        try:
            ok = np.broadcast_shapes(self.batch_shape, shape) == shape
        except ValueError:
            ok = False
        if not ok:
            raise PPLError(f"a distribution with batch shape {self.batch_shape} cannot be expanded to shape {shape}")
        return AbstractDistribution(shape, self.event_shape, self.support)

    def log_prob(self, x):
        """Zeros of the shape the runtime's log density of x has (batch shape broadcast with x's)."""
        x_batch = np.shape(x)[:max(np.ndim(x) - len(self.event_shape), 0)]
        return np.zeros(np.broadcast_shapes(self.batch_shape, x_batch))


def _family(family):
    def make(**params):
        shapes = []
        for k, v in params.items():
            ev = PARAM_EVENT_DIMS.get((family, k), 0)
            s = np.shape(v)
            if len(s) < ev:
                raise ValueError(f"{k} needs at least {ev} dimension(s), got shape {s}")
            shapes.append(s[:len(s) - ev])
        batch = np.broadcast_shapes(*shapes) if shapes else ()
        if family == "Dirichlet":
            event = np.shape(params["concentration"])[-1:]
        elif family == "MultivariateNormal":
            cov = params.get("covariance_matrix", params.get("scale_tril"))
            event = np.shape(params["loc"])[-1:] or np.shape(cov)[-1:]
        else:
            event = ()
        return AbstractDistribution(batch, event, _support(family, params))
    return make


class _Library:
    """`rt.distributions` of the shape runtime: each family by its class name, and `ImproperUniform`."""

    def __getattr__(self, family):
        return _family(family)

    @staticmethod
    def ImproperUniform(support, batch_shape, event_shape):  # noqa: N802 (NumPyro's class name)
        return AbstractDistribution(batch_shape, event_shape, support)


class _Transform:
    """biject_to(support) as far as shapes go: u -> a representative point; log|det J| = 0."""

    def __init__(self, support):
        self.support = support

    def inverse_shape(self, shape):
        return self.support.ushape(shape)

    def __call__(self, u):
        shape = np.shape(u)
        return self.support.value(shape[:-1] + (shape[-1] + 1,) if self.support.name == "Simplex" else shape)

    def log_abs_det_jacobian(self, u, x):
        return np.zeros(())


class ShapeRuntime:
    """The runtime interface of one abstractly traced particle, on numpy (see the module docstring)."""

    name = "shapes"
    traces_shapes = True
    xp = _NUMPY
    distributions = _Library()
    dtype = np.float64

    def asarray(self, x, dtype=None):
        return np.asarray(x, dtype=dtype or (None if np.asarray(x).dtype.kind in "fc" else float))

    def asindex(self, x):
        return np.asarray(x, dtype=np.int64)

    def constraint(self, name):
        return Support(_FLAT[name], 1 if name in ("simplex", "ordered", "positive_ordered") else 0)

    def biject_to(self, support):
        return _Transform(support)

    def sorted_distribution(self, base, support):
        """Sorted iid draws of `base`: its last batch axis becomes the event, on the support `support`."""
        return AbstractDistribution(base.batch_shape[:-1], base.batch_shape[-1:], self.constraint(support))

    def truncated_distribution(self, family, params, lower, upper, shape=()):
        """A `stdlib.distributions.Truncated` as far as shapes go: its batch shape, on its interval (named as
        NumPyro's constraints are)."""
        lo, hi = truncated_support(self, family, lower, upper)
        name = "GreaterThan" if hi is None else "LessThan" if lo is None else "Interval"
        return AbstractDistribution(truncated_batch_shape(params, lower, upper, shape), (),
                                    Support(name, params={"low": lo, "high": hi}))

    def markov_distribution(self, chain, params):
        """A `stdlib.markov.MarkovChain` path as far as shapes go: init and one step are checked, `log_prob`
        gives zeros."""
        return self._markov_class()(chain, self, params)

    @staticmethod
    @functools.cache
    def _markov_class():
        from ..stdlib.markov import _Lowered   # not at the top: stdlib.markov imports the compiler

        class Chain(_Lowered, AbstractDistribution):
            def __init__(self, chain, rt, params):
                batch, event = self._setup(chain, rt, params)
                support = (Support("IntegerInterval", len(event), discrete=True, params={"low": chain.spec.offset})
                           if self._discrete else Support("Real", len(event)))   # discrete: only while probing
                AbstractDistribution.__init__(self, batch, event, support)

            def log_prob(self, path):
                if self._chain.length > 1:   # one step, for its checks of shape and support
                    self._step(path[0], self._ts[0], self._arrays)
                return np.zeros(self.batch_shape)
        return Chain

    def __repr__(self):
        return "shapes (numpy, abstract)"

