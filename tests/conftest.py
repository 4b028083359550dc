import atexit
import os
import shutil
import tempfile
import warnings

# JAX's persistent compilation cache, one per test session, before anything imports JAX: the xdist workers and
# the CLI's subprocesses inherit it through the environment. Every `ppl.sample` of a model or diffusion target
# builds its jitted functions afresh, so the suite compiles many identical XLA programs (tests/test_fkc.py on
# numpyro: 77 compiles of the sweep, 84 of its 111 s); each is now compiled once and read back after (65 s).
# Programs that compile in under 0.1 s are not kept. A size bound turns on the cache's file lock, which the
# workers sharing it need.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="ppl-tests-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 ** 31))

import pytest  # noqa: E402

from ppl.errors import PPLError  # noqa: E402
from ppl.stdlib.targets import reference_dir  # noqa: E402

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
