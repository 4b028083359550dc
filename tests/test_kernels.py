"""MCMC kernels (`backends/kernels`) on a density alone: each leaves N(m, s²I) invariant, with and without a
preconditioner, and carries its density's aux with the particles.

From N exact draws every particle stays an exact draw after the steps, independently of the others, so the
sample mean has se s/√N and the sample variance sd s²√(2/N): 5 of them.
"""
import numpy as np
import pytest

from ppl.backends import get_runtime
from ppl.backends.kernels import at, get_kernel

N, D, M, S = 4000, 3, np.array([1.0, -2.0, 0.5]), 0.7


def gaussian(rt):
    """z -> (log N(z; m, s²I), its gradient, aux = (z₀ + z₁,)) batched over particles."""
    xp, m = rt.xp, rt.asarray(M)

    def logdensity(z):
        r = (z - m) / S
        return -0.5 * xp.sum(r * r, axis=-1), -r / S, (z[:, 0] + z[:, 1],)
    return logdensity


@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
@pytest.mark.parametrize("name", ["hmc", "mala", "rwm"])
def test_kernel_leaves_the_density_invariant(runtime, name):
    rt = get_runtime(runtime)
    kernel, logdensity = get_kernel(name), gaussian(rt)
    key = rt.key(0)
    k0, key = rt.split(key, 2)
    state = at(logdensity, rt.asarray(M) + S * rt.normal(k0, (N, D)))
    chols = [None, rt.asarray(S * np.array([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, -0.3, 0.8]]))]
    accepted = []
    for i in range(6):
        key, sub = rt.split(key, 2)
        state, ok = kernel.step(rt, sub, state, logdensity, kernel.initial_step(D), chols[i % 2],
                                **kernel.defaults)
        accepted.append(float(np.mean(rt.to_numpy(ok))))
    z = rt.to_numpy(state.z).astype(np.float64)
    assert np.all(np.abs(z.mean(0) - M) < 5 * S / np.sqrt(N)), z.mean(0)
    assert np.all(np.abs(z.var(0) - S * S) < 5 * S * S * np.sqrt(2 / N)), z.var(0)
    assert 0.05 < np.mean(accepted) < 1.0, accepted
    log_p, _, (aux,) = logdensity(rt.asarray(z))   # the state's log p and aux are those of its position
    np.testing.assert_allclose(rt.to_numpy(state.log_p), rt.to_numpy(log_p), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rt.to_numpy(state.aux[0]), rt.to_numpy(aux), rtol=1e-5, atol=1e-5)
