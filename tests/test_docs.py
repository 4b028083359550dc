"""Every Python code block of README.md and docs/ runs as written (in one namespace per file, in order)."""
import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("path", [f for f in FILES if python_blocks(f)], ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    """Every python block runs as written, on its own (a reader copies one block, not the page)."""
    monkeypatch.chdir(tmp_path)
    for block in python_blocks(path):
        exec(compile(block, str(path), "exec"), {})


#: bash lines that set up a machine (install, the whole test suite), not run here
SETUP = ("bash scripts/demo.sh", "bash scripts/test.sh")
#: appended to a `ppl run` line with this method, to keep the test fast
SMALL = {"nuts": ["--chains", "2", "--warmup", "50", "--draws", "50"], "hmc": ["--chains", "2", "--warmup", "50",
                                                                           "--draws", "50"]}


def bash_lines(path):
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines() if line.split("#")[0].strip()]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", [f for f in FILES if bash_lines(f)], ids=lambda p: p.name)
def test_bash_lines_run(path, tmp_path, monkeypatch):
    """Every `ppl ...` line of a bash block runs (in a folder where examples/ is the repository's)."""
    from ppl.cli import main
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    for line in bash_lines(path):
        if line.startswith(SETUP):
            continue
        words = line.split()
        assert words[0] == "ppl", f"{path.name}: a bash line that is neither `ppl ...` nor setup: {line}"
        method = words[words.index("--method") + 1] if "--method" in words else None
        small = SMALL.get(method, [] if "--particles" in words else ["--particles", "500"])
        assert main(words[1:] + (small if words[1] == "run" else [])) == 0, line


def ppl_blocks(path):
    return re.findall(r"```ppl\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("path", [f for f in FILES if ppl_blocks(f)], ids=lambda p: p.name)
def test_ppl_blocks_check(path, tmp_path, capsys):
    """Every ```ppl program passes `ppl check` as written, saved beside the Python functions it `use`s
    (examples/user_functions.py), its data symbolic."""
    from ppl.cli import main
    (tmp_path / "user_functions.py").symlink_to(ROOT / "examples" / "user_functions.py")
    for i, block in enumerate(ppl_blocks(path)):
        program = tmp_path / f"block{i}.ppl"
        program.write_text(block)
        assert main(["check", str(program), "--allow-python"]) == 0, (block, capsys.readouterr().err)
