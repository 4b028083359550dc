"""Memory of one SMC step with and without `batch_size`: 10⁵ and 10⁶ particles of a logistic regression on
10⁴ observations (D = 5), from XLA's memory analysis of the compiled step (nothing is allocated or run, so the
unchunked 10⁶ row, which would need ~100 GB, is measured too).

    python benchmarks/smc_memory.py [--particles 100000 1000000] [--observations 10000] [--batch 10000 1000]
"""
import argparse
import time

import numpy as np

import ppl
from ppl.backends import get_runtime
from ppl.backends.smc import SMC


def logistic_regression(n_obs, d, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_obs, d)).astype(np.float32)
    y = (rng.uniform(size=n_obs) < 1 / (1 + np.exp(-x @ rng.normal(size=d)))).astype(np.float32)
    return ppl.model(data={"X": x}, w=ppl.Normal(0.0, 1.0, shape=(d,)),
                     y=lambda w, X: ppl.Bernoulli(logits=X @ w)).condition(y=y)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--observations", type=int, default=10_000)
    ap.add_argument("--batch", type=int, nargs="+", default=[10_000, 1000])
    args = ap.parse_args()
    program = ppl.compile(logistic_regression(args.observations, 5)).lower(get_runtime("numpyro"))
    head = f"{'particles':>10} {'batch_size':>10} {'step temp GB':>13} {'compile s':>10}"
    print(f"one SMC step (HMC moves), logistic regression, {args.observations} observations, D = 5, float32")
    print(head)
    print("-" * len(head))
    for n in args.particles:
        for b in [None] + args.batch:
            t0 = time.perf_counter()
            gb = SMC(program, batch_size=b).step_memory(n) / 1e9
            print(f"{n:10d} {str(b):>10} {gb:13.2f} {time.perf_counter() - t0:10.1f}", flush=True)


if __name__ == "__main__":
    main()
