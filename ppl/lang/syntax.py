"""The syntax tree of a `.ppl` program: one frozen dataclass per construct, each located in the source.

Every node has `line` and `column` (1-based; None where the parser made the node up). Names that a
construct binds or refers to by spelling (a model's name, a loop variable, a distribution family) are
plain strings; a `Name` node is a variable read by an expression. Sequences of nodes are tuples.
"""
import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Optional, Tuple, Union


@dataclass(frozen=True, eq=False)
class Node:
    """A syntax node, compared by identity."""

    line: Optional[int] = field(default=None, kw_only=True, repr=False)
    column: Optional[int] = field(default=None, kw_only=True, repr=False)


def _node(cls):
    return dataclass(frozen=True, eq=False)(cls)


# ---- expressions ---------------------------------------------------------------
@_node
class Number(Node):
    value: Union[int, float]


@_node
class String(Node):
    value: str


@_node
class Name(Node):
    """A variable read."""
    name: str


@_node
class Keyword(Node):
    """`name = value` among the arguments of a call."""
    name: str
    value: Node


@_node
class Args(Node):
    """The arguments of a call: positional expressions, then `Keyword`s."""
    positional: Tuple[Node, ...] = ()
    keywords: Tuple[Keyword, ...] = ()


@_node
class Call(Node):
    """`func(args)`: a built-in, a `use`d function, or (where a distribution is expected) a family."""
    func: str
    args: Args


@_node
class Slice(Node):
    """`lo:hi` in an index, both ends included (either may be missing)."""
    lo: Optional[Node]
    hi: Optional[Node]


@_node
class Index(Node):
    """`value[indices]`, 1-based."""
    value: Node
    indices: Tuple[Node, ...]


@_node
class Vector(Node):
    """`[a, b, ...]`."""
    items: Tuple[Node, ...]


@_node
class BinOp(Node):
    """An arithmetic operator or a comparison (`+ - * / @ %`, `== != < > <= >=`), located at the operator."""
    op: str
    left: Node
    right: Node


@_node
class Conditional(Node):
    """`cond ? a : b`: the value a where cond holds, else b."""
    cond: Node
    then: Node
    orelse: Node


@_node
class Pow(Node):
    base: Node
    exponent: Node


@_node
class Neg(Node):
    operand: Node


@_node
class Not(Node):
    operand: Node


@_node
class And(Node):
    left: Node
    right: Node


@_node
class Or(Node):
    left: Node
    right: Node


# ---- types and distributions -------------------------------------------------------
@_node
class Bound(Node):
    """`lower = value` or `upper = value` in a type."""
    key: str
    value: Node


@_node
class Type(Node):
    """`name<bounds>[dims]`: real, int, vector, matrix, simplex, ordered or positive_ordered."""
    name: str
    bounds: Tuple[Bound, ...] = ()
    dims: Optional[Tuple[Node, ...]] = None


@_node
class Dist(Node):
    """`family(args) [shape] T[lower, upper]` after `~`; `truncation` is None or (lower, upper), either end
    None where it is left open."""
    family: str
    args: Args
    shape: Optional[Tuple[Node, ...]] = None
    truncation: Optional[Tuple[Optional[Node], Optional[Node]]] = None


# ---- model statements ------------------------------------------------------------------
@_node
class LValue(Node):
    """What a statement assigns or draws: `name` or `name[indices]`."""
    name: str
    indices: Optional[Tuple[Node, ...]] = None

    def expr(self):
        """The expression that reads this place."""
        name = Name(self.name, line=self.line, column=self.column)
        return name if self.indices is None else Index(name, self.indices, line=self.line, column=self.column)


@_node
class Declare(Node):
    """`name : type` or `name : type ~ dist`."""
    name: str
    type: Type
    dist: Optional[Dist] = None


@_node
class Tilde(Node):
    """`target ~ dist`."""
    target: LValue
    dist: Dist


@_node
class ObserveExpr(Node):
    """`expression ~ dist` for an expression that is not a name or an indexed name (Stan's `log(y) ~ ...`): adds
    log dist(expression) to the model's density, with no Jacobian."""
    value: Node
    dist: Dist


@_node
class Assign(Node):
    target: LValue
    value: Node


@_node
class AugAssign(Node):
    """`target op value`, op one of `+= -= *= /=`."""
    target: LValue
    op: str
    value: Node


@_node
class Factor(Node):
    value: Node


@_node
class For(Node):
    """`for var in lo:hi { body }`, both bounds included."""
    var: str
    lo: Node
    hi: Node
    body: Tuple[Node, ...]


@_node
class If(Node):
    """`if cond { then } else { orelse }` (`orelse` empty without an else; `else if` nests an `If` in it)."""
    cond: Node
    then: Tuple[Node, ...]
    orelse: Tuple[Node, ...] = ()


@_node
class Keep(Node):
    """`keep a, b`: the model's values a and b are saved in the draws (its other values are local)."""
    names: Tuple[Name, ...]


@_node
class Return(Node):
    """`return value`, the last statement of a function."""
    value: Node


# ---- top-level items ------------------------------------------------------------------------
@_node
class Data(Node):
    """`data name : type`."""
    name: str
    type: Type


@_node
class Use(Node):
    """`use name from "module:attr"` (spec without its quotes)."""
    name: str
    spec: str


@_node
class Param(Node):
    """`name : type` among a function's parameters."""
    name: str
    type: Type


@_node
class FunctionDef(Node):
    """`function name(params) { body }`: a pure function; its body ends with a `Return`."""
    name: str
    params: Tuple[Param, ...]
    body: Tuple[Node, ...]


@_node
class ModelDef(Node):
    name: str
    body: Tuple[Node, ...]


@_node
class DiffusionDef(Node):
    """`diffusion name = base(args)`: `base` is the `Call` of a constructor (`mixture`, `score`)."""
    name: str
    base: Call


@_node
class SequenceDef(Node):
    """`sequence name = base(args)`: `base` is the `Call` of a constructor (`markov`, `ngram`, `autoregressive`)."""
    name: str
    base: Call


@_node
class Binding(Node):
    """`name = value` after `|` in a target definition."""
    name: str
    value: Node


@_node
class TargetDef(Node):
    """`target name = expr | bindings`."""
    name: str
    expr: Node
    bindings: Tuple[Binding, ...] = ()


@_node
class Sample(Node):
    """`sample target with method(options) on runtime`; `runtime` is a `Name` to keep its position."""
    target: str
    method: str
    options: Args
    runtime: Optional[Name] = None


@_node
class Program(Node):
    items: Tuple[Node, ...]


# ---- traversal ------------------------------------------------------------------------------
@functools.cache
def _fields(cls):
    """The names of the fields of node class `cls` that can hold child nodes (all but the position)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("line", "column"))


def children(node):
    """The child nodes of `node`, in field order."""
    for name in _fields(type(node)):
        v = getattr(node, name)
        if isinstance(v, Node):
            yield v
        elif isinstance(v, tuple):
            yield from (x for x in v if isinstance(x, Node))


def map_children(node, fn):
    """A copy of `node` with `fn` applied to each of its child nodes."""
    changes = {}
    for name in _fields(type(node)):
        v = getattr(node, name)
        if isinstance(v, Node):
            changes[name] = fn(v)
        elif isinstance(v, tuple):
            changes[name] = tuple(fn(x) if isinstance(x, Node) else x for x in v)
    return dataclasses.replace(node, **changes)
