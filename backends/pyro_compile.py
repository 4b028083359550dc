"""torch's `jit_pure`: a pure function traced per input signature into one aten graph and compiled by inductor.

The trace is `make_fx` over fake tensors (so a branch on array values fails the trace instead of being baked in);
inductor fuses kernels where eager torch runs every op of the vmapped density on its own (German credit: 21 ms
instead of 65 ms a gradient of 1000 particles; the 10-d mixture 0.2 ms instead of 6 ms, per-op dispatch). The
first compiled result is checked against eager; a trace, compile or check that fails leaves that signature
eager, with one warning.
When to compile is `compile_mode` (environment PPL_TORCH_COMPILE, PPL_TORCH_COMPILE_AFTER): "auto" traces a
signature once its eager calls have taken PPL_TORCH_COMPILE_AFTER (2) seconds of CPU time and compiles it once
they have taken as long as its compile is expected to (`CompiledFunction`), so small runs (the test suite's)
never pay the seconds a compile takes; "on" compiles at the first call (benchmarks: the warm-up run pays it, as
JAX's jit); "off" never.
"""
import contextlib
import functools
import os
import time
import warnings

import torch

from ..errors import PPLError

_COMPILE = {"mode": os.environ.get("PPL_TORCH_COMPILE", "auto"),
            "after": float(os.environ.get("PPL_TORCH_COMPILE_AFTER", "2.0"))}
COMPILE_MODES = ("auto", "on", "off")


def compile_mode(mode=None, after=None):
    """The policy of `jit_pure` ("auto" | "on" | "off", and the CPU seconds of eager calls after which "auto"
    compiles a signature); with arguments, sets it. Returns the previous (mode, after)."""
    previous = _COMPILE["mode"], _COMPILE["after"]
    if mode is not None:
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode {mode!r}: choose one of {', '.join(COMPILE_MODES)}")
        _COMPILE["mode"] = mode
    if after is not None:
        _COMPILE["after"] = float(after)
    return previous


@contextlib.contextmanager
def compiling(mode, after=None):
    """`compile_mode(mode, after)` inside the block, the previous policy restored on exit."""
    previous = compile_mode(mode, after)
    try:
        yield
    finally:
        compile_mode(*previous)


class CompileWarning(RuntimeWarning):
    """A function could not be compiled by torch and runs eagerly (correct, slower)."""


class _Signature:
    """What a traced graph is specialized to: the shapes, dtypes and devices of the tensor leaves of the
    arguments, the values of the int/bool/None/str leaves, the tree structure, the default dtype. Float leaves
    become 0-d tensor inputs. None (eager only) for anything else or an input that requires grad."""

    @staticmethod
    def of(leaves, spec):
        parts = []
        grad = torch.is_grad_enabled()
        for a in leaves:
            if isinstance(a, torch.Tensor):
                if grad and a.requires_grad:
                    return None
                parts.append((a.shape, a.stride(), a.dtype, a.device))
            elif isinstance(a, float):
                parts.append(float)
            elif a is None or isinstance(a, (bool, int, str)):
                parts.append((type(a), a))
            else:
                return None
        return (spec, torch.get_default_dtype(), tuple(parts))


def flatten(tree):
    """(leaves, structure) of nested tuples, lists, NamedTuples and dicts (a hashable structure); by torch's
    pytree (a registered node type, e.g. a model's cache) where a leaf is anything else. 4x faster than
    torch's pytree on a step kernel's 19 leaves in 3 levels of NamedTuples (10 µs instead of 40 a call)."""
    leaves = []
    try:
        return leaves, _flatten(tree, leaves)
    except _NotPlain:
        from torch.utils._pytree import tree_flatten
        leaves, spec = tree_flatten(tree)
        return leaves, _Pytree(spec)


def unflatten(leaves, spec):
    """The inverse of `flatten`."""
    if type(spec) is _Pytree:
        from torch.utils._pytree import tree_unflatten
        return tree_unflatten(leaves, spec.spec)
    return _unflatten(spec, iter(leaves))


class _NotPlain(Exception):
    pass


class _Pytree:
    """A structure flattened by torch's pytree, hashable by its text."""
    __slots__ = ("spec", "text")

    def __init__(self, spec):
        self.spec, self.text = spec, str(spec)

    def __hash__(self):
        return hash(self.text)

    def __eq__(self, other):
        return type(other) is _Pytree and other.text == self.text


_LEAVES = (torch.Tensor, float, int, bool, str, type(None))


def _flatten(tree, leaves):
    """Appends tree's leaves to `leaves`; returns its structure: None for a leaf, (type, children) for a tuple,
    list or NamedTuple, (dict, keys, children) for a dict."""
    t = type(tree)
    if t is tuple or t is list or (isinstance(tree, tuple) and hasattr(t, "_fields")):
        return (t, tuple([_flatten(x, leaves) for x in tree]))
    if t is dict:
        keys = tuple(tree)
        return (dict, keys, tuple([_flatten(tree[k], leaves) for k in keys]))
    if not isinstance(tree, _LEAVES):
        raise _NotPlain
    leaves.append(tree)
    return None


def _unflatten(spec, it):
    if spec is None:
        return next(it)
    t = spec[0]
    if t is dict:
        return {k: _unflatten(s, it) for k, s in zip(spec[1], spec[2])}
    children = [_unflatten(s, it) for s in spec[1]]
    return children if t is list else tuple(children) if t is tuple else t(*children)


class _Entry:
    __slots__ = ("eager_s", "graph", "compiled", "failed")

    def __init__(self):
        self.eager_s, self.graph, self.compiled, self.failed = 0.0, None, None, False


#: inductor's CPU seconds per node of a traced graph, about (250 nodes: 6 s; 1300: 30 s, on one core): what
#: "auto" expects a compile to cost
COMPILE_S_PER_NODE = 0.025
_EAGER = [0]    # > 0 while a reference (eager) run or a trace is under way: nested compiled functions inline


class CompiledFunction:
    """`fn` with a compiled graph per input signature (see the module docstring). In "auto" mode a signature
    is traced once its eager calls have cost `after` seconds, and compiled once they have cost as much as the
    compile is expected to (COMPILE_S_PER_NODE × the graph's nodes): the ski-rental rule, so a run pays at most
    about twice what the better choice in hindsight would have cost. `check(compiled leaves, eager leaves)` says
    why the first compiled result is not eager's ('' if it is): `mismatch` by default. `vectorize=False` compiles
    to scalar loops: faster for a kernel that gathers at computed indices throughout (a sequence sweep's step:
    inductor's vector code copies each gathered element through a buffer; 290 µs instead of 410 a step of 2000
    particles), slower for arithmetic (a state-space filter's step: 2x)."""

    def __init__(self, rt, fn, check=None, vectorize=True):
        self.rt, self.fn, self.entries, self.warned = rt, fn, {}, False
        self.check = check or mismatch
        self.options = {} if vectorize else {"cpp.simdlen": 1}
        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args):
        mode = _COMPILE["mode"]
        if mode == "off" or _EAGER[0]:
            return self.fn(*args)
        leaves, spec = flatten(args)
        if _tracing(leaves):       # inside a trace (of an outer compiled function): inline
            return self.fn(*args)
        sig = _Signature.of(leaves, spec)
        if sig is None:
            return self.fn(*args)
        e = self.entries.get(sig)
        if e is None:
            e = self.entries[sig] = _Entry()
        if e.compiled is not None:
            compiled, out_spec = e.compiled
            try:
                return unflatten(list(compiled(*self._inputs(leaves))), out_spec)
            except Exception as err:    # noqa: BLE001 -- a compiled graph that fails at run time: eager
                e.compiled = None
                self._fail(e, err)
                return self.fn(*args)
        if not e.failed:
            if mode == "on" or e.eager_s >= _COMPILE["after"]:
                if e.graph is None:
                    self._trace(e, args, leaves, spec)
                if e.graph is not None and (mode == "on" or
                                            e.eager_s >= COMPILE_S_PER_NODE * len(e.graph[0].graph.nodes)):
                    return self._compile(e, args, leaves)
        t0 = time.process_time()
        out = self.fn(*args)
        e.eager_s += time.process_time() - t0
        return out

    def loop(self, state):
        """A `StateLoop` of this function from `state`."""
        return StateLoop(self, state)

    def _inputs(self, leaves):
        return [a if isinstance(a, torch.Tensor) else torch.tensor(a, dtype=self.rt.dtype,
                                                                      device=self.rt.torch_device)
                for a in leaves if isinstance(a, (torch.Tensor, float))]

    def _fail(self, e, err):
        """This signature stays eager; one warning per function (none for the function's own PPLError, which
        its eager call raises again)."""
        e.failed, e.graph = True, None
        if not self.warned and not isinstance(err, PPLError):
            self.warned = True
            msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            warnings.warn(f"torch compile of {getattr(self.fn, '__name__', 'a function')} fell back to eager "
                          f"({type(err).__name__}: {msg})", CompileWarning, stacklevel=4)

    def _trace(self, e, args, leaves, spec):
        """One aten graph of fn for this signature, over fake tensors (a branch on values fails it)."""
        from torch.fx.experimental.proxy_tensor import make_fx
        slots = [isinstance(a, (torch.Tensor, float)) for a in leaves]
        out_spec = []

        def flat(*xs):
            it = iter(xs)
            out, spec_out = flatten(self.fn(*unflatten([next(it) if s else a for a, s in zip(leaves, slots)], spec)))
            out_spec.append(spec_out)
            return out
        t0 = time.process_time()
        _EAGER[0] += 1
        try:
            gm = make_fx(flat, tracing_mode="fake", _allow_non_fake_inputs=True)(*_distinct(self._inputs(leaves)))
        except Exception as err:    # noqa: BLE001 -- any failure to trace means: stay eager
            self._fail(e, err)
            return
        finally:
            _EAGER[0] -= 1
        e.graph = gm, out_spec[-1], time.process_time() - t0

    def _compile(self, e, args, leaves):
        """The traced graph compiled by inductor and checked against eager at these arguments."""
        gm, out_spec, trace_s = e.graph
        inputs = self._inputs(leaves)
        t0 = time.process_time()
        try:
            compiled = _inductor(gm, inputs, self.options)
            got = list(compiled(*inputs))
        except Exception as err:    # noqa: BLE001 -- any failure to compile means: stay eager
            self._fail(e, err)
            return self.fn(*args)
        t1 = time.process_time()
        _EAGER[0] += 1
        try:
            want = self.fn(*args)
        finally:
            _EAGER[0] -= 1
        bad = self.check(got, flatten(want)[0])
        if os.environ.get("PPL_TORCH_COMPILE_LOG"):
            print(f"ppl: compiled {getattr(self.fn, '__qualname__', '?')} for {sig_text(leaves)}: "
                  f"{len(gm.graph.nodes)} nodes, trace {trace_s:.1f} s, inductor {t1 - t0:.1f} s CPU"
                  f"{', MISMATCH ' + bad if bad else ''}", flush=True)
        if bad:
            self._fail(e, RuntimeError(f"the compiled result differs from eager ({bad})"))
            return want
        e.compiled, e.graph = (compiled, out_spec), None
        return want


class StateLoop:
    """Calls `fn(*state, *rest) -> (state, out)` of a `CompiledFunction` in a host loop (`loop(*rest) -> out`), the
    state kept between calls as the compiled graph's output leaves: after the first call with each signature of
    `rest`, no flatten, signature or unflatten of the state a call (20 µs of a 130 µs step of the Markov pf at
    N = 2000). Taken where the graph gives the state back with the structure and signature it took (checked at
    that first call); elsewhere, and where `fn` runs eagerly, each call is `fn`'s own. `state`: the state now."""

    def __init__(self, fn, state):
        self.fn, self.graphs = fn, {}
        self.leaves, self.spec = flatten(tuple(state))

    @property
    def state(self):
        return unflatten(self.leaves, self.spec)

    def __call__(self, *rest):
        leaves, spec = flatten(rest)
        key = _Signature.of(leaves, spec)
        graph = self.graphs.get(key)
        if graph is not None:
            compiled, out_spec = graph
            outs = list(compiled(*self.leaves, *self.fn._inputs(leaves)))
            self.leaves = outs[:len(self.leaves)]
            return unflatten(outs[len(self.leaves):], out_spec)
        before = self.leaves, self.spec
        state, out = self.fn(*self.state, *rest)
        self.leaves, self.spec = flatten(tuple(state))
        if key is not None and key not in self.graphs:
            self.graphs[key] = self._graph(*before, leaves, spec)
        return out

    def _graph(self, state, state_spec, leaves, spec):
        """(compiled graph, the structure of `out`) of a call from the state (leaves and structure) with `rest`
        (leaves and structure), which has just run; None where that call ran eagerly, the state is not all
        tensors, or it did not come back with the structure and signature it went in with."""
        if not all(isinstance(a, torch.Tensor) for a in state):
            return None
        e = self.fn.entries.get(_Signature.of(state + leaves, (tuple, state_spec[1] + spec[1])))
        if e is None or e.compiled is None:
            return None
        compiled, out_spec = e.compiled
        out_state_spec, rest_spec = out_spec[1]
        if out_state_spec != state_spec or _Signature.of(self.leaves, self.spec) != _Signature.of(state, state_spec):
            return None
        return compiled, rest_spec


def _distinct(inputs):
    """The inputs with a tensor passed twice copied: make_fx traces one object as one graph input, so a graph
    traced from a call that passed the same tensor as two arguments would read one for both at every call."""
    seen = set()
    out = []
    for x in inputs:
        out.append(x.clone() if id(x) in seen else x)
        seen.add(id(x))
    return out


def mismatch(got, want):
    """Why two lists of output leaves differ beyond float rounding (relative to each leaf's largest finite
    magnitude), or '' if they agree."""
    if len(got) != len(want):
        return f"{len(got)} outputs instead of {len(want)}"
    for i, (a, b) in enumerate(zip(got, want)):
        if not isinstance(b, torch.Tensor):
            if a != b:
                return f"output {i}: {a!r} instead of {b!r}"
            continue
        if not isinstance(a, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return f"output {i}: shape or dtype"
        if not b.is_floating_point():
            if not torch.equal(a, b):
                return f"output {i}: integer values"
            continue
        fa, fb = torch.isfinite(a), torch.isfinite(b)
        if not torch.equal(fa, fb) or not torch.equal(torch.where(fb, 0, b).nan_to_num(1.0),
                                                      torch.where(fa, 0, a).nan_to_num(1.0)):
            return f"output {i}: non-finite entries"
        if fb.any():
            scale = 1.0 + b[fb].abs().max()
            tol = 1e-4 if b.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-9
            err = (a[fb] - b[fb]).abs().max()
            if err > tol * scale:
                return f"output {i}: max difference {float(err):.3g} at scale {float(scale):.3g}"
    return ""


def sig_text(leaves):
    return ", ".join(str(tuple(a.shape)) if isinstance(a, torch.Tensor) else type(a).__name__ for a in leaves)


def traced(a):
    """Whether a is a tensor being traced (a fake tensor of make_fx, or anything under dynamo)."""
    from torch._subclasses.fake_tensor import is_fake
    return isinstance(a, torch.Tensor) and (is_fake(a) or torch.compiler.is_compiling())


def _tracing(leaves):
    """Whether any of the leaves is a traced tensor (`traced`), cheaply: a tensor of the exact type
    `torch.Tensor` is not fake, so only dynamo's flag is asked then, once (a filter's step kernel is called 100
    times a run: 5 µs instead of 50 a call)."""
    tensors = False
    for a in leaves:
        if isinstance(a, torch.Tensor):
            if type(a) is not torch.Tensor and traced(a):
                return True
            tensors = True
    return tensors and torch.compiler.is_compiling()


def _inductor(gm, inputs, options=None):
    """The aten graph `gm` compiled by inductor: directly (`torch._inductor.compile`, half the per-call overhead
    of torch.compile's guards and wrappers: 0.2 ms instead of 0.5), else through `torch.compile`. Without
    inductor's checks of the inputs' sizes and strides (the signature fixes them: 1 µs an input a call).
    `options`: more of inductor's config."""
    try:
        import torch._inductor
        import torch._inductor.config
        compile_fx = torch._inductor.compile
    except (AttributeError, ImportError):
        return torch.compile(gm, fullgraph=True, dynamic=False)
    with torch._inductor.config.patch({"size_asserts": False, **(options or {})}):
        return compile_fx(gm, inputs)
