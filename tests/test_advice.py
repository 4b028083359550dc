"""Advice in the user's terms: options spelled as Python, in the `.ppl` syntax or as `ppl run` flags, and
warnings shown at the user's line, not at one inside the package."""
import warnings

import numpy as np
import pytest

import ppl
from ppl import advice
from ppl.backends.hmc import ConvergenceWarning, diagnose
from ppl.backends.importance import ImportanceWarning
from ppl.cli import main

NARROW = "model m {\n  x ~ normal(0, 1)\n  y ~ normal(x, 0.01)\n}\ntarget post = m | y = 3\n"
FLAT = "model m {\n  x : real\n  y ~ normal(x, 1)\n}\ntarget post = m | y = 1\nsample post with smc(particles = 100)\n"


@pytest.mark.parametrize("kind, said", [
    ("python", "method='smc', particles=4096, decorrelation=0.01"),
    ("ppl", "sample post with smc(particles = 4096, decorrelation = 0.01)"),
    ("cli", "--method smc --particles 4096 and sample post with smc(decorrelation = 0.01)")])
def test_options_spelled_per_front_end(kind, said):
    with advice.front_end(kind, "post", "smc"):
        assert advice.options("smc", True, particles=4096, decorrelation=0.01) == said


def test_precision_and_warmup_are_flags_on_the_command_line():
    with advice.front_end("cli", "post"):
        assert advice.options("nuts", num_warmup=2000, num_samples=...) == "--warmup 2000 --draws N"
        assert advice.options("is", precision="float64") == "--float64"
    assert advice.options("nuts", num_warmup=2000) == "num_warmup=2000"


def test_plan_error_of_a_program_suggests_a_reference_in_ppl_syntax(tmp_path, capsys):
    path = tmp_path / "flat.ppl"
    path.write_text(FLAT)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "\nhint: pass a reference model, model ref { x ~ ... }, and sample post with smc(reference = ref)" in err
    assert "ppl.model" not in err and "reference=" not in err and "Traceback" not in err
    with pytest.raises(ppl.PlanError, match=r"reference=ppl.model\(x=...\)"):
        ppl.sample(ppl.model(x=ppl.Flat(), y=lambda x: ppl.Normal(x, 1.0)).condition(y=1.0), method="smc",
                   particles=100)


def _caught(fn, category):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [w for w in caught if issubclass(w.category, category)]


def test_warnings_point_at_the_users_line_and_name_the_narrow_site():
    m = ppl.model(x=ppl.Normal(0.0, 1.0), y=lambda x: ppl.Normal(x, 0.01)).condition(y=3.0)
    prog = ppl.load_ppl(NARROW)
    # marginalize=False: importance sampling itself (normal-normal is conjugate, which the compiler would integrate out)
    (python,) = _caught(lambda: ppl.sample(m, runtime="pyro", particles=200, marginalize=False), ImportanceWarning)
    (program,) = _caught(lambda: prog.sample(runtime="pyro", particles=200, marginalize=False), ImportanceWarning)
    for w in (python, program):
        assert w.filename == __file__, (w.filename, w.lineno)
        assert "narrowest in x" in str(w.message)
    assert "method='smc'" in str(python.message) and "reference=ppl.model(x=...)" in str(python.message)
    assert "sample post with smc" in str(program.message) and "reference = ref" in str(program.message)


def test_cli_nuts_advice_names_its_flags(tmp_path, capsys):
    path = tmp_path / "m.ppl"
    path.write_text(NARROW + "sample post with nuts(chains = 1) on pyro\n")
    assert main(["run", str(path), "--warmup", "10", "--draws", "10"]) == 0
    err = capsys.readouterr().err
    assert "warning: nuts: low effective sample size" in err and "--draws" in err, err
    assert "num_samples" not in err and "Traceback" not in err


def test_divergence_advice_fits_the_run():
    rng = np.random.default_rng(0)
    samples = {"a": rng.normal(size=(4, 500)), "tau": np.abs(rng.normal(size=(4, 500)))}
    stats = {"diverging": samples["tau"] < 0.05, "energy": rng.normal(size=(4, 500))}
    (w,) = _caught(lambda: diagnose(samples, stats, 4, "nuts", 1000, 0.8), ConvergenceWarning)
    assert "target_accept=0.9" in str(w.message) and "tau_raw=ppl.Normal(0, 1)" in str(w.message)
    assert w.filename == __file__


def test_cli_suggests_another_method_as_a_flag(tmp_path, capsys):
    path = tmp_path / "pf.ppl"
    path.write_text("data T : int\nmodel m {\n  x : real[T]\n  x[1] ~ normal(0, 1)\n"
                    "  for t in 2:T { x[t] ~ normal(x[t - 1], 1) }\n}\nsample m with pf(particles = 10)\n")
    (tmp_path / "d.json").write_text('{"T": 5}')
    assert main(["run", str(path), "--data", str(tmp_path / "d.json")]) == 2
    err = capsys.readouterr().err
    assert "use --method smc or --method is for the state's prior" in err and "method=" not in err, err
