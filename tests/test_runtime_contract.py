"""The runtime contract (`backends/runtime.py`): both runtimes fulfil it, and the algorithms use nothing else."""
import re
from pathlib import Path

import pytest

from ppl.backends import get_runtime
from ppl.backends.runtime import XP, RuntimeContract

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = {n for n in vars(RuntimeContract) if not n.startswith("_")} | set(RuntimeContract.__annotations__)
#: the algorithms: everything that computes on a runtime, but the runtimes themselves
ALGORITHMS = sorted(p for d in ("backends", "backends/kernels", "compiler", "stdlib") for p in (ROOT / d).glob("*.py")
                    if not p.name.endswith("runtime.py") and p.name != "shapes.py") + [ROOT / "ppl" / "diffusion.py"]
RUNTIME = r"(?:\brt|self\.rt|self\._rt|\bprog\.rt|\bpath\.rt|\bmodel\.rt)"


@pytest.mark.parametrize("name", ["numpyro", "pyro"])
def test_each_runtime_fulfils_the_contract(name):
    rt = get_runtime(name)
    missing = sorted(m for m in MEMBERS if not hasattr(rt, m))
    assert not missing, f"{name} lacks {missing}"
    missing_xp = sorted(n for n in XP if not hasattr(rt.xp, n))
    assert not missing_xp, f"{name}.xp lacks {missing_xp}"


def test_algorithms_use_only_the_contract():
    used, xp_used, framework = {}, {}, []
    for path in ALGORITHMS:
        text = path.read_text()
        for m in re.finditer(RUNTIME + r"\.(\w+)", text):
            used.setdefault(m.group(1), path.name)
        for m in re.finditer(r"\bxp\.(\w+)", text):
            xp_used.setdefault(m.group(1), path.name)
        if re.search(RUNTIME + r"\.framework\s*[!=]=", text):
            framework.append(path.name)
    assert len(used) > 15 and len(xp_used) > 20          # the scan sees the algorithms
    assert not {k: v for k, v in used.items() if k not in MEMBERS}, "runtime members outside the contract"
    assert not {k: v for k, v in xp_used.items() if k not in XP}, "xp names outside the contract"
    assert not framework, f"algorithms branching on the framework: {framework}"
