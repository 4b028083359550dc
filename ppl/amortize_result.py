"""The trained amortized proposal `ppl.amortize` returns: q(· | c) for a new context, and its evaluation by
importance sampling on many new contexts, batched over them as in training."""
import numpy as np

from .amortize_family import _call_family, _contexts, _Family
from .errors import PPLError, ShapeError, ValueRangeError
from .weights import Weights


class Amortized:
    """A trained conditional proposal. `amortized(c)` is the fitted `Proposal` for context c (a diagonal
    `proposals.Gaussian` on the unconstrained space for Gaussian proposals), bound to the family's layout:
    `ppl.sample(family(c), method="is", reference=amortized(c))`.

    Attributes: `history` ({"loss": [steps], "ess": [steps]}: the minibatch's self-normalized estimate of
    KL(q ‖ π_c) − log Z_c and the sampler's ESS / n, averaged over its contexts), `seconds` (training time),
    `proposal` (the trained module, or (params, apply) on JAX), `runtime`, `sites`, `dim`, `contexts`,
    `shared` (whether one shared function evaluated all the training contexts)."""

    def __init__(self, family, trainer, fam, contexts, history, seconds, runtime):
        self.family, self._trainer, self._fam = family, trainer, fam
        self.sites, self.dim, self.shared = fam.sites, fam.dim, fam.shared
        self.contexts, self.history, self.seconds, self.runtime = contexts, history, seconds, runtime
        self.context_shape = contexts.shape[1:]
        self.proposal = trainer.proposal

    def _context(self, c):
        if hasattr(c, "detach"):
            c = c.detach().cpu().numpy()
        c = np.asarray(c, dtype=np.float64)
        if c.shape != self.context_shape:
            raise ShapeError(f"a context of this amortized proposal has shape {self.context_shape}, got {c.shape}")
        return c

    def evaluate(self, contexts, particles=1000, seed=0, verify=2):
        """Importance sampling of family(c) from q(· | c) for each of `contexts` [K, ...], batched over them
        (one shared evaluation when the family allows, as in training): log w = log γ_c(y) − log q(y | c),
        y ~ q(· | c); log Ẑ_c = logmeanexp(log w), se = sqrt(Σ W²), ESS = 1 / Σ W² (W the normalized
        weights; method "is"'s estimates), Pareto k̂ of the weights. Returns numpy arrays [K] by name:
        "log_z", "log_z_se", "ess", "pareto_k"."""
        from .backends.importance import pareto_khat
        contexts = _contexts(contexts)
        if contexts.shape[1:] != self.context_shape:
            raise ShapeError(f"contexts of this amortized proposal have shape {self.context_shape}, got "
                             f"{contexts.shape[1:]}")
        if isinstance(particles, bool) or not isinstance(particles, (int, np.integer)) or particles < 2:
            raise ValueRangeError(f"particles must be an integer >= 2, got {particles!r}")
        rt, t = self._fam.rt, self._trainer
        fam = _Family(self.family, contexts, rt, verify, like=self._fam, what="context")
        c = rt.asarray(contexts.astype(np.float32))
        y = t.draw(c, rt.key(seed), particles)
        log_q = t.log_density(c, y)
        ref, rest = fam.log_parts(np.arange(len(contexts)), y)
        log_w = rt.to_numpy(ref + rest - log_q).astype(np.float64)
        w = Weights(np.where(np.isfinite(log_w), log_w, -np.inf))
        return {"log_z": w.log_mean(), "log_z_se": w.log_mean_se(conservative=True), "ess": w.ess(),
                "pareto_k": np.array([pareto_khat(row) for row in w.log])}

    def __call__(self, c):
        """The proposal q(· | c) for context c, checked against family(c)'s layout."""
        from .backends.proposals import Gaussian, layout_of
        c = self._context(c)
        comp = _call_family(self.family, c, "the new context")
        if layout_of(comp.layout) != self.sites:
            raise ShapeError(f"family(c) has the latent layout {layout_of(comp.layout)}; the amortized proposal "
                             f"was trained on {self.sites}")
        if self._trainer.general:
            return self._trainer.conditional(c, self.sites)
        mean, log_scale = self._trainer.parameters_at(c)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(log_scale))):
            raise PPLError(f"the amortized proposal is not finite at this context (mean {mean}, log σ {log_scale})")
        return Gaussian(mean, np.diag(np.exp(2 * log_scale))).bound(self.sites)

    def __repr__(self):
        return (f"Amortized(dim={self.dim}, contexts={len(self.contexts)}, runtime={self.runtime!r}, "
                f"steps={len(self.history['loss'])}, final ESS/n={self.history['ess'][-1]:.3f})")
