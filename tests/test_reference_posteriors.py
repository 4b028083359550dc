"""NUTS and SMC against posteriordb reference draws (../shared/reference/posteriordb).

Criterion for every reported parameter: |mean − ref mean| < 4 sqrt(MCSE² + ref MCSE²) and the sd
within 10% of the reference sd; a failure names the worst parameter. Our MCSE is ArviZ's for NUTS
and sd / sqrt(ESS) for SMC. Fast variants (eight schools) run in CI; the full set is marked slow.
"""
import warnings

import pytest

import ppl
from ppl.backends import get_method
from ppl.backends.hmc import ConvergenceWarning

import posteriors

NUTS = {"numpyro": dict(num_warmup=1000, num_samples=1000, chains=4),
        "pyro": dict(num_warmup=500, num_samples=1000, chains=2)}
NUTS_CONTROL = {"gp_pois_regr": dict(target_accept=0.95), "eight_schools_noncentered": dict(target_accept=0.9)}
SMC = dict(particles=4000, kernel="hmc")


def has_method(name):
    try:
        get_method(name)
    except ppl.UnknownNameError:
        return False
    return True


def check(name, reference, method, runtime, **options):
    posterior, ref = posteriors.load(name, reference)
    if method == "smc" and not has_method("smc"):
        pytest.skip("the smc backend is not available (get_method('smc') raised UnknownNameError)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = ppl.sample(posterior.target, method=method, runtime=runtime, reference=posterior.reference, seed=11,
                       **options)
    if method == "nuts":
        assert r.diagnostics["r_hat_max"] < 1.01, r.diagnostics["r_hat"]
    ok, rows, worst = posteriors.agreement(r, ref)
    print(f"{name} ({method}, {runtime}): {worst}")  # shown with pytest -rP
    assert ok, f"{name} ({method}, {runtime}) disagrees with posteriordb: {worst}"


def test_eight_schools_nuts_fast(reference):
    check("eight_schools_noncentered", reference, "nuts", "numpyro", **NUTS["numpyro"],
          **NUTS_CONTROL["eight_schools_noncentered"])


def test_eight_schools_smc_fast(reference):
    check("eight_schools_noncentered", reference, "smc", "numpyro", **SMC)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(posteriors.BUILDERS))
def test_nuts_full(reference, name, runtime):
    check(name, reference, "nuts", runtime, **NUTS[runtime], **NUTS_CONTROL.get(name, {}))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(posteriors.BUILDERS))
def test_smc_full(reference, name, runtime):
    check(name, reference, "smc", runtime, **dict(SMC, particles=10_000))
