"""Lowering a compiled target to a runtime program over flat unconstrained particles z [N, D].

Per particle, `Evaluator.run` walks the evaluation order through a stack of effect handlers (`handlers.py`):
with `Constrain`, each latent site is x = T(u) with T = biject_to(support of its reference factor) (log|det J|
added to the reference), each deterministic site is computed; then every term ℓ_t gives its own log density
(`Term.log_density` at a `Point`). `LoweredPlan` vmaps that over particles (and jit-compiles it on JAX):

    log_parts(z) = (Σ_t r_t ℓ_t + log|det J|,  Σ_t (c_t − r_t) ℓ_t)

Nothing is checked on that path. Constant parameters are checked where a distribution is built
(`Distribution.check_constant`), those read from data only and observations at compile time (`Evaluator.trace`);
after a run whose weights were NaN or all vanished, `LoweredPlan.diagnose` says which term failed and why.
"""
import collections
import contextlib
import contextvars

import numpy as np

from ..errors import UNDEFINED_DENSITY_HINT, InferenceError, PlanError, PPLError, SupportError, ValueRangeError
from ..stdlib.distributions import per_particle, repeated
from . import handlers as H
from .shapes import TRACE_BYTES, check_size, support_name
from .terms import Distributed, Likelihood, Valued


_PROBING = contextvars.ContextVar("probing", default=False)


@contextlib.contextmanager
def probing():
    """While the compiler traces a target only to look at its laws (`marginalize.probe_environments`): a discrete
    latent site takes a representative value (its first state) instead of stopping the trace, since a rule may
    sum it out."""
    token = _PROBING.set(True)
    try:
        yield
    finally:
        _PROBING.reset(token)


def probing_now():
    return _PROBING.get()


def discrete_site_error(name, family, support):
    """The PlanError of a discrete latent site left in the target: what can be done with it."""
    if support in ("IntegerNonnegative", "IntegerGreaterThan"):
        return PlanError(f"latent site {name!r} is discrete with unbounded support ({family}): no sampler here "
                         f"moves a discrete site and an infinite sum cannot be enumerated",
                         hint="observe it, or give it a finite support (categorical, bernoulli) that the compiler "
                              "sums out", site=name)
    return PlanError(f"latent site {name!r} is discrete ({family}): no sampler here moves a discrete site",
                     hint="the compiler sums out a finite discrete site (categorical, bernoulli, or a Markov chain "
                          "of them) that one observed site reads and nothing else does, unless marginalize=False; "
                          "keep marginalize on (the default), or observe it", site=name)


class Evaluator:
    """The per-particle evaluation of a compiled target on one runtime, with a stack of effect handlers
    (`handlers.py`) that give the latent sites their values and may override the data and observations."""

    def __init__(self, compiled, rt):
        self.c, self.rt = compiled, rt
        #: the models' own data and observed values (`inputs` gives them as the handler stack overrides them)
        self.data = {m.name: {k: v if isinstance(v, (int, float)) else rt.asarray(v) for k, v in m.data.items()}
                     for m in compiled.models}
        self.obs = {m.name: {k: self._observed(m, k, v) for k, v in m.observed.items()} for m in compiled.models}
        self.categorical = set()   # terms whose distribution is categorical: their observations are indices
        self.stack = []
        self._inputs = self.obs, self.data

    def _observed(self, m, name, value):
        d = m.sites[name].constant
        return self.rt.asindex(value) if d is not None and d.family == "Categorical" else self.rt.asarray(value)

    @contextlib.contextmanager
    def handlers(self, *handlers):
        """Evaluation under `handlers` (outermost first), pushed on the stack for the duration."""
        self.stack.extend(handlers)
        self._resolve()
        try:
            yield self
        finally:
            del self.stack[len(self.stack) - len(handlers):]
            self._resolve()

    def _resolve(self):
        msg = {"type": "inputs", "obs": self.obs, "data": self.data, "stop": False}
        H.apply_stack(self.stack, msg)
        self._inputs = msg["obs"], msg["data"]

    def inputs(self):
        """(observed values, data), {model: {name: array}}, as the handler stack gives them."""
        return self._inputs

    def observation(self, t):
        """The observed value of the likelihood term t."""
        return self._inputs[0][t.model.name][t.site]

    def env(self, model, values, dets):
        """What a site of `model` can read: its deterministics, observations, data and the latent values (a view,
        the first found wins; what is written to it stays in it): no copy per site, so lowering is linear."""
        if model is None:
            return collections.ChainMap({}, values)
        obs, data = self._inputs
        return collections.ChainMap({}, dets.get(model.name, {}), obs[model.name], data[model.name], values)

    def model_env(self, model, values):
        """`env` of `model` at the latent `values` with its deterministic sites computed (a particle filter's or a
        marginal's environment): the site interpreter with the latent `values` substituted (by name, whichever model
        holds the site's reference: a `reference` model's) and the latent sites not given and the deterministic
        sites of other models blocked."""
        skip = H.block(lambda msg: msg["name"] not in values if msg["type"] == "latent"
                       else msg["node"].model is not model)
        _, dets = self.run(H.substitute(values=values), skip)
        return self.env(model, values, dets)

    def at_env(self, env):
        """The `Point` whose every read is the one environment `env` (e.g. `model_env`'s)."""
        return EnvPoint(self, env)

    def run(self, *handlers):
        """The site interpreter: walk the evaluation order once under `handlers` (outermost first, pushed on the
        stack); each step is a message through the stack (`handlers.apply_stack`): a latent site takes the value a
        handler gives it, a deterministic site is computed from what it reads unless one gives it. Returns
        (values, deterministics by model)."""
        values, dets = {}, {}
        with self.handlers(*handlers):
            stack = self.stack
            for node in self.c.order:
                msg = {"type": node.role, "name": node.name, "node": node, "values": values, "dets": dets,
                       "value": None, "stop": False}
                seen = H.apply_stack(stack, msg)
                if msg.get("hidden"):
                    continue
                if msg["value"] is None:
                    if node.role != "det":
                        raise PlanError(f"no handler gives latent site {node.name!r} a value", site=node.name)
                    msg["value"] = node.model.sites[node.name](self.env(node.model, values, dets))
                H.postprocess(stack, msg, seen)
                if node.role == "det":
                    dets.setdefault(node.model.name, {})[node.name] = msg["value"]
                else:
                    values[node.name] = msg["value"]
        return values, dets

    def reference(self, node, values, dets):
        """The runtime distribution of latent step `node`'s reference factor (an error in building it names the
        site)."""
        try:
            return node.term.spec(self.env(node.term.model, values, dets)).lower(self.rt)
        except PPLError as e:
            e.site = e.site or node.name
            raise

    def latent_values(self, z, layout=None):
        """Constrained latent values, deterministics, log|det J| and the reference distributions used, at the flat
        unconstrained z [D] (one particle). With `layout=None` this is a trace: z is ignored, u = 0, and the
        layout is built."""
        h = Constrain(self, z, layout)
        values, dets = self.run(h)
        return values, dets, h.ldj, h.dists, h.layout

    def point(self, values, dets, dists):
        """The `Point` of one evaluation: its values, deterministics and the distributions built so far."""
        return Point(self, values, dets, dists)

    def term_dist(self, t, values, dets, dists):
        """The runtime distribution of a prior, gaussian or likelihood term (built once per evaluation)."""
        d = dists.get(id(t))
        if d is None:
            spec = t.spec(self.env(t.model, values, dets))
            if spec.family == "Categorical":
                self.categorical.add(id(t))
            d = dists[id(t)] = spec.lower(self.rt)
        return d

    def global_env(self, values, dets):
        """What rewards and energies read (`ModelPlan.readable`): latent values and deterministics by name."""
        glob = {n: dets[k[1]][k[2]] for n, k in self.c.readable.items() if k[0] == "det"}
        glob.update(values)
        return glob

    def term_values(self, values, dets, dists):
        """ℓ_t for every term, as a list of scalars (per particle); the global environment for rewards."""
        point = self.point(values, dets, dists)
        return [t.log_density(point) for t in self.c.terms], point.glob

    def log_density(self, terms, point):
        """Σ_t c_t ℓ_t over `terms` at `point` (0.0 for none)."""
        total = 0.0
        for t in terms:
            total = total + t.coef * t.log_density(point)
        return total

    def trace(self):
        """Trace one particle at u = 0: build the layout, check every distribution term (`Term.fixed_error`, then
        `Term.check` against the layout) before it is evaluated, then every reward, energy and factor's value.
        Returns the layout."""
        values, dets, _, dists, layout = self.latent_values(None)
        point = self.point(values, dets, dists)
        for t in self.c.terms:
            if isinstance(t, Distributed):
                d = self.term_dist(t, values, dets, dists)
                error = t.fixed_error(point, d)
                if error:
                    raise error
                t.check(d, layout)
        terms, _ = self.term_values(values, dets, dists)
        for t, v in zip(self.c.terms, terms):
            if isinstance(t, Valued):
                t.check(v, layout)
        return layout


class Point:
    """One particle as the terms read it (`Term.log_density`): a model's environment, what rewards read, a term's
    runtime distribution, a latent site's value and an observation."""

    def __init__(self, ev, values, dets, dists):
        self.ev, self.values, self.dets, self.dists = ev, values, dets, dists
        self._glob = None

    def env(self, model):
        return self.ev.env(model, self.values, self.dets)

    @property
    def glob(self):
        if self._glob is None:
            self._glob = self.ev.global_env(self.values, self.dets)
        return self._glob

    def dist(self, t):
        return self.ev.term_dist(t, self.values, self.dets, self.dists)

    def latent(self, site):
        return self.values[site]

    def observed(self, t):
        return self.ev.observation(t)

    def observed_log_prob(self, t):
        """log p(y | ·) of the likelihood term t at its observation y (as indices for a categorical)."""
        d, y = self.dist(t), self.observed(t)
        return d.log_prob(self.ev.rt.asindex(y) if id(t) in self.ev.categorical else y)


class EnvPoint(Point):
    """The `Point` whose every read is one environment (a model's: `Evaluator.model_env`): a particle filter's
    terms that do not read the path, at θ."""

    def __init__(self, ev, env):
        self.ev, self._env = ev, env

    def env(self, model):
        return self._env

    @property
    def glob(self):
        return self._env

    def dist(self, t):
        return t.spec(self._env).lower(self.ev.rt)

    def latent(self, site):
        return self._env[site]

    def observed(self, t):
        return self._env[t.site]

    def observed_log_prob(self, t):
        return self.dist(t).log_prob(self._env[t.site])


class Constrain(H.Handler):
    """x = T(u), u the site's slice of the flat z, T = biject_to(support of its reference); log|det J| is
    accumulated. With `layout=None` (a trace) u = 0 and the layout (shapes, supports, offsets) is built."""

    def __init__(self, ev, z, layout=None):
        self.ev, self.rt = ev, ev.rt
        self.z, self.build = z, layout is None
        self.layout = {} if layout is None else layout
        self.ldj, self.dists, self.offset = 0.0, {}, 0

    def process(self, msg):
        if msg["type"] == "latent" and msg["value"] is None:
            msg["value"] = self.latent(msg["node"], msg["values"], msg["dets"])

    def latent(self, node, values, dets):
        t, rt = node.term, self.rt
        d = self.dists[id(t)] = self.ev.reference(node, values, dets)
        if d.support.is_discrete:
            if probing_now():
                return np.full(tuple(d.batch_shape) + tuple(d.event_shape), d.support.params.get("low", 0))
            family = t.spec(self.ev.env(t.model, values, dets)).family
            raise discrete_site_error(node.name, family, support_name(d.support))
        tr = rt.biject_to(d.support)
        if self.build:
            shape = tuple(d.batch_shape) + tuple(d.event_shape)
            ushape = tuple(tr.inverse_shape(shape))
            size = int(np.prod(shape, dtype=float))
            if size == 0:
                raise PlanError(f"latent site {node.name!r} has shape {shape}: no elements to sample",
                                hint="give every dimension a size >= 1, or remove the site", site=node.name)
            check_size(f"latent site {node.name!r} of shape {shape}", size, TRACE_BYTES, site=node.name)
            e = self.layout[node.name] = {"shape": shape, "ushape": ushape, "offset": self.offset,
                                          "size": int(np.prod(ushape, dtype=int)), "support": support_name(d.support),
                                          "from": t.label}
            self.offset += e["size"]
            u = rt.xp.zeros(ushape)
        else:
            e = self.layout[node.name]
            u = self.z[e["offset"]:e["offset"] + e["size"]].reshape(e["ushape"])
        x = tr(u)
        self.ldj = self.ldj + tr.log_abs_det_jacobian(u, x).sum()
        return x


class Unconstrain(H.substitute):
    """The given constrained values x stay (`substitute`); u = T⁻¹(x) is collected in layout order (`parts`)."""

    def __init__(self, ev, x):
        super().__init__(values=x)
        self.ev, self.parts = ev, []

    def postprocess(self, msg):
        if msg["type"] == "latent":
            d = self.ev.reference(msg["node"], msg["values"], msg["dets"])
            self.parts.append(self.ev.rt.biject_to(d.support).inv(msg["value"]).reshape(-1))


class SampleBatched(H.Handler):
    """Exact draws from the reference π0 for n particles at once (ancestral, batched over particles rather than
    vmapped per particle: torch cannot vmap its samplers): each site given the batched values it reads; the
    i-th step of the order uses the i-th of the split keys. A site without a normalized prior (`ModelPlan.improper`)
    is drawn uniform(−2, 2) on the unconstrained scale, as Stan initializes: no draw of π0 then (MCMC starts)."""

    def __init__(self, ev, key, n):
        self.ev, self.rt = ev, ev.rt
        self.n, self.keys, self.i = n, ev.rt.split(key, max(len(ev.c.order), 1)), -1

    def process(self, msg):
        if msg["type"] != "inputs" and msg["value"] is None:
            node, values, dets = msg["node"], msg["values"], msg["dets"]
            msg["value"] = (self.deterministic if msg["type"] == "det" else self.latent)(node, values, dets)

    def deterministic(self, node, values, dets):
        self.i += 1
        site, m = node.model.sites[node.name], node.model
        return self._batched(lambda vals: site(self.ev.env(m, vals[0], vals[1])), node.reads, values, dets)

    def latent(self, node, values, dets):
        self.i += 1
        t, ev = node.term, self.ev
        spec_of = lambda vals: t.spec(ev.env(t.model, vals[0], vals[1]))  # noqa: E731
        if node.name in ev.c.improper:
            first = self.rt.tree_map(lambda a: a[0], _pick(node.reads, values, dets)) if node.reads else ({}, {})
            support = spec_of(first).lower(self.rt).support
            u = self.rt.uniform(self.keys[self.i], (self.n,) + tuple(ev.c.layout[node.name]["ushape"]))
            return self.rt.biject_to(support)(4.0 * u - 2.0)
        d = per_particle(self.rt, spec_of, _pick(node.reads, values, dets)) if node.reads else \
            repeated(self.rt, spec_of(({}, {})), self.n)
        return self.rt.sample(d, self.keys[self.i])

    def _batched(self, fn, reads, values, dets):
        if not reads:
            v = self.rt.asarray(fn(({}, {})))
            return self.rt.xp.broadcast_to(v, (self.n,) + tuple(v.shape))
        return self.rt.vmap(fn)(_pick(reads, values, dets))


def _pick(reads, values, dets):
    """The values `reads` names: ({latent: value}, {model: {deterministic: value}})."""
    v = {r[1]: values[r[1]] for r in reads if r[0] == "latent"}
    d = {}
    for r in reads:
        if r[0] == "det":
            d.setdefault(r[1], {})[r[2]] = dets[r[1]][r[2]]
    return v, d


class LoweredPlan:
    """The runtime program: batched functions of flat unconstrained particles z [N, D]."""

    def __init__(self, compiled, rt):
        from ..backends.runtime import get_runtime
        self.compiled, self.rt = compiled, get_runtime(rt) if isinstance(rt, str) else rt
        self.ev = Evaluator(compiled, self.rt)
        self.layout, self.dim = compiled.layout, compiled.dim
        # each sum over its own terms only: 0 · (−inf) is NaN (a term at −inf made the other sum NaN)
        self._ref_terms, self._rest_terms = ((self.rt.asindex(np.flatnonzero(c)), self.rt.asarray(c[c != 0]))
                                             for c in (compiled.ref_coef, compiled.rest_coef))
        self.log_densities = self.rt.jit_pure(self.rt.vmap(self.log_parts))
        self.value_and_grad = self.rt.jit_pure(self.rt.value_and_grad(self._tempered))
        sites = {m.name: m.sites for m in compiled.models}
        #: deterministic values not saved in the draws (a `.ppl` model's locals: `Site.keep` False)
        self._unsaved = {n for n, k in compiled.readable.items() if k[0] == "det" and not sites[k[1]][k[2]].keep}
        self.to_constrained_arrays = self.rt.jit(self.rt.vmap(self._constrained))
        self._sample_reference = self.rt.jit(self.draw_reference, static_argnames=("n",))
        seen = {}
        for t in compiled.terms:    # each observed site once (a model may appear several times in the target)
            if isinstance(t, Likelihood):
                seen.setdefault((t.model.name, t.site), t)
        sites = [site for _, site in seen]
        #: (name, term) of each observed site: its name, or model.site where two models observe the same name
        self.observed = [(site if sites.count(site) == 1 else f"{m}.{site}", t) for (m, site), t in seen.items()]
        self._log_likelihood = self.rt.jit(self.rt.vmap(self._pointwise))
        self._predictive = self.rt.jit(self._predict)
        self._term_values = self.rt.jit(self.rt.vmap(self._terms))

    def handlers(self, *handlers):
        """Evaluation under `handlers` (outermost first, `compiler/handlers.py`) while the context lasts, e.g.
        `with program.handlers(condition(obs), substitute(data=data)):` another context's observations and data."""
        return self.ev.handlers(*handlers)

    def inputs(self):
        """(observed values, data), {model: {name: array}}, as the handlers in force give them."""
        return self.ev.inputs()

    # per particle
    def log_parts(self, z):
        """(log π0(z) + log|det J|, log L(z)) for one particle z [D]."""
        values, dets, ldj, dists, _ = self.ev.latent_values(z, self.layout)
        terms, _ = self.ev.term_values(values, dets, dists)
        if not terms:   # an empty target: density 1
            zero = self.rt.xp.zeros(())
            return zero + ldj, zero
        t = self.rt.xp.stack([self.rt.asarray(v) if isinstance(v, float) else v for v in terms])
        (ri, rc), (li, lc) = self._ref_terms, self._rest_terms
        xp = self.rt.xp
        return (xp.take(t, ri, axis=0) * rc).sum() + ldj, (xp.take(t, li, axis=0) * lc).sum()

    def _terms(self, z):
        values, dets, _, dists, _ = self.ev.latent_values(z, self.layout)
        terms, _ = self.ev.term_values(values, dets, dists)
        return self.rt.xp.stack([self.rt.asarray(v) for v in terms]) if terms else self.rt.xp.zeros((0,))

    def _tempered(self, z, beta):
        ref, rest = self.log_parts(z)
        return ref + beta * rest, (ref, rest)

    def _constrained(self, z):
        values, dets, _, _, _ = self.ev.latent_values(z, self.layout)
        return {k: v for k, v in self.ev.global_env(values, dets).items() if k not in self._unsaved}

    def _pointwise(self, z):
        values, dets, _, dists, _ = self.ev.latent_values(z, self.layout)
        point = self.ev.point(values, dets, dists)
        return {name: point.observed_log_prob(t) for name, t in self.observed}

    def _values(self, z):
        values, dets, _, _, _ = self.ev.latent_values(z, self.layout)
        return values, dets

    def _predict(self, key, z):
        ev, rt = self.ev, self.rt
        batched = rt.vmap(self._values)(z)
        out = {}
        marginal = {(mg.model, mg.observed) for mg in getattr(self.compiled, "marginals", ())}
        for k, (name, t) in zip(rt.split(key, max(len(self.observed), 1)), self.observed):
            if (t.model.name, t.site) in marginal:   # its sites integrated out: no replicate drawn (yet)
                continue
            spec_of = lambda vals, t=t: t.spec(ev.env(t.model, vals[0], vals[1]))  # noqa: E731
            out[name] = rt.sample(per_particle(rt, spec_of, batched), k)
        return out

    def invalid_at(self, z, t):
        """'parameter = value must be ...' (or 'value is outside its support') where term t's distribution at the
        one particle z [D] has an invalid parameter (or observation), else None: evaluated eagerly, after a run."""
        values, dets, _, dists, _ = self.ev.latent_values(z, self.layout)
        return t.invalid(self.ev.point(values, dets, dists), self.rt)

    def diagnose(self, z, what):
        """The error that says why the log density failed at particles z [N, D] after a run (its weights were NaN or
        +inf, or all vanished): the first term, in the target's order, that was NaN or +inf at some particle or
        −inf at all of them, named with its site and, where its distribution has an invalid parameter (or its
        observation is outside the support) at such a particle, the parameter and its value. None if no term
        failed (e.g. a proposal's density did). Batched over particles; the one particle is checked eagerly."""
        vals = self.rt.to_numpy(self._term_values(z)).astype(np.float64)
        n = vals.shape[0]
        for j, t in enumerate(self.compiled.terms):
            v = vals[:, j]
            nan, pos = int(np.isnan(v).sum()), int((v == np.inf).sum())
            if not (nan or pos or np.all(v == -np.inf)):
                continue
            i = int(np.argmax(np.isnan(v) | (v == np.inf)))
            site = t.located
            said = self.invalid_at(z[i], t)
            if said is not None:
                at = "at every particle" if not (nan or pos) else f"at {nan + pos} of {n} particles"
                kind = SupportError if "support" in said else ValueRangeError
                return kind(f"{what}: {t.label}: {said} ({at})", site=site)
            if nan or pos:
                counts = " and ".join(f"{k} at {c}" for c, k in ((nan, "NaN"), (pos, "+inf")) if c)
                return InferenceError(f"{what}: {t.label} was {counts} of {n} particles; a density must be finite "
                                      f"or -inf (zero density) everywhere, and the run would have dropped those "
                                      f"particles silently", site=site,
                                      hint=UNDEFINED_DENSITY_HINT)
            return InferenceError(f"{what}: all weights vanished: {t.label} was -inf (zero density) at all {n} "
                                  f"particles", site=site)
        return None

    def check_draws(self, z, what):
        """Raise `diagnose`'s error if a term is NaN or +inf at some of the particles z [N, D] (a method's initial
        draws: one batched evaluation of the terms, for a method whose own densities map NaN to −inf)."""
        vals = self.rt.to_numpy(self._term_values(z))
        if np.isnan(vals).any() or (vals == np.inf).any():
            raise self.diagnose(z, what)

    # batched
    def log_likelihood(self, z):
        """Pointwise log-likelihood of each observed site at each particle, log p(y_j | θ_i) (elementwise over
        the site's batch shape; the target's coefficients are not applied): numpy [N, *batch shape]."""
        return {k: self.rt.to_numpy(v) for k, v in self._log_likelihood(z).items()}

    def predictive(self, key, z):
        """Replicated observations y_rep ~ p(y | θ_i), one per particle, for each observed site: numpy
        [N, *shape]."""
        return {k: self.rt.to_numpy(v) for k, v in self._predictive(key, z).items()}

    def to_constrained(self, z):
        """Constrained latent and deterministic values, as numpy arrays [N, *shape]."""
        return {k: self.rt.to_numpy(v) for k, v in self.to_constrained_arrays(z).items()}

    def sample_reference(self, key, n):
        """z [n, D] drawn exactly from the reference π0 (ancestral sampling, batched over particles); a PlanError
        where a site has no normalized prior (`ModelPlan.check_reference`)."""
        self.compiled.check_reference()
        return self._sample_reference(key, n=n)

    def sample_start(self, key, n):
        """z [n, D] to start MCMC chains from: draws of π0, uniform(−2, 2) on the unconstrained scale at the sites
        without a normalized prior (`SampleBatched`)."""
        return self._sample_reference(key, n=n)

    def draw_reference(self, key, n):
        """z [n, D] from π0 as `sample_start` draws them, not compiled: for a caller that traces it under handlers
        (`handlers`) inside its own compiled function."""
        if self.dim == 0:   # nothing latent: every particle is the empty point
            return self.rt.xp.zeros((n, 0))
        values, _ = self.ev.run(SampleBatched(self.ev, key, n))
        return self._unconstrain(values)

    def _unconstrain(self, values):
        def one(x):
            h = Unconstrain(self.ev, x)
            self.ev.run(h)
            return self.rt.xp.concatenate(h.parts) if h.parts else self.rt.xp.zeros((0,))
        return self.rt.vmap(one)(values)
