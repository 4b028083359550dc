"""Functions defined in a program: `function name(a : real, y : vector) { statements; return value }`.

A function is pure: its body assigns local values (`=`, updates, loops, `if`s) from its parameters and ends
with one `return`. It reads nothing but its parameters (no data, no sites), calls built-ins, other functions of
the program and `use`d ones, and does not recurse. Defined anywhere in the file, callable from models, other
functions and ODE right-hand sides (`ode(f, ...)`).
"""
import networkx as nx

from .. import math as pm
from ..stdlib import distributions as D
from . import syntax as S
from .interpret import Function, Interpreter
from .names import free, walk

#: the types a parameter can have (a per-particle value: a number, a vector, a matrix)
PARAMETER_TYPES = ("real", "int", "vector", "matrix")
_SPECIAL = ("logpdf", "ode", "zeros", "ones", "rep", "size")


def define_functions(defs, src, functions):
    """Check the `FunctionDef`s `defs` and add each, as a `Function`, to the dict `functions` (shared with the
    program's interpreters, which call them by name)."""
    for node in defs:
        check(node, src, functions)
        functions[node.name] = Function(node, Interpreter(src, functions))
    check_recursion(defs, src)


def check(node, src, functions):
    name = node.name
    if name in pm.BUILTINS or name in D.FAMILIES or name in _SPECIAL:
        raise src.error(node, f"{name!r} is a built-in {'distribution' if name in D.FAMILIES else 'function'}",
                        hint="give your function another name")
    if name in functions:
        raise src.error(node, f"the function {name!r} is defined twice")
    seen = set()
    for p in node.params:
        if p.type.name not in PARAMETER_TYPES or p.type.bounds or p.type.dims:
            raise src.error(p.type, f"a parameter's type is one of {', '.join(PARAMETER_TYPES)} (no bounds or "
                                    f"dimensions)", hint=f"{p.name} : vector")
        if p.name in seen:
            raise src.error(p, f"the parameter {p.name!r} is given twice")
        seen.add(p.name)
    if not node.body or not isinstance(node.body[-1], S.Return):
        raise src.error(node.body[-1] if node.body else node, f"the function {name} must end with return value",
                        hint="return the result: return x")
    for s in walk(node.body):
        if isinstance(s, S.Return) and s is not node.body[-1]:
            raise src.error(s, "return is only the last statement of a function",
                            hint="choose between values with cond ? a : b, and return once")
        if isinstance(s, (S.Declare, S.Tilde, S.ObserveExpr, S.Factor)):
            raise src.error(s, "a function is pure: it computes a value from its arguments and draws or observes "
                               "nothing", hint="draw in the model and pass the value to the function")
    for n, where in free(node.body, seen):
        raise src.error(where, f"{name} reads {n!r}, which is not one of its parameters",
                        hint=f"pass it as an argument: function {name}(..., {n} : real)")


def check_recursion(defs, src):
    """A function calling itself, directly or through others, is an error at the call that closes the cycle."""
    graph, calls = nx.DiGraph(), {}
    names = {d.name for d in defs}
    for d in defs:
        graph.add_node(d.name)
        for c in _calls(d.body):
            if c.func in names:
                graph.add_edge(d.name, c.func)
                calls.setdefault((d.name, c.func), c)
            elif c.func == "ode" and c.args.positional and isinstance(c.args.positional[0], S.Name) \
                    and c.args.positional[0].name in names:
                graph.add_edge(d.name, c.args.positional[0].name)
                calls.setdefault((d.name, c.args.positional[0].name), c)
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    path = " -> ".join([a for a, _ in cycle] + [cycle[0][0]])
    raise src.error(calls[cycle[-1]], f"recursion: {path}; a function cannot call itself",
                    hint="write the repetition as a loop")


def _calls(stmts):
    out = []

    def visit(node):
        if isinstance(node, S.Call):
            out.append(node)
        for child in S.children(node):
            visit(child)
    for s in stmts:
        visit(s)
    return out
