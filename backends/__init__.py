"""Inference algorithms and the two runtimes. `METHODS[name][kind]` is the `run` function of method `name` for
targets planned as `kind` ('model', 'diffusion', 'sequence': the plan's `kind`), so one name ('pf') can mean the
particle filter of a state-space model and of a sequence model."""
import functools
import inspect
import numbers

from .. import advice
from ..errors import PlanError, UnknownNameError, ValueRangeError
from .runtime import PRECISIONS, get_runtime

METHODS = {}


def integer(value, what, low, high=None):
    """value as an int in [low, high), or a ValueRangeError naming `what` (no bools, floats or strings)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or \
            (high is not None and value >= high):
        bound = f">= {low}" + (f" and < {high}" if high is not None else "")
        raise ValueRangeError(f"{what} must be an integer {bound}, got {value!r}")
    return int(value)


def fraction(value, what, closed=False):
    """value as a float in (0, 1) ([0, 1] when `closed`), or a ValueRangeError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not (0 <= value <= 1 if closed else 0 < value < 1):
        raise ValueRangeError(f"{what} must be a number in {'[0, 1]' if closed else '(0, 1)'}, got {value!r}")
    return float(value)


def flag(value, what, optional=False):
    """value as a bool (None too when `optional`), or a ValueRangeError naming `what` (1, "yes" are not flags)."""
    if not (isinstance(value, bool) or optional and value is None):
        raise ValueRangeError(f"{what} must be True or False{' (or None)' if optional else ''}, got {value!r}")
    return value


def one_of(value, what, known):
    """value if it is one of the strings `known`, or an UnknownNameError naming `what` and the known ones."""
    if not isinstance(value, str) or value not in known:
        raise UnknownNameError(f"unknown {what} {value!r}; choose one of {', '.join(known)}")
    return value


def proposal(value, what):
    """value if None, a fitted proposal (`backends.proposals.Proposal`: is, ais), a `ppl.markov` site (the
    guided particle filter's), or for sequence targets a base's index or a sequence model, else a PlanError
    naming `what`."""
    from .proposals import Proposal
    sequence = getattr(value, "kind", None) == "sequence" or (isinstance(value, numbers.Integral)
                                                              and not isinstance(value, bool))
    if value is not None and not isinstance(value, Proposal) and getattr(value, "markov", None) is None \
            and not sequence:
        raise PlanError(f"{what} must be a fitted proposal (r.proposal of an 'ais' run, ppl.amortize(...)(context)), "
                        f"for pf a ppl.markov site, or for a sequence target a sequence model or a base's index; got "
                        f"{type(value).__name__} {value!r:.40}")
    return value


def run_cache(owner, name):
    """The dict in which method `name` keeps what it built for `owner` (a compiled target: its models and jitted
    steps, per runtime and options), stored on the owner so that it goes with it. (A module-level
    WeakKeyDictionary would not: its values refer back to their key, so no compiled target was ever freed.)"""
    return owner.__dict__.setdefault("_run_cache", {}).setdefault(name, {})


#: options that mean one thing in every method taking them: name -> check(value, name), which returns the value
VALUES = {"particles": lambda v, k: integer(v, k, 1), "seed": lambda v, k: integer(v, k, 0, 2 ** 63),
          "chains": lambda v, k: integer(v, k, 1), "num_warmup": lambda v, k: integer(v, k, 0),
          "runs": lambda v, k: integer(v, k, 1), "target_accept": fraction, "target_ess": fraction,
          "decorrelation": fraction, "resample_threshold": lambda v, k: fraction(v, k, closed=True),
          "fold": flag, "marginalize": flag, "progress": lambda v, k: flag(v, k, optional=True),
          "precision": lambda v, k: one_of(v, k, PRECISIONS), "proposal": proposal}


def check_value(name, value):
    """`value` checked for option `name` where `VALUES` has a check for it (a ValueRangeError if it fails)."""
    return VALUES[name](value, name) if name in VALUES else value


def check_options(method, given, known):
    """An UnknownNameError for options of `method` outside `known`, naming the ones it takes."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise UnknownNameError(f"method {method!r} has no option(s) {', '.join(unknown)}; its options: "
                               f"{', '.join(known)}")


@functools.cache
def parameters(run):
    """`inspect.signature(run).parameters`, read once per method (25 µs a call: every run checks its options)."""
    return inspect.signature(run).parameters


def option_names(run):
    """The options a method's `run` takes: `run.options` where it passes **options on, else its parameters."""
    if hasattr(run, "options"):
        return list(run.options)
    internal = ("compiled", "plan", "rt", "key", "particles", "progress")
    return [n for n, p in parameters(run).items() if n not in internal and p.kind != p.VAR_KEYWORD]


def method(name, kind="model"):
    """Register `run(compiled, runtime, key, **options) -> Result` as method `name` for plans of `kind`."""
    def deco(fn):
        METHODS.setdefault(name, {})[kind] = fn
        return fn
    return deco


KINDS = {"model": "models", "diffusion": "diffusion models", "sequence": "sequence models"}


@functools.lru_cache(maxsize=None)
def _import_methods():
    """Import every module of this package but the runtimes' own (`<runtime>_*.py`, which import their framework)
    (once: each registers its methods)."""
    import importlib
    import pkgutil
    from .runtime import KNOWN
    for m in pkgutil.iter_modules(__path__):
        if m.name.split("_")[0] not in KNOWN:
            importlib.import_module(f"{__name__}.{m.name}")


def get_method(name, kind=None):
    """The method registered as `name` (for plans of `kind`; any kind when None); every module of this package
    but the runtimes registers its own, so a new method is one module."""
    _import_methods()
    if name not in METHODS:
        raise UnknownNameError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    if kind is None:
        return next(iter(METHODS[name].values()))
    if kind not in METHODS[name]:
        kinds = " and ".join(KINDS.get(k, k) for k in METHODS[name])
        fits = " or ".join(advice.options(n, True) for n, ks in sorted(METHODS.items()) if kind in ks)
        raise PlanError(f"method {name!r} samples {kinds}; the target contains {KINDS.get(kind, kind)}",
                        hint=f"use {fits}")
    return METHODS[name][kind]


__all__ = ["METHODS", "check_options", "check_value", "fraction", "integer", "method", "get_method", "get_runtime",
           "run_cache"]
