import os
import warnings

import pytest

from ppl.errors import PPLError
from ppl.stdlib.targets import reference_dir

warnings.filterwarnings("ignore", category=FutureWarning)

RUNTIMES = ["numpyro", "pyro"]

if os.environ.get("PYTEST_XDIST_WORKER"):   # one worker per core: the CLI runs in subprocesses get one thread too
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """torch's intra-op thread pool contends with JAX's in one process on small machines (steps of small
    batched ops 4-30x slower on 2 cores), and the suite runs both runtimes in one process."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
