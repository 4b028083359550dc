"""Special functions torch lacks, in torch ops (`special`: no data-dependent control flow), so that they batch
under `torch.func.vmap`, trace into one graph (`jit_pure`) and differentiate by autograd in every argument.

`log_ndtr(z)`: log Φ(z), batched under vmap (torch's own has no batching rule).
`betainc(a, b, x)`: the regularized incomplete beta I_x(a, b) = B(x; a, b) / B(a, b), the CDF of beta(a, b).
"""
import math

import torch

from .special import incomplete_beta

#: continued-fraction steps per result dtype (`special.incomplete_beta`: relative change below 1e-13, 1e-9)
_STEPS = {torch.float64: 48, torch.float32: 28}


def betainc(a, b, x):
    """I_x(a, b) (`special.incomplete_beta`), broadcast over its arguments. Float32 arguments are computed in
    float64 (but on MPS, which has none) and rounded back: the prefactor's exponent is a difference of terms of
    order a + b (≈ 140 at a = b = 100), whose float32 rounding alone would cost 1e-5 relative."""
    a, b, x = torch.broadcast_tensors(*(torch.as_tensor(v) for v in (a, b, x)))
    dtype = torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.get_default_dtype()
    work = torch.float64 if dtype == torch.float32 and x.device.type != "mps" else dtype
    return incomplete_beta(torch, torch.lgamma, a.to(work), b.to(work), x.to(work), _STEPS[dtype]).to(dtype)


def log_ndtr(z):
    """log Φ(z): log(erfcx(−z/√2) / 2) − z²/2 below 0, log1p(−erfc(z/√2) / 2) above (each branch finite on the
    other's side); torch's own `special.log_ndtr` has no batching rule, so under `vmap` it ran per particle."""
    below, above = torch.clamp(z, max=0.0), torch.clamp(z, min=0.0)
    return torch.where(z < 0, torch.log(0.5 * torch.special.erfcx(-below / math.sqrt(2.0))) - 0.5 * below * below,
                       torch.log1p(-0.5 * torch.special.erfc(above / math.sqrt(2.0))))
