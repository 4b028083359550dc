"""Result.plot (figure contents per method) and Result.save / ppl.load (NetCDF round trip)."""
import warnings

import numpy as np
import pytest

import ppl
from ppl.backends.hmc import ConvergenceWarning

RNG = np.random.default_rng(1)


def mcmc_result():
    stats = {"diverging": RNG.uniform(size=(2, 300)) < 0.01, "energy": RNG.normal(size=(2, 300)),
             "step_size": np.full((2, 300), 0.5)}
    return ppl.Result({"mu": RNG.normal(size=(2, 300)), "theta": RNG.normal(size=(2, 300, 3))}, method="nuts",
                      runtime="numpyro", device="cpu", sample_stats=stats,
                      diagnostics={"divergences": int(stats["diverging"].sum()), "step_size": [0.5, 0.5],
                                   "r_hat": {"mu": 1.0}, "e_bfmi": [1.0, 0.9]})


def is_result():
    return ppl.Result({"x": RNG.normal(size=(1, 1000))}, RNG.normal(size=(1, 1000)), log_z=-1.5, log_z_se=0.1,
                      method="is", runtime="pyro", device="cpu", diagnostics={"ess": 400.0, "pareto_k": 0.3})


def smc_result():
    betas = [np.array([0.0, 0.1, 0.5, 1.0]), np.array([0.0, 0.2, 1.0])]
    ess = [np.array([900.0, 800.0, 700.0]), np.array([850.0, 650.0])]
    return ppl.Result({"x": RNG.normal(size=(2, 1000)), "s": RNG.gamma(2.0, size=(2, 1000, 2))},
                      RNG.normal(size=(2, 1000)), log_z=0.3, log_z_se=0.05, method="smc", runtime="numpyro",
                      device="cpu", diagnostics={"beta": betas, "ess": ess, "log_z_per_chain": [0.25, 0.35]},
                      sample_stats={"beta": np.array([[[0.0, 0.1, 0.5, 1.0]], [[0.0, 0.2, 1.0, np.nan]]])})


def titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_plot_mcmc_has_corner_and_energy(tmp_path):
    fig = mcmc_result().plot(tmp_path / "nuts.png")
    assert (tmp_path / "nuts.png").stat().st_size > 10_000
    labels = {ax.get_xlabel() for ax in fig.axes}
    assert {"mu", "theta[1]", "theta[2]", "theta[3]"} <= labels     # 1-based, as the summary's rows
    assert sum(ax.axison for ax in fig.axes) == 10 + 1  # lower triangle of 4 x 4, plus the energy panel
    energy = fig.axes[-1]
    assert any("BFMI" in label for label in energy.get_legend_handles_labels()[1])


def test_plot_smc_shows_schedule_and_ess():
    fig = smc_result().plot(var_names=["x"])
    assert titles(fig) == ["tempering schedule", "ESS per step"]
    beta_ax = next(ax for ax in fig.axes if ax.get_title() == "tempering schedule")
    assert [len(line.get_ydata()) for line in beta_ax.lines] == [4, 3]


def test_plot_is_shows_weights():
    fig = is_result().plot()
    assert len(titles(fig)) == 1 and titles(fig)[0].startswith("importance weights")


def test_plot_unknown_site():
    with pytest.raises(ppl.NameResolutionError, match="nope"):
        is_result().plot(var_names=["nope"])


def assert_same(a, b):
    assert (a.method, a.runtime, a.device, a.log_z, a.log_z_se, a.seed, a.wall_time) == \
        (b.method, b.runtime, b.device, b.log_z, b.log_z_se, b.seed, b.wall_time)
    assert list(a.samples) == list(b.samples)
    for k in a.samples:
        np.testing.assert_array_equal(a.samples[k], b.samples[k])
    assert (a.log_weights is None) == (b.log_weights is None)
    if a.log_weights is not None:
        np.testing.assert_array_equal(a.log_weights, b.log_weights)
    assert set(a.sample_stats) == set(b.sample_stats)
    for k in a.sample_stats:
        np.testing.assert_array_equal(a.sample_stats[k], b.sample_stats[k])
        assert a.sample_stats[k].dtype == b.sample_stats[k].dtype
    assert set(a.diagnostics) == set(b.diagnostics)
    for k, v in a.diagnostics.items():
        if isinstance(v, list) and v and isinstance(v[0], np.ndarray):
            assert all(np.array_equal(x, y) for x, y in zip(v, b.diagnostics[k]))
        elif isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, b.diagnostics[k])
        else:
            assert v == b.diagnostics[k] or (v != v and b.diagnostics[k] != b.diagnostics[k]), k


@pytest.mark.parametrize("make", [mcmc_result, is_result, smc_result])
def test_save_load_round_trip_synthetic(tmp_path, make):
    r = make()
    r.seed, r.wall_time = 7, 1.25
    r.save(tmp_path / "r.nc")
    back = ppl.load(tmp_path / "r.nc")
    assert_same(r, back)
    np.testing.assert_allclose(back.mean("x" if "x" in r.samples else "mu"), r.mean("x" if "x" in r.samples else "mu"))


@pytest.mark.parametrize("method, options", [("is", {"particles": 500}),
                                             ("nuts", {"num_warmup": 30, "num_samples": 20, "chains": 2})])
def test_save_load_round_trip_real_runs(tmp_path, method, options):
    target = ppl.model(x=ppl.Normal(0.0, 1.0), s=ppl.HalfNormal(1.0, shape=(2,))).tilt(lambda x: -x * x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = ppl.sample(target, method=method, runtime="pyro", seed=2, **options)
    r.save(tmp_path / "run.nc")
    back = ppl.load(tmp_path / "run.nc")
    assert_same(r, back)
    assert back.summary().equals(r.summary())
    assert back.to_arviz().posterior["s"].shape == r.to_arviz().posterior["s"].shape


def test_load_rejects_foreign_files(tmp_path):
    import arviz as az
    az.from_dict(posterior={"x": np.zeros((1, 5))}).to_netcdf(str(tmp_path / "plain.nc"))
    with pytest.raises(ppl.PPLError, match="plain.nc"):
        ppl.load(tmp_path / "plain.nc")
    with pytest.raises(ppl.PPLError, match="missing.nc"):
        ppl.load(tmp_path / "missing.nc")


def test_summary_columns_say_what_each_method_measures():
    """MCMC: bulk and tail ESS, R-hat. Weighted runs: one ESS, Kish's, MCSE = sd/√ESS, and R-hat only across
    several runs (issue 36: IS printed an all-NaN R-hat column and a tail ESS equal to Kish's)."""
    smc = smc_result()
    tables = {"nuts": mcmc_result().summary(), "is": is_result().summary(), "smc": smc.summary()}
    assert list(tables["nuts"].columns) == list(ppl.Result.SUMMARY_COLUMNS)
    assert list(tables["smc"].columns) == list(ppl.Result.WEIGHTED_COLUMNS)
    assert list(tables["is"].columns) == [c for c in ppl.Result.WEIGHTED_COLUMNS if c != "r_hat"]
    assert list(tables["smc"].index) == ["x", "s[1]", "s[2]"]
    row = tables["smc"].loc["x"]
    assert row["ess"] == pytest.approx(smc.ess)
    assert row["mcse_mean"] == pytest.approx(row["sd"] / np.sqrt(smc.ess))
    assert np.isfinite(tables["smc"]["r_hat"]).all()
    assert 0.99 < tables["nuts"].loc["mu", "r_hat"] < 1.05
    for table in tables.values():
        assert table.notna().all().all(), table


def test_save_needs_a_path():
    """`Result.save(None)` is a named error, not a file called 'None' (issue 36)."""
    r = ppl.sample(ppl.model(x=ppl.Normal(0, 1)), method="is", particles=10)
    for path in (None, "", 3):
        with pytest.raises(ppl.PPLError, match="saved to a file path"):
            r.save(path)


@pytest.mark.parametrize("family", ["gaussian", "student_t", "mixture"])
def test_loaded_ais_fit_is_still_a_reference(family, tmp_path):
    """`ppl.load` keeps the fitted proposal of ais and the unconstrained draws (issue 36: r.proposal was lost, so
    a loaded fit could not be reused as reference=)."""
    m = ppl.model(s=ppl.Gamma(3.0, 2.0), x=ppl.Normal(0.0, 1.0, shape=(2,)))
    r = ppl.sample(m, method="ais", particles=200, seed=0, family=family, components=2)
    back = ppl.load(r.save(tmp_path / "ais.nc"))
    assert back.proposal.family == family and back.proposal.sites == r.proposal.sites
    np.testing.assert_array_equal(back.unconstrained, r.unconstrained)
    a, b = (ppl.sample(m, method="is", reference=q, particles=300, seed=1) for q in (r.proposal, back.proposal))
    assert a.log_z == pytest.approx(b.log_z, abs=1e-6)
