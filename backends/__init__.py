"""Inference algorithms and the two runtimes. `METHODS` maps a method name to its `run` function."""
import numbers

from ..errors import UnknownNameError, ValueRangeError
from .runtime import get_runtime

METHODS = {}


def integer(value, what, low, high=None):
    """value as an int in [low, high), or a ValueRangeError naming `what` (no bools, floats or strings)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or \
            (high is not None and value >= high):
        bound = f">= {low}" + (f" and < {high}" if high is not None else "")
        raise ValueRangeError(f"{what} must be an integer {bound}, got {value!r}")
    return int(value)


def check_options(method, given, known):
    """An UnknownNameError for options of `method` outside `known`, naming the ones it takes."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise UnknownNameError(f"method {method!r} has no option(s) {', '.join(unknown)}; its options: "
                               f"{', '.join(known)}")


def method(name):
    """Register `run(compiled, runtime, key, **options) -> Result` under `name`."""
    def deco(fn):
        METHODS[name] = fn
        return fn
    return deco


def get_method(name):
    """The method registered as `name`; every module of this package but the runtimes registers its own, so a
    new method is one module."""
    import importlib
    import pkgutil
    for m in pkgutil.iter_modules(__path__):
        if not m.name.endswith("runtime"):
            importlib.import_module(f"{__name__}.{m.name}")
    if name not in METHODS:
        raise UnknownNameError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "check_options", "integer", "method", "get_method", "get_runtime"]
