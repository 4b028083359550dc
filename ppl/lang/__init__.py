"""The `.ppl` language: source and located errors (`source`), the syntax tree (`syntax`), the parser
(`parser`, `grammar.lark`), name analysis (`names`), the per-particle interpreter (`interpret`), model
lowering with its type rules (`lower`) and the loader (`load`)."""
from .load import PPLFile, load_ppl
from .parser import parse

__all__ = ["load_ppl", "parse", "PPLFile"]
