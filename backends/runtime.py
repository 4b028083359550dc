"""The runtime contract: everything the algorithms may use of an array library.

Algorithms (importance sampling, SMC, particle filters, FKC, PMMH, HMC/NUTS) are written once against
`RuntimeContract` and its numpy-like namespace `XP`; `numpyro_runtime` (JAX) and `pyro_runtime` (torch)
are the only modules where the two differ (tests/test_runtime_contract.py checks that both fulfil it and
that the algorithms use nothing else). A new runtime is one module implementing the contract, registered
under its name. A key is the runtime's functional PRNG key (a JAX key, or an integer seed on torch); keys
are split, never reused.
"""
from typing import Any, Protocol

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


#: the runtime that computes in each array framework (for user functions dispatching on their arrays' type)
FRAMEWORKS = {"jax": "numpyro", "torch": "pyro"}


def runtime_of(framework):
    return FRAMEWORKS[framework]


#: the float precisions a runtime computes in (its `dtype`)
PRECISIONS = ("float32", "float64")


def get_runtime(name="numpyro", device="cpu", precision="float32", devices=None):
    """The runtime called `name` ('numpyro' = JAX, 'pyro' = torch) placing arrays of `precision` on `device`,
    or, with `devices` (an integer, "all", a list of JAX devices; JAX only), splitting particles over several
    (`sharding`)."""
    if isinstance(name, Runtime):
        return name
    if name in MODULES and name not in RUNTIMES:
        import importlib
        importlib.import_module(f"{__package__}.{MODULES[name]}")   # registers it
    if name not in RUNTIMES:
        raise UnknownNameError(f"unknown runtime {name!r}; choose one of {', '.join(sorted(MODULES))}")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise UnknownNameError(f"unknown device {device!r}; choose 'cpu' or 'cuda'")
    if precision not in PRECISIONS:
        raise UnknownNameError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return RUNTIMES[name](device, precision, devices)


#: the numpy-like names algorithms may call on `rt.xp` (numpy's meaning, `axis=` keywords; `index_add(x, idx, v)`
#: adds v[j] at x[idx[j]] out of place, `take(x, idx, axis)`, `cholesky` and `solve` as numpy.linalg's, `flip(x, axis)`,
#: `logsumexp` as in scipy)
XP = ("abs", "arange", "arctan2", "argmax", "asarray", "broadcast_to", "ceil", "cholesky", "clip", "concatenate",
      "cos", "cumsum", "diag", "einsum", "exp", "expm1", "flip", "floor", "full", "index_add", "isfinite", "isnan", "log",
      "log1p", "logaddexp", "logsumexp", "max", "maximum", "mean", "min", "minimum", "ones", "searchsorted", "sign",
      "sin", "solve", "sort", "sqrt", "stack", "sum", "take", "where", "zeros")


class RuntimeContract(Protocol):
    """What an algorithm may use of a runtime `rt` (all batched over a leading particle axis where it says so)."""

    name: str             # the registry name ('numpyro', 'pyro')
    framework: str        # the array framework ('jax', 'torch'), as `ppl.math.framework` names it
    compiles_loops: bool  # a loop over steps (`scan`) compiles into one program (JAX); else each step is a
                          # call from Python (torch), and a loop around one compiled step is faster
    device: Any
    precision: str        # 'float32' | 'float64' (of `PRECISIONS`)
    n_devices: int        # how many devices the particles are split over (`shard`)
    dtype: Any            # the float type of arrays it makes, of that precision
    xp: Any               # the numpy-like namespace (the names in `XP`)
    distributions: Any    # the distribution library (`numpyro.distributions` / `pyro.distributions`)
    special: Any          # scipy.special's log_ndtr, gammainc, gammaincc, betainc on its arrays, those the
                          # library has (for truncated families, `stdlib.distributions._TAILS`)

    # arrays
    def scope(self):
        """A context manager inside which the framework makes floats of `dtype` (a run happens inside it; on
        exit the framework's previous setting is back)."""

    def asarray(self, x, dtype=None):
        """x as an array on the device (tracers pass through)."""

    def asindex(self, x):
        """x as integer indices."""

    def to_numpy(self, x):
        """a numpy copy of x."""

    def shard(self, tree):
        """the leaves of a pytree of particle arrays (leading axis N) split over the `n_devices` devices, inside
        or outside a jitted function (the identity on one device)."""

    def replicate(self, tree):
        """the leaves of a pytree whole on every device (an all-gather; the identity on one device)."""

    def device_count(self, x):
        """how many devices hold parts of the array x."""

    # keys and randomness
    def key(self, seed):
        """the key of an integer seed."""

    def split(self, key, n=2):
        """n independent keys (indexable)."""

    def normal(self, key, shape):
        """standard normal draws."""

    def uniform(self, key, shape):
        """uniform draws on [0, 1)."""

    def sample(self, d, key):
        """a draw from the runtime distribution d."""

    # function transforms
    def vmap(self, fn, in_axes=0):
        """fn mapped over a leading axis."""

    def jit(self, fn, static_argnames=()):
        """fn compiled (the identity where there is no compiler)."""

    def jit_pure(self, fn):
        """fn compiled, for a pure function of arrays and floats (no keys, no branching on array values, no
        state that changes between calls): `jax.jit` on JAX; on torch traced and compiled by inductor per input
        signature where that pays off (`pyro_runtime.compile_mode`), checked once against eager, else eager."""

    def batch(self, fn):
        """fn over the leading axis of its arguments, jitted: vectorized where possible."""

    def value_and_grad(self, fn):
        """`(value, aux), grad` batched over z of a per-particle `fn(z, arg)`."""

    def hvp(self, fn):
        """(z, v) -> Hessian of a scalar fn at z times v."""

    def stop_gradient(self, x):
        """x without gradient."""

    # control flow (pytrees)
    def scan(self, f, init, xs, length=None):
        """`jax.lax.scan`."""

    def fori_loop(self, lower, upper, body, init):
        """`jax.lax.fori_loop`."""

    def while_loop(self, cond_fn, body_fn, init):
        """`jax.lax.while_loop`."""

    def stream(self, key):
        """A context manager: inside it, `draw` and `uniform_draw` take their randomness from one stream seeded
        from `key` (a loop of many small draws keys it once)."""

    def draw(self, d):
        """A draw from the runtime distribution `d` inside `stream` (reparameterized where `d` allows)."""

    def uniform_draw(self, shape):
        """Uniforms on [0, 1) inside `stream`."""

    def cond(self, pred, true_fn, false_fn, *operands):
        """`jax.lax.cond`: only the branch taken runs."""

    def tree_map(self, f, *trees):
        """f over the leaves of pytrees."""

    # distributions and transforms
    def biject_to(self, constraint):
        """the bijection from the reals onto a constraint's set."""

    def constraint(self, name):
        """the runtime's constraint for a support name of `stdlib.distributions.SUPPORTS`."""

    def sorted_distribution(self, base, support):
        """the sorted i.i.d. draws of `base` (ordered supports)."""

    def markov_distribution(self, chain, params):
        """a `stdlib.markov.MarkovChain` as a runtime distribution."""

    def truncated_distribution(self, family, params, lower, upper, shape=()):
        """a `stdlib.distributions.Truncated`: the family with runtime parameters `params` restricted to
        [lower, upper] (runtime arrays, either None), batch shape `shape` broadcast with theirs."""

    # engines of the runtime's own libraries
    def mcmc(self, potential, key, z0, kind, warmup, draws, target_accept, max_tree_depth, num_steps, dense_mass,
             progress):
        """the library's HMC / NUTS on `potential` (see `backends/hmc.py`)."""

    def temp_memory(self, step, init, key):
        """bytes a compiled `step(key, init(key))` allocates (or PPLError)."""

    def flow(self, dim, hidden, orders):
        """a masked autoregressive flow on R^dim from the library's affine autoregressive transforms, one per
        variable order in `orders`, with MADE nets of widths `hidden` (see `backends/flows.py`): an engine with
        `init(seed)` (params of the identity map), `log_prob(params, s)`, `sample(params, key, n)` and
        `trainer(params, s, w, lr, batch, seed)` (w: numpy weights), whose `run(k)` takes k more Adam steps on
        −Σ w log q(s) (on minibatches of `batch` draws resampled ∝ w, or all draws where batch is None) and
        returns the params; params are values: never changed in place once returned."""


class Runtime:
    """Shared parts of the runtimes (each fulfils `RuntimeContract`)."""

    name = "abstract"
    xp = None
    distributions = None
    n_devices = 1

    def __init__(self, device="cpu", precision="float32"):
        self.device, self.precision = device, precision

    def sorted_distribution(self, base, support):
        """K i.i.d. draws of `base` (K its last batch axis), sorted: density K! Π_k p(x_k) on the support
        `support` ('ordered' or 'positive_ordered'); the class is the runtime's `_sorted_class()`."""
        return self._sorted_class()(base, self.constraint(support))

    def markov_distribution(self, chain, params):
        """The distribution of a `stdlib.markov.MarkovChain` path (the runtime's `_markov_class()`)."""
        return self._markov_class()(chain, self, params)

    def truncated_distribution(self, family, params, lower, upper, shape=()):
        """The family restricted to [lower, upper] (`stdlib.distributions.Truncated`): the runtime's
        `_truncated_class()`, over the shared `_Truncation`."""
        return self._truncated_class()(self, family, params, lower, upper, shape)

    def constraint(self, name):
        """The runtime's constraint for a support name of `stdlib.distributions.SUPPORTS`."""
        c = self.distributions.constraints
        return {"real": c.real, "positive": c.positive, "unit_interval": c.unit_interval, "simplex": c.simplex,
                "ordered": c.ordered_vector, "positive_ordered": c.positive_ordered_vector}[name]

    def __repr__(self):
        return f"{self.name} on {self.device}" + ("" if self.n_devices == 1 else f" x{self.n_devices}") + \
            ("" if self.precision == "float32" else f" in {self.precision}")


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
