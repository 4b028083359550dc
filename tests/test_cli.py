"""The `ppl` command line: every example runs on both runtimes; errors exit 2 with a located message."""
import subprocess
import sys
from pathlib import Path

import pytest

from ppl.cli import main
from ppl.errors import PPLError
from ppl.stdlib.targets import EXAMPLE_DATA, example_paths

EXAMPLES = list(EXAMPLE_DATA)


def paths(name):
    try:
        return tuple(map(str, example_paths(name)))
    except PPLError as e:
        pytest.skip(str(e))


@pytest.mark.filterwarnings("ignore:importance sampling")  # IS from the prior is poor on arK and the mixture
@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_examples_run(name, runtime, capsys, tmp_path):
    program, data = paths(name)
    out = tmp_path / "r.nc"
    args = ["run", program, "--data", data, "--method", "is", "--runtime", runtime, "--particles", "2000",
            "--seed", "1"]
    if name == "eight_schools_noncentered":
        args += ["--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "log Z = " in text and "mean" in text and "method is(particles=2000, " in text and "seed=1) on " + runtime in text
    if name == "eight_schools_noncentered":
        import arviz as az
        assert "mu" in az.from_netcdf(out).posterior


def test_check_and_compile_graph(capsys):
    program, data = paths("garch11")
    assert main(["check", program, "--data", data]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["compile", program, "--data", data, "--graph"]) == 0
    text = capsys.readouterr().out
    assert "reference pi0" in text and "nodes:" in text and "[latent]" in text and "edges:" in text
    assert "+1 x factor garch11.beta1:flat" in text


def test_errors_exit_2_with_location(tmp_path, capsys):
    bad = tmp_path / "bad.ppl"
    bad.write_text("model m {\n  x ~ normal(0, 1)\n  y ~ normal(x, sigma)\n}\n")
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{bad}:3:17: unknown name 'sigma'") and "^" in err and "Traceback" not in err
    py = tmp_path / "py.ppl"
    py.write_text('use r from "mypkg.rewards:closeness"\nmodel m { x ~ normal(0, 1) }\n')
    assert main(["check", str(py)]) == 2
    assert "refusing to import Python module 'mypkg.rewards'" in capsys.readouterr().err
    assert main(["check", str(py), "--allow-python"]) == 2
    assert "cannot import 'mypkg.rewards:closeness'" in capsys.readouterr().err
    program, data = paths("eight_schools_noncentered")
    assert main(["run", program, "--data", data, "--method", "nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_console_script_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.ppl"
    bad.write_text("model m { x ~ normal(0, 1 }\n")
    p = subprocess.run([sys.executable, "-m", "ppl.cli", "check", str(bad)], capture_output=True, text=True)
    assert p.returncode == 2 and "bad.ppl:1:27: unexpected '}'" in p.stderr and "Traceback" not in p.stderr


def test_run_ais(capsys):
    program, data = paths("eight_schools_noncentered")
    assert main(["run", program, "--data", data, "--method", "ais", "--particles", "500", "--seed", "0"]) == 0
    text = capsys.readouterr().out
    assert "log Z = " in text and "method ais(particles=500, seed=0) on numpyro" in text


@pytest.mark.parametrize("program", sorted(str(p) for p in (Path(__file__).parents[1] / "examples").glob("*.ppl")))
def test_check_without_data(program, capsys):
    """`ppl check FILE` without --data checks what it can and says which data are symbolic; `run` still refuses."""
    assert main(["check", program]) == 0
    out = capsys.readouterr().out
    assert ": ok (" in out and "symbolic data (no --data): " in out and "needs the value of" in out
    assert main(["run", program, "--particles", "10"]) == 2
    assert "is declared but no value was given" in capsys.readouterr().err


def test_check_without_data_finds_names_and_types(tmp_path, capsys):
    text = (Path(__file__).parents[1] / "examples" / "eight_schools_noncentered.ppl").read_text()
    for old, new, where in [("normal(theta, sigma)", "normal(thetaa, sigma)", ":13:14: unknown name 'thetaa'"),
                            ("mu ~ normal(0, 5)", "mu ~ normale(0, 5)", ":8:8: unknown distribution 'normale'"),
                            ("data sigma : real<lower=0>[J]", "data sigma : real<low=0>[J]", "unknown bound 'low'"),
                            ("target posterior = eight_schools", "target posterior = eight_school",
                             "'eight_school' is not a model, diffusion or target")]:
        bad = tmp_path / "bad.ppl"
        bad.write_text(text.replace(old, new))
        assert main(["check", str(bad)]) == 2
        err = capsys.readouterr().err
        assert where in err and "^" in err and "Traceback" not in err, err


@pytest.mark.parametrize("statement, message", [
    ("smc(particles = 200, move = hmc(steps = 5))", "method 'smc' has no option(s) move; its options: runs, kernel"),
    ("smc(particles = 200, kernel = hmc(steps = 5))", "kernel 'hmc' has no option 'steps' (its options: n_leapfrog"),
    ("smc(particles = 200, kernel = \"leap\")", "unknown SMC kernel 'leap'"),
    ("nuts(chain = 2)", "method 'nuts' has no option(s) chain; its options: num_warmup, num_samples, chains"),
    ("nope(particles = 10)", "unknown method 'nope'"),
])
def test_check_validates_sample_statements(statement, message, tmp_path, capsys):
    """`check` reports the located error the run would: unknown methods, options and kernels."""
    bad = tmp_path / "bad.ppl"
    bad.write_text(f"model hot {{ x ~ normal(0, 1) }}\nsample hot with {statement}\n")
    for command in ("check", "run"):
        assert main([command, str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{bad}:2:1: {message}") and "^" in err, err


def test_kernel_as_a_call(tmp_path, capsys):
    good = tmp_path / "good.ppl"
    good.write_text("model hot { x ~ normal(0, 1) }\n"
                    "sample hot with smc(particles = 100, kernel = hmc(n_leapfrog = 3))\n")
    assert main(["check", str(good)]) == 0 and main(["run", str(good)]) == 0
    assert "method smc" in capsys.readouterr().out


def test_particle_filter_without_observations(tmp_path, capsys):
    bad = tmp_path / "pf.ppl"
    bad.write_text("data T : int\nmodel m {\n  x : real[T]\n  x[1] ~ normal(0, 1)\n"
                   "  for t in 2:T { x[t] ~ normal(x[t - 1], 1) }\n}\nsample m with pf(particles = 10)\n")
    data = tmp_path / "d.json"
    data.write_text('{"T": 5}')
    assert main(["run", str(bad), "--data", str(data)]) == 2
    assert "the target observes none" in capsys.readouterr().err


def test_mcmc_flags_and_dropped_options(tmp_path, capsys):
    """--chains/--warmup/--draws reach nuts; the statement's options of another method are named, not reused;
    warnings print as `warning: message` without a source line."""
    prog = tmp_path / "m.ppl"
    prog.write_text("model m { x ~ normal(0, 1) }\nsample m with is(particles = 300)\n")
    assert main(["run", str(prog), "--method", "nuts", "--chains", "2", "--warmup", "20", "--draws", "20"]) == 0
    out, err = capsys.readouterr()
    assert "method nuts" in out and "note: --method nuts: the options particles of line 2" in err
    assert all(line.startswith(("warning: ", "note: ")) for line in err.splitlines() if line.strip()), err
    assert main(["run", str(prog), "--chains", "2"]) == 2
    assert "--chains: method 'is' has no option chains" in capsys.readouterr().err


def test_run_uses_the_files_seed_unless_a_flag_gives_one(tmp_path, capsys):
    """`ppl run` takes `seed =` from the file's sample statement; --seed replaces it (issue 36: it always ran 0)."""
    program = tmp_path / "seed.ppl"
    program.write_text("model m { x ~ normal(0, 1) }\ntarget t = m * exp(x / 1)\n"
                       "sample t with is(particles = 200, seed = 7)\n")

    def log_z(*flags):
        capsys.readouterr()
        assert main(["run", str(program), *flags]) == 0
        return [line for line in capsys.readouterr().out.splitlines() if line.startswith("log Z")][0]
    assert log_z() == log_z("--seed", "7") != log_z("--seed", "0")


def test_method_flag_replaces_the_files_method(tmp_path, capsys):
    """--method X on a file whose `sample` statement is another method's: the statement's method options are
    dropped (said), its general ones kept, and what ran is printed (issue 36: the dropped options were passed
    anyway, so the run failed on them, and `particles = 20000` of is became 20000 nuts draws)."""
    prog = tmp_path / "m.ppl"
    prog.write_text("model m { x ~ normal(0, 1) }\n"
                    "sample m with smc(particles = 300, kernel = hmc(n_leapfrog = 3), seed = 4) on pyro\n")
    assert main(["run", str(prog), "--method", "is"]) == 0
    out, err = capsys.readouterr()
    assert "note: --method is: the options particles, kernel of line 2" in err
    assert "method is(seed=4) on pyro" in out
    assert main(["run", str(prog), "--method", "nuts", "--chains", "1", "--warmup", "30"]) == 0
    out = capsys.readouterr().out
    assert "method nuts(chains=1, num_warmup=30, seed=4) on pyro" in out
    from ppl.lang import load_ppl
    assert load_ppl(str(prog)).run_options("m", "nuts") == ({"seed": 4, "runtime": "pyro", "method": "nuts"},
                                                            ["particles", "kernel"])


def test_method_help_lists_every_method(capsys):
    from ppl.backends import METHODS, get_method
    get_method("is")    # the registry filled
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    missing = [m for m in METHODS if f" {m}," not in text and f" {m} " not in text]
    assert not missing, missing


def test_other_libraries_warnings_say_whose(capsys):
    """Our warnings print as `warning: ...`; another library's name it, so they do not read as ours."""
    from ppl.cli import _show_warning
    from ppl.backends.importance import ImportanceWarning
    _show_warning("k-hat", ImportanceWarning, "/repo/backends/importance.py", 1)
    _show_warning("shape", UserWarning, "/usr/lib/python3/site-packages/arviz/stats/diagnostics.py", 3)
    assert capsys.readouterr().err.splitlines() == ["warning: k-hat", "warning (arviz): shape"]


@pytest.mark.parametrize("flag, path, message", [
    ("--out", "/proc/ppl-result.nc", "cannot write there"), ("--out", "/sys/ppl-result.nc", "cannot write there"),
    ("--out", "DIR.nc", "cannot write there (Is a directory)"), ("--out", "", "--out: empty file name"),
    ("--plot", "/proc/ppl-figure.png", "cannot write there"), ("--out", "/no/such/folder/r.nc", "does not exist")])
def test_unwritable_outputs_are_refused_before_the_run(flag, path, message, tmp_path, capsys):
    """--out and --plot are tried before sampling, not after a long run (issue 36: a traceback at the end)."""
    (tmp_path / "DIR.nc").mkdir()
    prog = tmp_path / "m.ppl"
    prog.write_text("model m { x ~ normal(0, 1) }\nsample m with is(particles = 10)\n")
    path = str(tmp_path / path) if path == "DIR.nc" else path
    assert main(["run", str(prog), flag, path]) == 2
    out, err = capsys.readouterr()
    assert message in err and "Traceback" not in err and "log Z" not in out, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR.nc", "m.ppl"]
