"""Score-based (diffusion) models as targets: `ppl.diffusion(score, sde, dim)` and `ppl.train_score`.

A diffusion base stands for the family of noised marginals q_t of a forward SDE, known
through its score s_t(x) ≈ ∇ log q_t(x). It composes with the same algebra as models
(`q ** beta`, `q1 * q2`, `ppl.geometric(q, q_c, w)`, `q.tilt(r, lam)`); such targets are
sampled by `method="fkc"` (Feynman–Kac correctors, DESIGN §5). Its one site is `x` [dim].
"""
import itertools

import numpy as np

from .errors import PlanError, PPLError, ShapeError
from .backends import runtime as runtimes
from .math import module_framework
from .stdlib.diffusion import SDE, DensityScore
from .target import Target

SITE = "x"


class DiffusionModel(Target):
    """A score-based base q: `score` (see `ppl.diffusion`), its forward `sde` and dimension `dim`."""

    site = SITE
    _ids = itertools.count()

    def __init__(self, score, sde, dim, name=None, params=None):
        if not isinstance(sde, SDE):
            raise PPLError(f"sde must be ppl.VPSDE(...) or ppl.VESDE(...), got {type(sde).__name__}")
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ShapeError(f"dim must be a positive integer, got {dim!r}")
        if isinstance(score, DensityScore) and score.dim != dim:
            raise ShapeError(f"the score {score!r} has dimension {score.dim} but dim={dim}")
        if not callable(score) and not hasattr(score, "score_fn"):
            raise PPLError(f"score must be callable score(x, t), a torch/flax module or a GaussianMixture, "
                           f"got {type(score).__name__}")
        self.score, self.sde, self.dim, self.params = score, sde, int(dim), params
        self.framework, owner = module_framework(score), runtimes.module_owner(score)
        if owner is not None and runtimes.KNOWN[owner].pure_modules and params is None:
            raise PPLError(f"a {owner} ({self.framework}) module score needs its parameters: "
                           f"ppl.diffusion(module, sde, dim, params=...)")
        self.name = name or f"q{next(self._ids)}"

    def models(self):
        return []

    def _rebuild(self, children):
        return self

    def score_fn(self, rt):
        """The batched score s(x [N, dim], t [N]) -> [N, dim] on runtime `rt`."""
        if hasattr(self.score, "score_fn"):
            return self.score.score_fn(rt, self.sde)
        if not rt.owns(self.score):
            raise PlanError(f"the score of diffusion model {self.name} is a {self.framework} module; "
                            f"sample it with runtime={runtimes.module_owner(self.score)!r}")
        return rt.bind(self.score, self.params)

    @property
    def has_density(self):
        """Whether the score knows its log density log q_t(x) (`ppl.GaussianMixture`, `DoubleWells`)."""
        return hasattr(self.score, "density_fn")

    def density_fn(self, rt):
        """The batched (log q_t(x) [N], score [N, dim]) = density(x, t) on runtime `rt`, for scores that know
        their log density (`has_density`); a PlanError for a score alone."""
        if not self.has_density:
            raise PlanError(f"diffusion model {self.name} has only a score, but MCMC moves and path increments need "
                            f"its log density log q_t(x)", hint="use moves=0 and increments='sde', or a score that "
                                                                 "knows its log density (ppl.GaussianMixture)")
        return self.score.density_fn(rt, self.sde)

    def describe(self):
        return f"{self.name}[diffusion {self.sde!r}, d={self.dim}]"

    kind = "diffusion"

    @property
    def label(self):
        return f"diffusion {self.name}"


def diffusion(score, sde, dim, name=None, params=None):
    """A diffusion base. `score(x, t)` is batched (x [N, dim], t [N]) and returns ∇ log q_t(x) [N, dim];
    it may be a Python callable for one runtime, a torch `nn.Module` (runtime 'pyro'), a flax module with
    `params=` (runtime 'numpyro'), a `ppl.GaussianMixture` (exact noised score, both runtimes) or a
    `ppl.train_score(...)` result (both runtimes)."""
    return DiffusionModel(score, sde, dim, name=name, params=params)


class ScoreMLP:
    """An MLP ε-predictor ε̂(x, t) with score s_t(x) = −ε̂(x, t) / σ_t; runs on both runtimes.

    Input features: x and (sin, cos) of 16 frequencies of t. Weights are numpy arrays after training.
    """

    def __init__(self, layers, freqs):
        self.layers, self.freqs = layers, freqs
        self._lowered = {}

    @staticmethod
    def features(xp, x, t, freqs):
        arg = t[:, None] * freqs[None, :]
        return xp.concatenate([x, xp.sin(arg), xp.cos(arg)], axis=-1)

    def eps(self, xp, x, t, layers, freqs):
        h = self.features(xp, x, t, freqs)
        for i, (w, b) in enumerate(layers):
            h = h @ w + b
            if i < len(layers) - 1:
                h = h * (1.0 / (1.0 + xp.exp(-h)))
        return h

    def score_fn(self, rt, sde):
        if rt.name not in self._lowered:
            self._lowered[rt.name] = ([(rt.asarray(w), rt.asarray(b)) for w, b in self.layers], rt.asarray(self.freqs))
        layers, freqs = self._lowered[rt.name]
        xp = rt.xp
        return lambda x, t: -self.eps(xp, x, t, layers, freqs) / xp.sqrt(sde.sigma2(t, xp))[:, None]


def train_score(samples, sde, hidden=128, depth=3, steps=3000, batch=512, lr=2e-3, t_min=1e-3, seed=0):
    """Fit an MLP score to data `samples` [n, d] by denoising score matching (torch, CPU):

        min E_{t, x0, ε} ‖ε̂(α_t x0 + σ_t ε, t) − ε‖²,  t ~ U(t_min, T),  s_t(x) = −ε̂(x, t) / σ_t.

    Returns a `ScoreMLP` usable as the score of `ppl.diffusion` on both runtimes.
    """
    import torch
    data = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    if data.ndim != 2:
        raise ShapeError(f"samples must be an array [n, d], got shape {tuple(data.shape)}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    d = data.shape[1]
    freqs = torch.exp(torch.linspace(0.0, np.log(200.0), 16))
    sizes = [d + 32] + [hidden] * depth + [d]
    net = torch.nn.Sequential(*[m for i in range(len(sizes) - 1) for m in
                                ([torch.nn.Linear(sizes[i], sizes[i + 1])] + ([torch.nn.SiLU()] if i < len(sizes) - 2 else []))])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        x0 = data[torch.randint(len(data), (batch,), generator=gen)]
        t = t_min + (sde.T - t_min) * torch.rand(batch, generator=gen)
        eps = torch.randn(batch, d, generator=gen)
        xt = sde.alpha(t, torch)[:, None] * x0 + torch.sqrt(sde.sigma2(t, torch))[:, None] * eps
        feats = torch.cat([xt, torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], -1)
        loss = ((net(feats) - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    layers = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in linears]
    return ScoreMLP(layers, freqs.numpy())
