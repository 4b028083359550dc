"""The compiler: target tree -> terms -> inference graph -> plan -> runtime program."""
from .plan import Compiled, compile

__all__ = ["Compiled", "compile"]
