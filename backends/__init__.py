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


__all__ = ["METHODS", "method", "get_method", "get_runtime"]
