"""`ppl.amortize` on torch: the default conditional proposal (an MLP c -> (mean, log σ) of a diagonal Gaussian)
and the trainer of a torch module by Adam on BRAIn's loss (`ppl.amortize`). Used through the Pyro runtime's
`conditional_gaussian` and `proposal_trainer`."""
import numpy as np
import torch

from ..amortize_brain import _stats, brain_loss
from ..amortize_proposal import _check_draws, _check_gaussian, _diag_normal_log_prob, raise_nonfinite
from ..errors import PPLError, ShapeError


def conditional_gaussian(context_shape, dim, hidden, depth, shift, scale, seed):
    """The default proposal of `ppl.amortize` on torch: a `DiagonalGaussianMLP` (below), seeded."""

    class DiagonalGaussianMLP(torch.nn.Module):
        """context c -> (mean, log σ) [B, D] of q(z | c) = N(mean, diag σ²): a linear map of the standardized
        context plus an MLP of it (tanh; the MLP's last layer and the linear map start at 0, so q starts at
        N(0, I))."""

        def __init__(self):
            super().__init__()
            k = int(np.prod(context_shape))
            self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32))
            self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
            self.linear = torch.nn.Linear(k, 2 * dim)
            sizes = [k] + [hidden] * depth + [2 * dim]
            mods = []
            for i in range(len(sizes) - 1):
                mods.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
                if i < len(sizes) - 2:
                    mods.append(torch.nn.Tanh())
            self.mlp = torch.nn.Sequential(*mods)
            with torch.no_grad():
                for p in (self.linear.weight, self.linear.bias, mods[-1].weight, mods[-1].bias):
                    p.zero_()

        def forward(self, c):
            x = (c.reshape(len(c), -1) - self.shift) / self.scale
            out = self.linear(x) + self.mlp(x)
            return out[:, :dim], out[:, dim:]

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return DiagonalGaussianMLP()


class Trainer:
    """Training on torch: a module c -> (mean, log σ), or one with `sample(n, c)` / `log_prob(z, c)`."""

    def __init__(self, module, rt, lr, dim):
        self.torch, self.rt, self.dim = torch, rt, dim
        general = callable(getattr(module, "sample", None)) and callable(getattr(module, "log_prob", None))
        if not callable(getattr(module, "parameters", None)) or not (general or callable(module)):
            raise PPLError("on runtime 'pyro' the proposal must be a torch nn.Module mapping contexts [B, ...] to "
                           "(mean [B, D], log_scale [B, D]), or one with sample(n, c) and log_prob(z, c)")
        self.module, self.general = module.to(rt.torch_device) if hasattr(module, "to") else module, general
        params = list(module.parameters())
        if not params:
            raise PPLError("the proposal module has no parameters to train")
        self.opt = torch.optim.Adam(params, lr=lr)

    def gaussian(self, c):
        out = self.module(c)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise PPLError("the proposal module must return (mean [B, D], log_scale [B, D])")
        _check_gaussian(*out, len(c), self.dim)
        return out

    def draw(self, c, key, n):
        """y [B, n, D] ~ q(· | c), detached."""
        torch = self.torch
        with torch.no_grad():
            if self.general:
                with torch.random.fork_rng():
                    torch.manual_seed(int(key))
                    y = self.module.sample(n, c).detach()
                _check_draws(y, len(c), n, self.dim)
                return y
            mean, log_scale = self.gaussian(c)
            return mean[:, None] + torch.exp(log_scale)[:, None] * self.rt.normal(key, (len(c), n, self.dim))

    def log_prob(self, c, y):
        """log q(y | c) [B, n], with its gradient in the module's parameters."""
        if self.general:
            out = self.module.log_prob(y, c)
            if tuple(out.shape) != tuple(y.shape[:2]):
                raise ShapeError(f"the proposal's log_prob(z, c) returned shape {tuple(out.shape)} for z of shape "
                                 f"{tuple(y.shape)}; expected [B, n] = {tuple(y.shape[:2])}")
            return out
        mean, log_scale = self.gaussian(c)
        return _diag_normal_log_prob(self.rt.xp, y, mean[:, None], log_scale[:, None])

    def log_density(self, c, y):
        """log q(y | c) [B, n], without gradient."""
        with self.torch.no_grad():
            return self.log_prob(c, y)

    def step(self, c, y, log_gamma, log_r):
        """One Adam step on `brain_loss`; returns the minibatch's (loss, ESS/n)."""
        log_q = self.log_prob(c, y)
        loss = brain_loss(log_gamma, log_q, log_r)
        if not bool(self.torch.isfinite(loss)):
            raise_nonfinite()    # before the step: the module keeps its last finite parameters
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        with self.torch.no_grad():
            return _stats(self.rt.xp, log_gamma, log_q.detach(), log_r)

    @property
    def proposal(self):
        """The trained module."""
        return self.module

    def conditional(self, c, sites):
        """q(z | c) of the general module at the context c (numpy), as a `Proposal` bound to `sites`."""
        return _module_proposal(self.module, c, self.dim, sites)

    def parameters_at(self, c):
        with self.torch.no_grad():
            mean, log_scale = self.gaussian(self.rt.asarray(c[None]))
        return self.rt.to_numpy(mean[0]).astype(np.float64), self.rt.to_numpy(log_scale[0]).astype(np.float64)


def _module_proposal(module, c, dim, sites):
    """q(z | c) of a general torch conditional module at one context, as a `Proposal` (runtime 'pyro')."""
    from .proposals import Proposal

    class ConditionalModule(Proposal):
        family = "conditional"

        def __init__(self):
            self.module, self.c = module, c

        @property
        def dim(self):
            return dim

        def _ctx(self, rt):
            if not rt.owns(self.module):
                raise PPLError("a torch proposal module proposes on runtime 'pyro' only")
            return rt.asarray(self.c[None])

        def sample(self, rt, key, n):
            with torch.no_grad(), torch.random.fork_rng():
                torch.manual_seed(int(key))
                return self.module.sample(n, self._ctx(rt))[0]

        def log_prob(self, rt, z):
            with torch.no_grad():
                return self.module.log_prob(z[None], self._ctx(rt))[0]
    return ConditionalModule().bound(sites)
