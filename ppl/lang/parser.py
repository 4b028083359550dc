"""Parsing `.ppl` text (grammar.lark, LALR) into the syntax tree of `syntax.py`.

    parse(text, filename) -> Program(items)

Syntax errors raise `SourceError` (`file:line:col: message`, the source line, a caret and a hint).
"""
import functools
import importlib.resources

from lark import Lark, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from ..errors import PPLError
from . import syntax as S
from .source import Source

_TOKEN_NAMES = {"NAME": "a name", "NUMBER": "a number", "STRING": "a string", "TYPENAME": "a type",
                "COMPOP": "a comparison", "ADDOP": "+ or -", "MULOP": "*, /, @ or %", "AUGOP": "+=",
                "LBRACE": "{", "RBRACE": "}", "LPAR": "(", "RPAR": ")", "LSQB": "[", "RSQB": "]",
                "EQUAL": "=", "TILDE": "~", "COLON": ":", "COMMA": ",", "CIRCUMFLEX": "^", "VBAR": "|",
                "SEMICOLON": ";", "MINUS": "-", "PLUS": "+", "LESSTHAN": "<", "MORETHAN": ">"}


def _at(meta_or_token):
    """The position of a rule (its first token) or of a token, as keyword arguments of a node."""
    return {"line": getattr(meta_or_token, "line", None), "column": getattr(meta_or_token, "column", None)}


def _tuple(xs):
    return None if xs is None else tuple(xs)


def _statements(stmts):
    return tuple(s for s in stmts if s is not None)


@v_args(meta=True, inline=True)
class _ToSyntax(Transformer):
    """Builds the syntax tree, bottom up; `empty` statements (a lone `;`) become None and are dropped."""

    # ---- top-level items
    def start(self, meta, *items):
        return S.Program(_statements(items), line=1, column=1)

    def empty(self, meta):
        return None

    def data_decl(self, meta, name, typ):
        return S.Data(str(name), typ, **_at(meta))

    def use_stmt(self, meta, name, spec):
        return S.Use(str(name), str(spec)[1:-1], **_at(meta))

    def model_def(self, meta, name, *stmts):
        return S.ModelDef(str(name), _statements(stmts), **_at(meta))

    def diffusion_def(self, meta, name, func, args):
        return S.DiffusionDef(str(name), S.Call(str(func), args, **_at(func)), **_at(meta))

    def target_def(self, meta, name, expr, *bindings):
        return S.TargetDef(str(name), expr, _statements(bindings), **_at(meta))

    def binding(self, meta, name, value):
        return S.Binding(str(name), value, **_at(meta))

    def sample_stmt(self, meta, target, method, options, runtime):
        return S.Sample(str(target), str(method), options or S.Args(),
                        None if runtime is None else S.Name(str(runtime), **_at(runtime)), **_at(meta))

    # ---- model statements
    def declare(self, meta, name, typ, dist):
        return S.Declare(str(name), typ, dist, **_at(meta))

    def tilde(self, meta, target, dist):
        return S.Tilde(target, dist, **_at(meta))

    def assign(self, meta, target, value):
        return S.Assign(target, value, **_at(meta))

    def augassign(self, meta, target, op, value):
        return S.AugAssign(target, str(op), value, **_at(meta))

    def factor(self, meta, value):
        return S.Factor(value, **_at(meta))

    def for_loop(self, meta, var, lo, hi, *body):
        return S.For(str(var), lo, hi, _statements(body), **_at(meta))

    def lvalue(self, meta, name, indices):
        return S.LValue(str(name), _tuple(indices), **_at(meta))

    def dist(self, meta, family, args, shape):
        return S.Dist(str(family), args, _tuple(shape), **_at(meta))

    # ---- types
    def type(self, meta, name, bounds, dims):
        return S.Type(str(name), bounds or (), _tuple(dims), **_at(meta))

    def bounds(self, meta, *bounds):
        return tuple(bounds)

    def bound(self, meta, key, value):
        return S.Bound(str(key), value, **_at(meta))

    # ---- expressions
    def number(self, meta, tok):
        text = str(tok)
        return S.Number(float(text) if any(c in text for c in ".eE") else int(text), **_at(tok))

    def string(self, meta, tok):
        return S.String(str(tok)[1:-1], **_at(tok))

    def name(self, meta, tok):
        return S.Name(str(tok), **_at(tok))

    def call(self, meta, func, args):
        return S.Call(str(func), args, **_at(func))

    def call_args(self, meta, *args):
        args = [a for a in args if a is not None]
        return S.Args(tuple(a for a in args if not isinstance(a, S.Keyword)),
                      tuple(a for a in args if isinstance(a, S.Keyword)), **_at(meta))

    def kwarg(self, meta, name, value):
        return S.Keyword(str(name), value, **_at(meta))

    def binop(self, meta, left, op, right):
        return S.BinOp(str(op), left, right, **_at(op))

    compare = binop

    def pow(self, meta, base, exponent):
        return S.Pow(base, exponent, **_at(meta))

    def neg(self, meta, operand):
        return S.Neg(operand, **_at(meta))

    def not_(self, meta, operand):
        return S.Not(operand, **_at(meta))

    def and_(self, meta, left, right):
        return S.And(left, right, **_at(meta))

    def or_(self, meta, left, right):
        return S.Or(left, right, **_at(meta))

    def index(self, meta, value, indices):
        return S.Index(value, indices, **_at(meta))

    def slice(self, meta, lo, hi):
        return S.Slice(lo, hi, **_at(meta))

    def vector(self, meta, items):
        return S.Vector(items, **_at(meta))

    def exprs(self, meta, *xs):
        return tuple(xs)

    indices = exprs


@functools.lru_cache(maxsize=1)
def _parser():
    grammar = importlib.resources.files(__package__).joinpath("grammar.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


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
        return _ToSyntax().transform(_parser().parse(text))
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
    except VisitError as e:
        raise src.error(None, f"cannot read this program: {e.orig_exc}") from None
    except (LarkError, RecursionError) as e:
        raise src.error(None, f"cannot parse this program: {type(e).__name__}") from None
