"""Particles (and MCMC chains) split over several JAX devices: the runtime's 1-d mesh.

The particle axis is split along a 1-d `jax.sharding.Mesh` with axis name "particles": every array with a
leading particle axis is placed with `NamedSharding(mesh, PartitionSpec("particles"))`, everything else (keys,
β, step sizes, log Z) replicated on the mesh. The jitted step of `fk` is then partitioned by XLA (GSPMD):
densities, gradients and MCMC moves run on each device's own particles; the global reductions (logsumexp of the
weights, ESS, the conditional ESS of the tempering bisection, the resampler's cumulative sum) and the gathers of
resampling become collectives. Resampling is therefore global, exactly as on one device: the estimator, and so
its variance, is the one-device estimator (the same draws, up to the order of floating-point sums), not an
average of independent per-device runs. (SMC's cross moves split the particles into blocks, [:N/2] and
[N/2:]; XLA redistributes each half over all devices, collective permutes of N/(2k) particles per move phase,
so that every device moves its share; the compiled IS step has no collective on the particles but the
reductions and the resampling branch.)
"""
import jax
import numpy as np
from jax.sharding import PartitionSpec

from ..errors import DeviceError, ValueRangeError

#: the name of the mesh's one axis, along which particles (or chains) are split
AXIS = "particles"


def mesh(devices, available):
    """The 1-d mesh over `devices` (an integer: the first that many of the JAX devices `available`; "all"; a list
    of JAX devices), or None for one device (None, 1, or a list of one)."""
    from jax.sharding import Mesh
    if devices is None or devices == 1:
        return None
    if devices == "all":
        chosen = available
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if devices < 1:
            raise ValueRangeError(f"devices must be >= 1, 'all' or a list of JAX devices, got {devices!r}")
        if devices > len(available):
            raise DeviceError(f"devices={devices} requested but JAX sees {len(available)} "
                              f"{available[0].platform} device(s); on CPU set the environment variable "
                              f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} before JAX starts")
        chosen = available[:devices]
        processes = sorted({d.process_index for d in available})
        if len(processes) > 1:      # several processes (ppl.distributed): devices / processes of each
            if devices % len(processes):
                raise ValueRangeError(f"devices={devices} must be divisible by the number of processes "
                                      f"({len(processes)}), each giving devices / processes of its own, or 'all'")
            chosen = [d for p in processes for d in [d for d in available if d.process_index == p]
                      [:devices // len(processes)]]
            if len(chosen) < devices:
                raise DeviceError(f"devices={devices} requested but the {len(processes)} processes have "
                                  f"{len(available)} devices in all, not as many on each")
    elif isinstance(devices, (list, tuple)) and devices and all(isinstance(d, jax.Device) for d in devices):
        chosen = list(devices)
    else:
        raise ValueRangeError(f"devices must be an integer, 'all' or a list of JAX devices, got {devices!r}")
    return None if len(chosen) == 1 else Mesh(np.array(chosen), (AXIS,))


def chains_across(mesh):
    """A NumPyro `chain_method` (a transform of the one-chain sampler f) that runs chains [C, ...] on the devices
    of `mesh`: `shard_map` over the mesh's particle axis of `vmap` over each device's C / devices chains, so that
    each device draws its own chains and nothing passes between them."""
    def transform(f):
        return jax.jit(jax.shard_map(jax.vmap(f), mesh=mesh, in_specs=PartitionSpec(AXIS),
                                     out_specs=PartitionSpec(AXIS), check_vma=False))
    return transform
