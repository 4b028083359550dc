"""Importance weights on the host: log weights log w [..., N] in numpy float64, the last axis the particles
(leading axes: independent runs, or contexts), and the estimates every method reports from them.

With W_i = w_i / Σ_j w_j the normalized weights:

    Ẑ = (1/N) Σ_i w_i (log Ẑ by log-mean-exp),   ESS = (Σ w)² / Σ w² = 1 / Σ W²  (Kish),
    se(log Ẑ) ≈ sqrt(Σ W² − 1/N)  (the delta method: var(w) / (N mean(w)²)).

A particle with log w = −inf has vanished; a row where all have, has no normalized weights (NaN).
"""
import numpy as np


class Weights:
    """Log weights [..., N] (float64) with their normalized weights, ESS, log Ẑ and its standard error."""

    def __init__(self, log_w):
        self.log = np.asarray(log_w, dtype=np.float64)
        self._normalized = None

    @classmethod
    def from_normalized(cls, w):
        """The weights of normalized weights W ≥ 0 (log W; a zero is a vanished particle)."""
        w = np.asarray(w, dtype=np.float64)
        with np.errstate(divide="ignore"):
            weights = cls(np.log(w))
        weights._normalized = w
        return weights

    @property
    def n(self):
        """N, the particles per row."""
        return self.log.shape[-1]

    def normalized(self):
        """W = exp(log w − max log w) / Σ exp(log w − max log w) along the last axis."""
        if self._normalized is None:
            w = np.exp(self.log - np.max(self.log, axis=-1, keepdims=True))
            self._normalized = w / w.sum(axis=-1, keepdims=True)
        return self._normalized

    def ess(self):
        """Kish's effective sample size 1 / Σ W² per row."""
        w = self.normalized()
        return 1.0 / np.sum(w * w, axis=-1)

    def log_mean(self):
        """log Ẑ = log((1/N) Σ exp(log w)) per row (log-mean-exp; −inf where every particle vanished)."""
        top = np.max(self.log, axis=-1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        return np.squeeze(top, -1) + np.log(np.mean(np.exp(self.log - top), axis=-1))

    def log_mean_se(self, conservative=False):
        """se(log Ẑ) ≈ sqrt(Σ W² − 1/N) per row (the delta method); `conservative` keeps the 1/N: sqrt(Σ W²)
        (method 'is''s, a guard for poor proposals)."""
        w = self.normalized()
        s2 = np.sum(w * w, axis=-1)
        return np.sqrt(s2 if conservative else np.maximum(s2 - 1.0 / self.n, 0.0))

    def pooled(self):
        """The rows (independent runs) pooled with equal weight: one row of W_ci / C [C · N]."""
        w = self.normalized().reshape(-1, self.n)
        return Weights.from_normalized((w / len(w)).reshape(-1))
