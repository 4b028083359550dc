"""Timing shared by the benchmarks: the first (compiling) run apart from the timed ones; the `particles` peer."""
import time

import numpy as np


def measure(run, runs):
    """`run(seed) -> log Z`: the first call's time (it compiles), then `runs` timed calls with seeds 1..runs:
    (first s, times [runs], log Zs [runs])."""
    t0 = time.perf_counter()
    run(0)
    first = time.perf_counter() - t0
    times, log_z = [], []
    for s in range(1, runs + 1):
        t0 = time.perf_counter()
        log_z.append(run(s))
        times.append(time.perf_counter() - t0)
    return first, np.asarray(times), np.asarray(log_z)


def particles_smc(fk, n):
    """`run(seed) -> log Z` of the `particles` library's SMC on its Feynman–Kac model `fk` with n particles
    (systematic resampling when ESS < N/2), seeded through numpy's global generator, which it draws from."""
    import particles

    def run(seed):
        np.random.seed(seed)
        alg = particles.SMC(fk=fk, N=n, resampling="systematic", ESSrmin=0.5, collect=[])
        alg.run()
        return float(alg.logLt)
    return run
