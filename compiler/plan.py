"""Planning: which terms form the normalized, sampleable reference π0 and which form the rest L.

log γ(x) = Σ_t c_t ℓ_t(x). For each latent site one normalized prior term is chosen
as its reference factor (a folded Gaussian first, then coefficient 1, then the
first with c > 0; or the user's `reference` model). Then

    log π0 = Σ_{t chosen} ℓ_t          log L = Σ_t c_t ℓ_t − log π0

so tempering π_β ∝ π0 · L^β never scales the reference: β = 0 is proper.
"""
import numpy as np

from .. import advice
from ..errors import NameResolutionError, PlanError
from ..target import Model, Target
from .gaussian import fold_gaussians
from .graph import build_graph, evaluation_order, readable
from .marginalize import marginalize as integrate_out
from .terms import Constant, Gaussian, Prior, Reward, expand


def _choose_reference(terms, latent):
    """(chosen, improper): each latent site's reference factor, and the sites without a normalized prior of
    positive coefficient (flat, energy-only or negatively weighted), which take their first prior term (for its
    support) in place of one: a method that draws from π0 refuses them (`ModelPlan.check_reference`); NUTS and HMC
    need no reference."""
    by_site = {}
    for t in terms:
        if isinstance(t, (Prior, Gaussian)) and t.coef > 0:
            by_site.setdefault(t.site, []).append(t)
    chosen, improper = {}, []
    for site in latent:
        cands = by_site.get(site, [])
        normalized = [t for t in cands if isinstance(t, Gaussian) or t.model.sites[site].constant is None
                      or t.model.sites[site].constant.is_normalized]
        best = ([t for t in normalized if isinstance(t, Gaussian)] + [t for t in normalized if t.coef == 1.0]
                + normalized) or [t for t in terms if isinstance(t, Prior) and t.site == site]
        if not normalized:
            improper.append(site)
        if not best:
            raise _no_reference(site)
        chosen[site] = best[0]
    return chosen, improper


def _no_reference(site):
    return PlanError(f"site {site!r} has no normalized prior with a positive coefficient to start from "
                     f"(flat, energy-only or negatively weighted)", site=site,
                     hint=f"pass {advice.reference([site])}, or sample with nuts or hmc "
                          f"({advice.options('nuts', switch=True)}), which start from uniform(-2, 2) on the "
                          f"unconstrained scale there")


class ModelPlan:
    """A compiled target: `.graph` (networkx), `.terms`, the reference choice and the evaluation order.

    `str()` prints the plan; `.lower(runtime)` gives the runtime program over flat [N, D] arrays.
    """

    kind = "model"     # the methods registered for this kind sample it (backends.get_method)

    def __init__(self, target, reference=None, fold=True, marginalize=True, method=None):
        if not isinstance(target, Target):
            raise PlanError(f"expected a target (ppl.model(...) or an expression of targets), got {type(target).__name__}")
        self.target = target.folded()
        #: what the compiler integrated out (`marginalize.py`); none where a `reference` names a site it would remove
        #: (the reference is then over every site)
        self.marginals = []
        #: the latent sites as the target declares them, in order (draws of integrated-out ones keep their place)
        self.declared = list(dict.fromkeys(n for m in self.target.models() for n, s in m.sites.items()
                                           if s.role == "latent" and n not in m.observed))
        self.method = method
        if marginalize:
            rewritten, marginals = integrate_out(self.target, lambda: ModelPlan(target, fold=fold, marginalize=False),
                                                 method)
            named = set(reference.latent_names()) if isinstance(reference, Model) else set()
            if not named & {site for mg in marginals for site in mg.sites}:
                self.target, self.marginals = rewritten, marginals
        terms = expand(self.target)
        if not terms:
            raise PlanError(f"the target {self.target.describe()} has no sites and no factors: nothing to sample")
        self.models = list({id(m): m for m in self.target.models()}.values())
        latent = list(dict.fromkeys(n for m in self.models for n, s in m.sites.items()
                                    if s.role == "latent" and n not in m.observed))
        if fold and reference is None:
            terms = fold_gaussians(terms)
        self.reference = reference
        if reference is not None:
            if not isinstance(reference, Model):
                raise PlanError(f"the reference must be a model over the target's latent sites, got "
                                f"{type(reference).__name__} {reference!r:.40}")
            extra = set(reference.latent_names()) ^ set(latent)
            if extra:
                raise NameResolutionError(f"the reference's sites {sorted(reference.latent_names())} differ from the "
                                          f"target's latent sites {sorted(latent)}")
            ref_terms = [Prior(0.0, reference, n) for n in latent]
            chosen, improper = {t.site: t for t in ref_terms}, []
            self.models.append(reference)
            terms = terms + ref_terms
        else:
            chosen, improper = _choose_reference(terms, latent)
        self.terms = terms
        self.chosen = chosen
        #: latent sites without a normalized prior: their `chosen` term is not a reference (`check_reference`)
        self.improper = improper
        self.latent = latent
        ref_ids = {id(c) for c in chosen.values()}
        self.ref_coef = np.array([1.0 if id(t) in ref_ids else 0.0 for t in terms])
        self.rest_coef = np.array([t.coef for t in terms]) - self.ref_coef
        self.readable = readable(self.models, latent)   # what rewards read, by name
        self._check_names()
        self.graph = build_graph(self.target, terms, self.readable, chosen, reference)
        for mg in self.marginals:
            for site in mg.sites:
                self.graph.add_node(site, role="marginalized", how=mg.how)
                self.graph.add_edge(site, f"{mg.model}:lik {mg.observed}")
        self.order = evaluation_order(self.graph, chosen)
        self.layout = self._infer_layout()

    def _check_names(self):
        known = set(self.readable)
        for t in self.terms:
            if isinstance(t, Reward):
                missing = [p for p in t.fn.parents if p not in known]
                if missing:
                    raise NameResolutionError(f"{t.kind} {t.fn.name} reads {', '.join(map(repr, missing))}, which is "
                                              f"not a latent or deterministic site of the target (sites: "
                                              f"{', '.join(sorted(known)) or 'none'})")

    # --- shapes and supports, from one particle traced on numpy (no runtime) --
    def _infer_layout(self):
        """Shapes, supports and checks from one particle traced by the shape interpreter (`shapes.py`)."""
        import contextlib
        import warnings
        from .linear_gaussian import HOW as KALMAN
        from .lower import Evaluator, probing
        from .shapes import ShapeRuntime, tracing
        # method="pf" where a state was integrated out given another path u: the Rao–Blackwellized filter samples
        # u, discrete or not (backends/rbpf.py), so a discrete path does not stop the trace
        rbpf = self.method == "pf" and any(mg.how == KALMAN for mg in self.marginals)
        with warnings.catch_warnings(), np.errstate(all="ignore"), tracing(), \
                (probing() if rbpf else contextlib.nullcontext()):
            warnings.simplefilter("ignore", RuntimeWarning)
            return Evaluator(self, ShapeRuntime()).trace()

    def check_reference(self):
        """A PlanError naming the first site without a normalized prior (`improper`): a method that draws from the
        reference π0 (is, smc, ais, pmmh) needs a `reference` model then."""
        if self.improper:
            raise _no_reference(self.improper[0])

    @property
    def dim(self):
        return sum(e["size"] for e in self.layout.values())

    def lower(self, runtime):
        """This plan as batched functions on `runtime` (a `LoweredPlan`), built once per runtime (its device and
        precision) and kept on the plan: every method run on it reuses the same lowered and compiled functions."""
        from ..backends.runtime import get_runtime
        from .lower import LoweredPlan
        rt = get_runtime(runtime) if isinstance(runtime, str) else runtime
        lowered = self.__dict__.setdefault("_lowered", {})
        if repr(rt) not in lowered:
            lowered[repr(rt)] = LoweredPlan(self, rt)
        return lowered[repr(rt)]

    def __str__(self):
        lines = [f"target: {self.target.describe()}", "sites:"]
        for name, e in self.layout.items():
            lines.append(f"  {name}: {e['support']}{list(e['shape'])} -> unconstrained [{e['offset']}:"
                         f"{e['offset'] + e['size']}]  (from {e['from']})")
        lines.append(f"flat particle dimension D = {self.dim}")
        if self.marginals:
            lines.append("marginalized (integrated out exactly; marginalize=False keeps them):")
            lines.extend(f"  {mg}" for mg in self.marginals)
        lines.append("reference pi0 (normalized, sampled exactly):")
        for site, t in self.chosen.items():
            lines.append(f"  {t.label}" + (f"  [folded: {', '.join(t.origin)}]" if t.origin else "") +
                         ("  [improper: no reference; nuts and hmc start from uniform(-2, 2) unconstrained]"
                          if site in self.improper else ""))
        lines.append("rest L (log L = sum of coef x term):")
        for t, c in zip(self.terms, self.rest_coef):
            if c != 0:
                extra = f" = {t.value:.6g}" if isinstance(t, Constant) else ""
                lines.append(f"  {c:+g} x {t.label}{extra}")
        lines.append("path: pi_beta = pi0 * L^beta, beta from 0 to 1")
        return "\n".join(lines)
