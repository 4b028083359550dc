"""Timing shared by the benchmarks: the first (compiling) run apart from the timed ones."""
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
