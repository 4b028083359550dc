"""Calibration of SMC's single-run log Z and its standard error over seeds (issue 14): the fraction of seeds
with |log Ẑ − log Z| < 2 se and the spread of log Ẑ, against exact log Z values (../shared/reference)."""
import numpy as np
import pytest

import ppl
from ppl.stdlib import targets as T


def _arK():
    path, data = T.example_paths("arK")
    return T.Known("arK", ppl.load_ppl(str(path), data=str(data)).targets["posterior"], 58.587594)


TARGETS = {"eight_schools": T.eight_schools, "arK": _arK, "sblrc_blr": T.sblrc_blr,
           "german_credit": T.german_credit, "gaussian_mixture": T.gaussian_mixture}


def _errors(name, seeds, particles, runtime="numpyro"):
    """(log Ẑ − log Z, se) over `seeds`, compiled once (so the jitted step is reused)."""
    try:
        known = TARGETS[name]()
    except ppl.PPLError as e:
        pytest.skip(f"shared reference data absent: {e}")
    compiled = ppl.compile(known.target)
    runs = [ppl.sample(compiled, method="smc", particles=particles, seed=s, runtime=runtime) for s in seeds]
    return np.array([r.log_z - known.log_z for r in runs]), np.array([r.log_z_se for r in runs])


def test_eight_schools_log_z_is_calibrated():
    """Fast version: 16 seeds at 1000 particles. With 2-se coverage 0.95 the chance of fewer than 12 of 16 is
    0.007. Measured (target_ess 0.7): 16 of 16 covered, sd(log Ẑ) 0.022, mean error −0.010, mean se 0.048."""
    err, se = _errors("eight_schools", range(16), 1000)
    assert np.sum(np.abs(err) < 2 * se) >= 12, (err, se)
    assert err.std(ddof=1) < 0.1 and abs(err.mean()) < 3 * err.std(ddof=1) / 4, (err, se)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_log_z_is_calibrated_over_50_seeds(name):
    """The issue's goal: at 4000 particles, ≥ 90% of 50 seeds within 2 reported se, and sd(log Ẑ) ≤ 0.1."""
    err, se = _errors(name, range(50), 4000)
    assert np.mean(np.abs(err) < 2 * se) >= 0.9, (err.mean(), err.std(ddof=1), se.mean())
    assert err.std(ddof=1) <= 0.1, (err.mean(), err.std(ddof=1), se.mean())
