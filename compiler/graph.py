"""The inference graph: a networkx.DiGraph of data, latent, observed, deterministic, factor and combinator nodes.

Edges point from what is read to what reads it, and from each term to the
combinator that weighs it, up to the root `target`.
"""
import networkx as nx

from ..diffusion import SITE


def _model_nodes(g, m):
    for name in m.data:
        g.add_node(f"{m.name}.{name}", kind="data")
    for name, s in m.sites.items():
        if s.kind == "latent" and name not in m.observed:
            node = name
            g.add_node(node, kind="latent")
            g.add_node(f"{m.name}:prior {name}", kind="factor", term="prior")
            g.add_edge(node, f"{m.name}:prior {name}")
        elif s.kind == "latent":
            node = f"{m.name}.{name}"
            g.add_node(node, kind="observed")
            g.add_node(f"{m.name}:lik {name}", kind="factor", term="likelihood")
            g.add_edge(node, f"{m.name}:lik {name}")
        elif s.kind == "deterministic":
            g.add_node(f"{m.name}.{name}", kind="deterministic")
        else:
            g.add_node(f"{m.name}:factor {name}", kind="factor", term="factor")


def _read(g, m, name, reader):
    s = m.sites.get(name)
    src = name if s is not None and s.kind == "latent" and name not in m.observed else f"{m.name}.{name}"
    g.add_edge(src, reader)


def _global(g, name):
    """The node a reward or energy reads as `name`: a latent site, else the first deterministic so named."""
    if g.nodes.get(name, {}).get("kind") == "latent":
        return name
    return next((n for n, k in g.nodes(data="kind") if k == "deterministic" and n.endswith("." + name)), name)


def build_graph(target, terms):
    """The inference graph of a (folded) target; `terms` label the factor nodes with coefficients."""
    g = nx.DiGraph()
    counter = [0]

    def combinator(label):
        counter[0] += 1
        node = f"#{counter[0]} {label}"
        g.add_node(node, kind="combinator", op=label)
        return node

    def walk(t):
        """Nodes and edges of t; returns its combinator node (from the node's own kind, label, children and
        functions)."""
        if t.kind == "model":
            _model_nodes(g, t)
            for name, s in t.sites.items():
                reader = {"latent": f"{t.name}:prior {name}" if name not in t.observed else f"{t.name}:lik {name}",
                          "deterministic": f"{t.name}.{name}", "factor": f"{t.name}:factor {name}"}[s.kind]
                for p in s.parents:
                    _read(g, t, p, reader)
            node = combinator(t.label)
            for n in list(g.nodes):
                if n.startswith(f"{t.name}:"):
                    g.add_edge(n, node)
            return node
        node = combinator(t.label)
        if t.kind == "diffusion":
            g.add_node(f"{t.name}:score", kind="factor", term="score")
            g.add_edge(SITE, f"{t.name}:score")
            g.add_edge(f"{t.name}:score", node)
        for c in t.children():
            g.add_edge(walk(c), node)
        for fn in t.functions():
            f = f"{fn.kind} {fn.name}"
            g.add_node(f, kind="factor", term=fn.kind)
            for p in fn.parents:
                g.add_edge(_global(g, p), f)
            g.add_edge(f, node)
        return node

    root = walk(target)
    if g.has_node(SITE) and "kind" not in g.nodes[SITE]:
        g.nodes[SITE]["kind"] = "latent"     # the site of the diffusion bases
    g.add_node("target", kind="combinator", op="target")
    g.add_edge(root, "target")
    for t in terms:
        if t.kind in ("gaussian", "constant"):
            node = f"{t.kind} {t.site}"
            g.add_node(node, kind="factor", term=t.kind, folded_from=t.origin)
            g.add_edge(node, "target")
    return g
