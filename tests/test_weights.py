"""ppl.weights.Weights: normalized weights, Kish ESS, log-mean-exp and its se, and pooled runs, against the formulas
computed directly; and `Result.to_arviz`'s resampling through the registered systematic resampler."""
import numpy as np
import pytest

import ppl
from ppl.weights import Weights

with np.errstate(divide="ignore"):     # a chain axis, N = 4, one vanished particle
    LW = np.log(np.array([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.0, 1.0]]))
#: log w + 700 is exact to ulp(700) ≈ 1.1e-13: the relative error that leaves in exp(log w)
RTOL = 5e-13


def test_normalized_ess_log_mean_and_se_by_the_formulas():
    w = np.exp(LW)
    weights = Weights(LW + 700.0)       # a shift that overflows exp: every estimate but log Ẑ is invariant to it
    big_w = w / w.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights.normalized(), big_w, rtol=RTOL)
    np.testing.assert_allclose(weights.ess(), w.sum(-1) ** 2 / (w * w).sum(-1), rtol=RTOL)
    np.testing.assert_allclose(weights.log_mean(), 700.0 + np.log(w.mean(-1)), rtol=RTOL)
    s2 = (big_w * big_w).sum(-1)
    np.testing.assert_allclose(weights.log_mean_se(), np.sqrt(s2 - 1 / 4), rtol=RTOL)
    np.testing.assert_allclose(weights.log_mean_se(conservative=True), np.sqrt(s2), rtol=RTOL)
    equal = Weights(np.zeros(5))        # se = sqrt(Σ W² − 1/N) = 0 up to the square root of rounding (~1e-8)
    assert equal.log_mean_se() == pytest.approx(0.0, abs=3e-8) and equal.ess() == pytest.approx(5.0)


def test_vanished_rows_and_normalized_input():
    with np.errstate(divide="ignore", invalid="ignore"):
        assert Weights(np.full(3, -np.inf)).log_mean() == -np.inf
        assert np.isnan(Weights(np.full(3, -np.inf)).normalized()).all()
    w = np.array([0.25, 0.0, 0.75])
    np.testing.assert_allclose(Weights.from_normalized(w).normalized(), w, rtol=1e-15)
    assert Weights.from_normalized(w).ess() == pytest.approx(1.6)


def test_pooled_runs_weigh_equally():
    w = np.exp(LW)
    pooled = Weights(LW + np.array([[0.0], [50.0]])).pooled()     # a run's scale does not change its share
    expected = (w / w.sum(-1, keepdims=True) / 2).reshape(-1)
    np.testing.assert_allclose(pooled.normalized(), expected, rtol=RTOL)
    assert pooled.n == 8


@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
def test_to_arviz_resamples_with_the_registered_systematic_resampler(runtime):
    """Systematic resampling gives particle i floor(N W_i) or ceil(N W_i) offspring; a particle of weight 0
    none."""
    n = 1000
    lw = np.log(np.stack([np.r_[0.2, 0.3, 0.5, np.zeros(n - 3)] + 1e-300, np.full(n, 1.0 / n)]))
    r = ppl.Result({"i": np.tile(np.arange(n), (2, 1))}, lw, runtime=runtime)
    r.seed = 3
    drawn = r.to_arviz().posterior["i"].values
    counts = np.stack([np.bincount(d, minlength=n) for d in drawn])
    np.testing.assert_array_equal(counts[0, :3], [200, 300, 500])
    assert counts[0, 3:].sum() == 0
    np.testing.assert_array_equal(counts[1], np.ones(n))
