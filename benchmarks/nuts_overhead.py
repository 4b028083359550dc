"""Overhead of `ppl.sample(method="nuts")` against a hand-written NumPyro model with `numpyro.infer.NUTS`.

Same targets, warmup, draws and chains (vectorized), one process, float32, CPU. Each system is
timed `--repeats` times, alternating, and the median is reported. A fresh `MCMC` (plain) or a
fresh `ppl.sample` call (ours) compiles anew each time, so both walls include compilation; the
compile share (JAX trace + MLIR lowering + XLA compile, from `jax.monitoring`) is reported
separately, and run = wall − compile. Ours also includes planning, reference draws for the
initial points, the constrained transform of all draws and the ArviZ diagnostics.

    python benchmarks/nuts_overhead.py [--warmup 1000 --samples 1000 --chains 4 --repeats 3]

Needs ../shared/reference/german_credit (or $PPL_REFERENCE) for German credit.
"""
import argparse
import collections
import os
import statistics
import time
import warnings
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.monitoring  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

import ppl  # noqa: E402

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
_events = collections.Counter()
jax.monitoring.register_event_duration_secs_listener(lambda name, secs, **kw: _events.update({name: secs}))


def compile_seconds():
    return sum(_events[e] for e in COMPILE_EVENTS)


# --- problems: (hand-written NumPyro model, its data, the same target in ppl, a site to compare) ----
def eight_schools():
    y = np.array([28, 8, -3, 7, -1, 1, 18, 12], dtype=np.float32)
    sigma = np.array([15, 10, 16, 11, 9, 11, 10, 18], dtype=np.float32)

    def model(sigma, y):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        tau = numpyro.sample("tau", dist.HalfCauchy(5))
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0, 1).expand([8]))
        numpyro.sample("y", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)

    target = ppl.model(data={"sigma": sigma}, mu=ppl.Normal(0, 5), tau=ppl.HalfCauchy(5),
                       theta_tilde=ppl.Normal(0, 1, shape=(8,)),
                       y=lambda mu, tau, theta_tilde, sigma: ppl.Normal(mu + tau * theta_tilde, sigma)).condition(y=y)
    return model, (sigma, y), target, "mu"


def german_credit(reference):
    raw = np.loadtxt(Path(reference) / "german_credit" / "german.data-numeric")
    x = (raw[:, :-1] - raw[:, :-1].mean(0)) / raw[:, :-1].std(0)
    x = np.hstack([x, np.ones((len(x), 1))]).astype(np.float32)
    y = (raw[:, -1] - 1).astype(np.float32)

    def model(x, y):
        w = numpyro.sample("w", dist.Normal(0, 1).expand([x.shape[1]]))
        numpyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)

    target = ppl.model(data={"x": x}, w=ppl.Normal(0, 1, shape=(x.shape[1],)),
                       y=lambda w, x: ppl.Bernoulli(logits=x @ w)).condition(y=y)
    return model, (x, y), target, "w"


# --- timing ------------------------------------------------------------------
def plain(model, data, args, seed):
    mcmc = MCMC(NUTS(model), num_warmup=args.warmup, num_samples=args.samples, num_chains=args.chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), *data)
    return {k: np.asarray(v) for k, v in jax.block_until_ready(mcmc.get_samples()).items()}


def ours(target, args, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppl.sample(target, method="nuts", runtime="numpyro", seed=seed, num_warmup=args.warmup,
                          num_samples=args.samples, chains=args.chains)


def timed(fn):
    _events.clear()
    start = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    return out, wall, compile_seconds()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", default=os.environ.get(
        "PPL_REFERENCE", Path(__file__).resolve().parents[1] / ".." / "shared" / "reference"))
    args = parser.parse_args()
    problems = {"eight_schools": eight_schools()}
    if (Path(args.reference) / "german_credit").is_dir():
        problems["german_credit"] = german_credit(args.reference)
    else:
        print(f"german_credit skipped: no data under {args.reference}")
    print(f"warmup {args.warmup}, samples {args.samples}, chains {args.chains} (vectorized), "
          f"median of {args.repeats}; device {jax.devices()[0]}")
    header = f"{'problem':14} {'system':8} {'wall s':>8} {'compile s':>9} {'run s':>8} {'mean(site[0])':>14}"
    print(header)
    print("-" * len(header))
    rows = []
    for name, (model, data, target, site) in problems.items():
        t = {"numpyro": [], "ppl": []}
        for rep in range(args.repeats):
            draws, wall, comp = timed(lambda: plain(model, data, args, rep))
            t["numpyro"].append((wall, comp, float(draws[site].mean(0).ravel()[0])))
            r, wall, comp = timed(lambda: ours(target, args, rep))
            t["ppl"].append((wall, comp, float(np.ravel(r.mean(site))[0])))
        med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in t.items()}
        for system, (wall, comp, mean) in med.items():
            print(f"{name:14} {system:8} {wall:8.2f} {comp:9.2f} {wall - comp:8.2f} {mean:14.4f}")
        rows.append((name, med["ppl"][0] / med["numpyro"][0],
                     (med["ppl"][0] - med["ppl"][1]) / (med["numpyro"][0] - med["numpyro"][1])))
    print()
    print(f"{'problem':14} {'ratio wall':>10} {'ratio run (excl. compile)':>26}   goal <= 1.1")
    for name, wall, run in rows:
        print(f"{name:14} {wall:10.2f} {run:26.2f}")


if __name__ == "__main__":
    main()
