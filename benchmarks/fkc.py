"""FKC against the uncorrected reverse SDE with the same number of score evaluations (one per step and particle):
FKC's SDE weights without MCMC moves (the defaults of mixture scores add a MALA move and the path weights).

Target: the 40-mode mixture of examples/fkc_mixtures.py annealed with beta = 3 (exact noised score). The per-step
time is (T(2K) − T(K)) / K, so JAX's one-off compilation cancels. The weighting and resampling overhead is
per-step(FKC) / per-step(uncorrected) − 1 (goal: <= 20%).

    python benchmarks/fkc.py [--particles 10000] [--steps 200] [--device cpu]
"""
import argparse
import time

import numpy as np

import ppl


def forty_modes(seed=0):
    rng = np.random.default_rng(seed)
    return ppl.GaussianMixture(rng.uniform(-40, 40, size=(40, 2)) / 50, sd=2.13 / 50)


def timed(target, runtime, device, particles, steps, corrected):
    start = time.perf_counter()
    ppl.sample(target, method="fkc", runtime=runtime, device=device, particles=particles, steps=steps,
               corrected=corrected, seed=0, moves=0, increments="sde")   # FKC's own weights, no MCMC moves
    return time.perf_counter() - start


def per_step(target, runtime, device, particles, steps, corrected):
    timed(target, runtime, device, particles, 2, corrected)  # warm up imports and caches
    t1 = min(timed(target, runtime, device, particles, steps, corrected) for _ in range(2))
    t2 = min(timed(target, runtime, device, particles, 2 * steps, corrected) for _ in range(2))
    return (t2 - t1) / steps, t1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--particles", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    target = ppl.diffusion(forty_modes(), ppl.VPSDE(), 2) ** 3
    print(f"40-mode mixture ** 3, {args.particles} particles, per-step times from {args.steps} vs "
          f"{2 * args.steps} steps, device {args.device}")
    print(f"{'runtime':8s} {'uncorrected ms/step':>20s} {'FKC ms/step':>12s} {'overhead':>9s} "
          f"{'FKC wall (K steps)':>19s}")
    for runtime in ("numpyro", "pyro"):
        unc, _ = per_step(target, runtime, args.device, args.particles, args.steps, False)
        fkc, wall = per_step(target, runtime, args.device, args.particles, args.steps, True)
        print(f"{runtime:8s} {1e3 * unc:20.3f} {1e3 * fkc:12.3f} {100 * (fkc / unc - 1):8.1f}% {wall:18.2f}s")


if __name__ == "__main__":
    main()
