"""Flow proposals (`backends/flows.py`): fitted to importance-weighted draws of a banana, a flow is a far better
IS proposal than the Gaussian of the same draws; its density integrates to one and agrees with its sampler;
shapes, dtypes, warm starts, fallbacks, and `reference=` of method 'is'."""
import functools

import numpy as np
import pytest

import ppl
from ppl.backends import get_runtime
from ppl.backends.flows import Flow
from ppl.backends.proposals import Gaussian, StudentT, layout_of
from ppl.errors import PPLError, ValueRangeError

K = 4.5            # standard errors allowed
B, S0 = 0.1, 4.0   # the banana: x0 ~ N(0, S0²), x1 | x0 ~ N(B (x0² − S0²), 1)
N = 10_000


def log_banana(z):
    x0, x1 = z[:, 0], z[:, 1]
    return -0.5 * (x0 / S0) ** 2 - np.log(S0) - 0.5 * (x1 - B * (x0 ** 2 - S0 ** 2)) ** 2 - np.log(2 * np.pi)


def banana_draws(rng, n):
    x0 = S0 * rng.standard_normal(n)
    return np.stack([x0, B * (x0 ** 2 - S0 ** 2) + rng.standard_normal(n)], axis=1)


@functools.cache
def weighted_draws():
    """N draws of N([0, 1], diag(8², 5²)), weighted towards the banana (ESS ≈ 1,650)."""
    rng = np.random.default_rng(0)
    m, sd = np.array([0.0, 1.0]), np.array([8.0, 5.0])
    z = m + sd * rng.standard_normal((N, 2))
    lw = log_banana(z) - (-0.5 * ((z - m) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)).sum(1)
    w = np.exp(lw - lw.max())
    return z, w / w.sum()


@functools.cache
def fitted(runtime):
    z, w = weighted_draws()
    return Flow.start(get_runtime(runtime), z, w, seed=1)


def as_np(rt, x):
    return np.asarray(rt.to_numpy(x), dtype=np.float64)


def is_ess(rt, q, seed, n=N):
    """ESS / n of importance sampling the banana from q."""
    x = q.sample(rt, rt.key(seed), n)
    lw = log_banana(as_np(rt, x)) - as_np(rt, q.log_prob(rt, x))
    w = np.exp(lw - lw.max())
    return w.sum() ** 2 / (w * w).sum() / n


def test_flow_beats_the_gaussian_on_a_banana(runtime):
    rt = get_runtime(runtime)
    flow = fitted(runtime)
    z, w = weighted_draws()
    gauss = flow.gaussian
    assert np.allclose(gauss.mean, Gaussian.fit(z, w).mean) and np.allclose(gauss.cov, Gaussian.fit(z, w).cov)
    info = flow.info
    assert info["best_step"] is not None and info["holdout_nll"] < info["gaussian_holdout_nll"] - 0.5, info
    ess_flow, ess_gauss = is_ess(rt, flow, 5), is_ess(rt, gauss, 5)
    assert ess_flow > 0.8 and ess_flow > 2 * ess_gauss, (ess_flow, ess_gauss)
    exact = banana_draws(np.random.default_rng(1), N)                  # KL(π‖q) on exact draws of π
    kl = {name: float(np.mean(log_banana(exact) - as_np(rt, q.log_prob(rt, rt.asarray(exact)))))
          for name, q in (("flow", flow), ("gaussian", gauss))}
    assert kl["flow"] < 0.1 and kl["gaussian"] > 0.5, kl


def test_density_integrates_to_one_and_matches_the_sampler(runtime):
    """∫ q = 1 and E_q[x] by importance sampling q from a wide Student-t, against the flow's own draws."""
    rt = get_runtime(runtime)
    flow = fitted(runtime)
    wide = StudentT(flow.gaussian.mean, 4 * flow.gaussian.cov, df=3.0)
    n = 50_000
    x = wide.sample(rt, rt.key(2), n)
    ratio = np.exp(as_np(rt, flow.log_prob(rt, x)) - as_np(rt, wide.log_prob(rt, x)))
    total, se = ratio.mean(), ratio.std() / np.sqrt(n)
    assert se < 0.03 and abs(total - 1) < K * se, (total, se)
    own = as_np(rt, flow.sample(rt, rt.key(3), n))
    xs = as_np(rt, x)
    for j in range(2):
        is_mean = (ratio * xs[:, j]).mean() / total
        is_se = np.std(ratio * (xs[:, j] - is_mean)) / np.sqrt(n) / total
        own_se = own[:, j].std() / np.sqrt(n)
        assert abs(is_mean - own[:, j].mean()) < K * np.hypot(is_se, own_se), (j, is_mean, own[:, j].mean())


def test_shapes_dtypes_and_immutable_warm_starts(runtime):
    rt = get_runtime(runtime)
    flow = fitted(runtime)
    x = flow.sample(rt, rt.key(0), 7)
    lp = flow.log_prob(rt, x)
    kind = type(rt.asarray(np.zeros(1)))
    assert isinstance(x, kind) and isinstance(lp, kind)
    assert tuple(x.shape) == (7, 2) and tuple(lp.shape) == (7,)
    assert x.dtype == rt.dtype and lp.dtype == rt.dtype and np.all(np.isfinite(as_np(rt, lp)))
    assert flow.family == "flow" and flow.dim == 2 and repr(flow).startswith("flow(dim=2")
    probe = rt.asarray(banana_draws(np.random.default_rng(4), 500))
    before = as_np(rt, flow.log_prob(rt, probe))
    z, w = weighted_draws()
    again = flow.fit(z, w, steps=30)                     # warm: from this flow's parameters
    assert isinstance(again, Flow) and again.spec == flow.spec and again.rt is flow.rt
    assert again.generation == flow.generation + 1 and again.info["steps"] == 30
    assert again.info["holdout_nll"] <= again.info["gaussian_holdout_nll"]
    assert np.array_equal(as_np(rt, flow.log_prob(rt, probe)), before)      # the previous flow is unchanged
    assert again.info["best_step"] is not None                               # the start, or an iterate
    bound = flow.bound((("x0", (), "Real"), ("x1", (), "Real")))
    assert np.array_equal(as_np(rt, bound.log_prob(rt, probe)), before)


def test_importance_sampling_from_a_flow_reference(runtime):
    target = ppl.model(x0=ppl.Normal(0.0, S0), x1=lambda x0: ppl.Normal(B * (x0 ** 2 - S0 ** 2), 1.0))
    flow = fitted(runtime).bound(layout_of(ppl.compile(target).layout))
    n = 20_000
    r = ppl.sample(target, method="is", runtime=runtime, particles=n, seed=4, reference=flow)
    assert r.proposal is flow and r.ess > 0.8 * n, r.ess
    assert abs(r.log_z) < K * r.log_z_se, (r.log_z, r.log_z_se)                 # the banana is normalized
    assert abs(r.mean("x0")) < K * S0 / np.sqrt(r.ess)
    assert abs(r.mean("x1")) < K * np.sqrt(1 + 2 * B ** 2 * S0 ** 4) / np.sqrt(r.ess)


def test_the_gaussian_where_a_flow_cannot_help(runtime):
    """D = 1, steps = 0 and too few effective draws give the Gaussian of the draws exactly."""
    rt = get_runtime(runtime)
    rng = np.random.default_rng(5)
    z1 = rng.gamma(2.0, size=(400, 1))
    cases = [(z1, np.ones(400), {}), (*weighted_draws(), {"steps": 0}),
             (weighted_draws()[0], np.exp(-0.5 * ((weighted_draws()[0][:, 0] - 3) / 0.02) ** 2) + 1e-300, {})]
    for z, w, options in cases:
        flow = Flow.start(rt, z, w, **options)
        gauss = Gaussian.fit(z, w)
        assert flow.info["best_step"] is None and flow.info["steps"] == 0
        probe = rt.asarray(z[:50])
        assert np.allclose(as_np(rt, flow.log_prob(rt, probe)), as_np(rt, gauss.log_prob(rt, probe)), atol=1e-4)


def test_bad_input_and_other_runtimes():
    rt = get_runtime("numpyro")
    z, w = weighted_draws()
    with pytest.raises(PPLError, match="non-negative weights"):
        Flow.start(rt, z, -w)
    with pytest.raises(PPLError, match="finite draws"):
        Flow.start(rt, np.full((5, 2), np.nan), np.ones(5))
    with pytest.raises(ValueRangeError, match="lr"):
        Flow.start(rt, z, w, lr=0.0)
    with pytest.raises(ValueRangeError, match="holdout"):
        Flow.start(rt, z, w, holdout=1.0)
    flow = Flow.start(rt, z, w, steps=0)
    other = get_runtime("pyro")
    with pytest.raises(PPLError, match="fitted on numpyro"):
        flow.sample(other, other.key(0), 3)
