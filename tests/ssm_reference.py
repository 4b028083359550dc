"""Exact and reference answers for state-space models (numpy only).

Time convention (the one of `ppl.markov(init, step, length=T)` and of the `particles` library): T states
x[0], ..., x[T-1], all observed,

    x[0] ~ N(m0, P0),    x[t] = A x[t-1] + N(0, Q),    y[t] = C x[t] + N(0, R),    t = 0, ..., T-1,

so the Kalman log-likelihood is log p(y[0], ..., y[T-1]) and the "filter" at t conditions on y[0..t].

* `LinearGaussianSSM`: simulator, Kalman filter (log-likelihood, filtering means and covariances),
  Rauch–Tung–Striebel smoother, and the dense joint Gaussian of (x, y) (for checking the two in tests).
* `simulate_sv` / `StochasticVolatility`: the scalar stochastic-volatility model
  x[0] ~ N(mu, sigma / sqrt(1 - phi²)), x[t] ~ N(mu + phi (x[t-1] - mu), sigma), y[t] ~ N(0, exp(x[t] / 2)).
* `bootstrap_filter`: a plain numpy bootstrap particle filter (adaptive systematic resampling, single-run
  variance of log Z by genealogy tracking, optional backward-simulation smoother). It is the reference used to
  size and to check the tolerances of tests/test_particle_filter.py, not a fast implementation.
* `filter_mean_z`, `smoothed_mean_z`, `log_z_coverage`: the statistics the particle-filter tests compare.
"""
import math

import numpy as np

LOG_2PI = math.log(2 * math.pi)


def _mat(a, rows=None):
    a = np.asarray(a, dtype=float)
    if a.ndim == 0:
        a = a.reshape(1, 1)
    elif a.ndim == 1 and rows is not None:
        a = a.reshape(rows, -1)
    return a


def _gauss_logpdf(r, s):
    """log N(r; 0, S) for residuals r [..., d] and one covariance S [d, d]."""
    chol = np.linalg.cholesky(s)
    z = np.linalg.solve(chol, np.moveaxis(np.atleast_2d(r), -1, 0))
    return -0.5 * np.sum(z ** 2, 0) - np.sum(np.log(np.diag(chol))) - 0.5 * s.shape[0] * LOG_2PI


class LinearGaussianSSM:
    """x[0] ~ N(m0, P0), x[t] = A x[t-1] + N(0, Q), y[t] = C x[t] + N(0, R). Scalars are 1-d models."""

    def __init__(self, A, Q, C, R, m0, P0):
        self.A = _mat(A)
        self.dx = self.A.shape[0]
        self.Q, self.P0 = _mat(Q), _mat(P0)
        self.C = _mat(C, rows=None if np.ndim(C) != 1 else 1)
        self.dy = self.C.shape[0]
        self.R = _mat(R)
        self.m0 = np.asarray(m0, dtype=float).reshape(self.dx)
        assert self.A.shape == self.Q.shape == self.P0.shape == (self.dx, self.dx)
        assert self.C.shape == (self.dy, self.dx) and self.R.shape == (self.dy, self.dy)

    # ---- simulation --------------------------------------------------------------------------------
    def simulate(self, T, seed):
        """(x [T, dx], y [T, dy]) from numpy Generator `seed`."""
        rng = np.random.default_rng(seed)
        lq, lr = np.linalg.cholesky(self.Q), np.linalg.cholesky(self.R)
        x = np.empty((T, self.dx))
        x[0] = self.m0 + np.linalg.cholesky(self.P0) @ rng.standard_normal(self.dx)
        for t in range(1, T):
            x[t] = self.A @ x[t - 1] + lq @ rng.standard_normal(self.dx)
        y = x @ self.C.T + rng.standard_normal((T, self.dy)) @ lr.T
        return x, y

    # ---- exact answers -----------------------------------------------------------------------------
    def kalman(self, y):
        """Kalman filter on y [T, dy] (or [T] when dy = 1): dict with log_lik = log p(y[0..T-1]), means [T, dx],
        covs [T, dx, dx] (of x[t] | y[0..t]), pred_means / pred_covs (of x[t] | y[0..t-1]), log_lik_t [T]."""
        y = np.asarray(y, dtype=float).reshape(len(y), self.dy)
        T = len(y)
        means, covs = np.empty((T, self.dx)), np.empty((T, self.dx, self.dx))
        pm, pc = np.empty_like(means), np.empty_like(covs)
        ll = np.empty(T)
        m, P = self.m0, self.P0
        for t in range(T):
            if t > 0:
                m, P = self.A @ m, self.A @ P @ self.A.T + self.Q
            pm[t], pc[t] = m, P
            S = self.C @ P @ self.C.T + self.R
            r = y[t] - self.C @ m
            ll[t] = _gauss_logpdf(r, S)[0]
            K = np.linalg.solve(S, self.C @ P).T                     # P C' S^-1
            m = m + K @ r
            IKC = np.eye(self.dx) - K @ self.C
            P = IKC @ P @ IKC.T + K @ self.R @ K.T                   # Joseph form
            P = 0.5 * (P + P.T)
            means[t], covs[t] = m, P
        return {"log_lik": float(ll.sum()), "log_lik_t": ll, "means": means, "covs": covs,
                "pred_means": pm, "pred_covs": pc}

    def rts(self, y):
        """Rauch–Tung–Striebel smoother: (means [T, dx], covs [T, dx, dx]) of x[t] | y[0..T-1]."""
        kf = self.kalman(y)
        T = len(kf["means"])
        ms, Ps = kf["means"].copy(), kf["covs"].copy()
        for t in range(T - 2, -1, -1):
            G = np.linalg.solve(kf["pred_covs"][t + 1], self.A @ kf["covs"][t]).T   # P_t A' P_{t+1|t}^-1
            ms[t] = kf["means"][t] + G @ (ms[t + 1] - kf["pred_means"][t + 1])
            Ps[t] = kf["covs"][t] + G @ (Ps[t + 1] - kf["pred_covs"][t + 1]) @ G.T
            Ps[t] = 0.5 * (Ps[t] + Ps[t].T)
        return ms, Ps

    def dense(self, T):
        """Mean [T dx + T dy] and covariance of the stacked vector (x[0], ..., x[T-1], y[0], ..., y[T-1])."""
        dx = self.dx
        mx = np.empty((T, dx))
        var = [None] * T
        mx[0], var[0] = self.m0, self.P0
        for t in range(1, T):
            mx[t], var[t] = self.A @ mx[t - 1], self.A @ var[t - 1] @ self.A.T + self.Q
        cxx = np.zeros((T * dx, T * dx))
        for s in range(T):
            for t in range(s, T):                                      # Cov(x_t, x_s) = A^{t-s} Var(x_s)
                block = np.linalg.matrix_power(self.A, t - s) @ var[s]
                cxx[t * dx:(t + 1) * dx, s * dx:(s + 1) * dx] = block
                cxx[s * dx:(s + 1) * dx, t * dx:(t + 1) * dx] = block.T
        Cb = np.kron(np.eye(T), self.C)
        cxy = cxx @ Cb.T
        cyy = Cb @ cxx @ Cb.T + np.kron(np.eye(T), self.R)
        mean = np.concatenate([mx.ravel(), (mx @ self.C.T).ravel()])
        cov = np.block([[cxx, cxy], [cxy.T, cyy]])
        return mean, cov

    # ---- the bootstrap-filter interface ------------------------------------------------------------
    def sample_init(self, rng, n):
        return self.m0 + rng.standard_normal((n, self.dx)) @ np.linalg.cholesky(self.P0).T

    def sample_step(self, rng, t, xp):
        return xp @ self.A.T + rng.standard_normal(xp.shape) @ np.linalg.cholesky(self.Q).T

    def log_trans(self, t, xp, x):
        """log p(x[j] | xp[i]) for xp [n, dx] and x [m, dx] -> [m, n]."""
        r = x[:, None, :] - (xp @ self.A.T)[None]
        return _gauss_logpdf(r.reshape(-1, self.dx), self.Q).reshape(len(x), len(xp))

    def log_obs(self, t, yt, x):
        return _gauss_logpdf(np.reshape(yt, self.dy) - x @ self.C.T, self.R)


def simulate_sv(T, mu, phi, sigma, seed):
    """Stochastic volatility: (x [T], y [T]) from numpy Generator `seed`."""
    rng = np.random.default_rng(seed)
    x = np.empty(T)
    x[0] = mu + sigma / math.sqrt(1 - phi ** 2) * rng.standard_normal()
    for t in range(1, T):
        x[t] = mu + phi * (x[t - 1] - mu) + sigma * rng.standard_normal()
    y = np.exp(x / 2) * rng.standard_normal(T)
    return x, y


class StochasticVolatility:
    """The bootstrap-filter interface of the scalar SV model (states [n, 1])."""

    def __init__(self, mu, phi, sigma):
        self.mu, self.phi, self.sigma, self.dx = mu, phi, sigma, 1

    def sample_init(self, rng, n):
        return self.mu + self.sigma / math.sqrt(1 - self.phi ** 2) * rng.standard_normal((n, 1))

    def sample_step(self, rng, t, xp):
        return self.mu + self.phi * (xp - self.mu) + self.sigma * rng.standard_normal(xp.shape)

    def log_trans(self, t, xp, x):
        r = (x - self.mu - self.phi * (xp[:, 0] - self.mu)) / self.sigma          # [m, n]
        return -0.5 * r ** 2 - math.log(self.sigma) - 0.5 * LOG_2PI

    def log_obs(self, t, yt, x):
        v = np.exp(x[:, 0])
        return -0.5 * yt ** 2 / v - 0.5 * x[:, 0] - 0.5 * LOG_2PI


# ---- a numpy bootstrap particle filter ---------------------------------------------------------------

def systematic(rng, W, n):
    """Systematic resampling: indices of n offspring of normalized weights W."""
    u = (np.arange(n) + rng.uniform()) / n
    return np.minimum(np.searchsorted(np.cumsum(W), u, side="right"), len(W) - 1)


def _logsumexp(a):
    m = np.max(a)
    return m + math.log(np.sum(np.exp(a - m)))


def bootstrap_filter(model, y, n, seed, threshold=0.5, backward=0):
    """Bootstrap PF: resample (systematic) before moving when ESS < threshold · n, as `particles` does.

    Returns log_z, log_z_var_cl (Chan & Lai: Σ_k (weight of eve k's descendants)²), log_z_var_lw (Lee &
    Whiteley: 1 − (n/(n−1))^{R} (1 − that), R = resampling events + 1), ess [T] (after weighting), filter_mean
    [T, dx], filter_var [T, dx], and with backward = M > 0, M backward-simulation (FFBS) trajectories
    `paths` [M, T, dx] (equally weighted).
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=float)
    T = len(y)
    x = model.sample_init(rng, n)
    log_w = np.full(n, -math.log(n))            # normalized log weights carried between steps
    eve = np.arange(n)
    log_z, events = 0.0, 1
    ess, fm, fv = np.empty(T), np.empty((T, model.dx)), np.empty((T, model.dx))
    xs, lws = [], []
    for t in range(T):
        if t > 0:
            if 1.0 / np.sum(np.exp(2 * log_w)) < threshold * n:
                a = systematic(rng, np.exp(log_w), n)
                x, eve, log_w = x[a], eve[a], np.full(n, -math.log(n))
                events += 1
            x = model.sample_step(rng, t, x)
        lw = log_w + model.log_obs(t, y[t], x)
        inc = _logsumexp(lw)
        log_z += inc
        log_w = lw - inc
        W = np.exp(log_w)
        ess[t] = 1.0 / np.sum(W ** 2)
        fm[t] = W @ x
        fv[t] = W @ (x - fm[t]) ** 2
        if backward:
            xs.append(x.copy())
            lws.append(log_w.copy())
    s = np.sum(np.bincount(eve, weights=np.exp(log_w), minlength=n) ** 2)
    out = {"log_z": log_z, "log_z_var_cl": s, "log_z_var_lw": 1 - (n / (n - 1)) ** events * (1 - s),
           "ess": ess, "filter_mean": fm, "filter_var": fv, "resampling_events": events - 1}
    if backward:
        m = backward
        paths = np.empty((m, T, model.dx))
        idx = rng.choice(n, size=m, p=np.exp(lws[-1]))
        paths[:, -1] = xs[-1][idx]
        for t in range(T - 2, -1, -1):
            lw = lws[t] + model.log_trans(t + 1, xs[t], paths[:, t + 1])             # [m, n]
            cdf = np.cumsum(np.exp(lw - lw.max(1, keepdims=True)), axis=1)
            u = rng.uniform(size=(m, 1)) * cdf[:, -1:]
            paths[:, t] = xs[t][np.minimum(np.sum(cdf < u, axis=1), n - 1)]
        out["paths"] = paths
    return out


# ---- the statistics the particle-filter tests compare --------------------------------------------------

def filter_mean_z(filter_mean, exact_mean, exact_var, ess):
    """|PF filtering mean − exact| / sqrt(exact variance / ESS_t), per t and component: [T, dx]."""
    fm = np.asarray(filter_mean, dtype=float).reshape(np.shape(exact_mean))
    return np.abs(fm - exact_mean) / np.sqrt(exact_var / np.asarray(ess, dtype=float)[:, None])


def smoothed_mean_z(paths, weights, exact_mean, exact_var):
    """|weighted mean of trajectories − RTS mean| / sqrt(RTS variance / Kish ESS of the weights): [T, dx]."""
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    p = np.asarray(paths, dtype=float).reshape((len(w),) + np.shape(exact_mean))
    ess = 1.0 / np.sum(w ** 2)
    return np.abs(np.tensordot(w, p, 1) - exact_mean) / np.sqrt(exact_var / ess)


def log_z_coverage(log_z, log_z_se, exact, k=2.0):
    """Fraction of runs with |log Z − exact| < k · se."""
    log_z, log_z_se = np.asarray(log_z, dtype=float), np.asarray(log_z_se, dtype=float)
    return float(np.mean(np.abs(log_z - exact) < k * log_z_se))
