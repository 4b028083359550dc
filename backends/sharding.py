"""Particles over several devices: which methods split them, and the checks of a request.

A runtime that splits particles over devices (`n_devices` > 1: the JAX runtime's mesh, `numpyro_runtime`) places
arrays with a leading particle axis with its `shard` and everything else with `replicate`; the methods marked
here (`shards_particles`, `shards_chains`) are written for that, and `check` refuses the others.
"""
from ..errors import DeviceError, ValueRangeError


def check(method, run, particles, n_devices):
    """A clear error unless `run` (method `method`) splits its particles (or its chains) over devices and
    `particles` divides evenly among `n_devices` of them."""
    if n_devices == 1:
        return
    splits = getattr(run, "splits_over_devices", None)
    if splits is None:
        raise DeviceError(f"method {method!r} runs on one device; devices= (here {n_devices}) is for the particle "
                          f"methods 'is', 'smc', 'pf' and 'fkc' and the chains of 'nuts' and 'hmc'")
    if splits == "particles" and particles % n_devices:
        raise ValueRangeError(f"particles ({particles}) must be divisible by the number of devices ({n_devices}): "
                              f"each device holds particles / devices of them")


def shards_particles(run):
    """Mark a method's `run` as one whose particles `check` lets split over devices."""
    run.splits_over_devices = "particles"
    return run


def shards_chains(run):
    """Mark a method's `run` (an MCMC method) as one whose chains are split over devices."""
    run.splits_over_devices = "chains"
    return run
