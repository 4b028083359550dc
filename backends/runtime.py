"""The runtime interface: everything the algorithms need from an array library.

Algorithms (importance sampling, SMC, FKC) are written once against `Runtime`;
`numpyro_runtime` (JAX) and `pyro_runtime` (torch) are the only modules where
the two differ. A key is the runtime's functional PRNG key (a JAX key, or an
integer seed on torch); keys are split, never reused.
"""
from ..errors import UnknownNameError

RUNTIMES = {}
#: the module of each runtime, imported when that runtime is first asked for (a Pyro run never imports JAX,
#: a NumPyro run never imports torch)
MODULES = {"numpyro": "numpyro_runtime", "pyro": "pyro_runtime"}


def register(name):
    def deco(cls):
        RUNTIMES[name] = cls
        return cls
    return deco


def get_runtime(name="numpyro", device="cpu"):
    """The runtime called `name` ('numpyro' = JAX, 'pyro' = torch) placing arrays on `device`."""
    if isinstance(name, Runtime):
        return name
    if name in MODULES and name not in RUNTIMES:
        import importlib
        importlib.import_module(f"{__package__}.{MODULES[name]}")   # registers it
    if name not in RUNTIMES:
        raise UnknownNameError(f"unknown runtime {name!r}; choose one of {', '.join(sorted(MODULES))}")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise UnknownNameError(f"unknown device {device!r}; choose 'cpu' or 'cuda'")
    return RUNTIMES[name](device)


class Runtime:
    """Array ops (`xp`, numpy-like), keys, vmap/grad/jit, loops and the runtime's distributions."""

    name = "abstract"
    #: numpy-like namespace: exp, log, sum(x, axis=), where, cumsum, searchsorted, logsumexp, ...
    xp = None
    #: `numpyro.distributions` or `pyro.distributions`
    distributions = None

    def __init__(self, device="cpu"):
        self.device = device

    def constraint(self, name):
        """The runtime's constraint for a support name of `stdlib.distributions.SUPPORTS`."""
        c = self.distributions.constraints
        return {"real": c.real, "positive": c.positive, "unit_interval": c.unit_interval, "simplex": c.simplex,
                "ordered": c.ordered_vector, "positive_ordered": c.positive_ordered_vector}[name]

    def __repr__(self):
        return f"{self.name} on {self.device}"


def batched(rt, fn, batch_size):
    """`fn(z, beta)` evaluated in chunks of `batch_size` particles (a scan; the tail chunk is padded)."""
    xp = rt.xp

    def chunked(z, beta):
        n, d = z.shape
        if batch_size is None or n <= batch_size:
            return fn(z, beta)
        m = -(-n // batch_size)
        pad = m * batch_size - n
        zp = xp.concatenate([z, z[:pad]]) if pad else z
        _, out = rt.scan(lambda c, zc: (c, fn(zc, beta)), 0.0, zp.reshape(m, batch_size, d))
        return tuple(o.reshape((m * batch_size,) + tuple(o.shape[2:]))[:n] for o in out)
    return chunked
