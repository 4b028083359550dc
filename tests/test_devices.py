"""devices=: particles split over 4 forced host CPU devices (a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=4) against one device and the exact answer.

The target is N(0, I₅) tilted by exp(a·x / λ): log Z = |a|² / (2λ²), posterior N(a / λ, I). Tolerances: 5
standard errors of log Z (the run's own se) and 5 / sqrt(ESS) for the posterior means (sd 1).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import ppl
from ppl.errors import DeviceError

A, LAM = [0.2, 0.4, 0.6, 0.8, 1.0], 1.5
EXACT_LOG_Z = sum(a * a for a in A) / (2 * LAM ** 2)
EXACT_MEAN = np.array(A) / LAM

TILTED = f"""
A, LAM = {A!r}, {LAM!r}
target = ppl.model(x=ppl.Normal(0.0, 1.0, shape=(5,))).tilt(lambda x: sum(A[i] * x[i] for i in range(5)), LAM)
"""

SCRIPT = """
import hashlib, json, sys
import numpy as np
import ppl
exec(sys.argv[1])      # defines target
method, particles, options = sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
target, site = ppl.compile(target, marginalize=options.pop("marginalize", True)), sys.argv[2]
out = {}
for d in (1, 4):
    r = ppl.sample(target, method=method, particles=particles, seed=3, devices=d, **options)
    x, w = r.samples[site].reshape(particles, -1), r.weights.reshape(-1)
    out[d] = {"log_z": r.log_z, "se": r.log_z_se, "ess": r.ess, "mean": (w[:, None] * x).sum(0).tolist(),
              "particle_devices": r.diagnostics["particle_devices"],
              "samples": hashlib.sha1(r.samples[site].tobytes()).hexdigest()}
errors = {}
for name, kw in {"indivisible": dict(method=method, particles=particles + 1, devices=4),
                 "ais": dict(method="ais", particles=400, devices=4)}.items():
    try:
        ppl.sample(target, seed=0, **kw)
    except ppl.PPLError as e:
        errors[name] = [type(e).__name__, str(e)]
out["errors"] = errors
print(json.dumps(out))
"""


def on_four_devices(target_code, site, method, particles, **options):
    """The script's results (`method` on the target that `target_code` defines, with 1 and 4 of 4 forced host
    CPU devices; the errors of indivisible particles and of a method that does not shard)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, target_code, site, method, str(particles),
                           json.dumps(options)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["1"]["particle_devices"], out["4"]["particle_devices"]) == (1, 4)
    kind, message = out["errors"]["indivisible"]
    assert kind == "ValueRangeError" and "divisible" in message and str(particles + 1) in message
    return out["1"], out["4"], out["errors"]


def check_exact(r):
    assert abs(r["log_z"] - EXACT_LOG_Z) < 5 * r["se"], (r, EXACT_LOG_Z)
    assert np.all(np.abs(np.array(r["mean"]) - EXACT_MEAN) < 5 / np.sqrt(r["ess"])), (r["mean"], EXACT_MEAN)


def test_importance_sampling_on_four_devices():
    """IS on 4 devices: the particles really split 4 ways, the same draws as on one device (bitwise), log Z
    equal up to the order of float32 sums, both at the exact answer; ais does not shard."""
    one, four, errors = on_four_devices(TILTED, "x", "is", 2000)
    kind, message = errors["ais"]
    assert kind == "DeviceError" and "'ais'" in message
    assert four["samples"] == one["samples"]
    assert abs(four["log_z"] - one["log_z"]) < 1e-5 and abs(four["ess"] - one["ess"]) < 1e-2 * one["ess"]
    check_exact(one)
    check_exact(four)


@pytest.mark.slow     # in CI: tests/test_distributed.py, where one process runs smc on 1 and 4 devices
def test_smc_on_four_devices():
    """Adaptive tempered SMC (MALA moves) on 4 devices: the particles stay split 4 ways through resampling and
    moves; log Z and moments at the exact answer and within Monte Carlo error of one device's."""
    one, four, _ = on_four_devices(TILTED, "x", "smc", 2000, kernel="mala")
    check_exact(one)
    check_exact(four)
    assert abs(four["log_z"] - one["log_z"]) < 3 * one["se"]


NUTS_SCRIPT = """
import json, sys
import numpy as np
import ppl
exec(sys.argv[1])      # defines target
target, out = ppl.compile(target), {}
for d in (1, 4):
    r = ppl.sample(target, method="nuts", particles=1600, chains=4, num_warmup=200, seed=3, devices=d)
    out[d] = {"mean": r.samples["x"].reshape(-1, 5).mean(0).tolist(), "ess": r.diagnostics["ess_min"],
              "chain_devices": r.diagnostics["chain_devices"]}
try:
    ppl.sample(target, method="nuts", particles=1600, chains=6, devices=4)
except ppl.PPLError as e:
    out["error"] = [type(e).__name__, str(e)]
print(json.dumps(out))
"""


@pytest.mark.slow     # in CI: tests/test_distributed.py (NUTS chains on 4 devices, of one or two processes)
def test_nuts_chains_on_four_devices():
    """NUTS with devices=4: NumPyro runs one chain on each device (`sharding.chains_across`, a callable
    chain_method). The draws are not those of the four vectorized chains on one device: NumPyro's vectorized and
    per-chain paths round differently in float32 and NUTS's trajectories amplify it within the warmup (measured:
    the first kept draws already differ by O(1); NumPyro's own 'sequential' and jax.vmap chain methods differ from
    'vectorized' as much). So both runs are checked against the exact posterior mean and against each other within
    Monte Carlo error; chains that do not divide among the devices are an error."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", NUTS_SCRIPT, TILTED], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, four = out["1"], out["4"]
    assert (one["chain_devices"], four["chain_devices"]) == (1, 4)
    for r in (one, four):
        assert np.all(np.abs(np.array(r["mean"]) - EXACT_MEAN) < 5 / np.sqrt(r["ess"])), r
    spread = np.sqrt(1 / one["ess"] + 1 / four["ess"])      # the target's sds are at most 1
    assert np.all(np.abs(np.array(four["mean"]) - np.array(one["mean"])) < 5 * spread), (one, four)
    kind, message = out["error"]
    assert kind == "ValueRangeError" and "chains (6)" in message


def test_devices_errors_in_this_process():
    """The Pyro runtime runs on one device; more devices than JAX sees names the XLA flag."""
    target = ppl.model(x=ppl.Normal(0.0, 1.0))
    with pytest.raises(DeviceError, match="numpyro"):
        ppl.sample(target, runtime="pyro", particles=100, devices=2)
    import jax
    n = len(jax.devices()) + 1
    with pytest.raises(DeviceError, match="xla_force_host_platform_device_count"):
        ppl.sample(target, particles=100 * n, devices=n)


def test_cli_devices_flag(capsys):
    """`ppl run --devices K|all`: a bad value is a usage error, too many devices an error naming the flag to set
    (exit 2, no traceback)."""
    import jax
    from ppl.cli import main
    root = os.path.join(os.path.dirname(__file__), "..", "examples")
    run = ["run", os.path.join(root, "eight_schools_noncentered.ppl"), "--data",
           os.path.join(root, "eight_schools.data.json"), "--method", "is", "--particles", "1000"]
    with pytest.raises(SystemExit) as e:
        main(run + ["--devices", "x"])
    assert e.value.code == 2 and "number of devices or 'all'" in capsys.readouterr().err
    assert main(run + ["--devices", str(len(jax.devices()) + 1)]) == 2
    err = capsys.readouterr().err
    assert "xla_force_host_platform_device_count" in err and "Traceback" not in err


@pytest.mark.slow
def test_particle_filter_on_four_devices():
    """A bootstrap filter of a 1-d linear-Gaussian state-space model (T = 30) on 4 devices: log Z at the Kalman
    log-likelihood and within Monte Carlo error of one device's."""
    from ssm_reference import LinearGaussianSSM
    m = LinearGaussianSSM(0.9, 1.0, 1.0, 1.0, 0.0, 1 / 0.19)
    y = m.simulate(30, seed=0)[1][:, 0]
    code = f"""
y = np.array({y.tolist()!r})
target = ppl.model(x=ppl.markov(init=lambda: ppl.Normal(0.0, {(1 / 0.19) ** 0.5!r}),
                                step=lambda prev: ppl.Normal(0.9 * prev, 1.0), length=len(y)),
                   y=lambda x: ppl.Normal(x, 1.0)).condition(y=y)
"""
    one, four, _ = on_four_devices(code, "x", "pf", 1000, resample_threshold=0.5, marginalize=False)
    exact = m.kalman(y)["log_lik"]
    for r in (one, four):
        assert abs(r["log_z"] - exact) < 4 * r["se"], (r["log_z"], r["se"], exact)
    assert abs(four["log_z"] - one["log_z"]) < 3 * one["se"]


@pytest.mark.slow
def test_fkc_on_four_devices():
    """FKC of classifier-free guidance q^(1−w) q_c^w of two Gaussians (VP SDE, 200 steps) on 4 devices: log Z
    at its closed form (DESIGN §5; per-run sd ~0.003) and the mean at m1 + w (m2 − m1) (sd 0.7 / sqrt(2000))."""
    from ppl.stdlib.diffusion import VPSDE
    m1, m2, s, w, t_min = np.array([1.0, -0.5]), np.array([-0.5, 0.5]), 0.7, 2.0, 1e-3
    code = f"""
from ppl.stdlib.diffusion import GaussianMixture, VPSDE
q = [ppl.diffusion(GaussianMixture(np.array([m]), sd={s!r}), VPSDE(), 2) for m in ({m1.tolist()!r}, {m2.tolist()!r})]
target = ppl.geometric(q[0], q[1], {w!r})
"""
    one, four, _ = on_four_devices(code, "x", "fkc", 2000, steps=200, t_min=t_min)

    def log_z(t):
        a, s2 = VPSDE().marginal(t)
        return w * (w - 1) * a * a * np.sum((m1 - m2) ** 2) / (2 * (a * a * s * s + s2))
    exact = log_z(t_min) - log_z(VPSDE().T)
    for r in (one, four):
        assert abs(r["log_z"] - exact) < 0.02, (r["log_z"], exact)
        np.testing.assert_allclose(r["mean"], m1 + w * (m2 - m1), atol=0.07)
    assert abs(four["log_z"] - one["log_z"]) < 0.01
