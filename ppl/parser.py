"""Parsing `.ppl` text into an AST of `Node`s that carry their source position.

    parse(text, filename) -> Node("program", [items...])

Every node is `Node(op, args, line, column)`; syntax errors raise `SourceError`
(`file:line:col: message`, the source line, a caret and a hint).
"""
import functools
import importlib.resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from .errors import PPLError, SourceError


class Node:
    """An AST node: `op` names it, `args` are child nodes or plain values, (line, column) locate it (1-based)."""

    __slots__ = ("op", "args", "line", "column")

    def __init__(self, op, args, line=None, column=None):
        self.op, self.args, self.line, self.column = op, list(args), line, column

    def __getitem__(self, i):
        return self.args[i]

    def __repr__(self):
        return f"{self.op}({', '.join(map(repr, self.args))})"


_TOKEN_NAMES = {"NAME": "a name", "NUMBER": "a number", "STRING": "a string", "TYPENAME": "a type",
                "COMPOP": "a comparison", "ADDOP": "+ or -", "MULOP": "*, /, @ or %", "AUGOP": "+=",
                "LBRACE": "{", "RBRACE": "}", "LPAR": "(", "RPAR": ")", "LSQB": "[", "RSQB": "]",
                "EQUAL": "=", "TILDE": "~", "COLON": ":", "COMMA": ",", "CIRCUMFLEX": "^", "VBAR": "|",
                "SEMICOLON": ";", "MINUS": "-", "PLUS": "+", "LESSTHAN": "<", "MORETHAN": ">"}


def _pos(meta_or_token):
    return getattr(meta_or_token, "line", None), getattr(meta_or_token, "column", None)


@v_args(meta=True, inline=True)
class _ToAST(Transformer):
    def _n(self, op, meta, *args):
        return Node(op, args, *_pos(meta))

    def __default__(self, data, children, meta):
        return Node(str(data), children, *_pos(meta))

    # tokens
    def NAME(self, t):
        return t

    def start(self, meta, *items):
        return Node("program", [i for i in items if i is not None and i.op != "empty"], 1, 1)

    def empty(self, meta):
        return Node("empty", [])

    def model_def(self, meta, name, *stmts):
        return Node("model", [name, [s for s in stmts if s.op != "empty"]], *_pos(meta))

    def for_loop(self, meta, var, lo, hi, *body):
        return Node("for", [var, lo, hi, [s for s in body if s.op != "empty"]], *_pos(meta))

    def target_def(self, meta, name, expr, *bindings):
        return Node("target", [name, expr, [b for b in bindings if b is not None]], *_pos(meta))

    def sample_stmt(self, meta, target, method, args, runtime):
        return Node("sample", [target, method, args or Node("args", [[], []]), runtime], *_pos(meta))

    def call_args(self, meta, *args):
        pos = [a for a in args if a is not None and a.op != "kwarg"]
        kw = [a for a in args if a is not None and a.op == "kwarg"]
        return Node("args", [pos, kw], *_pos(meta))

    def number(self, meta, tok):
        text = str(tok)
        value = float(text) if any(c in text for c in ".eE") else int(text)
        return Node("number", [value], tok.line, tok.column)

    def string(self, meta, tok):
        return Node("string", [str(tok)[1:-1]], tok.line, tok.column)

    def name(self, meta, tok):
        return Node("name", [str(tok)], tok.line, tok.column)

    def call(self, meta, name, args):
        return Node("call", [str(name), args], name.line, name.column)

    def binop(self, meta, a, op, b):
        return Node("binop", [str(op), a, b], op.line, op.column)

    def compare(self, meta, a, op, b):
        return Node("binop", [str(op), a, b], op.line, op.column)

    def exprs(self, meta, *xs):
        return list(xs)

    def indices(self, meta, *xs):
        return list(xs)

    def vector(self, meta, xs):
        return Node("vector", [xs], *_pos(meta))

    def index(self, meta, x, idx):
        return Node("index", [x, idx], *_pos(meta))


@functools.lru_cache(maxsize=1)
def _parser():
    grammar = importlib.resources.files("ppl").joinpath("grammar.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _expected(e):
    names = sorted({_TOKEN_NAMES.get(t, t.lower() if t.isupper() and not t.startswith("__") else t)
                    for t in getattr(e, "expected", None) or getattr(e, "allowed", None) or ()
                    if not t.startswith("__ANON")})
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


def source_line(text, line):
    lines = text.splitlines()
    return lines[line - 1] if line is not None and 0 < line <= len(lines) else None


def parse(text, filename="<string>"):
    """The AST of `.ppl` source `text`; a syntax error raises `SourceError` located in `filename`."""
    if not isinstance(text, str):
        raise PPLError(f"parse() takes the program text as a string, got {type(text).__name__}")
    try:
        return _ToAST().transform(_parser().parse(text))
    except UnexpectedCharacters as e:
        ch = text[e.pos_in_stream] if e.pos_in_stream is not None and e.pos_in_stream < len(text) else "?"
        hint = "strings use double quotes" if ch == "'" else ("comments start with #" if ch in "/" else None)
        raise SourceError(f"unexpected character {ch!r}", filename=filename, line=e.line, column=e.column,
                          source_line=source_line(text, e.line), hint=hint) from None
    except UnexpectedEOF as e:
        lines = text.splitlines() or [""]
        raise SourceError("unexpected end of file" + (f"; expected {_expected(e)}" if _expected(e) else ""),
                          filename=filename, line=len(lines), column=len(lines[-1]) + 1,
                          source_line=lines[-1], hint="is a '}' or ')' missing?") from None
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
        raise SourceError(f"unexpected {what}; expected {_expected(e)}", filename=filename, line=line,
                          column=col, source_line=source_line(text, line), hint=hint) from None
    except UnexpectedInput as e:
        raise SourceError(f"syntax error: {e.__class__.__name__}", filename=filename,
                          line=getattr(e, "line", None), column=getattr(e, "column", None),
                          source_line=source_line(text, getattr(e, "line", None))) from None
    except VisitError as e:
        raise SourceError(f"cannot read this program: {e.orig_exc}", filename=filename) from None
    except (LarkError, RecursionError) as e:
        raise SourceError(f"cannot parse this program: {type(e).__name__}", filename=filename) from None


__all__ = ["Node", "parse", "Token"]
