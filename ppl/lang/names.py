"""Static analysis of model statements: the names they read and write, their dependency order, and the reads
of a Markov state.

A latent state `x : real[T]` is drawn element by element (`x[1] ~ p0`, `for t in 2:T { x[t] ~ p(x[t - 1]) }`);
its transition may read only the previous state, which `markov_reads` renames to `PREV`.
"""
import networkx as nx

from . import syntax as S

#: the name under which a Markov step reads the previous state x[t - 1]
PREV = "__prev"


# ---- names read and written ------------------------------------------------------
def reads(*trees):
    """(name, node) for every variable the expressions in `trees` read (nodes, tuples of nodes or None)."""
    out = []

    def visit(node):
        if isinstance(node, S.Name):
            out.append((node.name, node))
        elif isinstance(node, S.Call) and node.func == "ode" and node.args.positional:
            for child in node.args.positional[1:] + node.args.keywords:   # ode(f, ...): f names a function
                visit(child)
        else:
            for child in S.children(node):
                visit(child)

    for tree in trees:
        for node in (tree if isinstance(tree, (tuple, list)) else (tree,)):
            if node is not None:
                visit(node)
    return out


def free(stmts, defined=()):
    """Variables a statement list reads before it defines them: [(name, node)]."""
    defined, out = set(defined), []

    def need(*trees):
        out.extend((n, x) for n, x in reads(*trees) if n not in defined)

    for s in stmts:
        if isinstance(s, (S.Assign, S.AugAssign)):
            lv = s.target
            need(s.value, lv.indices)
            if isinstance(s, S.AugAssign) or lv.indices is not None:
                need(S.Name(lv.name, line=lv.line, column=lv.column))
            defined.add(lv.name)
        elif isinstance(s, S.Tilde):
            need(s.target.expr(), s.dist)
        elif isinstance(s, S.ObserveExpr):
            need(s.value, s.dist)
        elif isinstance(s, (S.Factor, S.Return)):
            need(s.value)
        elif isinstance(s, S.If):
            need(s.cond)
            out.extend(free(s.then, defined))
            out.extend(free(s.orelse, defined))
            defined |= assigned(s.then) | assigned(s.orelse)
        elif isinstance(s, S.Declare):
            need(tuple(b.value for b in s.type.bounds), s.type.dims, s.dist)
            defined.add(s.name)
        elif isinstance(s, S.For):
            need(s.lo, s.hi)
            out.extend(free(s.body, defined | {s.var}))
    return out


def assigned(stmts):
    """The names a statement list assigns (`=` or an augmented assignment), loops included."""
    out = set()
    for s in stmts:
        if isinstance(s, (S.Assign, S.AugAssign)):
            out.add(s.target.name)
        elif isinstance(s, S.For):
            out |= assigned(s.body)
        elif isinstance(s, S.If):
            out |= assigned(s.then) | assigned(s.orelse)
    return out


def writes(s, data):
    """The model's names a top-level statement defines or updates (data it observes excluded)."""
    if isinstance(s, S.Declare):
        out = {s.name}
    elif isinstance(s, (S.Assign, S.AugAssign, S.Tilde)):
        out = {s.target.name}
    elif isinstance(s, (S.For, S.If)):
        out = assigned([s]) | {b.target.name for b in walk(blocks(s)) if isinstance(b, S.Tilde)}
    else:
        out = set()
    return out - set(data)


def dependency_order(stmts, data, src, model):
    """The statements [(index, statement)] ordered so that each comes after every statement writing a name it reads.

    Statements writing the same name (a definition, its indexed updates, loops, a state's declaration, x[1] and
    its loop) keep their order; otherwise the order of the source is kept where the dependencies allow (a loop
    is one unit). A cycle is an error located at one of its reads, naming the values in it.
    """
    wrote = [writes(s, data) for s in stmts]
    graph = nx.DiGraph()
    graph.add_nodes_from(range(len(stmts)))
    writers = {}
    for i, names in enumerate(wrote):
        for n in names:
            if n in writers:
                graph.add_edge(writers[n][-1], i, name=n, node=None)
            writers.setdefault(n, []).append(i)
    for j, s in enumerate(stmts):
        for n, node in free([s]):
            if n in wrote[j]:
                continue
            for i in writers.get(n, ()):
                if not graph.has_edge(i, j):
                    graph.add_edge(i, j, name=n, node=node)
    try:
        return [(i, stmts[i]) for i in nx.lexicographical_topological_sort(graph)]
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(graph)
    reads_ = [graph.edges[e] for e in cycle]
    first = min(reads_, key=lambda e: (e["node"].line, e["node"].column) if e["node"] else (1e9, 0))
    path = " -> ".join([e["name"] for e in reads_] + [reads_[0]["name"]])
    raise src.error(first["node"], f"cyclic dependency in model {model}: {path} (each value is computed from the "
                                   f"one before it)", hint="a value cannot depend on itself; break the cycle")


def blocks(s):
    """The statements inside a loop or an `if` (both branches), else ()."""
    if isinstance(s, S.For):
        return s.body
    if isinstance(s, S.If):
        return s.then + s.orelse
    return ()


def walk(stmts):
    """Every statement, those in loops and `if`s included, in order."""
    for s in stmts:
        yield s
        yield from walk(blocks(s))


# ---- latent states (Markov chains) drawn element by element --------------------------------
class State:
    """What a model says about a state x: its declaration, x[1] ~ ..., and the loop drawing x[2:T]."""

    def __init__(self, decl=None, dims=None, shape=None):
        self.decl, self.dims, self.shape = decl, dims, shape
        self.init = self.loop = None
        self.init_parents, self.step_parents, self.reads_t = [], [], False
        self.offset, self.states = 0, None    # a discrete state int<lower=offset, upper=offset + states - 1>[T]


def state_names(stmts):
    """Names declared without a distribution (x : real[T]) and drawn by element in a loop (x[t] ~ ...).

    (Drawn by element outside loops only, `x[1:2] ~ normal(1, 0.5)`, a declared vector has priors on its parts.)"""
    flat = {s.name for s in stmts if isinstance(s, S.Declare) and s.dist is None}
    return {b.target.name: State() for b in walk([s for s in stmts if isinstance(s, S.For)])
            if isinstance(b, S.Tilde) and b.target.indices is not None and b.target.name in flat}


def lag(e, var):
    """k for an index expression `var + k` / `var - k` / `var` (k a number literal), else None."""
    if isinstance(e, S.Name) and e.name == var:
        return 0
    if isinstance(e, S.BinOp) and e.op in "+-" and isinstance(e.left, S.Name) and e.left.name == var \
            and isinstance(e.right, S.Number):
        return e.right.value if e.op == "+" else -e.right.value
    return None


def markov_reads(node, state, var, src):
    """`node` with each read x[t - 1, ...] of the state x replaced by PREV[...]; any other read is an error."""
    hint = f"{state}[{var}] may read only the previous state {state}[{var} - 1]; keep a longer history in a vector " \
           f"state ({state} : real[T, D])"
    if isinstance(node, S.Name) and node.name == state:
        raise src.error(node, f"not a Markov chain: {state}[{var}] reads the whole path {state}", hint=hint)
    if isinstance(node, S.Index) and isinstance(node.value, S.Name) and node.value.name == state:
        first, rest = node.indices[0], node.indices[1:]
        k = None if isinstance(first, S.Slice) else lag(first, var)
        shown = f"{state}[{_source_index(first, var)}]"
        if k is not None and k >= 0:
            raise src.error(node, f"{state}[{var}] depends on the future: it reads {shown}" if k else
                            f"{state}[{var}] reads itself", hint=hint)
        if k != -1:
            raise src.error(node, f"not a Markov chain: {state}[{var}] reads {shown}", hint=hint)
        prev = S.Name(PREV, line=node.line, column=node.column)
        if not rest:
            return prev
        return S.Index(prev, tuple(markov_reads(i, state, var, src) for i in rest), line=node.line,
                       column=node.column)
    return S.map_children(node, lambda child: markov_reads(child, state, var, src))


def _source_index(e, var):
    k = None if isinstance(e, S.Slice) else lag(e, var)
    if k is None:
        return "..."
    return var if k == 0 else f"{var} {'+' if k > 0 else '-'} {abs(k)}"
