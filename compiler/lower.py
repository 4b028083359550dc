"""Lowering a compiled target to a runtime program over flat unconstrained particles z [N, D].

Per particle, `Evaluator.evaluate(z)` walks the evaluation order: each latent site is
x = T(u) with T = biject_to(support of its reference factor) (log|det J| added to the
reference), each deterministic site is computed, then every term ℓ_t is evaluated.
`Program` vmaps that over particles (and jit-compiles it on JAX):

    log_reference(z) = Σ_t r_t ℓ_t + log|det J|     log_rest(z) = Σ_t (c_t − r_t) ℓ_t
"""
import numpy as np

from ..errors import PlanError, PPLError
from ..stdlib.distributions import Distribution, per_particle, repeated
from .shapes import Support


def support_name(constraint):
    """A constraint's name, seen through `independent(...)` wrappers: 'Real', 'Positive', 'Simplex', ..."""
    if isinstance(constraint, Support):
        return constraint.name
    while hasattr(constraint, "base_constraint"):
        constraint = constraint.base_constraint
    return type(constraint).__name__.lstrip("_")


class Evaluator:
    """The per-particle evaluation of a compiled target on one runtime."""

    def __init__(self, compiled, rt):
        self.c, self.rt = compiled, rt
        self.data = {m.name: {k: v if isinstance(v, (int, float)) else rt.asarray(v) for k, v in m.data.items()}
                     for m in compiled.models}
        self.obs = {m.name: {k: self._observed(m, k, v) for k, v in m.observed.items()} for m in compiled.models}
        self.ref = {id(t) for t in compiled.chosen.values()}

    def _observed(self, m, name, value):
        d = m.sites[name].constant
        return self.rt.asindex(value) if d is not None and d.family == "Categorical" else self.rt.asarray(value)

    def env(self, model, values, dets):
        """What a site of `model` can read: latent values, the model's data, observations and deterministics."""
        env = dict(values)
        if model is not None:
            env.update(self.data[model.name])
            env.update(self.obs[model.name])
            env.update(dets.get(model.name, {}))
        return env

    def spec(self, term, env):
        """The `Distribution` of a prior, gaussian or likelihood term in environment `env`."""
        if term.kind == "gaussian":
            loc, scale = term.value
            return Distribution("Normal", {"loc": loc, "scale": scale})
        d = term.model.sites[term.site](env)
        if not isinstance(d, Distribution):
            raise PPLError(f"site {term.site!r} of model {term.model.name} must return a distribution "
                           f"(e.g. ppl.Normal(...)), got {type(d).__name__}")
        return d

    def latent_values(self, z, layout=None):
        """Constrained latent values, deterministics, log|det J| and the reference distributions used.

        With `layout=None` this is a trace: z is ignored, u = 0, and the layout is built.
        """
        rt, values, dets, ldj, dists = self.rt, {}, {}, 0.0, {}
        build = layout is None
        layout = {} if build else layout
        offset = 0
        for node in self.c.order:
            if node.kind == "det":
                dets.setdefault(node.model.name, {})[node.name] = \
                    node.model.sites[node.name](self.env(node.model, values, dets))
                continue
            t = node.term
            d = self.spec(t, self.env(t.model, values, dets)).lower(rt)
            dists[id(t)] = d
            if d.support.is_discrete:
                raise PlanError(f"latent site {node.name!r} is discrete ({type(d).__name__}); observe it or "
                                f"marginalize it out")
            tr = rt.biject_to(d.support)
            if build:
                shape = tuple(d.batch_shape) + tuple(d.event_shape)
                ushape = tuple(tr.inverse_shape(shape))
                layout[node.name] = {"shape": shape, "ushape": ushape, "offset": offset,
                                     "size": int(np.prod(ushape, dtype=int)), "support": support_name(d.support),
                                     "from": t.label}
                offset += layout[node.name]["size"]
                u = rt.xp.zeros(ushape)
            else:
                e = layout[node.name]
                u = z[e["offset"]:e["offset"] + e["size"]].reshape(e["ushape"])
            x = tr(u)
            ldj = ldj + tr.log_abs_det_jacobian(u, x).sum()
            values[node.name] = x
        return values, dets, ldj, dists, layout

    def term_dist(self, t, values, dets, dists):
        """The runtime distribution of a prior, gaussian or likelihood term (built once per evaluation)."""
        d = dists.get(id(t))
        if d is None:
            d = dists[id(t)] = self.spec(t, self.env(t.model, values, dets)).lower(self.rt)
        return d

    def global_env(self, values, dets):
        """What rewards and energies read: latent values, and each deterministic site by name (first model wins)."""
        glob = {}
        for m in self.c.models:
            glob.update({k: v for k, v in dets.get(m.name, {}).items() if k not in glob})
        glob.update(values)
        return glob

    def term_values(self, values, dets, dists):
        """ℓ_t for every term, as a list of scalars (per particle); the global environment for rewards."""
        glob = self.global_env(values, dets)
        out = []
        for t in self.c.terms:
            if t.kind == "constant":
                out.append(t.value)
            elif t.kind in ("reward", "energy"):
                out.append(t.fn(glob))
            elif t.kind == "factor":
                out.append(t.model.sites[t.site](self.env(t.model, values, dets)))
            else:
                x = self.obs[t.model.name][t.site] if t.kind == "likelihood" else values[t.site]
                out.append(self.term_dist(t, values, dets, dists).log_prob(x).sum())
        return out, glob

    def trace(self, check):
        """Trace one particle at u = 0: build the layout, `check(term, dist, layout)` every
        distribution term before it is evaluated, then `check(term, value, layout)` every reward, energy and factor. Returns the layout."""
        values, dets, _, dists, layout = self.latent_values(None)
        for t in self.c.terms:
            if t.kind in ("prior", "gaussian", "likelihood"):
                check(t, self.term_dist(t, values, dets, dists), layout)
        terms, _ = self.term_values(values, dets, dists)
        for t, v in zip(self.c.terms, terms):
            if t.kind in ("reward", "energy", "factor"):
                check(t, v, layout)
        return layout


class Program:
    """The runtime program: batched functions of flat unconstrained particles z [N, D]."""

    def __init__(self, compiled, rt):
        from ..backends.runtime import get_runtime
        self.compiled, self.rt = compiled, get_runtime(rt) if isinstance(rt, str) else rt
        self.ev = Evaluator(compiled, self.rt)
        self.layout, self.dim = compiled.layout, compiled.dim
        self._ref_coef = self.rt.asarray(compiled.ref_coef)
        self._rest_coef = self.rt.asarray(compiled.rest_coef)
        self.log_densities = self.rt.jit(self.rt.vmap(self._ref_rest))
        self.value_and_grad = self.rt.jit(self.rt.value_and_grad(self._tempered))
        self.to_constrained_arrays = self.rt.jit(self.rt.vmap(self._constrained))
        self._sample_reference = self.rt.jit(self._sample, static_argnames=("n",))

    # per particle
    def _ref_rest(self, z):
        values, dets, ldj, dists, _ = self.ev.latent_values(z, self.layout)
        terms, _ = self.ev.term_values(values, dets, dists)
        t = self.rt.xp.stack([self.rt.asarray(v) if isinstance(v, float) else v for v in terms])
        return (t * self._ref_coef).sum() + ldj, (t * self._rest_coef).sum()

    def _tempered(self, z, beta):
        ref, rest = self._ref_rest(z)
        return ref + beta * rest, (ref, rest)

    def _constrained(self, z):
        values, dets, _, _, _ = self.ev.latent_values(z, self.layout)
        return self.ev.global_env(values, dets)

    # batched
    def log_reference(self, z):
        return self.log_densities(z)[0]

    def log_rest(self, z):
        return self.log_densities(z)[1]

    def to_constrained(self, z):
        """Constrained latent and deterministic values, as numpy arrays [N, *shape]."""
        return {k: self.rt.to_numpy(v) for k, v in self.to_constrained_arrays(z).items()}

    def sample_reference(self, key, n):
        """z [n, D] drawn exactly from the reference π0 (ancestral sampling, batched over particles)."""
        return self._sample_reference(key, n=n)

    def _sample(self, key, n):
        rt, ev = self.rt, self.ev
        keys = rt.split(key, max(len(self.compiled.order), 1))
        values, dets = {}, {}
        for i, node in enumerate(self.compiled.order):
            m = node.model if node.kind == "det" else node.term.model
            reads = node.reads
            if node.kind == "det":
                site = m.sites[node.name]
                fn = lambda vals, s=site, m=m: s(ev.env(m, vals[0], vals[1]))  # noqa: E731
                dets.setdefault(m.name, {})[node.name] = self._batched(fn, reads, values, dets, n)
                continue
            t = node.term
            spec_of = lambda vals, t=t: ev.spec(t, ev.env(t.model, vals[0], vals[1]))  # noqa: E731
            d = per_particle(rt, spec_of, self._pick(reads, values, dets)) if reads else \
                repeated(rt, spec_of(({}, {})), n)
            values[node.name] = rt.sample(d, keys[i])
        return self._unconstrain(values, dets)


    def _pick(self, reads, values, dets):
        v = {r[1]: values[r[1]] for r in reads if r[0] == "latent"}
        d = {}
        for r in reads:
            if r[0] == "det":
                d.setdefault(r[1], {})[r[2]] = dets[r[1]][r[2]]
        return v, d

    def _batched(self, fn, reads, values, dets, n):
        if not reads:
            v = self.rt.asarray(fn(({}, {})))
            return self.rt.xp.broadcast_to(v, (n,) + tuple(v.shape))
        return self.rt.vmap(fn)(self._pick(reads, values, dets))

    def _unconstrain(self, values, dets):
        ev, rt = self.ev, self.rt

        def per_particle(vals):
            vals, dts = dict(vals), {}
            parts = []
            for node in self.compiled.order:
                if node.kind == "det":
                    dts.setdefault(node.model.name, {})[node.name] = \
                        node.model.sites[node.name](ev.env(node.model, vals, dts))
                    continue
                d = ev.spec(node.term, ev.env(node.term.model, vals, dts)).lower(rt)
                parts.append(rt.biject_to(d.support).inv(vals[node.name]).reshape(-1))
            return rt.xp.concatenate(parts) if parts else rt.xp.zeros((0,))
        return rt.vmap(per_particle)(values)
