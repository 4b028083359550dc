"""One process of the multi-process checks of tests/test_distributed.py (started by `ppl.launch`, or alone with
XLA_FLAGS forcing 4 CPU devices for the one-process comparison, where smc also runs on one device): runs the
methods named in argv[1] with devices="all" and prints one JSON line per method (and per refused request). argv[2] (optional) = "die:K": process 1 exits abruptly
after its K-th method (once every process has printed it), while the others go on."""
import hashlib
import json
import os
import sys

import numpy as np

import ppl
import ppl.distributed

die = int(sys.argv[2].split(":")[1]) if len(sys.argv) > 2 else None
if "JAX_COORDINATOR_ADDRESS" in os.environ:     # where a process dies, it is noticed in ~3 s instead of 10
    ppl.distributed.initialize(timeout=60, heartbeat=3 if die else 10)
import jax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from ssm_reference import LinearGaussianSSM  # noqa: E402

A, LAM = [0.2, 0.4, 0.6, 0.8, 1.0], 1.5
TILTED = ppl.model(x=ppl.Normal(0.0, 1.0, shape=(5,))).tilt(lambda x: sum(A[i] * x[i] for i in range(5)), LAM)
SSM = LinearGaussianSSM(0.9, 1.0, 1.0, 1.0, 0.0, 1 / 0.19)
Y = SSM.simulate(30, seed=0)[1][:, 0]
CHAIN = ppl.model(x=ppl.markov(init=lambda: ppl.Normal(0.0, (1 / 0.19) ** 0.5),
                               step=lambda prev: ppl.Normal(0.9 * prev, 1.0), length=len(Y)),
                  y=lambda x: ppl.Normal(x, 1.0)).condition(y=Y)
RUNS = {
    "is": (TILTED, dict(particles=2000)),
    "smc": (TILTED, dict(particles=2000, kernel="mala")),
    "pf": (CHAIN, dict(particles=1000, resample_threshold=0.5, marginalize=False)),
    "nuts": (TILTED, dict(particles=400, chains=4, num_warmup=150)),
}
if "fkc" in sys.argv[1]:
    from ppl.stdlib.diffusion import GaussianMixture, VPSDE
    GUIDED = ppl.geometric(*[ppl.diffusion(GaussianMixture(np.array([m]), sd=0.7), VPSDE(), 2)
                             for m in ([1.0, -0.5], [-0.5, 0.5])], 2.0)
    RUNS["fkc"] = (GUIDED, dict(particles=2000, steps=200, t_min=1e-3))


def emit(result):
    """One JSON line in one write (a line written in two parts could be split by another writer to the pipe)."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


for name, kw in {"indivisible": dict(method="is", particles=2001),
                 "chains": dict(method="nuts", particles=60, chains=6, num_warmup=10)}.items():
    try:
        ppl.sample(TILTED, devices="all", **kw)
    except ppl.PPLError as e:
        emit({"method": name, "process": jax.process_index(), "error": str(e)})
# one process alone also runs smc on one device (the one-device estimator the others are compared with)
runs = [(m, "all") for m in sys.argv[1].split(",")]
runs += [("smc", 1)] if "smc" in sys.argv[1] and jax.process_count() == 1 else []
for k, (method, devices) in enumerate(runs):
    target, options = RUNS[method]
    r = ppl.sample(target, method=method, seed=3, devices=devices, **options)
    x = r.samples["x"].reshape(-1, r.samples["x"].shape[-1] if method != "pf" else len(Y))
    w = r.weights.reshape(-1) if r.weights is not None else np.ones(len(x))
    w = w / w.sum()
    emit({"method": method + ("/1" if devices == 1 else ""), "process": jax.process_index(),
          "processes": jax.process_count(), "log_z": r.log_z, "se": r.log_z_se, "ess": r.ess,
          "ess_min": r.diagnostics.get("ess_min"), "mean": (w[:, None] * x).sum(0).tolist(),
          "devices": r.diagnostics.get("particle_devices", r.diagnostics.get("chain_devices")),
          "draws": hashlib.sha1(r.samples["x"].tobytes()).hexdigest()})
    if die is not None:     # every process has printed run k before process 1 may die: its peers' watchdogs then
        multihost_utils.sync_global_devices(f"run {k} printed")     # cannot stop them before they print
    if die == k + 1 and jax.process_index() == 1:
        os._exit(9)
