"""The family of targets `ppl.amortize` trains on: family(c) compiled for each context c, checked to share one
latent layout, and log γ_c evaluated for a minibatch of contexts.

When the targets differ only in their data and observed values (the usual `model.condition(y=c)`), one runtime
function evaluates all of them, batched over contexts (jitted once on JAX), with the contexts' data and
observations stacked [M, ...]; that shared evaluation is checked against the contexts' own programs on
`verify` of them: thousands of training contexts are fine (2000 set up in ~3 s on CPU, mostly `ppl.compile`).
Otherwise (a site reads c through a closure, or the structure changes with c) every context is lowered to its
own program, with an `AmortizeWarning`: one JAX compilation (~0.3 s) per context, so keep to a few dozen
contexts there.
"""
import numpy as np

from . import advice
from .compiler.handlers import condition, substitute
from .errors import PPLError, ShapeError, UserFunctionError


class AmortizeWarning(UserWarning):
    """Amortized training fell back to a slower path (one program per training context)."""


def _contexts(contexts):
    """The contexts as a numpy array [M, ...] (float64 for floats): numbers, one context per row."""
    if hasattr(contexts, "detach"):
        contexts = contexts.detach().cpu().numpy()
    if isinstance(contexts, (str, bytes, dict)) or contexts is None:
        raise PPLError(f"contexts must be an array [M, ...] (one context per row), got {type(contexts).__name__}")
    try:
        a = np.asarray(contexts)
    except (TypeError, ValueError):
        raise PPLError("contexts must be an array [M, ...] (one context per row) of numbers") from None
    if a.dtype.kind not in "biuf":
        raise PPLError(f"contexts must be an array [M, ...] of numbers, got dtype {a.dtype}")
    if a.ndim == 0 or len(a) == 0:
        raise PPLError(f"contexts must be a non-empty array [M, ...] (one context per row), got shape {a.shape}")
    return a.astype(np.float64) if a.dtype.kind == "f" else a


def _call_family(family, c, where, kind="model"):
    """family(c) compiled, checked to be a target of `kind` ("model" or "sequence")."""
    from .compiler import compile
    from .target import Target
    try:
        target = family(c)
    except PPLError:
        raise
    except Exception as e:
        raise UserFunctionError(f"the family raised on {where}: {type(e).__name__}: {e}") from e
    if not isinstance(target, Target):
        raise PPLError(f"the family must return a ppl target (e.g. ppl.model(...).condition(y=c)); on {where} it "
                       f"returned {type(target).__name__}")
    compiled = compile(target)
    if getattr(compiled, "kind", None) != kind:
        if kind == "sequence":
            raise PPLError(f"the family mixes sequence targets with others: on {where} it gave a "
                           f"{getattr(compiled, 'kind', type(compiled).__name__)} target")
        raise PPLError(f"amortize trains proposals for model targets; on {where} the family gave a "
                       f"{compiled.kind} target")
    return compiled


def _signature(inputs):
    """The structure of a program's (observed values, data), by model position: (keys, shapes, scalars)."""
    out = []
    for part in inputs:
        for values in part.values():
            out.append(tuple((k, ("scalar", v) if isinstance(v, (int, float)) else
                              ("array", tuple(v.shape), str(v.dtype))) for k, v in values.items()))
    return tuple(out)


class _Family:
    """The targets of a set of contexts on one runtime: log γ_c for a minibatch of them, and their priors π0.
    `like`: a _Family whose shared evaluation (and its compilations) these contexts reuse."""

    def __init__(self, family, contexts, rt, verify, like=None, what="training context"):
        from .backends.proposals import layout_of
        from .compiler.lower import Evaluator
        self.rt, self.family = rt, family
        self.compiled = [_call_family(family, c, f"{what} {j}") for j, c in enumerate(contexts)]
        base = like.compiled[0] if like is not None else self.compiled[0]
        self.sites, self.dim = layout_of(base.layout), base.dim
        for j, comp in enumerate(self.compiled):
            if layout_of(comp.layout) != self.sites:
                raise ShapeError(f"every target of the family must have the same latent layout: "
                                 f"{'the training contexts have' if like is not None else 'context 0 has'} "
                                 f"{self.sites}, {what} {j} has {layout_of(comp.layout)}")
        if self.dim == 0:
            raise ShapeError("the family's targets have no latent sites: there is nothing to propose")
        self.program = like.program if like is not None else self.compiled[0].lower(rt)
        self.programs = {} if like is not None else {0: self.program}
        evs = [Evaluator(c, rt) for c in self.compiled]
        if like is None:
            self.shared = self._share(evs) and self._verify(verify)
        else:
            self._parts, self._sample = getattr(like, "_parts", None), getattr(like, "_sample", None)
            self.shared = like.shared and self._stack(evs) and self._verify(verify)
        if not self.shared:
            advice.warn(f"the family's targets differ beyond their data and observed values (or in their "
                        f"structure): each of the {len(contexts)} {what}s is lowered to its own "
                        f"program{' (one compilation each)' if rt.compiles_loops else ''}",
                        AmortizeWarning)

    def _stack(self, evs):
        """The contexts' data and observations, stacked [M, ...] under the base program's model names; False
        when their structure differs from the base program's."""
        base = self.program.compiled
        if any(len(c.models) != len(base.models) or [t.kind for t in c.terms] != [t.kind for t in base.terms]
               for c in self.compiled):
            return False
        sig = _signature(self.program.inputs())
        if any(_signature(ev.inputs()) != sig for ev in evs):
            return False
        names = [m.name for m in base.models]

        def rename(part, comp):
            return {n: {k: v for k, v in part[m.name].items() if not isinstance(v, (int, float))}
                    for n, m in zip(names, comp.models)}
        rt = self.rt
        per = [tuple(rename(part, c) for part in ev.inputs()) for ev, c in zip(evs, self.compiled)]
        def stack(*a):     # in numpy: a JAX stack of thousands of arrays is one huge compilation
            x = np.stack([rt.to_numpy(v) for v in a])
            return rt.asindex(x) if x.dtype.kind in "iub" else rt.asarray(x)
        self.stacked = rt.tree_map(stack, *per)
        return True

    # shared evaluation: the base program with the data and observations of another context
    def _share(self, evs):
        if not self._stack(evs):
            return False
        rt, program = self.rt, self.program

        def swapped(fn):
            def call(arrays, *args):
                obs, data = arrays
                with program.handlers(condition(obs), substitute(data=data)):
                    return fn(*args)
            return call

        one = swapped(lambda z: rt.vmap(program.log_parts)(z))
        self._parts = rt.jit(lambda stacked, idx, y: rt.vmap(one)(rt.tree_map(lambda a: a[idx], stacked), y))
        sample = swapped(lambda key, n: program.draw_reference(key, n))
        self._sample = rt.jit(lambda stacked, j, key, n: sample(rt.tree_map(lambda a: a[j], stacked), key, n),
                              static_argnames=("n",))
        return True

    def _verify(self, verify):
        """The shared evaluation equals each context's own program at 4 points, on `verify` contexts spread
        over the training set (all when verify=None)."""
        m = len(self.compiled)
        k = m if verify is None else max(1, min(int(verify), m))
        idx = np.unique(np.round(np.linspace(0, m - 1, k)).astype(int))
        rt = self.rt
        z = rt.asarray(np.random.default_rng(12345).normal(size=(4, self.dim)))
        ref, rest = self._parts(self.stacked, rt.asindex(idx), rt.xp.stack([z] * len(idx)))
        owns = [self.compiled[j].lower(rt) for j in idx]
        mine = rt.jit(lambda z: [rt.vmap(own.log_parts)(z) for own in owns])(z)   # one compilation for all
        for b, (r2, l2) in enumerate(mine):
            for a, e in ((ref[b], r2), (rest[b], l2)):
                a, e = self.rt.to_numpy(a).astype(np.float64), self.rt.to_numpy(e).astype(np.float64)
                if not np.allclose(a, e, rtol=1e-4, atol=1e-3, equal_nan=True):
                    return False
        return True

    def _own(self, j):
        if j not in self.programs:
            self.programs[j] = self.compiled[j].lower(self.rt)
        return self.programs[j]

    def log_parts(self, idx, y):
        """(log π0 + log|J|, log L) [B, n] at y [B, n, D] for the training contexts `idx` [B] (numpy ints)."""
        if self.shared:
            return self._parts(self.stacked, self.rt.asindex(idx), y)
        parts = [self._own(int(j)).log_densities(y[b]) for b, j in enumerate(idx)]
        return self.rt.xp.stack([p[0] for p in parts]), self.rt.xp.stack([p[1] for p in parts])

    def sample_prior(self, idx, key, n):
        """y [B, n, D] from each context's reference π0."""
        keys = self.rt.split(key, len(idx))
        if self.shared:
            return self.rt.xp.stack([self._sample(self.stacked, self.rt.asindex(int(j)), k, n=n)
                                     for j, k in zip(idx, keys)])
        return self.rt.xp.stack([self._own(int(j)).sample_reference(k, n) for j, k in zip(idx, keys)])
