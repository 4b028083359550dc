"""The inference graph: a networkx.DiGraph of data, latent, observed, deterministic, factor and combinator nodes.

Edges point from what is read to what reads it, and from each term to the
combinator that weighs it, up to the root `target`.
"""
import networkx as nx

from ..errors import NameResolutionError, PlanError
from .terms import Constant, Gaussian, Prior


def _model_nodes(g, m):
    for name in m.data:
        g.add_node(f"{m.name}.{name}", role="data")
    for name, s in m.sites.items():
        if s.role == "latent" and name not in m.observed:
            node = name
            g.add_node(node, role="latent")
            g.add_node(f"{m.name}:prior {name}", role="factor", term="prior")
            g.add_edge(node, f"{m.name}:prior {name}")
        elif s.role == "latent":
            node = f"{m.name}.{name}"
            g.add_node(node, role="observed")
            g.add_node(f"{m.name}:lik {name}", role="factor", term="likelihood")
            g.add_edge(node, f"{m.name}:lik {name}")
        elif s.role == "deterministic":
            g.add_node(f"{m.name}.{name}", role="deterministic", model=m, site=name)
        else:
            g.add_node(f"{m.name}:factor {name}", role="factor", term="factor")


def _read(g, m, name, reader):
    s = m.sites.get(name)
    if s is not None and s.role == "factor":
        raise NameResolutionError(f"in model {m.name}, {name!r} is a factor; factors cannot be read")
    src = name if s is not None and s.role == "latent" and name not in m.observed else f"{m.name}.{name}"
    g.add_edge(src, reader)


def _add_model(g, m):
    """The nodes of model m and the edges from what each site reads."""
    _model_nodes(g, m)
    for name, s in m.sites.items():
        reader = {"latent": f"{m.name}:prior {name}" if name not in m.observed else f"{m.name}:lik {name}",
                  "deterministic": f"{m.name}.{name}", "factor": f"{m.name}:factor {name}"}[s.role]
        for p in s.parents:
            _read(g, m, p, reader)


def readable(models, latent):
    """What a reward or energy may read, by name: {name: ('latent', name) | ('det', model name, name)}: the latent
    sites, then each deterministic site by its name (the first model that has it wins)."""
    out = {}
    for m in models:
        for n, s in m.sites.items():
            if s.role == "deterministic":
                out.setdefault(n, ("det", m.name, n))
    out.update({n: ("latent", n) for n in latent})
    return out


def _node_of(key):
    return key[1] if key[0] == "latent" else f"{key[1]}.{key[2]}"


def build_graph(target, terms, names, chosen=None, reference=None):
    """The inference graph of a (folded) target; `terms` add the folded factors; `names` is what rewards read
    (`readable`); `chosen` {site: term} marks each latent site's reference factor, which then generates the
    site (an edge factor -> site instead of site -> factor); `reference` is the user's reference model,
    outside the target."""
    g = nx.DiGraph()
    counter = [0]

    def combinator(label):
        counter[0] += 1
        node = f"#{counter[0]} {label}"
        g.add_node(node, role="combinator", op=label)
        return node

    def walk(t):
        """Nodes and edges of t; returns its combinator node (from the node's own kind, label, children and
        functions)."""
        if t.kind == "model":
            _add_model(g, t)
            node = combinator(t.label)
            for n in list(g.nodes):
                if n.startswith(f"{t.name}:"):
                    g.add_edge(n, node)
            return node
        node = combinator(t.label)
        if t.kind in ("diffusion", "sequence"):     # a base over its one site, known by its score / next token
            term = "score" if t.kind == "diffusion" else "next token"
            g.add_node(f"{t.name}:{term}", role="factor", term=term)
            g.add_edge(t.site, f"{t.name}:{term}")
            g.nodes[t.site].setdefault("role", "latent")
            g.add_edge(f"{t.name}:{term}", node)
        for c in t.children():
            g.add_edge(walk(c), node)
        for fn in t.functions():
            f = f"{fn.kind} {fn.name}"
            g.add_node(f, role="factor", term=fn.kind)
            for p in fn.parents:
                g.add_edge(_node_of(names[p]) if p in names else p, f)
            g.add_edge(f, node)
        return node

    root = walk(target)
    g.add_node("target", role="combinator", op="target")
    g.add_edge(root, "target")
    for t in terms:
        if isinstance(t, (Gaussian, Constant)):     # folded terms: the model's own are its sites' factors
            node = f"{t.kind} {t.site}"
            g.add_node(node, role="factor", term=t.kind, folded_from=t.origin)
            g.add_edge(node, "target")
    if reference is not None:
        _add_model(g, reference)
    for site, t in (chosen or {}).items():
        ref = _reference(site, t)
        if g.has_edge(site, ref):
            g.remove_edge(site, ref)
        g.add_edge(ref, site)
        g.nodes[ref]["reference"] = True
    return g


def _reference(site, term):
    """The graph node of the reference factor `term` of `site`."""
    return f"{term.model.name}:prior {site}" if isinstance(term, Prior) else f"gaussian {site}"


class EvalStep:
    """One step of the evaluation order: a latent site (drawn from its reference `term`) or a deterministic site
    of `model`; `reads` the steps it reads, as ('latent', site) or ('det', model name, site)."""

    def __init__(self, role, name, model, term=None, reads=()):
        self.role, self.name, self.model, self.term, self.reads = role, name, model, term, list(reads)


def _step_key(g, n):
    a = g.nodes[n]
    if a.get("role") == "latent":
        return ("latent", n)
    if a.get("role") == "deterministic":
        return ("det", a["model"].name, a["site"])
    return None


def evaluation_order(g, chosen):
    """The latent and deterministic sites of the inference graph `g` in a topological order (declaration order
    among those free to go): each after what it reads."""
    rank = {n: (i, 1) for i, n in enumerate(g.nodes)}
    for site, t in chosen.items():     # a reference factor goes with the site it generates (a folded one is last)
        rank[_reference(site, t)] = (rank[site][0], 0)
    try:
        nodes = list(nx.lexicographical_topological_sort(g, key=rank.get))
    except nx.NetworkXUnfeasible:
        cycle = [g.nodes[u].get("site", u) for u, _ in nx.find_cycle(g) if _step_key(g, u) is not None]
        raise PlanError(f"the sites depend on each other in a cycle: {' -> '.join(cycle)}") from None
    order = []
    for n in nodes:
        key = _step_key(g, n)
        if key is None:
            continue
        if key[0] == "latent":
            t = chosen[n]
            reads = [k for k in (_step_key(g, p) for p in g.predecessors(_reference(n, t))) if k is not None]
            order.append(EvalStep("latent", n, t.model, t, reads))
        else:
            a = g.nodes[n]
            reads = [k for k in (_step_key(g, p) for p in g.predecessors(n)) if k is not None]
            order.append(EvalStep("det", a["site"], a["model"], reads=reads))
    return order
