"""Distributions by name, independent of the runtime.

A `Distribution` is a description: a family name, its parameters and an optional
batch `shape`. `lower(rt)` builds the same family from the runtime's own library
(`numpyro.distributions` or `pyro.distributions`), so log densities, samplers and
supports are NumPyro's and Pyro's, not ours.
"""
import numbers

import numpy as np

from ..errors import PPLError, UnknownNameError, ValueRangeError

#: name in the `.ppl` language -> (class name shared by numpyro/pyro, positional parameter names)
FAMILIES = {
    "normal": ("Normal", ("loc", "scale")),
    "half_normal": ("HalfNormal", ("scale",)),
    "half_cauchy": ("HalfCauchy", ("scale",)),
    "half_student_t": ("HalfStudentT", ("df", "scale")),
    "cauchy": ("Cauchy", ("loc", "scale")),
    "student_t": ("StudentT", ("df", "loc", "scale")),
    "lognormal": ("LogNormal", ("loc", "scale")),
    "exponential": ("Exponential", ("rate",)),
    "gamma": ("Gamma", ("concentration", "rate")),
    "inverse_gamma": ("InverseGamma", ("concentration", "rate")),
    "beta": ("Beta", ("concentration1", "concentration0")),
    "uniform": ("Uniform", ("low", "high")),
    "laplace": ("Laplace", ("loc", "scale")),
    "dirichlet": ("Dirichlet", ("concentration",)),
    "multivariate_normal": ("MultivariateNormal", ("loc", "covariance_matrix")),
    "bernoulli": ("Bernoulli", ("logits",)),
    "bernoulli_probs": ("Bernoulli", ("probs",)),
    "binomial": ("Binomial", ("total_count", "probs")),
    "binomial_logits": ("Binomial", ("total_count", "logits")),
    "poisson": ("Poisson", ("rate",)),
    "categorical": ("Categorical", ("probs",)),
    "categorical_logits": ("Categorical", ("logits",)),
    "flat": ("ImproperUniform", ()),
}

#: families the runtime libraries lack, built from ones they have (same parameters, normalized):
#: HalfStudentT(df, s) is |StudentT(df, 0, s)|, density 2 t_df(x; 0, s) on (0, ∞)
_COMPOSED = {"HalfStudentT": lambda lib, df, scale: lib.FoldedDistribution(lib.StudentT(df, 0.0, scale))}

#: keyword spellings accepted for each class (Python API: `Bernoulli(probs=p)`)
_ALIASES = {"Bernoulli": ("logits", "probs"), "Binomial": ("probs", "logits"),
            "Categorical": ("probs", "logits"), "MultivariateNormal": ("covariance_matrix", "scale_tril")}

#: number of event dimensions of each parameter, where not 0
PARAM_EVENT_DIMS = {("Dirichlet", "concentration"): 1, ("MultivariateNormal", "loc"): 1,
                    ("MultivariateNormal", "covariance_matrix"): 2, ("MultivariateNormal", "scale_tril"): 2,
                    ("Categorical", "probs"): 1, ("Categorical", "logits"): 1}
#: the most dimensions of a site or parameter
MAX_DIMS = 30
#: the class names of the runtimes' libraries that FAMILIES use
LIBRARY = {family for family, _ in FAMILIES.values()}
DISCRETE = {"Bernoulli", "Binomial", "Poisson", "Categorical"}
SUPPORTS = ("real", "positive", "unit_interval", "simplex", "ordered", "positive_ordered")

#: the constraint of each parameter that is not merely real, as NumPyro's `arg_constraints` name it (Pyro's
#: agree but for Poisson's rate, nonnegative there); a numpy copy, so that the compiler checks constant parameters
#: without a runtime; tests/test_invalid_parameters.py checks it against both libraries' own
PARAM_CONSTRAINTS = {
    **{(f, "scale"): "positive" for f in ("Normal", "HalfNormal", "HalfCauchy", "HalfStudentT", "Cauchy", "StudentT",
                                          "LogNormal", "Laplace")},
    **{(f, p): "positive" for f, ps in (("StudentT", ("df",)), ("HalfStudentT", ("df",)), ("Exponential", ("rate",)),
                                        ("Gamma", ("concentration", "rate")), ("InverseGamma", ("concentration", "rate")),
                                        ("Beta", ("concentration1", "concentration0")), ("Poisson", ("rate",)),
                                        ("Dirichlet", ("concentration",))) for p in ps},
    ("Bernoulli", "probs"): "unit_interval", ("Binomial", "probs"): "unit_interval",
    ("Binomial", "total_count"): "nonnegative_integer", ("Categorical", "probs"): "simplex",
    ("MultivariateNormal", "covariance_matrix"): "positive_definite",
    ("MultivariateNormal", "scale_tril"): "lower_cholesky"}


def _simplex(x):
    return np.all(x >= 0, axis=-1) & (np.abs(x.sum(-1) - 1) < 1e-6)


def _positive_definite(x):
    sym = np.all(np.abs(x - np.swapaxes(x, -1, -2)) < 1e-6, axis=(-2, -1))
    return sym & np.all(np.linalg.eigvalsh(np.where(np.isfinite(x), x, 0.0)) > 0, axis=-1)


#: name -> (numpy predicate, what a valid value is), as NumPyro checks them
CONSTRAINTS = {
    "real": (np.isfinite, "finite"),
    "positive": (lambda x: x > 0, "positive"),
    "unit_interval": (lambda x: (x >= 0) & (x <= 1), "in [0, 1]"),
    "nonnegative_integer": (lambda x: (x >= 0) & (x == np.floor(x)), "a nonnegative integer"),
    "boolean": (lambda x: (x == 0) | (x == 1), "0 or 1"),
    "simplex": (_simplex, "nonnegative and summing to 1"),
    "positive_definite": (_positive_definite, "a symmetric positive definite matrix"),
    "lower_cholesky": (lambda x: np.all(np.triu(x, 1) == 0, axis=(-2, -1)) &
                       np.all(np.diagonal(x, axis1=-2, axis2=-1) > 0, axis=-1), "lower triangular with a positive diagonal")}

#: supports of observations (named as NumPyro names them, `compiler.lower.support_name`) -> constraint
SUPPORT_CONSTRAINTS = {"Real": "real", "RealVector": "real", "Positive": "positive", "UnitInterval": "unit_interval",
                       "Simplex": "simplex", "IntegerNonnegative": "nonnegative_integer",
                       "Boolean": "boolean", "IntegerInterval": "nonnegative_integer"}


def concrete(value):
    """`value` as a float64 numpy array when it is a number or a numpy array (of numbers), else None (a runtime
    array, a tracer, a symbol)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.ndarray, np.generic, list, tuple)):
        return None
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return a


def _shown(a):
    return f"{a.item():g}" if a.size == 1 else np.array2string(a.ravel()[:6], precision=4, separator=", ") + \
        ("..." if a.size > 6 else "")


def invalid_parameter(family, params):
    """'parameter = value must be ...' for the first parameter of `family` (a class of the libraries, `LIBRARY`)
    outside its constraint (`PARAM_CONSTRAINTS`; uniform's high must exceed its low), or None; `params` are numpy
    arrays."""
    if family not in LIBRARY or family == "ImproperUniform":
        return None
    with np.errstate(invalid="ignore"):
        for k, v in params.items():
            ok, what = CONSTRAINTS[PARAM_CONSTRAINTS.get((family, k), "real")]
            if not np.all(ok(v)):
                return f"{k} = {_shown(v)} must be {what}"
        if family == "Uniform" and np.broadcast_shapes(params["low"].shape, params["high"].shape) is not None and \
                not np.all(params["low"] < params["high"]):
            return f"low = {_shown(params['low'])} must be below high = {_shown(params['high'])}"
    return None


def outside_support(support, y, low=None, high=None):
    """'value ... is outside the support' where the observation y (numpy) is not in the support named `support`
    (within [low, high] when given: an interval), or None."""
    constraint = SUPPORT_CONSTRAINTS.get(support)
    with np.errstate(invalid="ignore"):
        ok = CONSTRAINTS[constraint][0](y) if constraint else np.isfinite(y)
        if low is not None:
            ok = ok & (y >= low) & (y <= high)
    if np.all(ok):
        return None
    bad = y[~ok] if np.shape(ok) == np.shape(y) else y
    where = f" [{_shown(np.asarray(low))}, {_shown(np.asarray(high))}]" if low is not None else ""
    return f"{_shown(bad)} is outside its support ({support}{where})"


class Distribution:
    """A distribution family with parameters, runtime-independent. `shape` expands its batch shape."""

    def __init__(self, family, params, shape=()):
        self.family, self.params = family, dict(params)
        self.shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape) \
            if isinstance(shape, (tuple, list)) else None
        if self.shape is None or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0
                                     for n in self.shape):
            raise ValueRangeError(f"{family}: shape must be non-negative integers, got {shape!r}")
        batches = []
        for k, v in self.params.items():
            if k != "support" and (v is None or isinstance(v, (str, bytes))):
                raise ValueRangeError(f"{family}: parameter {k} must be a number or an array, got {v!r}")
            s, ev = tuple(np.shape(v)) if k != "support" else (), PARAM_EVENT_DIMS.get((family, k), 0)
            if 0 in s[len(s) - ev:] or len(s) < ev:
                raise ValueRangeError(f"{family}: parameter {k} of shape {s} needs {ev} event dimension(s), none empty")
            batches.append(s[:len(s) - ev])
        if max(map(len, batches + [self.shape])) > MAX_DIMS:
            raise ValueRangeError(f"{family}: more than {MAX_DIMS} dimensions (numpy broadcasts up to 32, and a "
                                  f"run adds particle and chain axes)")
        try:
            if len(set(batches)) > 1:
                np.broadcast_shapes(*batches)
        except ValueError:
            raise ValueRangeError(f"{family}: parameters {', '.join(k for k in self.params if k != 'support')} "
                                  f"of batch shapes {', '.join(map(str, batches))} do not broadcast") from None
        self.check_constant()

    def check_constant(self):
        """A ValueRangeError naming the parameter when every parameter is a constant (numbers, numpy arrays) and
        one is outside its constraint (`invalid_parameter`), as NumPyro's `validate_args`. Runtime arrays, and
        the compiler's numpy trace (where a latent site takes one representative value), are not checked here:
        a run names a site whose parameters are invalid where its weights fail (`Program.diagnose`)."""
        from ..compiler.shapes import tracing_shapes
        if tracing_shapes():
            return
        params = {k: concrete(v) for k, v in self.params.items()}
        if all(v is not None for v in params.values()):
            bad = invalid_parameter(self.family, params)
            if bad:
                raise ValueRangeError(f"{self.family}: parameter {bad}")

    @property
    def is_discrete(self):
        return self.family in DISCRETE

    @property
    def is_normalized(self):
        return self.family != "ImproperUniform"

    def broadcast_params(self, rt):
        """Parameters as runtime arrays broadcast to the full batch shape (for stacking over particles)."""
        batch = tuple(self.lower(rt).batch_shape)
        out = {}
        for k, v in self.params.items():
            v = rt.asarray(v)
            ev = PARAM_EVENT_DIMS.get((self.family, k), 0)
            out[k] = rt.xp.broadcast_to(v, batch + tuple(v.shape[v.ndim - ev:]))
        return out

    def lower(self, rt, params=None):
        """The runtime's distribution object; `params` (from `broadcast_params`, batched) overrides."""
        lib = rt.distributions
        if params is not None:
            return _constructor(lib, self.family)(**params)
        params = self.params
        if self.family == "ImproperUniform":
            support = rt.constraint(params["support"])  # vector supports (ordered, simplex) own the last axis
            split = len(self.shape) - support.event_dim
            return lib.ImproperUniform(support, self.shape[:split], self.shape[split:])
        kwargs = {k: rt.asarray(v) for k, v in params.items()}
        try:
            d = _constructor(lib, self.family)(**kwargs)
        except (TypeError, ValueError) as e:
            raise PPLError(f"{self.family}: bad parameters {sorted(params)}: {e}") from None
        return d.expand(self.shape) if self.shape else d

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" if not hasattr(v, "shape") or v.shape == () else f"{k}=<{type(v).__name__}{tuple(v.shape)}>"
                         for k, v in self.params.items())
        return f"{self.family}({args}{', shape=' + str(self.shape) if self.shape else ''})"


def _constructor(lib, family):
    """The library's class `family`, or its composition from `_COMPOSED`."""
    if family in _COMPOSED and not hasattr(lib, family):
        return lambda **params: _COMPOSED[family](lib, **params)
    return getattr(lib, family)


def per_particle(rt, spec_of, *args):
    """`spec_of(*args_i)` for every particle i as one runtime distribution whose batch axis is the particles: the
    first particle's description lowered with every particle's parameters (each arg has a leading particle axis;
    `spec_of` is written for one particle)."""
    spec = spec_of(*rt.tree_map(lambda a: a[0], args))
    return spec.lower(rt, rt.vmap(lambda *a: spec_of(*a).broadcast_params(rt))(*args))


def repeated(rt, spec, n):
    """`spec` for n particles: its parameters broadcast along a leading particle axis of length n."""
    params = spec.broadcast_params(rt)
    return spec.lower(rt, {k: rt.xp.broadcast_to(v, (n,) + tuple(v.shape)) for k, v in params.items()})


def make(name, *args, shape=(), **kwargs):
    """`make("normal", 0, 1)`: the distribution called `name` in the language."""
    if name not in FAMILIES:
        raise UnknownNameError(f"unknown distribution {name!r}; known: {', '.join(sorted(FAMILIES))}")
    family, names = FAMILIES[name]
    if family == "ImproperUniform":
        return flat(*args, shape=shape, **kwargs)
    if len(args) > len(names):
        raise PPLError(f"{name} takes {len(names)} parameters ({', '.join(names)}), got {len(args)}")
    params = dict(zip(names, args))
    allowed = set(names) | set(_ALIASES.get(family, ()))
    for k, v in kwargs.items():
        if k not in allowed:
            raise UnknownNameError(f"{name} has no parameter {k!r}; it takes {', '.join(sorted(allowed))}")
        params[k] = v
    if family in _ALIASES and sum(k in params for k in _ALIASES[family]) > 1:
        raise PPLError(f"{name} takes one of {', '.join(_ALIASES[family])}, not several")
    missing = [n for n in names if n not in params and not (family in _ALIASES and set(params) & set(_ALIASES[family]))]
    if missing:
        raise PPLError(f"{name} is missing parameter(s) {', '.join(missing)}")
    return Distribution(family, params, shape)


def flat(shape=(), support="real"):
    """An improper flat density over `support` (log density 0): usable in a target, never as a reference."""
    if support not in SUPPORTS:
        raise UnknownNameError(f"unknown support {support!r}; known: {', '.join(SUPPORTS)}")
    return Distribution("ImproperUniform", {"support": support}, shape)


def _family(name):
    family, names = FAMILIES[name]

    def ctor(*args, shape=(), **kwargs):
        return make(name, *args, shape=shape, **kwargs)

    ctor.__name__ = family
    ctor.__doc__ = f"{family}({', '.join(names)}, shape=()): `{name}` in the language."
    return ctor


Normal, HalfNormal, HalfCauchy, Cauchy = (_family(n) for n in ("normal", "half_normal", "half_cauchy", "cauchy"))
HalfStudentT = _family("half_student_t")
StudentT, LogNormal, Exponential, Gamma = (_family(n) for n in ("student_t", "lognormal", "exponential", "gamma"))
InverseGamma, Beta, Uniform, Laplace = (_family(n) for n in ("inverse_gamma", "beta", "uniform", "laplace"))
Dirichlet, MultivariateNormal, Poisson = (_family(n) for n in ("dirichlet", "multivariate_normal", "poisson"))
Bernoulli, Binomial, Categorical = (_family(n) for n in ("bernoulli", "binomial", "categorical"))
Flat = flat
