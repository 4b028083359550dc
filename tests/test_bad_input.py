"""Bad input to the Python API and the command line: a PPLError naming the problem (exit 2 from the CLI), never a
traceback or a silently wrong number (issue 14)."""
import numpy as np
import pytest

import ppl
from ppl.cli import main

TARGET = ppl.model(x=ppl.Normal(0.0, 1.0), y=lambda x: ppl.Normal(x, 1.0)).condition(y=0.5)
PROGRAM = "model m { x ~ normal(0, 1) }\nsample m with is(particles = 100)\n"


@pytest.mark.parametrize("particles", [0, -1, 2.5, "100", True, None])
def test_particles_must_be_a_positive_integer(particles):
    with pytest.raises(ppl.ValueRangeError, match="particles must be an integer >= 1"):
        ppl.sample(TARGET, particles=particles)


@pytest.mark.parametrize("seed", [None, "abc", 2 ** 70, 2 ** 63, 1.5, -1, False])
def test_seed_must_be_an_integer_in_range(seed):
    with pytest.raises(ppl.ValueRangeError, match="seed must be an integer >= 0 and < 9223372036854775808"):
        ppl.sample(TARGET, particles=10, seed=seed)


def test_unknown_options_are_named_with_the_known_ones():
    with pytest.raises(ppl.UnknownNameError, match=r"method 'is' has no option\(s\) stepz; its options: batch_size"):
        ppl.sample(TARGET, method="is", particles=10, stepz=3)
    with pytest.raises(ppl.UnknownNameError, match=r"method 'smc' has no option\(s\) kernal; its options: runs, "
                                                   r"kernel, kernel_options"):
        ppl.sample(TARGET, method="smc", particles=100, kernal="mala")


@pytest.mark.parametrize("particles", [2, 3, 9])
def test_smc_refuses_too_few_particles(particles):
    with pytest.raises(ppl.ValueRangeError, match="SMC needs particles >= 10"):
        ppl.sample(TARGET, method="smc", particles=particles)


@pytest.mark.parametrize("option, value", [("fold", 1), ("fold", "no"), ("fold", None), ("progress", "yes"),
                                           ("progress", 0)])
def test_flags_take_only_a_bool(option, value):
    """fold= and progress= (None: automatic) are booleans, not anything truthy (issue 36: silently accepted)."""
    with pytest.raises(ppl.ValueRangeError, match=f"{option} must be True or False"):
        ppl.sample(ppl.model(x=ppl.Normal(0, 1)), method="is", particles=10, **{option: value})


@pytest.mark.parametrize("flag", ["False", "yes", 1, None])
def test_allow_python_takes_only_a_bool(flag):
    with pytest.raises(ppl.ValueRangeError, match="allow_python must be True or False"):
        ppl.load_ppl(PROGRAM, allow_python=flag)


@pytest.mark.parametrize("args, message", [
    (["--method", ""], "unknown method ''"),
    (["--seed", str(2 ** 63)], "seed must be an integer"),
    (["--particles", "0"], "particles must be an integer >= 1"),
    (["--method", "smc", "--particles", "3"], "SMC needs particles >= 10"),
])
def test_cli_bad_run_options_exit_2(tmp_path, capsys, args, message):
    program = tmp_path / "m.ppl"
    program.write_text(PROGRAM)
    assert main(["run", str(program)] + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("ppl ")


@pytest.mark.parametrize("value, what", [("3", "strings"), (True, "booleans"), ([1, "2"], "strings"),
                                         ([[1, 2], [3]], "not numbers")])
def test_int_data_must_be_numbers(value, what):
    with pytest.raises(ppl.SourceError, match=f"data 'N' is declared int but its value is {what}"):
        ppl.load_ppl("data N : int\nmodel m { x ~ normal(0, 1) }\n", data={"N": value})


@pytest.mark.parametrize("args, message", [
    (["--out", "missing_dir/r.nc"], "the folder"),
    (["--out", "r.csv"], "unknown extension .csv; use one of .nc"),
    (["--plot", "missing_dir/p.png"], "the folder"),
    (["--plot", "p.xyz"], "unknown extension .xyz"),
])
def test_cli_checks_output_paths_before_the_run(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.ppl").write_text(PROGRAM)
    assert main(["run", "m.ppl"] + args) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "log Z" not in captured.out     # refused before sampling


def test_cli_output_loads_with_ppl_and_arviz(tmp_path, monkeypatch):
    import arviz as az
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.ppl").write_text(PROGRAM)
    assert main(["run", "m.ppl", "--out", "r.nc"]) == 0
    r = ppl.load("r.nc")
    assert r.method == "is" and r.log_z is not None and r.samples["x"].shape == (1, 100)
    assert "x" in az.from_netcdf("r.nc").posterior


def test_save_to_a_missing_folder(tmp_path):
    r = ppl.sample(TARGET, particles=10)
    with pytest.raises(ppl.PPLError, match="the folder .* does not exist"):
        r.save(tmp_path / "nope" / "r.nc")


P = ppl.model(x=ppl.Normal(0.0, 1.0))


def _raise(x):
    return 1 / 0


@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
@pytest.mark.parametrize("reward, error, message", [
    (lambda x: "a", ppl.UserFunctionError, "a reward must return one real per particle; reward <lambda> returned str"),
    (lambda x: None, ppl.UserFunctionError, "returned NoneType"),
    (_raise, ppl.UserFunctionError, "reward _raise raised ZeroDivisionError: division by zero"),
    (lambda x: np.sin(x), ppl.UserFunctionError, "use ppl.math"),
])
def test_user_functions_fail_by_name(runtime, reward, error, message):
    with pytest.raises(error, match=message):
        ppl.sample(P.tilt(reward), particles=10, runtime=runtime)


def test_rewards_read_sites_by_name():
    with pytest.raises(ppl.PPLError, match=r"\*args / \*\*kwargs name none"):
        P.tilt(lambda *a: 0.0)


def test_bad_distribution_arguments():
    with pytest.raises(ppl.ValueRangeError, match="parameter loc must be a number or an array, got 'a'"):
        ppl.Normal("a", 1.0)
    with pytest.raises(ppl.ValueRangeError, match=r"shape must be non-negative integers, got \(-1,\)"):
        ppl.Normal(0.0, 1.0, shape=(-1,))


def test_a_target_with_nothing_latent():
    """Importance sampling gives its exact log Z (every particle is the empty point); SMC has nothing to move."""
    target = ppl.model(y=ppl.Normal(0.0, 1.0)).condition(y=0.3)
    r = ppl.sample(target, particles=10)
    assert r.log_z == pytest.approx(-0.5 * np.log(2 * np.pi) - 0.045, abs=1e-5)
    with pytest.raises(ppl.PPLError, match="no latent sites"):
        ppl.sample(target, method="smc", particles=10)


@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
@pytest.mark.parametrize("particles", [1, 2, 12])
def test_nuts_with_too_few_draws(runtime, particles):
    with pytest.raises(ppl.ValueRangeError, match="nuts needs at least 4 draws per chain"):
        ppl.sample(P, method="nuts", runtime=runtime, particles=particles, chains=4, num_warmup=10)


@pytest.mark.parametrize("program, data, message", [
    (b"\x89PNG\x00\xff binary", None, "m.ppl: cannot read program: not a UTF-8 text file"),
    (b"model m {}\nsample m with is(particles = 10)\n", None, "m.ppl: the target m has no sites and no factors"),
    (b"model m { x ~ normal(0, 1) [1e400] }\n", None, "m.ppl:1:29: a dimension must be a non-negative integer"),
    (b"data y : real\nmodel m { x ~ normal(0, 1) }\n", "[" * 100000 + "]" * 100000,
     "cannot read data file: nested too deeply"),
    (b"model m { x ~ normal(0, 1) [100000000000] }\n", None, "m.ppl:1:11: latent site 'x' of shape (100000000000,) "
                                                            "needs 1e+11 numbers"),
    (b"data y : real[3]\nmodel m { s ~ half_normal(y) [2] }\n", '{"y": [1, 2, 3]}',
     "m.ppl:2:11: a distribution with batch shape (3,) cannot be expanded to shape (2,)"),
])
def test_cli_bad_programs_exit_2_with_a_location(tmp_path, capsys, monkeypatch, program, data, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.ppl").write_bytes(program)
    args = ["run", "m.ppl"]
    if data is not None:
        (tmp_path / "d.json").write_text(data if data.startswith("{") else '{"y": ' + data + "}")
        args += ["--data", "d.json"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_particles_that_cannot_fit_in_memory_are_refused():
    wide = ppl.model(x=ppl.Normal(0.0, 1.0, shape=(10 ** 6,)))
    with pytest.raises(ppl.ShapeError, match=r"100000 particles of dimension 1000000 needs 1e\+11 numbers"):
        ppl.sample(wide, particles=10 ** 5)


@pytest.mark.parametrize("options, message, column", [
    ('particles = "abc"', "particles must be an integer >= 1, got 'abc'", 31),
    ("particles = -3", "particles must be an integer >= 1, got -3", 31),
    ("decorrelation = 2", "decorrelation must be a number in (0, 1), got 2", 35),
    ("particles = 100, target_ess = 1.5", "target_ess must be a number in (0, 1), got 1.5", 49)])
def test_check_validates_option_values_at_their_place(tmp_path, capsys, options, message, column):
    (tmp_path / "m.ppl").write_text(f"model m {{ x ~ normal(0, 1) }}\nsample m with smc({options})\n")
    assert main(["check", str(tmp_path / "m.ppl")]) == 2
    err = capsys.readouterr().err
    assert f"m.ppl:2:{column}: {message}" in err and "^" in err and "Traceback" not in err
