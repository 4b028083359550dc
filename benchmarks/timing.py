"""Timing shared by the benchmarks: the first (compiling) run apart from the timed ones, samplers that take
turns; the `particles` peer."""
import time

import numpy as np


def measure(run, runs):
    """`run(seed) -> log Z`: the first call's time (it compiles), then `runs` timed calls with seeds 1..runs:
    (first s, times [runs], log Zs [runs])."""
    return measure_interleaved({None: run}, runs)[None]


def measure_interleaved(runs_by_name, runs, warm=False):
    """`measure` of several samplers {name: run(seed) -> log Z} whose timed calls take turns: each is called
    once (the first, compiling call), then round r calls every sampler with seed r, in an order rotated by one
    each round. A slow spell of a shared machine then falls on all of them alike, so ratios of their medians
    hold where back-to-back blocks of runs did not (on this 2-core VM the same sampler's median moved by 50%
    from one block to the next). Each timed call then follows the other samplers' calls: on this VM, code and
    data left for 2 ms or more are cold (numpy's sum of 16 numbers takes 100 µs instead of 4 after 8 ms of
    other work), which charges every run for the code it touches. `warm`: each timed call is the second of two
    in a row (the first, with seed r + 10⁶, untimed): a run's cost with its code and data in cache.
    {name: (first s, times [runs], log Zs [runs])}."""
    names = list(runs_by_name)
    first, times, log_z = {}, {k: [] for k in names}, {k: [] for k in names}
    for k in names:
        t0 = time.perf_counter()
        runs_by_name[k](0)
        first[k] = time.perf_counter() - t0
    for s in range(1, runs + 1):
        shift = (s - 1) % len(names)
        for k in names[shift:] + names[:shift]:
            if warm:
                runs_by_name[k](s + 10 ** 6)
            t0 = time.perf_counter()
            log_z[k].append(runs_by_name[k](s))
            times[k].append(time.perf_counter() - t0)
    return {k: (first[k], np.asarray(times[k]), np.asarray(log_z[k])) for k in names}


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
