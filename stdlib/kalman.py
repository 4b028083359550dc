"""A linear-Gaussian state space, its state integrated out: the Kalman filter as the distribution of y.

With x_0 ~ N(m_0, P_0), x_t | x_{t−1} ~ N(A_t x_{t−1} + b_t, Q_t), y_t | x_t ~ N(C_t x_t + c_t, R_t)
(t = 0..T−1), the observations alone have the density

    log p(y_{0:T−1}) = Σ_t log N(y_t; C_t m_{t|t−1} + c_t, S_t),   S_t = C_t P_{t|t−1} C_tᵀ + R_t

with the filter's predictions (m_{t|t−1}, P_{t|t−1}) = (A_t m_{t−1} + b_t, A_t P_{t−1} A_tᵀ + Q_t) and updates
K_t = P_{t|t−1} C_tᵀ S_t⁻¹, m_t = m_{t|t−1} + K_t v_t, P_t = (I − K_t C_t) P_{t|t−1}. The RTS smoother
(J_t = P_t A_{t+1}ᵀ P_{t+1|t}⁻¹) gives the moments of x_t | y_{0:T−1}, and backward sampling (FFBS:
x_{T−1} ~ N(m_{T−1}, P_{T−1}), x_t | x_{t+1} ~ N(m_t + J_t (x_{t+1} − m_{t+1|t}), P_t − J_t P_{t+1|t} J_tᵀ))
draws of the whole path. `compiler/linear_gaussian.py` finds this structure in a model as written and puts
`StateSpaceMarginal` where the state and its observation were; A_t, b_t, Q_t, C_t, c_t, R_t are read off the
model's own laws (the means evaluated at 0 and at the unit vectors, which is exact for affine means).
Everything here is for one particle (one value of the static parameters) on the runtime's arrays; a run
vmaps it.
"""
import math

import numpy as np

from .distributions import Distribution

LOG_2PI = math.log(2 * math.pi)


def law_shape(d):
    """The shape of one draw of a Normal (its parameters broadcast with its `shape`) or of an unbatched
    MultivariateNormal."""
    if d.family == "MultivariateNormal":
        return (int(np.shape(d.params["loc"])[-1]),)
    return tuple(np.broadcast_shapes(np.shape(d.params["loc"]), np.shape(d.params["scale"]), tuple(d.shape or ())))


def gaussian_moments(rt, d, size):
    """(mean [k], covariance [k, k]) of a Normal or MultivariateNormal `Distribution` d, flattened to
    k = `size` elements."""
    xp = rt.xp
    if d.family == "MultivariateNormal":
        loc = xp.broadcast_to(rt.asarray(d.params["loc"]), (size,))
        if "covariance_matrix" in d.params:
            return loc, rt.asarray(d.params["covariance_matrix"])
        tril = rt.asarray(d.params["scale_tril"])
        return loc, tril @ tril.T
    shape = law_shape(d)
    loc, scale = (xp.broadcast_to(rt.asarray(d.params[n]), shape).reshape(size) for n in ("loc", "scale"))
    return loc, xp.diag(scale * scale)


def affine(rt, law, shape):
    """(M [j, k], m [j], S [j, j]) of a Gaussian law x ↦ N(M x + m, S) of x with `shape` (k its size), from its
    mean at x = 0 and at the unit vectors (exact where the mean is affine in x, which
    `compiler/linear_gaussian.py` checks) and its covariance at x = 0."""
    xp = rt.xp
    k = math.prod(shape)
    probes = xp.concatenate([xp.zeros((1, k)), xp.diag(xp.ones((k,)))]).reshape((k + 1,) + tuple(shape))
    first = law(probes[0])
    size = math.prod(law_shape(first))
    means = rt.vmap(lambda p: gaussian_moments(rt, law(p), size)[0])(probes)
    m, cov = gaussian_moments(rt, first, size)
    return (means[1:] - means[:1]).T, means[0], cov


def kalman_predict(m, P, A, b, Q):
    """(m_{t|t−1}, P_{t|t−1}) = (A m + b, A P Aᵀ + Q)."""
    return A @ m + b, A @ P @ A.T + Q


def kalman_update(xp, m, P, C, c, R, y):
    """(log N(y; C m + c, S), m + K v, P − K S Kᵀ) with S = C P Cᵀ + R, v = y − C m − c, K = P Cᵀ S⁻¹."""
    S = C @ P @ C.T + R
    S = 0.5 * (S + S.T)
    L = xp.cholesky(S)
    v = y - C @ m - c
    ll = -0.5 * xp.sum(v * xp.solve(S, v)) - xp.sum(xp.log(xp.diag(L))) - 0.5 * y.shape[-1] * LOG_2PI
    K = xp.solve(S, C @ P).T                    # P Cᵀ S⁻¹ (S, P symmetric)
    return ll, m + K @ v, P - K @ S @ K.T


class LinearGaussian:
    """The parameters of one linear-Gaussian state space for one particle, stacked over time:
    m0 [k], P0 [k, k]; A [T−1, k, k], b [T−1, k], Q [T−1, k, k]; C [T, j, k], c [T, j], R [T, j, j]."""

    def __init__(self, rt, m0, P0, A, b, Q, C, c, R):
        self.rt, self.m0, self.P0, self.A, self.b, self.Q, self.C, self.c, self.R = rt, m0, P0, A, b, Q, C, c, R

    def filter(self, y):
        """Kalman filter on y [T, j]: (log p(y) per time [T], predicted means [T, k] and covariances, filtered
        means [T, k] and covariances [T, k, k])."""
        rt, xp = self.rt, self.rt.xp

        def update(m, P, C, c, R, yt):
            return kalman_update(xp, m, P, C, c, R, yt)

        ll0, m, P = update(self.m0, self.P0, self.C[0], self.c[0], self.R[0], y[0])
        first = (ll0, self.m0, self.P0, m, P)
        if y.shape[0] == 1:
            return tuple(a[None] for a in first)

        def step(carry, s):
            m, P = carry
            mp, Pp = kalman_predict(m, P, s["A"], s["b"], s["Q"])
            ll, m, P = update(mp, Pp, s["C"], s["c"], s["R"], s["y"])
            return (m, P), (ll, mp, Pp, m, P)
        _, rest = rt.scan(step, (m, P), {"A": self.A, "b": self.b, "Q": self.Q, "C": self.C[1:], "c": self.c[1:],
                                         "R": self.R[1:], "y": y[1:]})
        return tuple(xp.concatenate([a[None], r]) for a, r in zip(first, rest))

    def _gain(self, P, A, Pp):
        """J = P Aᵀ Pp⁻¹ (Pp symmetric)."""
        return self.rt.xp.solve(Pp, A @ P).T

    def smooth(self, y):
        """RTS smoother: means [T, k] and covariances [T, k, k] of x_t | y_{0:T−1}."""
        rt, xp = self.rt, self.rt.xp
        _, mp, Pp, mf, Pf = self.filter(y)
        if y.shape[0] == 1:
            return mf, Pf

        def back(carry, s):
            ms, Ps = carry
            J = self._gain(s["P"], s["A"], s["Pp"])
            ms = s["m"] + J @ (ms - s["mp"])
            Ps = s["P"] + J @ (Ps - s["Pp"]) @ J.T
            return (ms, Ps), (ms, Ps)
        rev = {"m": mf[:-1], "P": Pf[:-1], "A": self.A, "mp": mp[1:], "Pp": Pp[1:]}
        rev = {k: xp.flip(v, 0) for k, v in rev.items()}
        _, (ms, Ps) = rt.scan(back, (mf[-1], Pf[-1]), rev)
        return (xp.concatenate([xp.flip(ms, 0), mf[-1:]]), xp.concatenate([xp.flip(Ps, 0), Pf[-1:]]))

    def draw(self, y, eps):
        """A path [T, k] from p(x | y) by forward filtering, backward sampling, given standard normals eps [T, k]."""
        rt, xp = self.rt, self.rt.xp
        _, mp, Pp, mf, Pf = self.filter(y)
        k = mf.shape[-1]
        jitter = 1e-10 * xp.diag(xp.ones((k,)))

        def gauss(m, P, e):
            return m + xp.cholesky(0.5 * (P + P.T) + jitter) @ e
        last = gauss(mf[-1], Pf[-1], eps[-1])
        if y.shape[0] == 1:
            return last[None]

        def back(x1, s):
            J = self._gain(s["P"], s["A"], s["Pp"])
            x = gauss(s["m"] + J @ (x1 - s["mp"]), s["P"] - J @ s["Pp"] @ J.T, s["e"])
            return x, x
        rev = {"m": mf[:-1], "P": Pf[:-1], "A": self.A, "mp": mp[1:], "Pp": Pp[1:], "e": eps[:-1]}
        _, xs = rt.scan(back, last, {k: xp.flip(v, 0) for k, v in rev.items()})
        return xp.concatenate([xp.flip(xs, 0), last[None]])


class StateSpaceMarginal(Distribution):
    """The distribution of the observations y [T, *Y] of a linear-Gaussian state path, the path integrated out.

    `chain` is the path's `MarkovChain` (its init and step laws, with what they read), `observe(env_t, x_t)`
    the observation's law at time t given the state, `timed` the names in `env` with a leading time axis
    (sliced at t for the observation), `y_shape` the shape of one observation."""

    def __init__(self, chain, observe, env, timed, y_shape, site):
        super().__init__("StateSpaceMarginal", {})
        self.chain, self.observe, self.env, self.timed = chain, observe, env, tuple(timed)
        self.y_shape, self.site = tuple(y_shape), site

    def lower(self, rt, params=None):
        return LoweredStateSpace(self, rt)

    def __repr__(self):
        return f"StateSpaceMarginal({self.site}, T={self.chain.length})"


class LoweredStateSpace:
    """`StateSpaceMarginal` on runtime `rt`, for one particle: log_prob(y) by the Kalman filter."""

    def __init__(self, spec, rt):
        self.spec, self.rt = spec, rt
        self.batch_shape, self.event_shape = (), (spec.chain.length,) + spec.y_shape
        self.support = rt.constraint("real")

    def transition(self, t):
        """(A_t, b_t, Q_t) of the step to x_t."""
        chain = self.spec.chain
        return affine(self.rt, lambda p: chain.step_dist(p, t, chain.params), self.state_shape())

    def observation(self, t):
        """(C_t, c_t, R_t) of y_t given x_t (data with a time axis sliced at t)."""
        spec = self.spec
        env = {n: (spec.env[n][t] if n in spec.timed else spec.env[n]) for n in spec.env}
        return affine(self.rt, lambda x: spec.observe(env, x), self.state_shape())

    def model(self):
        """The `LinearGaussian` parameters, read off the laws at this particle's values."""
        rt, xp, spec = self.rt, self.rt.xp, self.spec
        chain, length = spec.chain, spec.chain.length
        init = chain.init_dist(chain.params)
        shape = law_shape(init)
        k = math.prod(shape)
        m0, P0 = gaussian_moments(rt, init, k)
        ts = rt.asindex(np.arange(length))
        if length > 1 and chain.spec.reads_t:
            A, b, Q = rt.vmap(self.transition)(ts[1:])
        elif length > 1:
            A, b, Q = (xp.broadcast_to(a, (length - 1,) + tuple(a.shape)) for a in self.transition(ts[1]))
        else:
            A, b, Q = xp.zeros((0, k, k)), xp.zeros((0, k)), xp.zeros((0, k, k))
        if spec.timed:
            C, c, R = rt.vmap(self.observation)(ts)
        else:
            C, c, R = (xp.broadcast_to(a, (length,) + tuple(a.shape)) for a in self.observation(ts[0]))
        return LinearGaussian(rt, m0, P0, A, b, Q, C, c, R), shape

    def state_shape(self):
        chain = self.spec.chain
        return law_shape(chain.init_dist(chain.params))

    def log_prob(self, y):
        if self.rt.traces_shapes:
            return np.zeros(())
        lg, _ = self.model()
        return lg.filter(y.reshape(y.shape[0], -1))[0].sum()

    def moments(self, y):
        """(log p(y_t | y_{0:t−1}) [T], filtered means [T, k] and covariances, smoothed means and covariances)."""
        lg, _ = self.model()
        y = y.reshape(y.shape[0], -1)
        log_c, _, _, mf, Pf = lg.filter(y)
        ms, Ps = lg.smooth(y)
        return log_c, mf, Pf, ms, Ps

    def noise(self, y):
        """What one draw of the path needs: standard normals [T, k]."""
        return "normal", (self.spec.chain.length, math.prod(self.state_shape()))

    def draw(self, y, eps):
        """{state site: a path [T, *E] from p(x | y)} by forward filtering, backward sampling."""
        lg, shape = self.model()
        path = lg.draw(y.reshape(y.shape[0], -1), eps)
        return {self.spec.chain.site: path.reshape((path.shape[0],) + tuple(shape))}
