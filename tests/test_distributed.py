"""Several processes (`ppl.distributed`, `python -m ppl.launch`): two processes × two forced CPU devices on
127.0.0.1, collectives over gloo, against exact answers and against one process with four devices.

The target of is/smc/nuts is N(0, I₅) tilted by exp(a·x / λ): log Z = |a|² / (2λ²), posterior N(a / λ, I); pf
filters a linear-Gaussian state space (T = 30) whose log-likelihood the Kalman filter gives. Tolerances: 4
standard errors of log Z (the run's own se) and 5 / sqrt(ESS) for means (sd 1).
"""
import io
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from ppl import distributed, launch
from ppl.errors import ValueRangeError

HERE = os.path.dirname(__file__)
SCRIPT = os.path.join(HERE, "distributed_run.py")
A, LAM = np.array([0.2, 0.4, 0.6, 0.8, 1.0]), 1.5
EXACT_LOG_Z, EXACT_MEAN = float(A @ A) / (2 * LAM ** 2), A / LAM
CPU = {"JAX_PLATFORMS": "cpu"}


def results(text):
    """{(method, process): the JSON object the process printed}. An object is found anywhere in its line: C++
    libraries (gloo) write to the same pipe through their own buffers, so a part of their line may come first."""
    out, decoder = {}, json.JSONDecoder()
    for line in text.splitlines():
        start = line.find('{"method"')
        if start >= 0:
            r = decoder.raw_decode(line[start:])[0]
            out[r["method"], r["process"]] = r
    return out


def one_process(methods, devices=4):
    """The script's results in one process with `devices` forced CPU devices."""
    env = {**os.environ, **CPU, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    proc = subprocess.run([sys.executable, SCRIPT, methods], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["method"]: r for r in map(json.loads, proc.stdout.splitlines())}     # "smc/1": on one device


def across_two_processes(methods):
    """{(method, process): result} of the script on 2 processes × 2 forced CPU devices."""
    out = io.StringIO()
    status = launch.launch([sys.executable, SCRIPT, methods], 2, local_devices=2, timeout=400, out=out,
                           env={**os.environ, **CPU})
    text = out.getvalue()
    assert status == 0, text[-4000:]
    got = results(text)
    assert "particles (2001) must be divisible by the number of devices (4)" in got["indivisible", 0]["error"]
    assert "chains (6) must be divisible by the number of devices (4)" in got["chains", 0]["error"]
    for method in methods.split(","):
        r0, r1 = got[method, 0], got[method, 1]
        assert r0 == {**r1, "process": 0}, (r0, r1)      # every process assembles the same result
        assert r0["processes"] == 2 and r0["devices"] == 4, r0
    return got


def test_methods_across_two_processes():
    """smc, is, pf and nuts with devices="all" on 2 processes × 2 devices: both processes get the same Result
    (particles or chains on 4 devices), each at the exact answer. SMC is the one-process four-device estimator,
    not an average of two runs, and within Monte Carlo error of one device's."""
    got = across_two_processes("smc,is,pf,nuts")
    single = one_process("smc")
    from ssm_reference import LinearGaussianSSM       # the state space of distributed_run.py
    ssm = LinearGaussianSSM(0.9, 1.0, 1.0, 1.0, 0.0, 1 / 0.19)
    kalman = ssm.kalman(ssm.simulate(30, seed=0)[1][:, 0])["log_lik"]
    for method in ("smc", "is", "pf"):
        r = got[method, 0]
        exact = kalman if method == "pf" else EXACT_LOG_Z
        assert abs(r["log_z"] - exact) < 4 * r["se"], (method, r["log_z"], r["se"], exact)
        if method != "pf":
            assert np.all(np.abs(np.array(r["mean"]) - EXACT_MEAN) < 5 / np.sqrt(r["ess"])), (method, r)
    # the same estimator: log Z equal (a second, independent run would differ by ~ se = 0.03); the draws are not
    # bit-identical (measured: the means differ by 3e-4) because the step-size adaptation of the MALA moves
    # reduces over particles in another order (gloo's all-reduce across processes), so a step size one ulp apart
    # moves some particles differently — still far closer than Monte Carlo error 1 / sqrt(ESS) = 0.022
    smc, one = got["smc", 0], single["smc/1"]
    assert abs(smc["log_z"] - single["smc"]["log_z"]) < 1e-5, (smc, single["smc"])
    assert np.all(np.abs(np.array(smc["mean"]) - single["smc"]["mean"]) < 0.1 / np.sqrt(smc["ess"]))
    assert one["devices"] == 1 and abs(one["log_z"] - EXACT_LOG_Z) < 4 * one["se"]
    assert abs(smc["log_z"] - one["log_z"]) < 3 * one["se"]
    nuts = got["nuts", 0]
    assert np.all(np.abs(np.array(nuts["mean"]) - EXACT_MEAN) < 5 / np.sqrt(nuts["ess_min"])), nuts


@pytest.mark.slow
def test_nuts_draws_are_one_process_draws():
    """NUTS with devices="all": each device runs its own chains and nothing is reduced between them, so the
    draws on 2 processes × 2 devices are those of 1 process × 4 devices, bit for bit."""
    assert across_two_processes("nuts")["nuts", 0]["draws"] == one_process("nuts")["nuts"]["draws"]


@pytest.mark.slow
def test_fkc_across_two_processes():
    """FKC of classifier-free guidance q^(1−w) q_c^w of two Gaussians (VP SDE, 200 steps; tests/test_devices.py)
    on 2 processes × 2 devices: log Z at its closed form and equal to the one-process four-device run's."""
    from ppl.stdlib.diffusion import VPSDE
    m1, m2, s, w, t_min = np.array([1.0, -0.5]), np.array([-0.5, 0.5]), 0.7, 2.0, 1e-3

    def log_z(t):
        a, s2 = VPSDE().marginal(t)
        return w * (w - 1) * a * a * np.sum((m1 - m2) ** 2) / (2 * (a * a * s * s + s2))
    r = across_two_processes("fkc")["fkc", 0]
    assert abs(r["log_z"] - (log_z(t_min) - log_z(VPSDE().T))) < 0.02, r
    np.testing.assert_allclose(r["mean"], m1 + w * (m2 - m1), atol=0.07)
    assert abs(r["log_z"] - one_process("fkc")["fkc"]["log_z"]) < 1e-4


def _start(i, n, port, *args, devices=2):
    env = {**os.environ, **CPU, **launch.environment(i, n, port, devices)}
    return subprocess.Popen([sys.executable, SCRIPT, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_process_that_dies_stops_the_others():
    """Process 1 exits abruptly after the first run (once both processes have printed it: a barrier, without which
    process 0's watchdog could stop it before it prints) while process 0 starts the next (compiled: it waits for
    process 1 in a collective at once): process 0 stops with a PeerLostError naming process 1, within seconds, not
    a hang."""
    port = launch.free_port()
    procs = [_start(i, 2, port, "is,is", "die:1") for i in range(2)]
    start = time.monotonic()
    out, err = procs[0].communicate(timeout=240)
    procs[1].communicate(timeout=30)
    assert procs[1].returncode == 9
    assert procs[0].returncode == distributed.EXIT_CODE, err[-3000:]
    assert "PeerLostError: process 0 of 2: process 1 of 2 stopped" in err, err[-3000:]
    assert time.monotonic() - start < 200
    assert results("] " + "\n] ".join(out.splitlines()))["is", 0]["log_z"] is not None   # the first run ended


def test_a_process_that_never_joins():
    """Process 0 of 2 alone: it stops after the join timeout with a JoinError saying what to check; process 1
    pointed at a port where no coordinator listens raises JoinError naming the address."""
    code = ("import ppl.distributed as d, sys\n"
            "try:\n    d.initialize(timeout=3)\n"
            "except d.DistributedError as e:\n    print(type(e).__name__, e); sys.exit(5)\n")
    port = launch.free_port()
    alone, lost = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env={**os.environ, **CPU, **launch.environment(i, 2, p)})
                   for i, p in ((0, port), (1, launch.free_port()))]      # process 1 looks at another port
    out0, err0 = alone.communicate(timeout=120)
    out1, err1 = lost.communicate(timeout=120)
    assert alone.returncode == distributed.EXIT_CODE, err0[-2000:]
    assert "JoinError: process 0 of 2: not all 2 processes joined the coordinator" in err0
    assert lost.returncode == 5, err1[-2000:]
    assert "JoinError process 1 of 2: no coordinator answers at 127.0.0.1:" in out1


def test_settings_are_checked_before_joining(monkeypatch):
    """Missing, malformed or inconsistent settings are named before anything starts."""
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(distributed.DistributedError, match="no coordinator_address, num_processes, process_id"):
        distributed.initialize()
    with pytest.raises(ValueRangeError, match="not host:port"):
        distributed.initialize("localhost", 2, 0)
    with pytest.raises(ValueRangeError, match="process_id 2 is not below num_processes 2"):
        distributed.initialize("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueRangeError, match="num_processes must be an integer >= 1"):
        distributed.initialize("127.0.0.1:1234", 0, 0)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_NTASKS", "3")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "node1:4321")
    with pytest.raises(ValueRangeError, match="process_id 5 is not below num_processes 3"):
        distributed.initialize()


def test_launcher_stops_the_others_when_one_fails():
    """`ppl.launch`: output prefixed by process, the first failure's status, the others stopped (one sleeps
    forever), each process told its id."""
    code = ("import os, sys, time; i = int(os.environ['JAX_PROCESS_ID']); print('id', i, "
            "os.environ['JAX_NUM_PROCESSES'], flush=True)\nif i == 1: sys.exit(3)\ntime.sleep(600)")
    out = io.StringIO()
    start = time.monotonic()
    assert launch.launch([sys.executable, "-c", code], 2, out=out, grace=1) == 3
    assert time.monotonic() - start < 30
    text = out.getvalue()
    assert "[0] id 0 2" in text and "[1] id 1 2" in text, text
    assert "ppl.launch: process 1 exited with status 3; stopping the other processes" in text
    with socket.socket() as s:      # free_port gives a port nothing listens on
        assert s.connect_ex(("127.0.0.1", launch.free_port())) != 0
