"""Lowering a `model` block to a `ppl.model(...)`, with Stan-like type rules.

Statements are taken in dependency order (`names.dependency_order`, so they may be written in any order).
Each statement becomes a site (see `ppl.target.Site`) whose function interprets the statement's syntax,
and whose `source` is (file, line, column) of the statement: a latent site (`x ~ dist`, `x : type ~ dist`,
or a flat `x : type`), an observation (`y ~ dist` for data y; `for t in 1:N { y[t] ~ dist }` is one,
`vectorize.py`), a deterministic value (`=` and its indexed and looped updates, grouped), a factor, or a
latent state drawn element by element (a `ppl.markov` site). A declared type restricts its distribution to
the type's support: the language never truncates silently.
"""
import math as _pymath
import warnings

import numpy as np

from .. import math as pm
from ..errors import PPLError, SourceError
from ..stdlib import distributions as D
from ..stdlib.hidden_markov import FINITE, states
from ..stdlib.markov import markov
from ..target import Model, Site
from . import syntax as S
from .interpret import Interpreter, concrete_int, log_density
from .names import (PREV, State, assigned, blocks, dependency_order, free, lag, markov_reads, reads, state_names,
                    walk, writes)
from .ordered import SortedIID
from .source import suggest
from .symbolic import NeedsData, Symbolic
from .vectorize import whole_observation

_POSITIVE = {"half_normal", "half_cauchy", "half_student_t", "lognormal", "exponential", "gamma", "inverse_gamma"}
_REAL = {"normal", "cauchy", "student_t", "laplace"}
_UNIT = {"beta"}


class JacobianWarning(UserWarning):
    """`expression ~ dist` of an expression of the parameters: the density has no Jacobian term for it."""


def _block_name(s):
    return "loop" if isinstance(s, S.For) else "if"


class _Group:
    """Deterministic values computed by several statements (a definition, indexed updates, loops)."""

    def __init__(self):
        self.names, self.stmts, self.logp, self.loop = [], [], False, None


class ModelBuilder:
    """Builds the `Model` of one `ModelDef` over the program's `data` and `use`d `functions`."""

    def __init__(self, node, src, data, functions):
        self.node, self.src, self.data = node, src, dict(data)
        self.node_data = set(data)   # the program's data (self.data adds the values computed from it)
        self.name = node.name
        self.interp = Interpreter(src, functions)
        self.sites, self.observed, self.positions = {}, {}, {}
        self.roles = {}  # name -> 'latent' | 'observed' | 'det' | 'factor'
        self.flat_sites = set()   # latent sites declared without a distribution

    def build(self):
        groups, owner = [], {}
        self.body = self.known_branches(self.node.body)
        self.kept = {n.name: n for k in self.body if isinstance(k, S.Keep) for n in k.names}
        self.body = [s for s in self.body if not isinstance(s, S.Keep)]
        self.states = state_names(self.body)
        self.defined = sorted(set().union(*(writes(s, self.data) for s in self.body)))
        for i, s in self.data_values(dependency_order(self.body, self.data, self.src, self.name)):
            if isinstance(s, S.Declare) and s.name in self.states:
                self.state_declare(s)
            elif isinstance(s, S.Declare):
                self.declare(s)
            elif isinstance(s, S.Tilde) and s.target.name in self.states:
                self.state_init(s)
            elif isinstance(s, S.Tilde):
                self.tilde(s)
            elif isinstance(s, S.For) and any(isinstance(b, S.Tilde) and b.target.name in self.states
                                              for b in walk(s.body)):
                self.state_loop(s)
            elif isinstance(s, S.For) and (whole := whole_observation(s, self.data, self.interp, self.src)):
                self.tilde(*whole)
            elif isinstance(s, S.Factor):
                self.factor(s)
            elif isinstance(s, S.ObserveExpr):
                self.observe_expr(s)
            elif isinstance(s, S.Return):
                raise self.src.error(s, "return is the last statement of a function; a model has none",
                                     hint="a model's density is made of its ~ statements and factors")
            elif isinstance(s, (S.Assign, S.AugAssign)):
                lv = s.target
                self._writable(lv.name, lv, first=isinstance(s, S.Assign) and lv.indices is None)
                if lv.name not in owner:
                    g = _Group()
                    g.names.append(lv.name)
                    groups.append(g)
                    owner[lv.name] = g
                    self.roles[lv.name] = "det"
                    self.positions[lv.name] = lv
                owner[lv.name].stmts.append((i, s))
            elif isinstance(s, (S.For, S.If)):
                self.check_block(s)
                written = [n for n in sorted(assigned([s])) if n in owner]
                for n in assigned([s]):
                    if n in self.roles and self.roles[n] != "det" or n in self.data:
                        raise self.src.error(s, f"the {_block_name(s)} assigns to {n!r}, which is "
                                                f"{'data' if n in self.data else 'a ' + self.roles[n] + ' site'}")
                merged = list(dict.fromkeys(owner[n] for n in written))
                g = merged[0] if merged else _Group()
                for other in merged[1:]:
                    g.names += other.names
                    g.stmts += other.stmts
                    g.logp = g.logp or other.logp
                    groups.remove(other)
                    for n in other.names:
                        owner[n] = g
                if not merged:
                    groups.append(g)
                for n in sorted(assigned(s.then) & assigned(s.orelse) - set(owner) if isinstance(s, S.If) else ()):
                    g.names.append(n)
                    owner[n], self.roles[n], self.positions[n] = g, "det", s
                g.stmts.append((i, s))
                g.stmts.sort(key=lambda x: x[0])
                if any(isinstance(b, (S.Tilde, S.Factor, S.ObserveExpr)) for b in walk(blocks(s))):
                    g.logp = True
                    g.loop = g.loop or s
                elif not written and isinstance(s, S.For):
                    raise self.src.error(s, "this loop has no effect: it neither updates a value defined before "
                                            "it nor observes data",
                                         hint="define the value first (x = zeros(T)) and assign x[t] in the loop")
        for g in groups:
            self.group_sites(g)
        for st in self.states.values():
            self.state_site(st)
        self.check_reads_after_writes(groups)
        self.check_kept()
        data = {k: v for k, v in self.data.items() if k not in self.observed}
        try:
            model = Model(self.sites, data=data, observed=self.observed, name=self.name)
        except PPLError as e:
            raise self.src.relocate(self.positions.get(e.site, self.node), e) from None
        for value in self.observed.values():   # `ppl check` without data: the model is built, not compiled
            if isinstance(value, Symbolic):
                raise NeedsData(value.name)
        return model

    def known_branches(self, stmts):
        """`stmts` with each top-level `if` whose condition reads only data and constants replaced by the branch it
        picks (`if prior_only { ... }`), so that its branches may declare and draw sites."""
        out = []
        for s in stmts:
            if isinstance(s, S.If) and all(n in self.data for n, _ in reads(s.cond)):
                symbolic = [n for n, _ in reads(s.cond) if isinstance(self.data[n], Symbolic)]
                if symbolic:
                    raise NeedsData(symbolic[0])
                c = self.interp.condition(s.cond, dict(self.data), "numpy")
                out.extend(self.known_branches(s.then if c else s.orelse))
            else:
                out.append(s)
        return out

    def data_values(self, ordered):
        """Values computed from data and constants alone, evaluated once (numpy) and added to the data; returns
        the other statements [(index, statement)], in order.

        A value is data-only when every statement writing it (`=`, updates, loops without `~` or `factor`)
        reads only data and data-only values. Readers come after all writers (`dependency_order`), so a name
        is tainted by a non-data-only writer before anything reads it.
        """
        known, tainted, candidates = set(self.data), set(), []
        for i, s in ordered:
            # `v ~ ...` (or `v[i] ~ ...` in a loop) of a data-only value v observes it: transformed data
            wrote = writes(s, ()) - (known & {b.target.name for b in walk([s]) if isinstance(b, S.Tilde)})
            pure = isinstance(s, (S.Assign, S.AugAssign)) or isinstance(s, (S.For, S.If)) and not any(
                isinstance(b, (S.Tilde, S.Factor, S.ObserveExpr)) for b in walk(blocks(s)))
            if pure and not wrote & set(self.data) and {n for n, _ in free([s])} <= known | wrote:
                candidates.append((i, s))
                known |= wrote
            else:
                tainted |= wrote
                known -= wrote
        once = [(i, s) for i, s in candidates if not writes(s, ()) & tainted]
        if once:
            env = dict(self.data)
            self.interp.run([s for _, s in once], env, "numpy")
            for n in set().union(*(writes(s, ()) for _, s in once)) & set(env):
                self.data[n] = _as_data(env[n])
        done = {i for i, _ in once}
        return [(i, s) for i, s in ordered if i not in done]

    # -- statements ----------------------------------------------------------
    def _writable(self, name, node, first):
        if name in self.data:
            raise self.src.error(node, f"{name!r} is data and cannot be assigned")
        role = self.roles.get(name)
        if role in ("latent", "observed"):
            raise self.src.error(node, f"{name!r} is already a {role} site (line {self.positions[name].line})")
        if role is None and not first:
            raise self.src.error(node, f"{name!r} is updated before it is defined",
                                 hint=f"define it first, e.g. {name} = zeros(T)")

    def _new(self, name, node, role):
        if name in self.roles:
            raise self.src.error(node, f"{name!r} is already defined at line {self.positions[name].line}")
        self.roles[name], self.positions[name] = role, node

    def _source(self, node):
        return self.src.filename, node.line, node.column

    def site(self, name, role, fn, parents, node, constant=None, keep=True):
        """The site `name`, its source the statement `node`."""
        if constant is not None:
            self.sites[name] = Site(role, constant, source=self._source(node))
        else:
            self.sites[name] = Site(role, fn, parents, source=self._source(node), keep=keep)

    def check_kept(self):
        """`keep x` names a value the model computes from its parameters."""
        for name, node in self.kept.items():
            if self.roles.get(name) == "det":
                continue
            if name in self.data:
                what = "data" if name in self.node_data else "computed from data alone: the same in every draw"
                raise self.src.error(node, f"{name!r} is {what}; keep names values computed from the parameters")
            if name in self.roles:
                raise self.src.error(node, f"{name!r} is a {self.roles[name]} site; latent sites are always saved",
                                     hint=f"remove {name} from keep")
            raise self.src.error(node, f"keep names an unknown value {name!r}",
                                 hint=suggest(name, [n for n, k in self.roles.items() if k == "det"]))

    def parents(self, names_read, own=None):
        """The names a statement reads that are sites or data; reading an unknown name or `own` (the site the
        statement defines) is an error at the read."""
        out = []
        for name, where in names_read:
            if name == own:
                raise self.src.error(where, f"{own!r} reads itself: a site's distribution cannot depend on its "
                                            f"own value", hint="use another site, data or a constant here")
            if name in self.roles or name in self.data:
                if name not in out:
                    out.append(name)
            else:
                raise self.src.error(where, f"unknown name {name!r} in model {self.name}",
                                     hint=suggest(name, self.defined + list(self.data))
                                     or "declare data with `data NAME : type`; define values before using them")
        return out

    def declare(self, s):
        name, typ, dist = s.name, s.type, s.dist
        if name in self.data:
            raise self.src.error(s, f"{name!r} is data; its type is given by its data declaration",
                                 hint=f"observe it with `{name} ~ ...`")
        self._new(name, s, "latent")
        tname, bounds, dims = type_parts(typ, self.src)
        parents = self.parents(reads([b.value for b in bounds.values()], dims, dist), own=name)
        interp, src = self.interp, self.src

        def shape_of(env, fw):
            shape = interp.shape(dims, env, fw) if dims else ()
            if tname in ("simplex", "ordered", "positive_ordered"):
                if len(shape) != 1:
                    raise src.error(typ, f"{tname} takes one dimension: {tname}[K]")
            return shape

        finite = self.finite_values(typ, bounds) if tname == "int" and dist is not None else None
        if dist is None:
            self.flat_sites.add(name)
            fn, factor = self.flat(typ, tname, bounds, shape_of)
        elif finite is not None:
            factor = None

            def fn(**env):
                fw = pm.framework(list(env.values()))
                d = interp.distribution(dist, env, fw)
                if d.family not in FINITE or states(d) != finite[1]:
                    got = f"{states(d)} values" if d.family in FINITE else d.family
                    raise src.error(dist, f"{name} : int<lower={finite[0]}, upper={finite[0] + finite[1] - 1}> "
                                          f"takes {finite[1]} values, but its law has {got}",
                                    hint="draw it from categorical(probs) with one probability per value, or "
                                         "bernoulli(p) for int<lower=0, upper=1>; the compiler sums it out")
                shape = shape_of(env, fw)
                return _reshaped(d, shape) if shape else d
        else:
            factor = None

            def fn(**env):
                fw = pm.framework(list(env.values()))
                return self.constrained(dist, typ, tname, bounds, shape_of(env, fw), env, fw)
        self.add_latent(name, fn, parents, s)
        if finite is not None:   # a finite discrete site: values offset..offset + K − 1 (compiler/discrete.py)
            self.sites[name].finite, self.sites[name].offset = True, finite[0]
        if factor is not None:
            fname = f"{name}:flat"
            self.roles[fname], self.positions[fname] = "factor", s
            self.site(fname, "factor", factor, parents, s)

    def finite_values(self, typ, bounds):
        """(lower, number of values) of `int<lower=a, upper=b>`, both known before sampling."""
        ends = [concrete_int(self.interp.ev(bounds[k].value, dict(self.data), "numpy")) if k in bounds else None
                for k in ("lower", "upper")]
        if None in ends or ends[1] < ends[0]:
            raise self.src.error(typ, "a discrete parameter takes the values lower..upper, both known before "
                                      "sampling", hint="write z : int<lower=1, upper=K> ~ categorical(probs)")
        return ends[0], ends[1] - ends[0] + 1

    def add_latent(self, name, fn, parents, node):
        """A latent site; one that reads only data is a constant distribution, as in the Python API."""
        known = all(p in self.data and not isinstance(self.data[p], Symbolic) for p in parents)
        try:
            constant = fn(**{p: self.data[p] for p in parents}) if known else None
        except SourceError:
            raise
        except PPLError as e:
            raise self.src.relocate(node, e) from None
        self.site(name, "latent", fn, parents, node, constant=constant)

    def flat(self, typ, tname, bounds, shape_of):
        """A site without a distribution: flat on its type's support (see docs/language.md)."""
        interp, src = self.interp, self.src
        if tname == "int":
            raise src.error(typ, "an integer parameter cannot be sampled; declare it as data")
        if tname in ("ordered", "positive_ordered") or (tname == "real" and set(bounds) <= {"lower"}):
            if "lower" in bounds:
                lo = bounds["lower"].value
                if not isinstance(lo, S.Number) or lo.value != 0:
                    raise src.error(lo, "a one-sided bound must be lower=0 (the positive reals)",
                                    hint="reparameterize: x = a + y with y : real<lower=0>")
            support = {"real": "positive" if bounds else "real"}.get(tname, tname)
            return (lambda **env: D.flat(shape=shape_of(env, pm.framework(list(env.values()))), support=support)), None
        if tname == "simplex":
            def fn(**env):
                k = shape_of(env, "numpy")[0]
                return D.make("dirichlet", np.ones(k, dtype=np.float32))

            def factor(**env):
                return -_pymath.lgamma(shape_of(env, "numpy")[0])
            return fn, factor
        if tname == "real" and set(bounds) == {"lower", "upper"} or set(bounds) == {"upper"}:
            if "lower" not in bounds:
                raise src.error(typ, "a one-sided bound must be lower=0", hint="use real<lower=a, upper=b>")

            def ends(env):
                fw = pm.framework(list(env.values()))
                return interp.ev(bounds["lower"].value, env, fw), interp.ev(bounds["upper"].value, env, fw), fw

            def fn(**env):
                lo, hi, fw = ends(env)
                try:   # bounds known before sampling are checked where they are written (lower < upper)
                    return D.make("uniform", lo, hi, shape=shape_of(env, fw))
                except PPLError as e:
                    raise src.relocate(typ, e) from None

            def factor(**env):
                lo, hi, fw = ends(env)
                n = int(np.prod(shape_of(env, fw), dtype=int))
                return n * pm.log(hi - lo)
            return fn, factor
        raise src.error(typ, f"cannot declare a flat {tname} parameter here")

    def constrained(self, dist, typ, tname, bounds, shape, env, fw):
        """The distribution of `x : type ~ dist`, checked against the type's support."""
        fam, src = dist.family, self.src
        if tname in ("ordered", "positive_ordered"):
            base_ok = _POSITIVE if tname == "positive_ordered" else _REAL
            if fam not in base_ok:
                raise src.error(dist, f"{tname}[K] ~ {fam}(...): the elements need a "
                                      f"{'positive' if tname == 'positive_ordered' else 'real'} distribution",
                                hint=f"one of {', '.join(sorted(base_ok))}")
            return SortedIID(self.interp.distribution(dist, env, fw, shape=shape), tname)
        if tname == "simplex" and fam != "dirichlet":
            raise src.error(dist, f"simplex[K] ~ {fam}(...): a simplex needs dirichlet(alpha)")
        if tname == "int":
            raise src.error(typ, "an integer parameter cannot be sampled; declare it as data")
        d = self.interp.distribution(dist, env, fw)
        if shape and tname != "simplex":
            d = _reshaped(d, shape)
        if tname == "real" and bounds and not self.on_support(fam, bounds) and dist.truncation is None:
            lower, upper = (None if k not in bounds else self.interp.ev(bounds[k].value, env, fw)
                            for k in ("lower", "upper"))
            try:   # `x : real<lower=0> ~ normal(1, 0.5)` is the normal truncated to (0, inf), as in Stan
                d = D.Truncated(d, lower, upper)
            except PPLError as e:
                raise src.relocate(dist, e) from None
        return d

    @staticmethod
    def on_support(family, bounds):
        """Whether `family` lives on the declared bounds already (a positive family on lower=0, uniform, beta
        on (0, 1)), so that the declaration truncates nothing."""
        def value(key):
            b = bounds.get(key)
            return b.value.value if b is not None and isinstance(b.value, S.Number) else None
        if family == "uniform":
            return True
        if set(bounds) == {"lower"} and value("lower") == 0:
            return family in _POSITIVE
        return set(bounds) == {"lower", "upper"} and (value("lower"), value("upper")) == (0, 1) and family in _UNIT

    def tilde(self, s, check=None):
        """`y ~ dist` (data y, or an element y[i]): observed; `x ~ dist`: latent. `check(env, fw)`, where given,
        runs before the law is built (`vectorize.whole_observation`)."""
        lv, dist = s.target, s.dist
        name, idx = lv.name, lv.indices
        if name in self.data:
            site = name
            value = self.data[name]
            if idx is not None:
                ix = self.interp.indices(idx, np.asarray(value), dict(self.data), "numpy")
                value = np.asarray(value)[ix]
                site = f"{name}[{', '.join(_fmt_index(i) for i in ix)}]"
            if site in self.observed:
                raise self.src.error(lv, f"{site} is observed twice (line {self.positions[site].line})")
            self.roles[site], self.positions[site] = "observed", s
            self.observed[site] = value if isinstance(value, Symbolic) else np.asarray(value)
        elif idx is not None and name in self.flat_sites:
            self.part_prior(s)
            return
        else:
            if idx is not None:
                raise self.src.error(lv, f"{name!r} is not data; a latent site is declared whole, or declared without "
                                         f"a distribution and given priors by part",
                                     hint=f"write {name} ~ normal(0, 1) [J], or {name} : real[J] and then "
                                          f"{name}[1:2] ~ normal(0, 1)")
            self._new(name, lv, "latent")
            site = name
        parents = self.parents(reads(dist), own=site)
        interp = self.interp

        def fn(**env):
            fw = pm.framework(list(env.values()))
            if check is not None:
                check(env, fw)
            return interp.distribution(dist, env, fw)
        self.add_latent(site, fn, parents, s)

    def observe_expr(self, s):
        """`expression ~ dist`: of data alone, an observed site named by its text (`log(y)`); reading parameters,
        a factor log dist(expression) with no Jacobian term (as in Stan), and a warning saying so."""
        interp, text = self.interp, self.src.line(s.line)[s.column - 1:].split("~")[0].strip()
        if all(n in self.data and not isinstance(self.data[n], Symbolic) for n, _ in reads(s.value)):
            if text in self.observed:
                raise self.src.error(s, f"{text} is observed twice (line {self.positions[text].line})")
            self.roles[text], self.positions[text] = "observed", s
            self.observed[text] = np.asarray(interp.ev(s.value, dict(self.data), "numpy"))
            fn = lambda **env: interp.distribution(s.dist, env, pm.framework(list(env.values())))  # noqa: E731
            self.add_latent(text, fn, self.parents(reads(s.dist), own=text), s)
            return
        warnings.warn(self.src.error(s, f"{text} ~ {s.dist.family}(...) reads parameters: it adds log "
                                        f"{s.dist.family}({text}) to the density with no Jacobian term",
                                     hint=f"add the log absolute derivative of {text} as a factor if it is meant "
                                          f"as a change of variables").render(), JacobianWarning, stacklevel=2)
        name = f"observe@{s.line}"
        self.roles[name], self.positions[name] = "factor", s

        def fn(**env):
            fw = pm.framework(list(env.values()))
            return pm.sum(log_density(interp.distribution(s.dist, env, fw), interp.ev(s.value, env, fw), env))
        self.site(name, "factor", fn, self.parents(reads(s.value, s.dist)), s)

    def part_prior(self, s):
        """`x[idx] ~ dist` for x declared without a distribution (`x : real[4]`): a factor log dist(x[idx]) on the
        flat site x (Stan's `theta[1:2] ~ normal(1, 0.5)`)."""
        interp, lv = self.interp, s.target
        name = f"{lv.name}[{self.src.line(s.line)[s.column - 1:].split('[', 1)[1].split('~')[0].strip()}"
        if name in self.roles:
            raise self.src.error(lv, f"{name} has a prior twice (line {self.positions[name].line})")
        self.roles[name], self.positions[name] = "factor", s

        def fn(**env):
            fw = pm.framework(list(env.values()))
            return pm.sum(log_density(interp.distribution(s.dist, env, fw), interp.ev(lv.expr(), env, fw), env))
        self.site(name, "factor", fn, self.parents(reads(lv.expr(), s.dist)), s)

    def factor(self, s):
        name = f"factor@{s.line}"
        self.roles[name], self.positions[name] = "factor", s
        interp = self.interp
        self.site(name, "factor", lambda **env: interp.ev(s.value, env, pm.framework(list(env.values()))),
                  self.parents(reads(s.value)), s)

    # -- latent states: x : real[T], x[1] ~ p0, for t in 2:T { x[t] ~ p(. | x[t - 1]) } ----------------
    def state_declare(self, s):
        name, typ = s.name, s.type
        if name in self.data:
            raise self.src.error(s, f"{name!r} is data; its type is given by its data declaration")
        self._new(name, s, "latent")
        tname, bounds, dims = type_parts(typ, self.src)
        st = self.states[name] = State(s, dims, self.interp.shape(dims, dict(self.data), "numpy") if dims else None)
        if tname == "int" and dims and len(dims) == 1:
            # a discrete state int<lower=a, upper=b>[T]: values a..b, the law's categories 0..b − a (summed out)
            st.offset, st.states = self.finite_values(typ, bounds)
        elif tname != "real" or bounds or not dims or len(dims) > 2:
            raise self.src.error(typ, f"a latent state drawn element by element is declared real[T] (or real[T, D] "
                                      f"for a vector state), or int<lower=1, upper=K>[T] for a discrete one",
                                 hint=f"write {name} : real[T]")

    def _state(self, name, node):
        st = self.states[name]
        if st.decl is None:
            raise self.src.error(node, f"the state {name!r} is drawn before its declaration",
                                 hint=f"declare it first: {name} : real[T]")
        return st

    def state_init(self, s):
        """`x[1] ~ dist`: the initial state; it reads no element of x."""
        lv, dist = s.target, s.dist
        name, idx = lv.name, lv.indices
        st = self._state(name, lv)
        if idx is None or len(idx) != 1 or isinstance(idx[0], S.Slice):
            raise self.src.error(lv, f"a state is drawn one time step at a time",
                                 hint=f"draw {name}[1] ~ ... and then {name}[t] ~ ... in a loop over t")
        k = concrete_int(self.interp.ev(idx[0], dict(self.data), "numpy"))
        if k != 1:
            raise self.src.error(lv, f"{name}[{k}] is drawn outside the loop; only the initial state {name}[1] is",
                                 hint=f"draw {name}[2:{st.shape[0]}] in one loop: for t in 2:{st.shape[0]} "
                                      f"{{ {name}[t] ~ ... }}")
        if st.init is not None:
            raise self.src.error(lv, f"{name}[1] is drawn twice (first at line {st.init.line})",
                                 hint="each element of a state has one distribution")
        names_read = reads(dist)
        for n, where in names_read:
            if n == name:
                raise self.src.error(where, f"the initial state {name}[1] cannot read {name}",
                                     hint="its distribution reads parameters and data only")
        st.init, st.init_parents = s, self.parents(names_read)

    def state_loop(self, s):
        """`for t in 2:T { locals; x[t] ~ dist }`: the transition, reading x[t - 1] (as PREV) and t."""
        var, body = s.var, s.body
        tildes = [b for b in body if isinstance(b, S.Tilde)]
        name = tildes[0].target.name if tildes else None
        st = self._state(name, s) if name in self.states else None
        bad = [b for b in body if not isinstance(b, (S.Tilde, S.Assign, S.AugAssign))] + tildes[1:]
        if st is None or bad or body[-1] is not tildes[0]:
            raise self.src.error(bad[0] if bad else s, "a loop that draws a latent state holds local assignments "
                                                       "and, last, the one draw x[t] ~ ...",
                                 hint="observe data after the loop (y ~ normal(0, exp(x / 2))) or in a loop of "
                                      "its own")
        if st.loop is not None:
            raise self.src.error(s, f"{name}[{var}] is drawn twice: by this loop and by the loop at line "
                                    f"{st.loop.line}", hint=f"one loop draws {name}[2:{st.shape[0]}]")
        lv = tildes[0].target
        if lv.indices is None or len(lv.indices) != 1 or lag(lv.indices[0], var) != 0:
            raise self.src.error(lv, f"the loop must draw {name}[{var}], the state at its own time step",
                                 hint=f"for {var} in 2:{st.shape[0]} {{ {name}[{var}] ~ normal({name}[{var} - 1], "
                                      f"1) }}")
        for b in body[:-1]:
            local = b.target.name
            if local in self.roles or local in self.data:
                raise self.src.error(b, f"a loop that draws a latent state only defines values local to one step; "
                                        f"{local!r} is defined outside it", hint=f"rename the local value {local}")
        lo, hi = (concrete_int(self.interp.ev(n, dict(self.data), "numpy")) for n in (s.lo, s.hi))
        if lo != 2:
            raise self.src.error(s.lo, f"the loop must start right after the initial state {name}[1]: "
                                       f"for {var} in 2:{st.shape[0]}, not {lo}",
                                 hint=f"only {name}[1] is drawn outside the loop")
        if hi != st.shape[0]:
            raise self.src.error(s.hi, f"the loop must run to the last state {name}[{st.shape[0]}], not {hi}",
                                 hint=f"the declaration {name} : real[...] says how many states there are")
        assigns = [markov_reads(b, name, var, self.src) for b in body[:-1]]
        dist = markov_reads(tildes[0].dist, name, var, self.src)
        defined = assigned(assigns)
        names_read = free(assigns) + [r for r in reads(dist) if r[0] not in defined]
        st.reads_t = any(n == var for n, _ in names_read)
        names_read = [r for r in names_read if r[0] not in (PREV, var)]
        for n, where in names_read:
            if n in ("prev", "t"):
                raise self.src.error(where, f"a latent state's step cannot read a value named {n!r}",
                                     hint=f"rename {n}")
        st.loop, st.var, st.assigns, st.dist = s, var, assigns, dist
        st.step_parents = self.parents(names_read)

    def state_site(self, st):
        """The `ppl.markov` site of a state: x[1] ~ init, x[t] ~ step(x[t - 1], t) (0-based t in ppl.markov)."""
        name, length = st.decl.name, st.shape[0]
        if st.init is None:
            raise self.src.error(st.loop or st.decl, f"the initial state {name}[1] has no distribution",
                                 hint=f"draw it before the loop: {name}[1] ~ normal(0, 1)")
        if st.loop is None and length > 1:
            raise self.src.error(st.decl, f"{name}[2:{length}] have no distribution",
                                 hint=f"draw them in a loop: for t in 2:{length} {{ {name}[t] ~ normal({name}[t - 1], "
                                      f"1) }}")
        interp, shape, init_dist, src = self.interp, st.shape[1:], st.init.dist, self.src

        def discrete(d, node):
            """A discrete state's law: finite, with as many values as the declaration gives the state."""
            if st.states is not None and (d.family not in FINITE or states(d) != st.states):
                got = f"{states(d)} values" if d.family in FINITE else f"{d.family}"
                raise src.error(node, f"{name} : int<lower={st.offset}, upper={st.offset + st.states - 1}> takes "
                                      f"{st.states} values, but its law has {got}",
                                hint=f"draw it from categorical(probs) with {st.states} probabilities (values "
                                     f"lower..upper), or bernoulli(p) for int<lower=0, upper=1>")
            return d

        def init(**env):
            d = interp.distribution(init_dist, env, pm.framework(list(env.values())))
            return _state_dist(discrete(d, init_dist), shape)

        def step(prev, t=None, **env):
            env = {**env, PREV: prev}
            if st.reads_t:
                env[st.var] = t + 1
            fw = pm.framework(list(env.values()))
            interp.run(st.assigns, env, fw)
            return _state_dist(discrete(interp.distribution(st.dist, env, fw), st.dist), shape)

        dim = st.dims[0]
        by_name = isinstance(dim, S.Name) and dim.name in self.data
        self.sites[name] = markov(init, step, dim.name if by_name else length, init_parents=st.init_parents,
                                  step_parents=["prev"] + (["t"] if st.reads_t else []) + st.step_parents
                                  if st.loop else ["prev"], offset=st.offset)
        self.sites[name].source = self._source(st.decl)

    def check_block(self, s):
        """A loop, or an `if` whose condition depends on the parameters, declares and draws no site."""
        if isinstance(s, S.If):
            for b in walk(blocks(s)):
                if isinstance(b, S.Declare) or isinstance(b, S.Tilde) and b.target.name not in self.data:
                    raise self.src.error(b, f"{getattr(b, 'name', None) or b.target.name!r} is a site drawn under a "
                                            f"condition that depends on the parameters: a site exists in every draw",
                                         hint="draw it outside the if, and choose its use with cond ? a : b; an if "
                                              "on data is resolved when the data are loaded")
            return
        for b in walk(s.body):
            if isinstance(b, S.Declare):
                raise self.src.error(b, "parameters cannot be declared inside a loop",
                                     hint="declare a vector before the loop (x ~ normal(0, 1) [T]) and index it")
            if isinstance(b, S.Tilde) and b.target.name not in self.data:
                raise self.src.error(b, f"{b.target.name!r} is not data: only data and latent states "
                                        f"can be drawn inside a loop",
                                     hint="declare latent vectors before the loop: x ~ normal(0, 1) [T]; or a "
                                          "latent state x : real[T] drawn by x[1] ~ ... and "
                                          "for t in 2:T { x[t] ~ ... }")

    def group_sites(self, g):
        stmts = [s for _, s in g.stmts]
        parents = self.parents(free(stmts))
        interp = self.interp

        def run(env):
            env = dict(env)
            env["__logp"] = 0.0
            interp.run(stmts, env, pm.framework(list(env.values())))
            return env

        def value(name):   # a closure, not a default argument, which a parent of the same name would fill
            return lambda **env: run(env)[name]

        for n in g.names:
            self.site(n, "deterministic", value(n), parents, self.positions[n], keep=n in self.kept)
        if g.logp:
            name = f"loop@{g.loop.line}"
            self.roles[name], self.positions[name] = "factor", g.loop
            self.site(name, "factor", lambda **env: run(env)["__logp"], parents, g.loop)

    def check_reads_after_writes(self, groups):
        stmts = self.body
        for g in groups:
            idx = [i for i, _ in g.stmts]
            first, last = min(idx), max(idx)
            for i in range(first + 1, last):
                if i in idx:
                    continue
                for n, where in free([stmts[i]]):
                    if n in g.names:
                        raise self.src.error(where, f"{n!r} is read here before its last update at line "
                                                    f"{stmts[last].line}", hint=f"finish computing {n} first")


def type_parts(typ, src):
    """(type name, {'lower' / 'upper': Bound}, dims or None) of a `Type`; `vector[N]` and `matrix[M, N]` are
    `real[N]` and `real[M, N]`."""
    bounds = {}
    for b in typ.bounds:
        if b.key not in ("lower", "upper"):
            raise src.error(b, f"unknown bound {b.key!r}; use lower= and upper=")
        bounds[b.key] = b
    rank = {"vector": 1, "matrix": 2}.get(typ.name)
    if rank is not None:
        if len(typ.dims or ()) != rank:
            raise src.error(typ, f"{typ.name} takes {rank} dimension(s): "
                                 f"{'vector[N]' if rank == 1 else 'matrix[M, N]'}")
        return "real", bounds, typ.dims
    return typ.name, bounds, typ.dims


def _as_data(v):
    """A computed value as the loader stores data: Python numbers for scalars, float32 / int64 arrays."""
    arr = np.asarray(v)
    integral = arr.dtype.kind in "iub"
    if arr.ndim == 0:
        return int(arr) if integral else float(arr)
    return arr.astype(np.int64 if integral else np.float32)


def _fmt_index(i):
    if isinstance(i, slice):
        return f"{'' if i.start is None else i.start + 1}:{'' if i.stop is None else i.stop}"
    return str(np.asarray(i) + 1) if not isinstance(i, int) else str(i + 1)


def _reshaped(d, shape):
    """The distribution `d` with batch shape `shape` (a truncation keeps its bounds)."""
    if isinstance(d, D.Truncated):
        return D.Truncated(_reshaped(d.base, shape), *d.bounds)
    return D.Distribution(d.family, d.params, shape)


def _state_dist(d, shape):
    """A one-state distribution expanded to the state's shape (families with scalar events only)."""
    vector_family = any(f == d.family for f, _ in D.PARAM_EVENT_DIMS)
    return _reshaped(d, shape) if shape and not d.shape and not vector_family else d
