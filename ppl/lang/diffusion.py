"""Diffusion declarations: `diffusion NAME = BASE(...)`, the `ppl.diffusion(score, sde, dim)` base named NAME.

    diffusion q = mixture(means, sd = 0.5, weights = w, sde = vp(beta_min = 0.1, beta_max = 20))
    diffusion s = score(fn, sde = ve(sigma_min = 0.01, sigma_max = 10), dim = 2)   # fn: a `use`d Python score

`mixture` is `ppl.GaussianMixture(means [K, d], sd: scalar, [K] or [K, d], weights [K])` (exact noised scores,
dimension d); `score` is a batched Python callable score(x [N, d], t [N]) -> [N, d] of dimension `dim`. The
forward SDE is `vp(...)` (`ppl.VPSDE`) or `ve(...)` (`ppl.VESDE`) with their keyword options. Every error is
located at the argument it is about.
"""
import inspect

import numpy as np

from ..diffusion import DiffusionModel
from ..errors import PPLError
from ..stdlib.diffusion import VESDE, VPSDE, GaussianMixture
from . import syntax as S
from .interpret import concrete_int
from .source import suggest

#: the forward SDEs by their language names; their options are the constructors' parameters
SDES = {"vp": VPSDE, "ve": VESDE}
#: each base constructor: its one positional argument and its named options
BASES = {"mixture": ("means", ("sd", "weights", "sde")), "score": ("fn", ("sde", "dim"))}
SPELLING = "mixture(means, sd = ..., sde = vp()) or score(fn, sde = vp(), dim = d)"


def base_call(call, src, kind, bases, spelling, hints=lambda func, name: None):
    """(the one positional argument, {option: expression}) of the base `call` of a `kind` declaration, checked:
    a base of `bases` ({name: (what the argument is, option names)}), one positional argument, known options
    (`hints(func, option)` may explain an unknown one), none twice."""
    if call.func not in bases:
        raise src.error(call, f"unknown {kind} base {call.func!r}; write {spelling}",
                        hint=suggest(call.func, list(bases)))
    first, named = bases[call.func]
    args = call.args
    if len(args.positional) != 1:
        raise src.error(call, f"{call.func} takes {first} as its one positional argument; the others are named: "
                              f"{', '.join(named)}")
    options = {}
    for k in args.keywords:
        if k.name not in named:
            raise src.error(k, f"{call.func} has no option {k.name!r}; it takes {', '.join(named)}",
                            hint=hints(call.func, k.name) or suggest(k.name, named))
        if k.name in options:
            raise src.error(k, f"option {k.name!r} is given twice")
        options[k.name] = k.value
    return args.positional[0], options


def build_diffusion(node, src, constant, functions):
    """The `DiffusionModel` of `node` (a `DiffusionDef`); `constant(expr)` evaluates data and constants,
    `functions` are the `use`d Python callables."""
    call = node.base
    arg, options = base_call(call, src, "diffusion", BASES, SPELLING, lambda func, name: (
        "a mixture's dimension is that of its means [K, d]" if name == "dim" else None))
    if "sde" not in options:
        raise src.error(call, f"{call.func} needs its forward SDE: sde = vp(...) or ve(...)")
    sde = _sde(options.pop("sde"), src, constant)
    if call.func == "score":
        score, dim = _score(call, arg, options, src, constant, functions)
    else:
        score = _mixture(arg, options, src, constant)
        dim = score.dim
    try:
        return DiffusionModel(score, sde, dim, name=node.name)
    except PPLError as e:
        raise src.relocate(call, e) from None


def _sde(e, src, constant):
    """`vp(...)` or `ve(...)`: the SDE object."""
    if not isinstance(e, S.Call):
        raise src.error(e, "sde is vp(beta_min = ..., beta_max = ...) or ve(sigma_min = ..., sigma_max = ...)")
    if e.func not in SDES:
        raise src.error(e, f"unknown SDE {e.func!r}; choose vp (variance preserving) or ve (variance exploding)",
                        hint=suggest(e.func, list(SDES)))
    if e.args.positional:
        raise src.error(e.args.positional[0], f"the options of {e.func} are named: {_sde_spelling(e.func)}")
    cls, kw = SDES[e.func], {}
    known = list(inspect.signature(cls).parameters)
    for k in e.args.keywords:
        if k.name not in known:
            raise src.error(k, f"{e.func} has no option {k.name!r}; it takes {', '.join(known)}",
                            hint=suggest(k.name, known))
        kw[k.name] = _number(k.value, src, constant)
    try:
        return cls(**kw)
    except PPLError as err:
        raise src.relocate(e, err) from None


def _sde_spelling(name):
    return f"{name}(" + ", ".join(f"{p} = {v.default:g}" for p, v in
                                  inspect.signature(SDES[name]).parameters.items()) + ")"


def _number(e, src, constant):
    v = np.asarray(constant(e))
    if v.ndim != 0 or v.dtype.kind not in "iuf":
        raise src.error(e, "expected a number known before sampling")
    return float(v)


def _array(e, src, constant, what):
    v = np.asarray(constant(e))
    if v.dtype.kind not in "iuf":
        raise src.error(e, f"{what} must be numbers known before sampling")
    return v.astype(np.float64)


def _mixture(e, options, src, constant):
    """`mixture(means, sd, weights)`: a GaussianMixture with its shapes checked where they are written."""
    means = _array(e, src, constant, "the means of a mixture")
    if means.ndim != 2:
        raise src.error(e, f"the means of a mixture are a matrix [K, d] (K components in d dimensions), got "
                           f"shape {list(means.shape)}", hint="one component in d dimensions is [[m1, ..., md]]")
    k, d = means.shape
    kw = {}
    if "sd" in options:
        sd = _array(options["sd"], src, constant, "sd")
        if sd.shape not in ((), (k,), (k, d)):
            raise src.error(options["sd"], f"sd of a mixture of {k} components in {d} dimensions is a number, "
                                           f"[{k}] or [{k}, {d}], got shape {list(sd.shape)}")
        if np.any(sd <= 0):
            raise src.error(options["sd"], "sd must be > 0")
        kw["sd"] = sd
    if "weights" in options:
        w = _array(options["weights"], src, constant, "weights")
        if w.shape != (k,) or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
            raise src.error(options["weights"], f"the weights of a mixture of {k} components are {k} non-negative "
                                                f"numbers summing to 1, got [{', '.join(f'{v:g}' for v in w)}]")
        kw["weights"] = w
    try:
        return GaussianMixture(means, **kw)
    except PPLError as err:
        raise src.relocate(e, err) from None


def _score(call, e, options, src, constant, functions):
    """`score(fn, dim = d)`: the `use`d callable and the dimension."""
    if not isinstance(e, S.Name) or e.name not in functions:
        raise src.error(e, "score(fn, ...) takes a Python score function imported by `use fn from \"module:attr\"`",
                        hint="run with --allow-python (API: allow_python=True) to import it")
    if "dim" not in options:
        raise src.error(call, "score(...) needs dim = d, the dimension of the diffusion's site x")
    dim = concrete_int(constant(options["dim"]))
    if dim is None or dim < 1:
        raise src.error(options["dim"], "dim must be a positive integer known before sampling")
    return functions[e.name], dim
