import os
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)

RUNTIMES = ["numpyro", "pyro"]


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


def reference_dir():
    """../shared/reference from the repository root (or $PPL_REFERENCE)."""
    path = Path(os.environ.get("PPL_REFERENCE", Path(__file__).resolve().parents[1] / ".." / "shared" / "reference"))
    return path.resolve()


@pytest.fixture
def reference():
    path = reference_dir()
    if not path.is_dir():
        pytest.skip(f"reference answers not found at {path} (set PPL_REFERENCE)")
    return path
