"""The `.ppl` language: source and located errors (`source`), the syntax tree (`syntax`), the parser
(`parser`, `grammar.lark`), name analysis (`names`), the per-particle interpreter (`interpret`), model
lowering with its type rules (`lower`; `ordered` for ordered types), the loader (`load`) and the loaded program
that compiles and samples its targets (`runner`)."""
from .load import load_ppl
from .parser import parse
from .runner import PPLFile

__all__ = ["load_ppl", "parse", "PPLFile"]
