"""Rewrite passes on the target tree: (p^a)^b = p^(ab) and flattening of nested products.

The closed-form pass on Gaussian factors lives in `gaussian.py`: it works on terms.
"""
from ..target import Energy, Model, Power, Product, Target


def fold(target: Target) -> Target:
    """Fold powers of powers, drop unit powers, flatten products of products."""
    if isinstance(target, Power):
        base = fold(target.base)
        if isinstance(base, Power):
            return fold(Power(base.base, base.beta * target.beta))
        return base if target.beta == 1.0 else Power(base, target.beta)
    if isinstance(target, Product):
        flat = []
        for f in (fold(f) for f in target.factors):
            flat.extend(f.factors if isinstance(f, Product) else (f,))
        return Product(flat)
    if isinstance(target, (Model, Energy)):
        return target
    return target._rebuild([fold(c) for c in target.children()])
