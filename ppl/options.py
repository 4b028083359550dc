"""A run's options, checked in one place: `ppl.sample` and the `.ppl` loader (`sample` statements, `ppl run`,
`ppl check`) both call `check`.

A method declares its options (its `run`'s parameters, or `run.options`: `backends.option_names`); an option
that means one thing in every method has its range in `backends.VALUES`; a kernel checks its own options.
"""
import functools
import inspect

from .backends import check_options, check_value, get_method, option_names, parameters
from .errors import PPLError


@functools.cache
def sample_options():
    """The names of `ppl.sample`'s own parameters (method, runtime, seed, precision, ...): not the method's."""
    from .api import sample
    return frozenset(n for n, p in inspect.signature(sample).parameters.items() if p.kind != p.VAR_KEYWORD)


def expand(options):
    """An option given as a call, `kernel = hmc(n_leapfrog = 5)`: kernel="hmc", kernel_options={"n_leapfrog": 5}."""
    out = {}
    for key, value in options.items():
        if isinstance(value, dict) and "name" in value:
            value = dict(value)
            out[key] = value.pop("name")
            if value:
                out[key + "_options"] = value
        else:
            out[key] = value
    return out


def check_values(options):
    """`options` (name -> value) with every value checked for its name (`backends.VALUES`; converted there, e.g.
    an integral seed to int). An error carries the option's name as `e.option`."""
    out = {}
    for key, value in options.items():
        try:
            out[key] = check_value(key, value)
        except PPLError as e:
            e.option = key
            raise
    return out


def check_unset(run, options):
    """Options given as None mean "the method's default": passed on where the method's own default is None (e.g.
    sequence pf's resample_threshold, chosen by its potential), else checked as values (a range error)."""
    params = parameters(run)
    check_values({k: v for k, v in options.items()
                  if v is None and (k not in params or params[k].default is not None)})


def check_names(method, kind, options):
    """The method's options among `options` (those that are not `ppl.sample`'s own), expanded (`expand`): an
    UnknownNameError for a name `method` (on plans of `kind`; any kind when None) does not take, before and after
    expanding calls, and the kernel's error for options a named kernel does not take."""
    from .backends.kernels import get_kernel
    known = option_names(get_method(method, kind))
    given = {k: v for k, v in options.items() if k not in sample_options()}
    check_options(method, given, known)
    given = expand(given)
    check_options(method, given, known)
    if isinstance(given.get("kernel"), str):
        get_kernel(given["kernel"]).options(given.get("kernel_options"))
    return given


def check(method, kind, options):
    """`options` of a run of `method` on plans of `kind` (`ppl.sample`'s own and the method's) checked once:
    values (`check_values`), then names (`check_names`). Returns them with calls expanded."""
    values = check_values(options)
    return {**{k: v for k, v in values.items() if k in sample_options()}, **check_names(method, kind, values)}
