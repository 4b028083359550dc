"""The runtime contract (`backends/runtime.py`): every registered runtime fulfils it, and the rest of the package
uses nothing else (no member outside it, no branch on a runtime's name or framework)."""
import re
from pathlib import Path

import pytest

from ppl.backends import get_runtime
from ppl.backends import runtime as runtimes
from ppl.backends.runtime import XP, RuntimeContract

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = {n for n in vars(RuntimeContract) if not n.startswith("_")} | set(RuntimeContract.__annotations__)
#: the runtimes themselves: the registry and each registered runtime's module (`<name>_*.py` in backends/)
OWN = {ROOT / "backends" / "runtime.py"} | {p for name in runtimes.KNOWN
                                              for p in (ROOT / "backends").glob(f"{name}_*.py")}
#: everything else of the package (the shape-only runtime of the compiler's trace is no runtime of the registry)
PACKAGE = sorted(p for d in ("ppl", "compiler", "backends", "stdlib") for p in (ROOT / d).rglob("*.py")
                 if p not in OWN and p != ROOT / "compiler" / "shapes.py")
RUNTIME = r"(?<![\w.])(?:\w+\.)?_?rt"     # rt, self.rt, self._rt, prog.rt, ...
IDENTITY = RUNTIME + r"\.(?:name|framework)\b"
BRANCH = re.compile(rf"{IDENTITY}\s*(?:[!=]=|(?:not\s+)?in\s*[(\[{{])|[!=]=\s*{IDENTITY}")


@pytest.mark.parametrize("name", runtimes.names())
def test_each_runtime_fulfils_the_contract(name):
    rt = get_runtime(name)
    missing = sorted(m for m in MEMBERS if not hasattr(rt, m))
    assert not missing, f"{name} lacks {missing}"
    missing_xp = sorted(n for n in XP if not hasattr(rt.xp, n))
    assert not missing_xp, f"{name}.xp lacks {missing_xp}"
    entry = runtimes.KNOWN[name]
    assert (rt.name, rt.framework) == (name, entry.framework)
    assert runtimes.runtime_of(entry.framework) == name


def test_the_package_uses_only_the_contract():
    used, xp_used, branches = {}, {}, []
    for path in PACKAGE:
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        for m in re.finditer(RUNTIME + r"\.(\w+)", text):
            used.setdefault(m.group(1), where)
        for m in re.finditer(r"\bxp\.(\w+)", text):
            xp_used.setdefault(m.group(1), where)
        branches += [f"{where}: {m.group(0)}" for m in BRANCH.finditer(text)]
    assert {"ppl", "compiler", "backends", "stdlib"} <= {p.relative_to(ROOT).parts[0] for p in PACKAGE}
    assert len(used) > 15 and len(xp_used) > 20          # the scan sees the algorithms
    assert not {k: v for k, v in used.items() if k not in MEMBERS}, "runtime members outside the contract"
    assert not {k: v for k, v in xp_used.items() if k not in XP}, "xp names outside the contract"
    assert not branches, f"branches on a runtime's name or framework: {branches}"


def test_the_scan_sees_both_operands():
    for line in ('if rt.framework != "jax":', 'if "torch" == rt.framework:', 'x if self.rt.name == "pyro" else y',
                 'if model.rt.name in ("pyro",):', 'if x.framework != prog.rt.framework:'):
        assert BRANCH.search(line), line
    for line in ("rt.name,", "f'{rt.name!r}'", "if rt.name not in self._lowered:"):   # a cache keyed by name
        assert not BRANCH.search(line), line


def test_a_new_runtime_is_a_module_and_a_row(monkeypatch):
    """The registry path of a third runtime (a NumPy one for gradient-free methods: its arrays are numpy's, so
    `ppl.math` computes on them as on constants): one row in `KNOWN`, its class registered by its module; the
    language and the command line take their runtime names from the registry."""
    from ppl import cli
    from ppl.backends.runtime import Runtime

    monkeypatch.setitem(runtimes.KNOWN, "numpy", runtimes.Entry("numpy_runtime", "numpy", arrays=()))
    monkeypatch.setattr(runtimes, "RUNTIMES", dict(runtimes.RUNTIMES))

    @runtimes.register("numpy")
    class NumpyRuntime(Runtime):       # the skeleton: what its module would define, the contract's members
        name, framework, compiles_loops = "numpy", "numpy", False

        def __init__(self, device="cpu", precision="float32", devices=None):
            super().__init__(device, precision)

    rt = get_runtime("numpy")
    assert isinstance(rt, NumpyRuntime) and "numpy" in runtimes.names()
    assert runtimes.runtime_of("numpy") == "numpy"
    with runtimes.active(rt):          # what its `scope` enters: constants evaluate on it
        assert runtimes.in_use() is rt
    assert cli._parser().parse_args(["run", "f.ppl", "--runtime", "numpy"]).runtime == "numpy"
