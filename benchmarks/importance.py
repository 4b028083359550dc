"""IS with 10^6 particles on a 10-dimensional product of experts, both runtimes: wall time and particles/s.

    python benchmarks/importance.py [--particles 1000000] [--device cpu]
"""
import argparse
import time

import numpy as np

import ppl


def target(d=10):
    rng = np.random.default_rng(0)
    p = ppl.model(x=ppl.Normal(rng.normal(size=d), 1.0 + rng.uniform(size=d)))
    q = ppl.model(x=ppl.StudentT(4.0, rng.normal(size=d), 1.5))
    return p * q


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--particles", type=int, default=1_000_000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    t = ppl.compile(target())
    print(f"{'runtime':8} {'device':6} {'first run s':>12} {'best run s':>11} {'particles/s':>13} {'log Z':>10} {'se':>8}")
    for rt in ("numpyro", "pyro"):
        first = time.perf_counter()
        r = ppl.sample(t, method="is", runtime=rt, device=args.device, particles=args.particles, seed=0)
        first = time.perf_counter() - first
        best = min(ppl.sample(t, method="is", runtime=rt, device=args.device, particles=args.particles,
                              seed=s).wall_time for s in range(1, args.repeats + 1))
        print(f"{rt:8} {args.device:6} {first:12.2f} {best:11.2f} {args.particles / best:13.3g} "
              f"{r.log_z:10.4f} {r.log_z_se:8.4f}")


if __name__ == "__main__":
    main()
