"""A grammar fuzz: mutated example programs either check or fail with a PPLError (exit 2, no traceback)."""
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppl.cli import main

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.ppl"))
TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z_0-9]*|\d+(?:\.\d*)?(?:e-?\d+)?|\S")


@st.composite
def mutants(draw):
    tokens = TOKEN.findall(draw(st.sampled_from(EXAMPLES)).read_text())
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


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=mutants())
def test_check_of_mutated_programs(text, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("fuzz") / "m.ppl"
    path.write_text(text)
    assert main(["check", str(path)]) in (0, 2)
    assert "Traceback" not in capsys.readouterr().err
