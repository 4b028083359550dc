"""The runtime contract: everything the algorithms may use of an array library.

Algorithms (importance sampling, SMC, particle filters, FKC, PMMH, HMC/NUTS), `ppl.math`, the language's
evaluator, amortized training and the user model objects (score nets, language models) are written once against
`RuntimeContract` and its numpy-like namespace `XP`; a runtime's own modules (`backends/<name>_*.py`:
`numpyro_runtime` for JAX, `pyro_runtime` for torch, and the helpers they import) are the only places where the
runtimes differ (tests/test_runtime_contract.py checks that every registered runtime fulfils the contract and
that the rest of the package uses nothing else and never branches on a runtime's name or framework).
A new runtime is its module implementing the contract (`@register(name)`) and its row in `KNOWN`, the one
registry that the language, the command line and `ppl.math` read. A key is the runtime's functional PRNG key
(a JAX key, or an integer seed on torch); keys are split, never reused.
"""
import contextlib
import contextvars
from typing import Any, Protocol

from ..errors import PPLError, UnknownNameError

#: the classes of the runtimes whose modules are imported, by name (`register`)
RUNTIMES = {}


class Entry:
    """A runtime's row in the registry: the module that implements it (in this package; imported when the
    runtime is first asked for, so a Pyro run never imports JAX and a NumPyro run never imports torch), the array
    framework it computes in (as `ppl.math.framework` names it), the top-level packages whose array types are its
    arrays, and the module prefixes of the user model objects (neural nets) it runs."""

    def __init__(self, module, framework, arrays, modules=(), pure_modules=False):
        self.module, self.framework, self.arrays, self.modules = module, framework, tuple(arrays), tuple(modules)
        self.pure_modules = pure_modules    # its model objects are called with their parameters (flax's apply)


#: THE registry: every runtime by name (a new runtime is a module implementing the contract and one row here)
KNOWN = {"numpyro": Entry("numpyro_runtime", "jax", arrays=("jax", "jaxlib"), modules=("flax",), pure_modules=True),
         "pyro": Entry("pyro_runtime", "torch", arrays=("torch",), modules=("torch",))}
#: the runtime a run uses unless told otherwise
DEFAULT = "numpyro"


def register(name):
    """Class decorator of a runtime module: the class implementing the runtime `name` of `KNOWN`."""
    def deco(cls):
        RUNTIMES[name] = cls
        return cls
    return deco


def names():
    """The names of the runtimes, sorted."""
    return sorted(KNOWN)


def runtime_of(framework):
    """The name of the runtime that computes in the array framework `framework` ('jax' -> 'numpyro')."""
    return next(n for n, e in KNOWN.items() if e.framework == framework)


#: the framework of the arrays of each top-level package (`Entry.arrays`)
ARRAYS = {root: e.framework for e in KNOWN.values() for root in e.arrays}


def framework_of(obj):
    """The framework whose arrays `obj`'s type is one of (by the top-level package of its module), or None."""
    return ARRAYS.get(type(obj).__module__.partition(".")[0])


def module_owner(obj):
    """The name of the runtime that computes a user model object (a torch `nn.Module`, a flax module, a torch
    object), or None for anything else (a plain Python callable)."""
    for cls in type(obj).__mro__:
        for n, e in KNOWN.items():
            if any(cls.__module__.startswith(m) for m in e.modules):
                return n
    return None


_ACTIVE = contextvars.ContextVar("ppl_runtime", default=None)


@contextlib.contextmanager
def active(rt):
    """A block inside which `rt` is the runtime in use (entered by every runtime's `scope`)."""
    token = _ACTIVE.set(rt)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def in_use():
    """The runtime for values that no array places: the one whose run is under way (inside its `scope`), else
    the only runtime imported so far, else `DEFAULT` (site functions of constants, evaluated outside a run)."""
    rt = _ACTIVE.get()
    if rt is None:
        rt = get_runtime(next(iter(RUNTIMES)) if len(RUNTIMES) == 1 else DEFAULT)
    return rt


#: the float precisions a runtime computes in (its `dtype`)
PRECISIONS = ("float32", "float64")


def runtime_class(name):
    """The class of the runtime `name`, its module imported on first use."""
    if name in KNOWN and name not in RUNTIMES:
        import importlib
        importlib.import_module(f"{__package__}.{KNOWN[name].module}")   # registers it
    if name not in RUNTIMES:
        raise UnknownNameError(f"unknown runtime {name!r}; choose one of {', '.join(names())}")
    return RUNTIMES[name]


def get_runtime(name=DEFAULT, device="cpu", precision="float32", devices=None):
    """The runtime called `name` ('numpyro' = JAX, 'pyro' = torch) placing arrays of `precision` on `device`,
    or, with `devices` (an integer, "all", a list of JAX devices; JAX only), splitting particles over several
    (`sharding`)."""
    if isinstance(name, Runtime):
        return name
    cls = runtime_class(name)
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise UnknownNameError(f"unknown device {device!r}; choose 'cpu' or 'cuda'")
    if precision not in PRECISIONS:
        raise UnknownNameError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return cls(device, precision, devices)


#: the numpy-like names algorithms may call on `rt.xp` (numpy's meaning, `axis=` keywords; `index_add(x, idx, v)`
#: adds v[j] at x[idx[j]] out of place, `take(x, idx, axis)`, `cholesky` and `solve` as numpy.linalg's, `flip(x, axis)`,
#: `logsumexp` as in scipy, `solve_triangular(a, b, lower)` as scipy.linalg's; `cholesky` gives NaN entries for a
#: matrix that is not positive-definite; `linalg` has numpy.linalg's `inv` and `slogdet`)
XP = ("abs", "arange", "arctan2", "argmax", "asarray", "broadcast_to", "ceil", "cholesky", "clip", "concatenate",
      "cos", "cumsum", "diag", "einsum", "exp", "expm1", "flip", "floor", "full", "full_like", "index_add",
      "isfinite", "isnan", "linalg", "log", "log1p", "logaddexp", "logsumexp", "max", "maximum", "mean", "min",
      "minimum", "ones", "ones_like", "prod", "searchsorted", "sign", "sin", "solve", "solve_triangular", "sort",
      "sqrt", "stack", "sum", "take", "where", "zeros", "zeros_like")


class RuntimeContract(Protocol):
    """What an algorithm may use of a runtime `rt` (all batched over a leading particle axis where it says so)."""

    name: str             # the registry name ('numpyro', 'pyro')
    framework: str        # the array framework ('jax', 'torch'), as `ppl.math.framework` names it
    compiles_loops: bool  # a loop over steps (`scan`) compiles into one program (JAX); else each step is a
                          # call from Python (torch), and a loop around one compiled step is faster
    traces_shapes: bool   # False; True only for the compiler's shape trace (`compiler.shapes.ShapeRuntime`,
                          # numpy values standing for one particle), where exact marginals give no number
    device: Any
    precision: str        # 'float32' | 'float64' (of `PRECISIONS`)
    n_devices: int        # how many devices the particles are split over (`shard`)
    dtype: Any            # the float type of arrays it makes, of that precision
    xp: Any               # the numpy-like namespace (the names in `XP`)
    distributions: Any    # the distribution library (`numpyro.distributions` / `pyro.distributions`)
    special: Any          # scipy.special's log_ndtr, gammainc, gammaincc, betainc on its arrays, those the
                          # library has (for truncated families, `stdlib.distributions._TAILS`)
    special_functions: Any  # the library's scipy.special namesake (erf, erfc, ndtr, ndtri, digamma, gammaln,
                            # expit: `ppl.math.SPECIAL`)

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

    @staticmethod
    def device_of(x):
        """the `device` of `get_runtime` whose runtime computes on the array x (`ppl.math.runtime`)."""

    def full_like(self, like, value, dtype=None):
        """the constant `value` (a number, list or numpy array) as an array on `like`'s device, of like's dtype
        or of the numpy `dtype`."""

    def set_index(self, x, idx, value):
        """x with x[idx] = value, out of place (idx a tuple of ints, slices, index arrays; x or value may be a
        constant); under `vmap` too."""

    def dynamic_slice(self, x, start, size):
        """x[start:start + size] along the first axis, where `start` is traced (`is_concrete` False)."""

    def is_concrete(self, x):
        """whether x's value is known (False for a tracer of a function being compiled)."""

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

    def jit(self, fn, static_argnames=(), unroll_threefry=False):
        """fn compiled (the identity where there is no compiler). `unroll_threefry`: on JAX, fn's threefry hash
        lowered unrolled on CPU (faster draws; for functions that draw in one block, not inside loops: see
        `numpyro_runtime`)."""

    def jit_pure(self, fn, vectorize=True):
        """fn compiled, for a pure function of arrays and floats (no keys, no branching on array values, no
        state that changes between calls): `jax.jit` on JAX; on torch traced and compiled by inductor per input
        signature where that pays off (`pyro_compile.compile_mode`), checked once against eager, else eager.
        `vectorize=False`: a hint that fn gathers more than it computes (torch compiles it to scalar loops)."""

    def batch(self, fn):
        """fn over the leading axis of its arguments, jitted: vectorized where possible."""

    def value_and_grad(self, fn):
        """`(value, aux), grad` batched over z of a per-particle `fn(z, arg)`."""

    def hvp(self, fn):
        """(z, v) -> Hessian of a scalar fn at z times v."""

    def stop_gradient(self, x):
        """x without gradient."""

    def no_grad(self):
        """a context manager inside which no gradient is recorded (calls into user nets for their values only)."""

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

    def holds(self, x):
        """whether x is an array of this runtime's framework."""

    def sorted_distribution(self, base, support):
        """the sorted i.i.d. draws of `base` (ordered supports)."""

    def markov_distribution(self, chain, params):
        """a `stdlib.markov.MarkovChain` as a runtime distribution."""

    def truncated_distribution(self, family, params, lower, upper, shape=()):
        """a `stdlib.distributions.Truncated`: the family with runtime parameters `params` restricted to
        [lower, upper] (runtime arrays, either None), batch shape `shape` broadcast with theirs."""

    # user model objects (neural nets)
    def owns(self, obj):
        """whether the runtime runs the user object `obj`: a plain callable, or a model object of its own
        framework (`runtime.module_owner`)."""

    def bind(self, module, params=None):
        """the callable of a user model object (a flax module's apply bound to `params`; a torch module itself)."""

    # engines of the runtime's own libraries
    def mcmc(self, potential, key, z0, sampler, warmup, draws, target_accept, max_tree_depth, num_steps, dense_mass,
             progress, value_and_grad=None):
        """the library's HMC / NUTS on `potential` (see `backends/hmc.py`): z [C, S, D], per-draw stats {name:
        numpy [C, S]} ("diverging", "energy", "n_steps", "acceptance_rate", "step_size"; and "log_density" [C, S]
        with "grad" [C, S, D] where the library records them at every draw), the adapted step size [C] and the
        mean acceptance probability [C]. `value_and_grad(z)` -> (potential, its gradient) at one point, for a
        library that would otherwise differentiate `potential` eagerly."""

    def temp_memory(self, step, init, key):
        """bytes a compiled `step(key, init(key))` allocates (or PPLError)."""

    def conditional_gaussian(self, context_shape, dim, hidden, depth, shift, scale, seed):
        """the default proposal of `ppl.amortize`: an MLP c [B, *context_shape] -> (mean, log σ) [B, dim] of
        q(z | c) = N(mean, diag σ²) in the library's form (a torch module; a JAX pair (params, apply)), `hidden`
        units x `depth` tanh layers plus a linear map of the standardized context (c − shift) / scale, its last
        layers zero (q starts at N(0, I)), initialized from `seed`."""

    def proposal_trainer(self, proposal, lr, dim):
        """the trainer of a conditional proposal of `ppl.amortize` (the default's form, or a general torch module
        with `sample(n, c)` and `log_prob(z, c)`) by Adam at rate `lr`: `draw(c, key, n)` -> y [B, n, dim],
        `log_prob(c, y)` (with gradient) and `log_density(c, y)` (without) [B, n], `step(c, y, log_γ, log_r)`
        (one step on `ppl.amortize.brain_loss`; returns (loss, ESS / n)), `parameters_at(c)` -> numpy (mean,
        log σ), `proposal` (the trained object), `general` (whether it is a general module; then
        `conditional(c, sites)` is q(· | c) as a `Proposal`), and, where the library fuses a whole training
        into one compiled program, `train_fused(parts, stacked, ctx, idx, keys, n)`."""

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
    traces_shapes = False
    xp = None
    distributions = None
    n_devices = 1

    def __init__(self, device="cpu", precision="float32"):
        self.device, self.precision = device, precision

    def holds(self, x):
        """Whether x is an array of this runtime's framework."""
        from ..math import framework
        return framework(x) == self.framework

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

    def owns(self, obj):
        """Whether this runtime can run the user object `obj`: a plain callable, or a model object (neural net)
        of its own framework (`module_owner`)."""
        return module_owner(obj) in (None, self.name)

    def bind(self, module, params=None):
        """The callable of a user model object `module` (params: its parameters, for pure modules)."""
        return module

    def conditional_gaussian(self, context_shape, dim, hidden, depth, shift, scale, seed):
        raise PPLError(f"runtime {self.name!r} trains no amortized proposals (ppl.amortize)")

    proposal_trainer = conditional_gaussian

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
