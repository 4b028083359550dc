"""Distributions by name, independent of the runtime.

A `Distribution` is a description: a family name, its parameters and an optional
batch `shape`. `lower(rt)` builds the same family from the runtime's own library
(`numpyro.distributions` or `pyro.distributions`), so log densities, samplers and
supports are NumPyro's and Pyro's, not ours. `truncated(base, lower, upper)` restricts a continuous scalar
family to an interval (`Truncated`), with tails computed here once for both runtimes (`_Truncation`).
"""
import math
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
    outside its constraint (`PARAM_CONSTRAINTS`; uniform's high must exceed its low, a truncation's bounds must
    leave an interval of the support), or None; `params` are numpy arrays."""
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
    if family in _TAILS and ("lower" in params or "upper" in params):     # a truncation (`Truncated`)
        return _empty_truncation(family, params.get("lower"), params.get("upper"))
    return None


def outside_support(support, y, low=None, high=None):
    """'value ... is outside the support' where the observation y (numpy) is not in the support named `support`
    (above `low`, below `high` where given: an interval, or a one-sided truncation), or None."""
    constraint = SUPPORT_CONSTRAINTS.get(support)
    with np.errstate(invalid="ignore"):
        ok = CONSTRAINTS[constraint][0](y) if constraint else np.isfinite(y)
        if low is not None:
            ok = ok & (y >= low)
        if high is not None:
            ok = ok & (y <= high)
    if np.all(ok):
        return None
    bad = y[~ok] if np.shape(ok) == np.shape(y) else y
    ends = ("[" + ("-inf" if low is None else _shown(np.asarray(low))) + ", " +
            ("inf" if high is None else _shown(np.asarray(high))) + "]")
    return f"{_shown(bad)} is outside its support ({support}{'' if low is None and high is None else ' ' + ends})"


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
        a run names a site whose parameters are invalid where its weights fail (`LoweredPlan.diagnose`)."""
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


class _Tails:
    """What truncating a family needs, per particle, on the runtime's arrays (rt, the family's parameters p):
    log F(x) and log S(x) = log(1 − F(x)), each computed without cancellation in its own tail (log_sf None: the
    family is symmetric about p["loc"], S(x) = F(2 loc − x)); `x_of_u`, an increasing map of [−BISECT_RANGE,
    BISECT_RANGE] onto the support, over which quantiles are bisected; the support's ends `low`, `high` (None:
    unbounded) and a point `mid` inside it."""

    def __init__(self, log_cdf, log_sf=None, x_of_u=None, low=None, high=None, mid=None):
        self.log_cdf, self.x_of_u = log_cdf, x_of_u or _sinh
        self.log_sf = log_sf or (lambda rt, p, x: log_cdf(rt, p, 2.0 * p["loc"] - x))
        self.low, self.high, self.mid = low, high, mid


#: quantiles are bisected over u in [−BISECT_RANGE, BISECT_RANGE] in BISECT_STEPS halvings (160 / 2^64: below the
#: resolution of any float x); e^80 and sinh(80) are within float32's range
BISECT_RANGE, BISECT_STEPS = 80.0, 64


def _z(p, x):
    return (x - p["loc"]) / p["scale"]


def _sinh(rt, p, u):
    """loc + scale sinh(u): the real line, linear near loc and exponential in the tails."""
    return p["loc"] + 0.5 * p["scale"] * (rt.xp.exp(u) - rt.xp.exp(-u))


def _log_cdf_student_t(rt, p, x):
    """F(x) = I_u(ν/2, 1/2) / 2 below loc, 1 − I_u(ν/2, 1/2) / 2 above, u = ν / (ν + z²)."""
    z, xp = _z(p, x), rt.xp
    half_i = 0.5 * rt.special.betainc(0.5 * p["df"], 0.5, p["df"] / (p["df"] + z * z))
    return xp.where(z < 0, xp.log(half_i), xp.log1p(-half_i))


#: the families `truncated` accepts (class names of FAMILIES) and their tails
_TAILS = {
    "Normal": _Tails(lambda rt, p, x: rt.special.log_ndtr(_z(p, x))),
    # F(x) = atan2(1, −z) / π: no cancellation where F is small
    "Cauchy": _Tails(lambda rt, p, x: rt.xp.log(rt.xp.arctan2(rt.xp.ones(()), -_z(p, x)) / math.pi)),
    "StudentT": _Tails(_log_cdf_student_t),
    # F(x) = e^{−|z|} / 2 below loc, 1 − e^{−|z|} / 2 above
    "Laplace": _Tails(lambda rt, p, x: rt.xp.where(_z(p, x) < 0, -rt.xp.abs(_z(p, x)) - math.log(2.0),
                                                   rt.xp.log1p(-0.5 * rt.xp.exp(-rt.xp.abs(_z(p, x)))))),
    "LogNormal": _Tails(lambda rt, p, x: rt.special.log_ndtr(_z(p, rt.xp.log(x))),
                        lambda rt, p, x: rt.special.log_ndtr(-_z(p, rt.xp.log(x))),
                        lambda rt, p, u: rt.xp.exp(_sinh(rt, p, u)), low=0.0, mid=1.0),
    "Exponential": _Tails(lambda rt, p, x: rt.xp.log(-rt.xp.expm1(-p["rate"] * x)), lambda rt, p, x: -p["rate"] * x,
                          lambda rt, p, u: rt.xp.exp(u) / p["rate"], low=0.0, mid=1.0),
    "Gamma": _Tails(lambda rt, p, x: rt.xp.log(rt.special.gammainc(p["concentration"], p["rate"] * x)),
                    lambda rt, p, x: rt.xp.log(rt.special.gammaincc(p["concentration"], p["rate"] * x)),
                    lambda rt, p, u: rt.xp.exp(u) / p["rate"], low=0.0, mid=1.0),
    "Beta": _Tails(lambda rt, p, x: rt.xp.log(rt.special.betainc(p["concentration1"], p["concentration0"], x)),
                   lambda rt, p, x: rt.xp.log(rt.special.betainc(p["concentration0"], p["concentration1"], 1.0 - x)),
                   lambda rt, p, u: 1.0 / (1.0 + rt.xp.exp(-u)), low=0.0, high=1.0, mid=0.5),
}
#: the language's name of each family that can be truncated
_TRUNCATABLE = {family: name for name, (family, _) in FAMILIES.items() if family in _TAILS}


def _log1mexp(xp, t):
    """log(1 − e^t) for t ≤ 0, accurate at both ends (Mächler 2012); both branches finite, so gradients are."""
    near = t > -math.log(2.0)
    return xp.where(near, xp.log(-xp.expm1(xp.where(near, t, -1.0))), xp.log1p(-xp.exp(xp.where(near, -1.0, t))))


def _empty_truncation(family, lower, upper):
    """'lower = ... must be below upper = ...' (or an end of the family's support) where numpy bounds (None:
    open) leave no interval of the support, or None."""
    t, name = _TAILS[family], _TRUNCATABLE[family]
    with np.errstate(invalid="ignore"):
        if lower is not None and upper is not None and not np.all(lower < upper):
            return f"lower = {_shown(lower)} must be below upper = {_shown(upper)}"
        if upper is not None and t.low is not None and not np.all(upper > t.low):
            return f"upper = {_shown(upper)} must be above {t.low:g}, the lowest value of {name}"
        if lower is not None and t.high is not None and not np.all(lower < t.high):
            return f"lower = {_shown(lower)} must be below {t.high:g}, the highest value of {name}"
    return None


def truncated_support(rt, family, lower, upper):
    """(lo, hi): the interval [lower, upper] within the family's support (None: unbounded on that side)."""
    t, xp = _TAILS[family], rt.xp
    lo = lower if t.low is None else xp.full((), t.low) if lower is None else xp.clip(lower, t.low, None)
    hi = upper if t.high is None else xp.full((), t.high) if upper is None else xp.clip(upper, None, t.high)
    return lo, hi


def truncated_batch_shape(params, lower, upper, shape):
    """The batch shape of a truncation: `shape` broadcast with those of its parameters and bounds."""
    return tuple(np.broadcast_shapes(tuple(shape), *(tuple(np.shape(v)) for v in (*params.values(), lower, upper)
                                                       if v is not None)))


class _Truncation:
    """The part of a lowered `Truncated` shared by the runtimes, mixed into each runtime's distribution class
    (`rt.truncated_distribution`), which adds the constructor and the uniform draws of `sample`.

    log p(x) = log p_base(x) − log(F(b) − F(a)) on [a, b], −inf outside; F(b) − F(a) is taken as
    S(a) − S(b) when a is above the median, so that neither tail cancels (a normal cut at 20 σ: log Z = −203.9
    in float32). Draws are the inverse CDF of uniforms, in the interval's own tail: F⁻¹(F(a) + u (F(b) − F(a))),
    or S⁻¹(S(b) + (1 − u)(S(a) − S(b))) above the median, their arguments formed in logs and the inverse
    bisected on log F or log S (`_quantile`): the same draws on both runtimes, for every family."""

    def _setup(self, rt, family, params, lower, upper, shape):
        """The base distribution and the log mass of the interval; returns the batch shape."""
        tails, name = _TAILS[family], _TRUNCATABLE[family]
        try:
            self._base = _constructor(rt.distributions, family)(**params)
        except (TypeError, ValueError) as e:
            raise PPLError(f"{family}: bad parameters {sorted(params)}: {e}") from None
        self._rt, self._tails, self._name, self._p, self._a, self._b = rt, tails, name, params, lower, upper
        self._lo, self._hi = truncated_support(rt, family, lower, upper)
        self._log_mass = self._mass()
        return truncated_batch_shape(params, lower, upper, shape)

    @property
    def support(self):
        c = self._rt.distributions.constraints
        return c.greater_than(self._lo) if self._hi is None else c.less_than(self._hi) if self._lo is None else \
            c.interval(self._lo, self._hi)

    def _tail(self, x):
        """(log F(x), log S(x)) at a bound x, or None; a bound at or beyond an end of the support is that end."""
        if x is None:
            return None
        t, rt = self._tails, self._rt
        xp = rt.xp
        below = None if t.low is None else x <= t.low
        above = None if t.high is None else x >= t.high
        for out in (below, above):
            x = x if out is None else xp.where(out, t.mid, x)
        lf, ls = t.log_cdf(rt, self._p, x), t.log_sf(rt, self._p, x)
        if below is not None:
            lf, ls = xp.where(below, -math.inf, lf), xp.where(below, 0.0, ls)
        if above is not None:
            lf, ls = xp.where(above, 0.0, lf), xp.where(above, -math.inf, ls)
        return lf, ls

    def _mass(self):
        """log(F(b) − F(a))."""
        a, b, xp = self._tail(self._a), self._tail(self._b), self._rt.xp
        if a is None:
            return b[0]
        if b is None:
            return a[1]
        (fa, sa), (fb, sb) = a, b
        above = sa < fa
        return xp.where(above, sa + _log1mexp(xp, xp.where(above, sb - sa, -1.0)),
                        fb + _log1mexp(xp, xp.where(above, -1.0, fa - fb)))

    def log_prob(self, x):
        """NaN (undefined, as at an invalid parameter) wherever the interval is empty."""
        xp = self._rt.xp
        inside = None
        for bound, ok in ((self._lo, lambda b: x >= b), (self._hi, lambda b: x <= b)):
            if bound is not None:
                inside = ok(bound) if inside is None else inside & ok(bound)
        m = xp.where(self._log_mass > -math.inf, self._log_mass, math.nan)
        lp = self._base.log_prob(xp.clip(x, self._lo, self._hi)) - m
        return xp.where(inside | xp.isnan(m), lp, -math.inf)

    def _quantile(self, log_p, upper):
        """x with log F(x) = log_p (log S(x) = log_p where `upper`), bisected: exact where the tail probability
        is below the float's range, where the libraries' `icdf`s, which take probabilities, return ±inf."""
        t, rt, p = self._tails, self._rt, self._p
        xp = rt.xp
        log_tail = t.log_sf if upper else t.log_cdf

        def halve(_, bracket):
            lo, hi = bracket
            mid = 0.5 * (lo + hi)
            above = (log_tail(rt, p, t.x_of_u(rt, p, mid)) > log_p) == upper   # the root is above mid
            return xp.where(above, mid, lo), xp.where(above, hi, mid)
        lo, hi = rt.fori_loop(0, BISECT_STEPS, halve, (log_p * 0.0 - BISECT_RANGE, log_p * 0.0 + BISECT_RANGE))
        return t.x_of_u(rt, p, 0.5 * (lo + hi))

    def _from_uniform(self, u):
        """The draws at uniforms u on [0, 1) (of the batch shape, or more leading axes; u = 0 is taken as 1e-30,
        where log u is finite)."""
        xp = self._rt.xp
        a, b, m = self._tail(self._a), self._tail(self._b), self._log_mass
        u = xp.clip(u, 1e-30, None)
        log_q, log_s = xp.log(u) + m, xp.log1p(-u) + m
        x = self._quantile(log_q if a is None else xp.logaddexp(a[0], log_q), upper=False)
        if a is not None:
            x = xp.where(a[1] < a[0], self._quantile(log_s if b is None else xp.logaddexp(b[1], log_s), upper=True), x)
        return xp.clip(x, self._lo, self._hi)


class Truncated(Distribution):
    """`base` (a continuous scalar family) restricted to [lower, upper], either None (unbounded), renormalized:
    log p(x) = log p_base(x) − log(F(upper) − F(lower)) on the interval, −inf outside. Bounds are numbers or
    arrays (that may depend on other sites) broadcasting with the base's batch shape. Each runtime makes the
    distribution (`rt.truncated_distribution`, over `_Truncation`); `params` are the base's and the bounds."""

    def __init__(self, base, lower=None, upper=None):
        _check_truncatable(base)
        self.base, self.base_family = base, base.family
        self.bounds = (_bound(base, lower, "lower"), _bound(base, upper, "upper"))
        if all(b is None for b in self.bounds):
            raise PPLError(f"truncated {_TRUNCATABLE[base.family]}: give a lower or an upper bound")
        bounds = {k: v for k, v in zip(("lower", "upper"), self.bounds) if v is not None}
        super().__init__(f"Truncated{base.family}", {**base.params, **bounds}, base.shape)

    def check_constant(self):
        """A ValueRangeError where constant bounds leave no interval of the support (`_empty_truncation`)."""
        from ..compiler.shapes import tracing_shapes
        if tracing_shapes():
            return
        bad = _empty_truncation(self.base_family, *(None if v is None else concrete(v) for v in self.bounds))
        if bad:
            raise ValueRangeError(f"truncated {_TRUNCATABLE[self.base_family]}: {bad}")

    def broadcast_params(self, rt):
        batch = tuple(self.lower(rt).batch_shape)
        return {k: rt.xp.broadcast_to(rt.asarray(v), batch) for k, v in self.params.items()}

    def lower(self, rt, params=None):
        """The runtime's truncated distribution; `params` (from `broadcast_params`, batched) overrides."""
        shape = self.shape if params is None else ()
        params = {k: rt.asarray(v) for k, v in (self.params if params is None else params).items()}
        lower, upper = params.pop("lower", None), params.pop("upper", None)
        return rt.truncated_distribution(self.base_family, params, lower, upper, shape)


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


def _check_truncatable(base):
    if type(base) is not Distribution or base.family not in _TRUNCATABLE:
        what = base.family if isinstance(base, Distribution) else type(base).__name__
        raise PPLError(f"truncated: {what} cannot be truncated; the families that can: "
                       f"{', '.join(sorted(_TRUNCATABLE.values()))}")


def _bound(base, value, side):
    """A bound of a truncation of `base`: None where it is None or the infinity of its side (an open side)."""
    c = None if value is None else concrete(value)
    if c is None:
        return value
    if c.shape == () and c == (-np.inf if side == "lower" else np.inf):
        return None
    if not np.all(np.isfinite(c)):
        raise ValueRangeError(f"truncated {_TRUNCATABLE[base.family]}: {side} = {_shown(c)} must be finite (None "
                              f"leaves that side open)")
    return value


def truncated(base, lower=None, upper=None):
    """`base` restricted to [lower, upper] and renormalized (`Truncated`); a bound None (or an infinite number)
    leaves that side open. `base` is a continuous scalar family of `make` (normal, cauchy, student_t, laplace,
    lognormal, exponential, gamma, beta); with no bound it is returned as it is."""
    _check_truncatable(base)
    if _bound(base, lower, "lower") is None and _bound(base, upper, "upper") is None:
        return base
    return Truncated(base, lower, upper)


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
