"""Closed form for products and powers of Gaussian priors on one site.

Σ_i c_i log N(x; μ_i, σ_i²) = log N(x; m, 1/P) + log C, elementwise, with
P = Σ c_i / σ_i², m = Σ (c_i μ_i / σ_i²) / P and
log C = Σ c_i (−μ_i² / (2σ_i²) − log σ_i − ½ log 2π) + P m² / 2 + ½ log(2π / P),
valid when P > 0. This makes p ** beta, p * q and geometric(p, q, w) of Gaussians exact.
"""
import numpy as np

from .terms import Constant, Gaussian, Prior


def _constant_normal(term):
    if not isinstance(term, Prior):
        return None
    d = term.model.sites[term.site].constant
    if d is None or d.family != "Normal":
        return None
    try:
        loc, scale = (np.asarray(d.params[k], dtype=np.float64) for k in ("loc", "scale"))
    except (TypeError, ValueError):
        return None
    shape = np.broadcast_shapes(loc.shape, scale.shape, d.shape)
    return np.broadcast_to(loc, shape), np.broadcast_to(scale, shape)


def _merge(group):
    """[gaussian term, constant term] for a group of constant-Normal prior terms, or None if P <= 0."""
    params = [_constant_normal(t) for t in group]
    if len({loc.shape for loc, _ in params}) != 1:
        return None
    mu, sd = (np.stack(p) for p in zip(*params))
    c = np.array([t.coef for t in group]).reshape((-1,) + (1,) * (mu.ndim - 1))
    prec = (c / sd ** 2).sum(0)
    if not np.all(prec > 0):
        return None
    m = (c * mu / sd ** 2).sum(0) / prec
    log_c = (c * (-mu ** 2 / (2 * sd ** 2) - np.log(sd) - 0.5 * np.log(2 * np.pi))).sum(0) \
        + prec * m ** 2 / 2 + 0.5 * np.log(2 * np.pi / prec)
    origin = [f"{t.label} ^{t.coef:g}" for t in group]
    site = group[0].site
    return [Gaussian(1.0, group[0].model, site, value=(m, 1 / np.sqrt(prec)), origin=origin),
            Constant(1.0, site=site, value=float(log_c.sum()), origin=origin)]


def fold_gaussians(terms):
    """Replace the constant-Normal prior terms of each site by one Gaussian term and a constant."""
    groups = {}
    for t in terms:
        if _constant_normal(t) is not None:
            groups.setdefault(t.site, []).append(t)
    merged = {site: _merge(g) for site, g in groups.items() if len(g) > 1 or g[0].coef != 1.0}
    out = []
    for t in terms:
        group = groups.get(t.site, []) if isinstance(t, Prior) else []
        if merged.get(t.site) and any(t is g for g in group):
            if t is group[0]:
                out.extend(merged[t.site])
            continue
        out.append(t)
    return out
