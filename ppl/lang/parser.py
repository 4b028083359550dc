"""Parsing `.ppl` text (grammar.lark, LALR) into the syntax tree of `syntax.py`.

    parse(text, filename) -> Program(items)

Syntax errors raise `SourceError` (`file:line:col: message`, the source line, a caret and a hint).
"""
import functools
import importlib.resources
import re

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..errors import PPLError
from . import syntax as S
from .source import Source

_TOKEN_NAMES = {"NAME": "a name", "NUMBER": "a number", "STRING": "a string", "TYPENAME": "a type",
                "COMPOP": "a comparison", "ADDOP": "+ or -", "MULOP": "*, /, @ or %", "AUGOP": "+=",
                "LBRACE": "{", "RBRACE": "}", "LPAR": "(", "RPAR": ")", "LSQB": "[", "RSQB": "]",
                "EQUAL": "=", "TILDE": "~", "COLON": ":", "COMMA": ",", "CARET": "^", "VBAR": "|",
                "SEMICOLON": ";", "LESSTHAN": "<", "MORETHAN": ">"}


def _at(located):
    """The position of a token or a node, as keyword arguments of a node."""
    return {"line": located.line, "column": located.column}


_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def unescape(text):
    """A string literal's text with its escapes \\n, \\t, \\" and \\\\ read; any other backslash stays as written
    (a regular expression's \\b, \\d)."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)


def _tuple(xs):
    return None if xs is None else tuple(xs)


def _statements(stmts):
    return tuple(s for s in stmts if s is not None)


#: words of the grammar, which cannot name data, models, targets, sites or loop variables
KEYWORDS = frozenset({"data", "use", "model", "diffusion", "sequence", "target", "sample", "factor", "for", "in",
                      "with", "on", "from", "and", "or", "not", "function", "return", "if", "else", "keep"})


def _defined(tok, what):
    """The name `tok` (a token or a `Name`) of a new `what`, refused if it is a keyword."""
    text = tok.name if isinstance(tok, S.Name) else str(tok)
    if text in KEYWORDS:
        raise _Misplaced(tok, f"{text!r} is a keyword and cannot name {what}", hint="choose another name")
    return text


def _lvalue(target, verb):
    """The `LValue` of a statement's target (`name` or `name[indices]`); where it is another expression, None
    when `verb` is None, else an error: a value can only be assigned to a name."""
    if isinstance(target, S.Name):
        return S.LValue(_defined(target, "a site or a value"), None, line=target.line, column=target.column)
    if isinstance(target, S.Index) and isinstance(target.value, S.Name):
        return S.LValue(_defined(target.value, "a site or a value"), target.indices, line=target.line,
                        column=target.column)
    if verb is None:
        return None
    raise _Misplaced(target, f"cannot {verb} an expression: only a name or an indexed name can be",
                     hint="write name = ... or name[i] = ...")


class _Misplaced(Exception):
    """An operator the flat expression rule accepted where the language does not allow it."""

    def __init__(self, token, message, hint=None):
        super().__init__(message)
        self.token, self.message, self.hint = token, message, hint


# Binding powers for `_climb` (higher binds tighter): a binary operator's (left, right) power; left-associative
# operators bind their right operand one level tighter, and ^ is right-associative with a unary exponent.
_BINARY = {"OR": (1, 2), "AND": (2, 3), "COMPOP": (4, 5), "LESSTHAN": (4, 5), "MORETHAN": (4, 5), "ADDOP": (5, 6),
           "MULOP": (6, 7), "CARET": (8, 7)}
_PREFIX = {"NOT": 3, "ADDOP": 7}
_ARITH = 4  # the least power inside `arith` (bounds and loop ranges): no `not`, `and`, `or` or comparison


class _Prefix:
    """`op operand` as read, before `_climb` knows how far the operator reaches."""
    __slots__ = ("op", "operand")

    def __init__(self, op, operand):
        self.op, self.operand = op, operand


def _combine(op, left, right):
    kind, at = op.type, _at(op)
    if kind == "OR":
        return S.Or(left, right, **at)
    if kind == "AND":
        return S.And(left, right, **at)
    if kind == "CARET":
        return S.Pow(left, right, **at)
    return S.BinOp(str(op), left, right, **at)


def _climb(items, least):
    """Group the flat `operand (op operand)*` of an expression by precedence (precedence climbing); an operator of
    lower power than its place allows (`a * not b`, `a < b < c`) raises `_Misplaced`."""
    stream = []
    for i, item in enumerate(items):
        if i % 2 == 0:
            while isinstance(item, _Prefix):
                stream.append(item.op)
                item = item.operand
        stream.append(item)
    pos = 0

    def operand(least):
        nonlocal pos
        item = stream[pos]
        pos += 1
        if not isinstance(item, Token):
            return item
        power = _PREFIX[item.type]
        if power < least:
            where = "in a bound or a loop range" if pos == 1 else "after an operator that binds tighter"
            raise _Misplaced(item, f"'{item}' cannot appear {where}", hint=f"put parentheses around '{item} ...'")
        value = expression(power)
        if item.type == "NOT":
            return S.Not(value, **_at(item))
        return S.Neg(value, **_at(item)) if item == "-" else value

    def expression(least):
        nonlocal pos
        left, compared = operand(least), False
        while pos < len(stream):
            op = stream[pos]
            power, right_power = _BINARY[op.type]
            if power < least:
                break
            comparison = op.type in ("COMPOP", "LESSTHAN", "MORETHAN")
            if comparison and compared:
                raise _Misplaced(op, "comparisons do not chain", hint="write a < b and b < c")
            pos += 1
            left, compared = _combine(op, left, expression(right_power)), comparison
        return left

    return expression(least)


@v_args(inline=True)
class _ToSyntax(Transformer):
    """Builds the syntax tree during the parse (the LALR parser calls these as it reduces, so no parse tree is
    built); `empty` statements (a lone `;`) become None and are dropped. Each node is located at its first token,
    a binary operator at the operator."""

    # ---- top-level items
    def start(self, *items):
        return S.Program(_statements(items), line=1, column=1)

    def empty(self):
        return None

    def data_decl(self, kw, name, typ):
        return S.Data(_defined(name, "data"), typ, **_at(kw))

    def use_stmt(self, kw, name, spec):
        return S.Use(_defined(name, "a function"), str(spec)[1:-1], **_at(kw))

    def function_def(self, kw, name, paren, *rest):
        params = tuple(p for p in rest if isinstance(p, S.Param))
        return S.FunctionDef(_defined(name, "a function"), params,
                             _statements(s for s in rest if not isinstance(s, S.Param)), **_at(kw))

    def param(self, name, typ):
        return S.Param(_defined(name, "a parameter"), typ, **_at(name))

    def model_def(self, kw, name, *stmts):
        return S.ModelDef(_defined(name, "a model"), _statements(stmts), **_at(kw))

    def diffusion_def(self, kw, name, func, args):
        return S.DiffusionDef(_defined(name, "a diffusion"), S.Call(str(func), args, **_at(func)), **_at(kw))

    def sequence_def(self, kw, name, func, args):
        return S.SequenceDef(_defined(name, "a sequence"), S.Call(str(func), args, **_at(func)), **_at(kw))

    def target_def(self, kw, name, expr, *bindings):
        return S.TargetDef(_defined(name, "a target"), expr, _statements(bindings), **_at(kw))

    def binding(self, name, value):
        return S.Binding(str(name), value, **_at(name))

    def sample_stmt(self, kw, target, method, options, runtime):
        return S.Sample(str(target), str(method), options or S.Args(),
                        None if runtime is None else S.Name(str(runtime), **_at(runtime)), **_at(kw))

    # ---- model statements
    def declare(self, name, typ, dist):
        return S.Declare(_defined(name, "a site"), typ, dist, **_at(name))

    def tilde(self, target, dist):
        if _lvalue(target, None) is None:
            return S.ObserveExpr(target, dist, **_at(target))
        return S.Tilde(_lvalue(target, "draw"), dist, **_at(target))

    def assign(self, target, value):
        return S.Assign(_lvalue(target, "assign to"), value, **_at(target))

    def augassign(self, target, op, value):
        return S.AugAssign(_lvalue(target, "update"), str(op), value, **_at(target))

    def if_stmt(self, kw, cond, then, _else, orelse):
        orelse = () if orelse is None else orelse if isinstance(orelse, tuple) else (orelse,)
        return S.If(cond, then, orelse, **_at(kw))

    def block(self, *stmts):
        return _statements(stmts)

    def keep(self, kw, *names):
        return S.Keep(tuple(S.Name(str(n), **_at(n)) for n in names), **_at(kw))

    def return_stmt(self, kw, value):
        return S.Return(value, **_at(kw))

    def conditional(self, cond, qmark, then, colon, orelse):
        return S.Conditional(cond, then, orelse, **_at(qmark))

    def factor(self, kw, value):
        return S.Factor(value, **_at(kw))

    def for_loop(self, kw, var, lo, hi, *body):
        return S.For(_defined(var, "a loop variable"), lo, hi, _statements(body), **_at(kw))

    def dist(self, family, args, shape, truncate, lower, upper):
        truncation = None if truncate is None else (lower, upper)
        return S.Dist(str(family), args, _tuple(shape), truncation, **_at(family))

    # ---- types
    def type(self, name, bounds, dims):
        return S.Type(str(name), bounds or (), _tuple(dims), **_at(name))

    def bounds(self, *bounds):
        return tuple(bounds)

    def bound(self, key, value):
        return S.Bound(str(key), value, **_at(key))

    # ---- expressions
    def flat(self, *items):
        return items[0] if len(items) == 1 and not isinstance(items[0], _Prefix) else _climb(items, 0)

    def arith(self, *items):
        return _climb(items, _ARITH)

    def prefix(self, op, operand):
        return _Prefix(op, operand)

    def number(self, tok):
        text = str(tok)
        return S.Number(float(text) if any(c in text for c in ".eE") else int(text), **_at(tok))

    def string(self, tok):
        return S.String(unescape(str(tok)[1:-1]), **_at(tok))

    def name(self, tok):
        return S.Name(str(tok), **_at(tok))

    def call(self, func, args):
        return S.Call(str(func), args, **_at(func))

    def call_args(self, paren, *args):
        args = [a for a in args if a is not None]
        seen = set()
        for a in (a for a in args if isinstance(a, S.Keyword)):
            if a.name in seen:
                raise _Misplaced(a, f"{a.name} is given twice", hint="give each option or argument once")
            seen.add(a.name)
        return S.Args(tuple(a for a in args if not isinstance(a, S.Keyword)),
                      tuple(a for a in args if isinstance(a, S.Keyword)), **_at(paren))

    def kwarg(self, name, value):
        return S.Keyword(str(name), value, **_at(name))

    def index(self, value, indices):
        return S.Index(value, indices, **_at(value))

    def slice(self, lo, colon, hi):
        return S.Slice(lo, hi, **_at(colon if lo is None else lo))

    def vector(self, bracket, items):
        return S.Vector(items, **_at(bracket))

    def exprs(self, *xs):
        return tuple(xs)

    indices = exprs


@functools.lru_cache(maxsize=1)
def _parser():
    grammar = importlib.resources.files(__package__).joinpath("grammar.lark").read_text()
    return Lark(grammar, parser="lalr", transformer=_ToSyntax(), maybe_placeholders=True)


def _expected(e):
    names = sorted({_TOKEN_NAMES.get(t, t.lower() if t.isupper() and not t.startswith("__") else t)
                    for t in getattr(e, "expected", None) or getattr(e, "allowed", None) or ()
                    if not t.startswith("__ANON")})
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


def parse(text, filename="<string>"):
    """The syntax tree (`syntax.Program`) of `.ppl` source `text`; a syntax error raises `SourceError` located in
    `filename`."""
    if not isinstance(text, str):
        raise PPLError(f"parse() takes the program text as a string, got {type(text).__name__}")
    src = Source(text, filename)
    try:
        return _parser().parse(text)
    except _Misplaced as e:
        raise src.error_at(e.token.line, e.token.column, e.message, hint=e.hint) from None
    except UnexpectedCharacters as e:
        ch = text[e.pos_in_stream] if e.pos_in_stream is not None and e.pos_in_stream < len(text) else "?"
        hint = "strings use double quotes" if ch == "'" else ("comments start with #" if ch in "/" else None)
        raise src.error_at(e.line, e.column, f"unexpected character {ch!r}", hint=hint) from None
    except UnexpectedEOF as e:
        lines = text.splitlines() or [""]
        raise src.error_at(len(lines), len(lines[-1]) + 1,
                           "unexpected end of file" + (f"; expected {_expected(e)}" if _expected(e) else ""),
                           hint="is a '}' or ')' missing?") from None
    except UnexpectedToken as e:
        tok = e.token
        if tok.type == "$END":
            lines = text.splitlines() or [""]
            line, col, what = len(lines), len(lines[-1]) + 1, "end of file"
        else:
            line, col, what = tok.line, tok.column, repr(str(tok))
        hint = None
        if str(tok) == "=" and "~" in (e.expected or ()):
            hint = "'=' defines a deterministic value; '~' declares a distribution"
        raise src.error_at(line, col, f"unexpected {what}; expected {_expected(e)}", hint=hint) from None
    except UnexpectedInput as e:
        raise src.error(e, f"syntax error: {e.__class__.__name__}") from None
    except (LarkError, RecursionError) as e:
        raise src.error(None, f"cannot parse this program: {type(e).__name__}") from None
