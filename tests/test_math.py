"""ppl.math on the arrays of both runtimes."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import ppl


@pytest.mark.parametrize("asarray", [jnp.asarray, torch.as_tensor], ids=["jax", "torch"])
def test_cholesky_is_nan_where_not_positive_definite(asarray):
    """A proposal outside the domain gives NaN (then a −inf density, a rejection), not an exception that stops
    the batch (torch.linalg.cholesky raised on one of 10⁴ particles in gp_pois_regr)."""
    good = np.array([[4.0, 2.0], [2.0, 3.0]])
    batch = asarray(np.stack([good, -np.eye(2), np.full((2, 2), np.nan)]))
    factor = np.asarray(ppl.math.cholesky(batch))
    np.testing.assert_allclose(factor[0], np.linalg.cholesky(good), rtol=1e-6)
    assert np.isnan(factor[1:]).any(axis=(-2, -1)).all()
