"""BRAIn's self-normalized gradient (Pandey et al. 2024, arXiv 2402.02479), the estimator `ppl.amortize` trains
with, on numpy, torch or JAX arrays.

For a context c with target π_c = γ_c / Z_c and draws y_1..y_n ~ r (detached),

    α̂_i = normalized γ_c(y_i) / r(y_i),      β̂_i = normalized q_θ(y_i | c) / r(y_i),
    ĝ(θ) = Σ_i (α̂_i − β̂_i) ∇_θ log q_θ(y_i | c).

ĝ estimates −∇_θ of the self-normalized KL between π_c and q_θ; the β̂ term is a baseline that leaves its
mean unchanged but removes the part of Σ α̂_i ∇ log q_θ that is noise (for r = q_θ, β̂_i = 1/n and it
subtracts the score's sample mean, whose expectation is 0). A trainer takes Adam steps on the surrogate loss
−Σ (α̂ − β̂) log q_θ (weights held fixed), averaged over a minibatch of contexts.
"""
import math


def _xp(x):
    from .math import namespace
    return namespace(x)


def _detach(x):
    from .math import runtime
    rt = runtime(x)
    return x if rt is None else rt.stop_gradient(x)


def _normalized(xp, a):
    """exp(a − logsumexp(a)) over the last axis; non-finite entries get weight 0 (an all-non-finite row: nan)."""
    a = xp.where(xp.isfinite(a), a, -math.inf)
    return xp.exp(a - xp.logsumexp(a, axis=-1, keepdims=True))


def brain_weights(log_target, log_q, log_r=None):
    """(α̂, β̂) [..., n]: α̂ = normalized γ(y)/r(y), β̂ = normalized q(y)/r(y) over the last axis, for draws
    y ~ r. `log_r=None` means r = q (then β̂ = 1/n). A row whose target weights are all non-finite gets
    α̂ = β̂ (no gradient). Works on numpy, torch and JAX arrays (no gradient flows through the weights)."""
    log_target, log_q = _detach(log_target), _detach(log_q)
    xp = _xp(log_target)
    n = log_q.shape[-1]
    if log_r is None:
        log_r = log_q
        beta = xp.ones_like(log_q) / n
    else:
        log_r = _detach(log_r)
        beta = _normalized(xp, log_q - log_r)
    alpha = _normalized(xp, log_target - log_r)
    alpha = xp.where(xp.isfinite(alpha), alpha, beta)
    return alpha, beta


def brain_gradient(grad_log_q, log_target, log_q, log_r=None, baseline=True):
    """Σ_i (α̂_i − β̂_i) ∇ log q(y_i) [..., P] from the scores `grad_log_q` [..., n, P] of draws y ~ r (an
    estimate of −∇_θ KL(π ‖ q_θ), the ascent direction); `baseline=False` gives the plain self-normalized
    importance-sampling gradient Σ_i α̂_i ∇ log q(y_i)."""
    alpha, beta = brain_weights(log_target, log_q, log_r)
    w = alpha - beta if baseline else alpha
    return (w[..., None] * grad_log_q).sum(-2)


def brain_loss(log_target, log_q, log_r=None):
    """The surrogate loss −mean_c Σ_i (α̂_i − β̂_i) log q_θ(y_i | c) over contexts (rows): its gradient in θ is
    −(mean over contexts of `brain_gradient`). `log_q` [B, n] carries the gradient; the weights do not."""
    alpha, beta = brain_weights(log_target, log_q, log_r)
    return -((alpha - beta) * log_q).sum(-1).mean()


def _stats(xp, log_gamma, log_q, log_r):
    """(loss, ESS/n) of a minibatch: loss = Σ β̂ (log q − log γ), the self-normalized estimate of
    KL(q ‖ π_c) − log Z_c, averaged over contexts; ESS/n = 1 / (n Σ α̂²), averaged."""
    alpha, beta = brain_weights(log_gamma, log_q, log_r)
    n = log_q.shape[-1]
    d = xp.where(xp.isfinite(log_gamma), log_q - log_gamma, 0.0 * log_q)
    return (beta * d).sum(-1).mean(), (1.0 / (n * (alpha * alpha).sum(-1))).mean()
