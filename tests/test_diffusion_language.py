"""Diffusion targets in `.ppl`: `diffusion NAME = mixture(...)` / `score(...)` lower to `ppl.diffusion` bases, the
algebra on them to the Python API's targets (same log Z for the same seed), FKC's log Z matches a closed form,
`ppl run` prints log Z and writes the figure, and every error is located. Small runs: FKC's accuracy is
tests/test_fkc.py's subject."""
import os

import numpy as np
import pytest

import ppl
from ppl import load_ppl
from ppl.cli import main
from ppl.diffusion import DiffusionModel
from ppl.stdlib.diffusion import VESDE, VPSDE

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
PROGRAM, DATA = (os.path.join(EXAMPLES, f) for f in ("fkc_mixture.ppl", "fkc_mixture.data.json"))
SMALL = dict(method="fkc", particles=200, steps=40, seed=3)


def test_declarations_are_the_python_bases():
    prog = load_ppl(PROGRAM, data=DATA)
    four, up = prog.diffusions["four"], prog.diffusions["up"]
    assert isinstance(four, DiffusionModel) and four.name == "four" and four.dim == 2
    assert repr(four.sde) == repr(VPSDE(0.1, 20)) and repr(up.sde) == repr(VPSDE())
    np.testing.assert_allclose(four.score.means[0], [-1.5, -1.5])
    np.testing.assert_allclose(np.sqrt(np.diagonal(four.score.cov, axis1=1, axis2=2))[:, 0], [0.35, 0.7, 0.7, 0.7],
                               rtol=1e-6)
    plan = str(prog.compile("guided"))
    assert "-1 x log four" in plan and "+2 x log up" in plan
    assert prog.targets["hot"].describe() == (four ** 3).describe()
    assert prog.targets["both"].describe() == (up * prog.diffusions["down"]).describe()


@pytest.mark.parametrize("name, runtime", [("tilted", "pyro"), ("both", "numpyro")])
def test_same_log_z_as_python(name, runtime):
    prog = load_ppl(PROGRAM, data=DATA)
    four, up, down = (prog.diffusions[n] for n in ("four", "up", "down"))
    c = np.array([1.5, 1.5], dtype=np.float32)
    python = {"tilted": four.tilt(lambda x: -ppl.math.sum(ppl.math.square(x - ppl.math.asarray(c, x))), 2.0),
              "both": up * down}[name]
    r = prog.sample(name, runtime=runtime, **SMALL)
    expected = ppl.sample(python, runtime=runtime, **SMALL)
    assert np.isfinite(r.log_z)
    np.testing.assert_allclose(r.log_z, expected.log_z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.samples["x"], expected.samples["x"], rtol=1e-5, atol=1e-5)


GUIDED = """
diffusion q = mixture([[1.0, -0.5]], sd = 0.7, sde = vp())
diffusion c = mixture([[-0.5, 0.5]], sd = 0.7, sde = vp())
target guided = geometric(q, c, 2)
sample guided with fkc(particles = 400, steps = 100)
"""


@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
def test_guidance_log_z_is_exact(runtime):
    """q^(1-w) c^w of equal-variance Gaussians N(m, v_t I): log Z_t = w (w - 1) α_t² |m_q - m_c|² / (2 v_t), and FKC
    estimates log Z_{t_min} - log Z_T (its increments are nearly constant across particles: sd ~0.003)."""
    sde, w, t_min = VPSDE(), 2.0, 1e-3

    def log_z(t):
        a, s2 = sde.marginal(t)
        return w * (w - 1) * a * a * np.sum(np.subtract([1.0, -0.5], [-0.5, 0.5]) ** 2) / (2 * (a * a * 0.49 + s2))
    r = load_ppl(GUIDED).sample(runtime=runtime, seed=0)
    assert abs(r.log_z - (log_z(t_min) - log_z(sde.T))) < 0.05, r.log_z


def test_python_score_with_allow_python(tmp_path, monkeypatch):
    """`use s from "pkg:fn"` + `score(s, sde, dim)` is ppl.diffusion(fn, sde, dim): here the exact score of
    N(0, 0.7² I) under a VE SDE, which gives the same run as the mixture with that one component."""
    (tmp_path / "my_scores.py").write_text(
        "import math\nimport ppl\n\n"
        "def score(x, t):\n"
        "    var = 0.49 + 0.01 ** 2 * ppl.math.expm1(2 * math.log(10 / 0.01) * t)\n"
        "    return -x / var[:, None]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = ('use s from "my_scores:score"\n'
            'diffusion learned = score(s, sde = ve(sigma_min = 0.01, sigma_max = 10), dim = 2)\n'
            'diffusion exact = mixture([[0, 0]], sd = 0.7, sde = ve(sigma_min = 0.01, sigma_max = 10))\n'
            'target a = learned ^ 2\ntarget b = exact ^ 2\n')
    prog = load_ppl(text, allow_python=True)
    learned = prog.diffusions["learned"]
    assert learned.dim == 2 and repr(learned.sde) == repr(VESDE(0.01, 10))
    ra, rb = (prog.sample(n, runtime="pyro", moves=0, increments="sde", **SMALL) for n in ("a", "b"))   # a's defaults
    np.testing.assert_allclose(ra.log_z, rb.log_z, rtol=1e-3, atol=1e-3)
    with pytest.raises(ppl.SourceError, match="refusing to import Python module 'my_scores'"):
        load_ppl(text)


def test_cli_runs_the_example_and_writes_the_figure(tmp_path, capsys):
    png = tmp_path / "hot.png"
    assert main(["run", PROGRAM, "--data", DATA, "--particles", "300", "--runtime", "pyro", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "log Z = " in out and "x[1]" in out and "x[2]" in out and "method fkc(particles=300, " in out and ") on pyro, " in out
    assert png.stat().st_size > 10_000
    assert main(["check", PROGRAM, "--data", DATA]) == 0
    assert "checked; 3 diffusion(s), 4 target(s) built)" in capsys.readouterr().out
    assert main(["check", PROGRAM]) == 0   # symbolic means: up and down, and their product, are still checked
    out = capsys.readouterr().out
    assert "1 target(s) built" in out and "four: checked up to where it needs the value of means" in out


ERRORS = [
    ('diffusion q = mixture([[0, 0]], sde = vpp())\n', 1, 39, "unknown SDE 'vpp'"),
    ('diffusion q = mixture([[0, 0]], sde = vp(beta_mn = 0.1))\n', 1, 42, "vp has no option 'beta_mn'"),
    ('diffusion q = mixture([[0, 0]], sde = vp(beta_min = 30))\n', 1, 39, "VPSDE needs 0 < beta_min <= beta_max"),
    ('diffusion q = mixture([[0, 0]], sd = 1)\n', 1, 15, "mixture needs its forward SDE"),
    ('diffusion q = mixtur([[0, 0]], sde = vp())\n', 1, 15, "unknown diffusion base 'mixtur'"),
    ('diffusion q = mixture([0, 0], sde = vp())\n', 1, 23, "the means of a mixture are a matrix [K, d]"),
    ('diffusion q = mixture([[0, 0], [1, 1]], sd = [1, 2, 3], sde = vp())\n', 1, 46, "got shape [3]"),
    ('diffusion q = mixture([[0, 0], [1, 1]], weights = [0.5, 0.6], sde = vp())\n', 1, 51, "summing to 1"),
    ('diffusion q = mixture([[0, 0]], sde = vp(), dim = 2)\n', 1, 45, "mixture has no option 'dim'"),
    ('use s from "my_pkg.scores:score"\ndiffusion q = score(s, sde = ve(), dim = 2)\n', 1, 1,
     "refusing to import Python module 'my_pkg.scores'"),
    ('diffusion q = score(s, sde = ve(), dim = 2)\n', 1, 21, "imported by `use"),
    ('diffusion q = mixture([[0, 0]], sde = vp())\nmodel m { x ~ normal(0, 1) [2] }\ntarget t = q * m\n', 3, 14,
     "combines the diffusion q with the model m"),
    ('diffusion q = mixture([[0, 0]], sde = vp())\ndiffusion r = mixture([[0, 0, 0]], sde = vp())\n'
     'target t = geometric(q, r, 2)\n', 3, 12, "must agree in dimension"),
    ('diffusion q = mixture([[0, 0]], sde = vp())\ndiffusion r = mixture([[0, 0]], sde = ve())\ntarget t = q * r\n',
     3, 14, "different forward SDEs"),
    ('diffusion q = mixture([[0, 0]], sde = vp())\ndiffusion r = mixture([[1, 0]], sde = vp())\n'
     'target t = geometric(q ^ 2, r, 3)\n', 3, 12, "sum to -1 <= 0"),
    ('diffusion q = mixture([[0, 0]], sde = vp())\ntarget t = q | x = [1, 2]\n', 2, 16, "cannot be conditioned"),
    ('diffusion q = mixture([[0, 0]], sde = vp())\ntarget t = q * exp(sum(z) / 2)\n', 2, 24, "reads 'z'"),
    ('diffusion q = mixture([[0, 0]], sde = vp())\nsample q with smc(particles = 10)\n', 2, 1, "method 'smc'"),
]


@pytest.mark.parametrize("text, line, col, message", ERRORS, ids=[m for *_, m in ERRORS])
def test_errors_are_located(text, line, col, message, tmp_path, capsys):
    path = tmp_path / "bad.ppl"
    path.write_text(text)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:{line}:{col}: ") and message in err, err
    assert "^" in err and "Traceback" not in err


def test_cli_says_why_a_score_alone_has_no_standard_error(tmp_path, capsys):
    """A learned score has no log density: FKC weighs SDE increments, and `ppl run` says why log Z has no ± (issue 36:
    it printed a bare log Z)."""
    (tmp_path / "scores.py").write_text("def score(x, t):\n    return -x\n")
    program = tmp_path / "s.ppl"
    program.write_text('use s from "scores:score"\ndiffusion d = score(s, sde = ve(), dim = 2)\ntarget hot = d ^ 2\n'
                       "sample hot with fkc(particles = 100, steps = 20)\n")
    assert main(["run", str(program), "--allow-python"]) == 0
    out = capsys.readouterr().out
    assert "log Z = " in out and " ± " not in out and "none is given" in out
