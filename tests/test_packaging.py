"""One import namespace `ppl` from four folders, in an editable install and from a wheel."""
import subprocess
import sys
import zipfile
from pathlib import Path

import ppl

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_maps_folders_into_ppl():
    import ppl.backends
    import ppl.compiler
    import ppl.stdlib
    assert Path(ppl.compiler.__file__).parent == ROOT / "compiler"
    assert Path(ppl.backends.__file__).parent == ROOT / "backends"
    assert Path(ppl.stdlib.__file__).parent == ROOT / "stdlib"
    assert Path(ppl.__file__).parent == ROOT / "ppl"


def test_wheel_installs_one_namespace(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("ppl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("ppl/__init__.py", "ppl/compiler/plan.py", "ppl/backends/importance.py",
              "ppl/stdlib/distributions.py"):
        assert f in names, f
    assert not any(n.split("/")[0] in ("compiler", "backends", "stdlib") for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import ppl, ppl.compiler, ppl.backends.importance; "
            "p = ppl.model(x=ppl.Normal(0., 1.)); print(ppl.compiler.__file__); print(ppl.compile(p ** 2).dim)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith(str(target)) and out.stdout.splitlines()[-1] == "1"
    assert ppl.__name__ == "ppl"
