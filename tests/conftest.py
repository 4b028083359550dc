import warnings

import pytest

from ppl.errors import PPLError
from ppl.stdlib.targets import reference_dir

warnings.filterwarnings("ignore", category=FutureWarning)

RUNTIMES = ["numpyro", "pyro"]


@pytest.fixture(params=RUNTIMES)
def runtime(request):
    return request.param


@pytest.fixture
def reference():
    """The shared reference folder, or a skip saying where it was looked for."""
    try:
        return reference_dir()
    except PPLError as e:
        pytest.skip(str(e))
