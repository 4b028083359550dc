"""Masked autoregressive flows on torch (`rt.flow`, fitted by adaptive importance sampling) and their trainer."""
import copy
import math
import warnings

import torch

from ..stdlib.resamplers import RESAMPLERS


class Flow:
    """u = T_K ∘ … ∘ T_1(s), each T_k Pyro's `AffineAutoregressive` u_i = exp(a_i) s_i + m_i with (m, a) from an
    `AutoRegressiveNN` over `orders[k]`; q(s) = N(u; 0, I) |det ∂u/∂s|. The density direction s → u is one pass
    (the transform's call), sampling s = T⁻¹(ε) is `dim` passes per layer (its `inv`). Params are an
    `nn.ModuleList` of the transforms, frozen (no gradients) and never changed in place once returned."""

    def __init__(self, rt, dim, hidden, orders):
        self.rt, self.dim, self.hidden, self.orders = rt, dim, hidden, orders

    def init(self, seed):
        from pyro.distributions.transforms import AffineAutoregressive
        from pyro.nn import AutoRegressiveNN
        cuda = [self.rt.torch_device.index or 0] if self.rt.torch_device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "ConditionalAutoRegressiveNN input_dim = 1")   # a 1-D flow is affine
            torch.manual_seed(int(seed))
            layers = torch.nn.ModuleList(
                AffineAutoregressive(AutoRegressiveNN(self.dim, self.hidden, permutation=torch.tensor(o)))
                for o in self.orders)
        with torch.no_grad():
            for t in layers:
                t.arn.layers[-1].weight.zero_()
                t.arn.layers[-1].bias.zero_()
        return _frozen(layers.to(device=self.rt.torch_device, dtype=self.rt.dtype))

    def log_prob(self, params, s):
        ladj = 0.0
        for t in params:
            u = t(s)
            ladj, s = ladj + t.log_abs_det_jacobian(s, u), u
        _clear(params)
        return -0.5 * self.dim * math.log(2 * math.pi) - 0.5 * (s * s).sum(-1) + ladj

    def sample(self, params, key, n):
        s = self.rt.normal(key, (n, self.dim))
        with torch.no_grad():
            for t in reversed(params):
                s = t.inv(s)
        _clear(params)
        return s

    def trainer(self, params, s, w, lr, batch, seed):
        return FlowTrainer(self, params, s, w, lr, batch, seed)


class FlowTrainer:
    """torch.optim.Adam on −Σ w log q(s), on a copy of `params`, on all draws (batch None) or on minibatches
    of `batch` resampled ∝ w."""

    def __init__(self, flow, params, s, w, lr, batch, seed):
        self.flow, self.s, self.batch = flow, s, None if batch is None else int(batch)
        self.w, self.key = flow.rt.asarray(w / w.sum()), flow.rt.key(seed)
        self.params = _copy_params(params, grad=True)
        self.opt = torch.optim.Adam(self.params.parameters(), lr=float(lr))

    def run(self, k):
        with torch.enable_grad():
            for _ in range(int(k)):
                self.opt.zero_grad(set_to_none=True)
                if self.batch is None:
                    loss = -(self.w * self.flow.log_prob(self.params, self.s)).sum()
                else:     # a minibatch resampled ∝ w: the same expected gradient, uniform weights
                    self.key, key = self.flow.rt.split(self.key)
                    idx = RESAMPLERS["multinomial"](self.flow.rt, key, self.w, self.batch)
                    loss = -self.flow.log_prob(self.params, self.s[idx]).mean()
                loss.backward()
                self.opt.step()
        return _copy_params(self.params)


def _clear(params):
    """Drops the transforms' one-entry caches (the last input and output), which would pin those tensors."""
    for t in params:
        t._cached_x_y, t._cached_log_scale = (None, None), None


def _frozen(params):
    for p in params.parameters():
        p.requires_grad_(False)
    return params


def _copy_params(params, grad=False):
    _clear(params)
    out = copy.deepcopy(params)
    for p in out.parameters():
        p.requires_grad_(grad)
    return out
