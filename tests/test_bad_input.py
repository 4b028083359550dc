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


@pytest.mark.parametrize("seed", [None, "abc", 2 ** 70, 2 ** 63, 1.5, -1, False, 1e30])
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
    """Importance sampling and SMC give its exact log Z (every particle is the empty point; SMC has nothing to
    move, as where the compiler integrated every site out); NUTS has nothing to sample."""
    target = ppl.model(y=ppl.Normal(0.0, 1.0)).condition(y=0.3)
    for method in ("is", "smc"):
        r = ppl.sample(target, method=method, particles=10)
        assert r.log_z == pytest.approx(-0.5 * np.log(2 * np.pi) - 0.045, abs=1e-5)
    with pytest.raises(ppl.PPLError, match="no latent sites"):
        ppl.sample(target, method="nuts", particles=100, chains=1)


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


# ---- issue 36: crashes, hangs and silently accepted input ------------------------------------------------------
DIMS44 = ", ".join(["1"] * 44)


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("program, message", [
    ("model m { x ~ normal(x, 1) }", "m.ppl:1:22: 'x' reads itself"),
    ("model m { mu : ordered[2] ~ normal(0, mu) }", "m.ppl:1:39: 'mu' reads itself"),
    (f"model m {{ x ~ normal(0, 1) [{DIMS44}] }}", "m.ppl:1:15: Normal: more than 30 dimensions"),
    ("model m { x : simplex[0] }", "m.ppl:1:11: Dirichlet: parameter concentration of shape (0,) needs 1 event"),
    ("model m { x : simplex[1] ~ dirichlet(ones(0)) }", "m.ppl:1:28: Dirichlet: parameter concentration of shape (0,)"),
    ("model m { x ~ normal(0, 1) [0] }", "m.ppl:1:11: latent site 'x' has shape (0,): no elements to sample"),
    ("model m { x ~ normal(zeros(3), ones(2)) }", "m.ppl:1:15: Normal: parameters loc, scale of batch shapes (3,), "
                                                  "(2,) do not broadcast"),
    ("model m { x ~ normal(0, 1)\n  s = 0.0\n  for t in 1:100000000 { s += x }\n  factor -s^2\n}",
     "m.ppl:3:12: this loop runs 100000000 times; a loop runs at most 1,000,000 times"),
    ("model m { x ~ normal(0, 1)\n  s = 0.0\n  for t in 1:3 { s += sum(zeros(5)[4:2]) }\n  factor -s^2 - x^2\n}",
     "m.ppl:3:36: slice 4:2 is reversed"),
    ("model model { x ~ normal(0, 1) }", "m.ppl:1:7: 'model' is a keyword and cannot name a model"),
    ("model m { sample ~ normal(0, 1) }", "m.ppl:1:11: 'sample' is a keyword and cannot name a site or a value"),
])
def test_bad_programs_are_located_by_check_and_run(tmp_path, capsys, monkeypatch, command, program, message):
    """Issue 36: each was a traceback (KeyError, numpy's 32-dimension RuntimeError, a reshape ValueError), a hang
    (a loop of 1e8 iterations ran for minutes in `ppl check`), or silently accepted (a reversed slice was empty,
    `model model` loaded)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.ppl").write_text(program + "\n")
    assert main([command, "m.ppl"]) == 2
    err = capsys.readouterr().err
    assert message in err and "^" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("options, message", [
    ("particles = 10, particles = 20", "m.ppl:2:34: particles is given twice"),
    ('particles = 10, precision = "float16"', "m.ppl:2:46: unknown precision 'float16'; choose one of float32"),
    ("particles = 10, seed = 1e30", "m.ppl:2:41: seed must be an integer >= 0"),
    ('proposal = "abc"', "m.ppl:2:29: proposal must be a fitted proposal"),
])
def test_bad_sample_options_are_located_by_check_and_run(tmp_path, capsys, monkeypatch, command, options, message):
    """Issue 36: the second of two equal options won silently, precision = "float16" passed `ppl check`, a
    string proposal was an AttributeError after the run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.ppl").write_text(f"model m {{ x ~ normal(0, 1) }}\nsample m with is({options})\n")
    assert main([command, "m.ppl"]) == 2
    err = capsys.readouterr().err
    assert message in err and "^" in err and "Traceback" not in err


def test_check_without_the_data_a_model_observes(tmp_path, capsys):
    """`ppl check` of a model observing a datum whose value is not given stops at that model (a NeedsData
    traceback before), with or without a shape mismatch that only the value shows."""
    for n in (3, 5):
        (tmp_path / "m.ppl").write_text(f"data y : real[{n}]\nmodel m {{ mu ~ normal(0, 1) [3]\n"
                                        f"  y ~ normal(mu, 1) }}\n")
        assert main(["check", str(tmp_path / "m.ppl")]) == 0
        out = capsys.readouterr()
        assert "m: checked up to where it needs the value of y" in out.out and "Traceback" not in out.err


def test_a_long_loop_is_checked_at_its_ends(tmp_path, capsys, monkeypatch):
    """The compiler's shape trace runs a loop's first iterations and its last, not all of them: `ppl check` of a
    loop of a million iterations (the limit) stays fast, and an index out of range at the end is still found."""
    from ppl.lang.interpret import MAX_ITERATIONS, UNROLL, Interpreter
    calls, run = [], Interpreter.run
    monkeypatch.setattr(Interpreter, "run", lambda self, *a: calls.append(1) or run(self, *a))
    body = "model m {{ x ~ normal(0, 1)\n  s = 0.0\n  for t in 1:{n} {{ s += x * y[t] }}\n  factor -s^2\n}}\n"
    (tmp_path / "m.ppl").write_text(f"data y : real[{MAX_ITERATIONS}]\n" + body.format(n=MAX_ITERATIONS))
    (tmp_path / "d.json").write_text('{"y": [0.5]}'.replace("[0.5]", str([0.5] * MAX_ITERATIONS)))
    assert main(["check", str(tmp_path / "m.ppl"), "--data", str(tmp_path / "d.json")]) == 0
    assert 0 < len(calls) < 10 * (UNROLL + 1)
    (tmp_path / "m.ppl").write_text(f"data y : real[{MAX_ITERATIONS}]\n" + body.format(n=MAX_ITERATIONS + 0)
                                    .replace("y[t]", "y[t + 1]"))
    assert main(["check", str(tmp_path / "m.ppl"), "--data", str(tmp_path / "d.json")]) == 2
    assert f"index {MAX_ITERATIONS + 1} is out of range 1..{MAX_ITERATIONS}" in capsys.readouterr().err


def _expect(**kw):
    return lambda: ppl.expect(TARGET, {"m": lambda x: x}, budget=2000, **kw)


@pytest.mark.parametrize("call, error, message", [
    (lambda: ppl.model(data=[1, 2], x=ppl.Normal(0, 1)), ppl.PPLError, r"must be a dict of name -> value, got \[1, 2\]"),
    (lambda: ppl.model(data={"a": "abc"}, x=lambda a: ppl.Normal(a, 1)), ppl.ValueRangeError,
     "data 'a' of model .* must be a number or an array of numbers, got 'abc'"),
    (lambda: ppl.model(data={"x": 1.0}, x=ppl.Normal(0, 1)), ppl.NameResolutionError, "'x' is both data and a site"),
    (lambda: P.condition(x=None), ppl.ValueRangeError, "the observed value of 'x' must be a number"),
    (lambda: P.condition(x="abc"), ppl.ValueRangeError, "the observed value of 'x' must be a number"),
    (lambda: ppl.model(x=lambda x: ppl.Normal(x, 1)), ppl.NameResolutionError, "site 'x' reads itself"),
    (lambda: ppl.Normal(0, 1, shape=2.5), ppl.ValueRangeError, "shape must be non-negative integers, got 2.5"),
    (lambda: ppl.Normal(np.zeros(3), np.ones(2)), ppl.ValueRangeError, r"batch shapes \(3,\), \(2,\) do not broadcast"),
    (lambda: ppl.Dirichlet(np.ones(0)), ppl.ValueRangeError, r"concentration of shape \(0,\) needs 1 event"),
    (lambda: ppl.Normal(0, 1, shape=(1,) * 44), ppl.ValueRangeError, "more than 30 dimensions"),
    (lambda: ppl.sample(ppl.model(x=ppl.Normal(0, 1, shape=(0,))), particles=10), ppl.PlanError,
     r"latent site 'x' has shape \(0,\): no elements"),
    (lambda: ppl.sample(TARGET, method="smc", particles=100, kernel_options=[1, 2]), ppl.ValueRangeError,
     r"kernel_options must be a dict of option -> value, got \[1, 2\]"),
    (lambda: ppl.sample(TARGET, particles=10, proposal="abc"), ppl.PlanError, "proposal must be a fitted proposal"),
    (lambda: ppl.sample(TARGET, particles=10, precision="float16"), ppl.UnknownNameError, "unknown precision"),
    (_expect(adapt="a"), ppl.ValueRangeError, "adapt .* must be in \\(0, 1\\), got 'a'"),
    (lambda: ppl.load_ppl(PROGRAM, symbolic=1), ppl.ValueRangeError, "symbolic must be True or False"),
])
def test_bad_api_calls_are_named(call, error, message):
    """Issue 36: raw AttributeError / ValueError / TypeError / KeyError before, or silently accepted (a datum of a
    site's name was ignored)."""
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
def test_expect_of_a_function_returning_a_string(runtime):
    with pytest.raises(ppl.UserFunctionError, match="function 'm' must return one number per draw; it returned str"):
        ppl.expect(TARGET, {"m": lambda x: "abc"}, budget=2000, runtime=runtime)
    with pytest.raises(ppl.UserFunctionError, match="function 'm' must return one number per draw"):
        ppl.sample(TARGET, particles=10, runtime=runtime).expect({"m": lambda x: None})


def test_memory_is_counted_in_bytes_allocated_against_the_memory_available(monkeypatch):
    """A latent site's compile trace holds three float64 copies (24 bytes per element), particles the run's float
    size: `half_normal(2) [2147483648]` passed a check of 4 bytes per element against the total memory and
    allocated 16 GiB."""
    import ppl.compiler.shapes as shapes
    monkeypatch.setattr(shapes, "memory_bytes", lambda: 2 ** 20)
    monkeypatch.setattr(shapes, "UNCHECKED", 0)
    with pytest.raises(ppl.ShapeError, match=r"latent site 'x' of shape \(50000,\) needs 5e\+04 numbers \(0.00112 "
                                             r"GiB\), more than the memory available \(0.000977 GiB\)"):
        ppl.compile(ppl.model(x=ppl.HalfNormal(2.0, shape=(5 * 10 ** 4,))))   # 0.2 MiB at 4 bytes per element
    wide = ppl.model(x=ppl.Normal(0.0, 1.0, shape=(100,)))
    assert ppl.sample(wide, particles=2000, precision="float32").log_z == 0.0      # 0.76 MiB
    with pytest.raises(ppl.ShapeError, match=r"2000 particles of dimension 100 needs 2e\+05 numbers"):
        ppl.sample(wide, particles=2000, precision="float64")                     # 1.5 MiB
