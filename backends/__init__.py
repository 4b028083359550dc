"""Inference algorithms and the two runtimes. `METHODS` maps a method name to its `run` function."""
from ..errors import UnknownNameError
from .runtime import get_runtime

METHODS = {}


def method(name):
    """Register `run(compiled, runtime, key, **options) -> Result` under `name`."""
    def deco(fn):
        METHODS[name] = fn
        return fn
    return deco


def get_method(name):
    from . import importance  # noqa: F401  (each backend module registers itself)
    for module in ("smc", "hmc", "fkc", "pf", "pmmh"):
        try:
            __import__(f"{__name__}.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{module}":
                raise
    if name not in METHODS:
        raise UnknownNameError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "method", "get_method", "get_runtime"]
