"""A grammar fuzz: mutated example programs either check (or run) or fail with a PPLError (exit 2, no traceback)."""
import re
import resource
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppl.cli import main

ROOT = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(ROOT.glob("*.ppl"))
#: small examples with their data in examples/ (few sites and data points: a run of 20 particles is quick)
RUNNABLE = [(ROOT / "eight_schools_noncentered.ppl", ROOT / "eight_schools.data.json"),
            (ROOT / "garch11.ppl", ROOT / "garch11.data.json")]
#: how much more address space a mutant may take than the test process had before the fuzz
MEMORY_CAP = 4 * 2 ** 30
TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z_0-9]*|\d+(?:\.\d*)?(?:e-?\d+)?|\S")


def _address_space():
    """This process's virtual memory size in bytes (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


@pytest.fixture(scope="module", autouse=True)
def memory_cap():
    """While the fuzz runs, the process's address space may grow by `MEMORY_CAP` at most (RLIMIT_AS): a mutant
    that allocates more fails its test with a MemoryError instead of taking the machine's memory."""
    try:
        limit = _address_space() + MEMORY_CAP
    except OSError:
        pytest.skip("no /proc/self/statm: the memory cap needs Linux")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_the_memory_cap_holds():
    with pytest.raises(MemoryError):
        np.empty(2 * MEMORY_CAP // 8)   # virtual memory only: without the cap, nothing is touched


def mutate(draw, text):
    """`text` with 1 to 3 token edits drawn by `draw`."""
    tokens = TOKEN.findall(text)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(tokens) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "truncate"]))
        if op == "delete":
            del tokens[i]
        elif op == "duplicate":
            tokens.insert(i, tokens[i])
        elif op == "swap" and i + 1 < len(tokens):
            tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
        elif op == "insert":
            tokens.insert(i, draw(st.sampled_from(list("()[]{}<>=~+-*/^,:;|!&.\"'#0123456789") + ["\n", " "])))
        elif op == "truncate":
            tokens = tokens[:i]
        if not tokens:
            tokens = [" "]
    return "".join(tokens)


@st.composite
def mutants(draw):
    return mutate(draw, draw(st.sampled_from(EXAMPLES)).read_text())


@st.composite
def runnable_mutants(draw):
    """(a mutated program, its data file) of the small examples that run from examples/."""
    program, data = draw(st.sampled_from(RUNNABLE))
    return mutate(draw, program.read_text()), data


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=mutants())
def test_check_of_mutated_programs(text, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("fuzz") / "m.ppl"
    path.write_text(text)
    assert main(["check", str(path)]) in (0, 2)
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=runnable_mutants())
def test_run_of_mutated_programs(case, tmp_path_factory, capsys):
    text, data = case
    path = tmp_path_factory.mktemp("fuzz") / "m.ppl"
    path.write_text(text)
    assert main(["run", str(path), "--data", str(data), "--method", "is", "--particles", "20",
                 "--runtime", "pyro"]) in (0, 2)
    assert "Traceback" not in capsys.readouterr().err
