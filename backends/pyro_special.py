"""Special functions torch lacks, in torch ops (`special`: no data-dependent control flow), so that they batch
under `torch.func.vmap`, trace into one graph (`jit_pure`) and differentiate by autograd in every argument.

`log_ndtr(z)`: log Φ(z), batched under vmap (torch's own has no batching rule).
`betainc(a, b, x)`: the regularized incomplete beta I_x(a, b) = B(x; a, b) / B(a, b), the CDF of beta(a, b).
`gammainc(a, x)`, `gammaincc(a, x)`: torch's regularized incomplete gammas P(a, x) = γ(a, x) / Γ(a) and
Q(a, x) = 1 − P(a, x), with the derivative in a that torch lacks (it raises), so that a truncated gamma with a
latent shape samples under gradient methods.
"""
import math

import torch

from .special import incomplete_beta, incomplete_gamma_da

#: continued-fraction steps per result dtype (`special.incomplete_beta`: relative change below 1e-13, 1e-9)
_STEPS = {torch.float64: 48, torch.float32: 28}
#: (series terms, fraction steps) of ∂P/∂a per dtype (`special.incomplete_gamma_da`: relative error 1e-12 up to
#: a = 300, 2e-10 up to a = 100)
_GAMMA_STEPS = {torch.float64: (256, 24), torch.float32: (128, 16)}


def betainc(a, b, x):
    """I_x(a, b) (`special.incomplete_beta`), broadcast over its arguments. Float32 arguments are computed in
    float64 (but on MPS, which has none) and rounded back: the prefactor's exponent is a difference of terms of
    order a + b (≈ 140 at a = b = 100), whose float32 rounding alone would cost 1e-5 relative."""
    a, b, x = torch.broadcast_tensors(*(torch.as_tensor(v) for v in (a, b, x)))
    dtype = torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.get_default_dtype()
    work = _work_dtype(dtype, x.device)
    return incomplete_beta(torch, torch.lgamma, a.to(work), b.to(work), x.to(work), _STEPS[dtype]).to(dtype)


def _work_dtype(dtype, device):
    """float64 for float32 (but on MPS, which has none), else `dtype`."""
    return torch.float64 if dtype == torch.float32 and device.type != "mps" else dtype


def _partials(a, x, in_a=True):
    """∂P/∂a (None unless `in_a`) and ∂P/∂x of P(a, x): ∂P/∂x = x^(a − 1) e^(−x) / Γ(a) in closed form, ∂P/∂a by
    `special.incomplete_gamma_da` (float32 arguments in float64, as `betainc`)."""
    d_x = torch.exp(torch.special.xlogy(a - 1.0, x) - x - torch.lgamma(a))
    if not in_a:
        return None, d_x
    work = _work_dtype(x.dtype, x.device)
    d_a = incomplete_gamma_da(torch, torch.lgamma, torch.digamma, a.to(work), x.to(work), *_GAMMA_STEPS[x.dtype])
    return d_a.to(x.dtype), d_x


def _save(ctx, inputs, output):
    ctx.save_for_backward(*inputs)
    ctx.save_for_forward(*inputs)


def _backward(ctx, grad, sign):
    """grad times the partials of P (`sign` 1) or of Q = 1 − P (−1)."""
    return tuple(None if d is None else sign * grad * d for d in _partials(*ctx.saved_tensors, ctx.needs_input_grad[0]))


def _jvp(ctx, da, dx, sign):
    """The tangent of P (`sign` 1) or of Q = 1 − P (−1) along (da, dx)."""
    d_a, d_x = _partials(*ctx.saved_tensors, da is not None)
    return sign * sum(d * t for d, t in ((d_a, da), (d_x, dx)) if t is not None)


def _incomplete_gamma(name, value, sign, doc):
    """A torch.autograd.Function computing `value(a, x)` (P, or Q = 1 − P with `sign` −1) with its derivatives in
    both arguments, reverse and forward."""
    return type(name, (torch.autograd.Function,), dict(
        __doc__=doc, generate_vmap_rule=True, setup_context=staticmethod(_save),
        forward=staticmethod(lambda a, x: value(a, x)),
        backward=staticmethod(lambda ctx, grad: _backward(ctx, grad, sign)),
        jvp=staticmethod(lambda ctx, da, dx: _jvp(ctx, da, dx, sign))))


_LowerGamma = _incomplete_gamma("LowerGamma", torch.special.gammainc, 1.0, "P(a, x) by `torch.special.gammainc`.")
_UpperGamma = _incomplete_gamma("UpperGamma", torch.special.gammaincc, -1.0,
                                "Q(a, x) by `torch.special.gammaincc` (accurate where P is near 1).")


def _floating(a, x):
    """a and x as tensors of one shape and of their promoted floating dtype (float32 at least)."""
    a, x = torch.as_tensor(a), torch.as_tensor(x)
    dtype = torch.result_type(a, x)
    dtype = torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.get_default_dtype()
    return torch.broadcast_tensors(a.to(dtype), x.to(dtype))


def gammainc(a, x):
    """P(a, x) = γ(a, x) / Γ(a) for a > 0, x ≥ 0, broadcast over its arguments."""
    return _LowerGamma.apply(*_floating(a, x))


def gammaincc(a, x):
    """Q(a, x) = Γ(a, x) / Γ(a) = 1 − P(a, x), broadcast over its arguments."""
    return _UpperGamma.apply(*_floating(a, x))


def log_ndtr(z):
    """log Φ(z): log(erfcx(−z/√2) / 2) − z²/2 below 0, log1p(−erfc(z/√2) / 2) above (each branch finite on the
    other's side); torch's own `special.log_ndtr` has no batching rule, so under `vmap` it ran per particle."""
    below, above = torch.clamp(z, max=0.0), torch.clamp(z, min=0.0)
    return torch.where(z < 0, torch.log(0.5 * torch.special.erfcx(-below / math.sqrt(2.0))) - 0.5 * below * below,
                       torch.log1p(-0.5 * torch.special.erfc(above / math.sqrt(2.0))))
