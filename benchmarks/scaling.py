"""Particles per second of `is` and `smc` against the number of particles N (both runtimes, one device) and
against the number of devices (JAX, forced host CPU devices in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=4).

The target is N(0, I₅) tilted by exp(a·x / λ) (log Z = |a|² / (2λ²)); SMC uses two random-walk moves per
temperature (adaptive tempering, two steps here). particles/s = N / (best of `--repeats` warm runs), so compile
time is left out (it is printed as the first run). Forced host devices share the machine's cores: on a CPU
they measure the partitioning's overhead, not a speed-up; on several GPUs the same run splits the work.

    python benchmarks/scaling.py [--million] [--ten-million] [--repeats 2]
    python benchmarks/scaling.py --processes 1 2     (4 CPU devices over 1 or 2 processes: ppl.distributed)

Measured on 2 CPU cores shared with one other job (`--million --ten-million`, 122 s in all; exact log Z 0.4889),
particles/s of the best warm run (N = 10^7: batch_size 10^6, one warm run; an IS process at 10^7 on both runtimes peaks at 2.0 GB RSS):

    N        IS numpyro  IS pyro   SMC numpyro  SMC pyro
    10^3     8.0e5       5.9e5     1.9e5        8.4e4
    10^4     3.6e6       5.1e6     1.3e6        5.3e5
    10^5     7.9e6       1.0e7     1.7e6        1.4e6
    10^6     7.1e6       1.2e7     2.4e6        1.8e6
    10^7     5.1e6       3.0e6     1.6e6        5.5e5      (log Z 0.4887, 0.4885, 0.4885, 0.4891)

Forced host devices, N = 10^5, numpyro: IS 1.5e7 / 7.2e6 / 8.3e6 and SMC 2.2e6 / 1.5e6 / 1.3e6 particles/s on
1 / 2 / 4 devices, log Z identical to all printed digits (0.4898 and 0.4879) on every device count.

4 CPU devices over 1 and 2 processes (`--processes 1 2`, N = 10^5, gloo; 2 cores shared with a test run and
two other jobs, load 6-9, so times are inflated):

    method  processes  particles/s  ms/step  all-reduce ms  all-gather ms  log Z
    is      1          1.2e6        81       0.83           2.6            0.4898
    smc     1          8.2e4        611      0.83           2.6            0.4896
    is      2          3.7e5        269      1.31           4.2            0.4898
    smc     2          6.0e4        837      1.31           4.2            0.4896

The same log Z on 1 and 2 processes (one estimator). A step's collectives cost ~1.3 ms (all-reduce of the
weights' logsumexp) and ~4 ms (all-gather of 10^5 weights for resampling) over gloo on one machine; IS pays
more across processes for assembling the Result (10^5 × 5 draws gathered to every process).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import ppl

A, LAM = [0.2, 0.4, 0.6, 0.8, 1.0], 1.5
OPTIONS = {"is": {}, "smc": {"kernel": "rwm", "moves": 2}}
BATCH = 1_000_000    # batch_size of the N = 10^7 rows


def target():
    return ppl.compile(ppl.model(x=ppl.Normal(0.0, 1.0, shape=(5,))).tilt(
        lambda x: sum(A[i] * x[i] for i in range(5)), LAM))


def measure(t, method, runtime, n, repeats, devices=None, batch_size=None):
    """(first run s, best warm run s, log Z) of `method` with n particles (densities in chunks of `batch_size`)."""
    run = lambda seed: ppl.sample(t, method=method, runtime=runtime, particles=n, seed=seed,  # noqa: E731
                                  devices=devices, batch_size=batch_size, **OPTIONS[method])
    r = run(0)
    return r.wall_time, min(run(s).wall_time for s in range(1, repeats + 1)), r.log_z


def row(cols):
    return " ".join(f"{c:>12}" for c in cols)


def per_n(sizes, repeats):
    """One row per (method, runtime, N); N = 10^7 runs its densities in chunks of BATCH and one warm repeat."""
    t = target()
    print(row(["method", "runtime", "N", "batch_size", "first s", "best s", "particles/s", "log Z"]))
    for method in OPTIONS:
        for runtime in ("numpyro", "pyro"):
            for n in sizes:
                batch = BATCH if n > BATCH else None
                first, best, log_z = measure(t, method, runtime, n, 1 if batch else repeats, batch_size=batch)
                print(row([method, runtime, n, batch or "-", f"{first:.2f}", f"{best:.3f}", f"{n / best:.3g}",
                           f"{log_z:.4f}"]), flush=True)


def per_device(n, repeats):
    """In a child process with 4 forced host devices: one JSON line per (method, devices)."""
    t = target()
    for method in OPTIONS:
        for d in (1, 2, 4):
            first, best, log_z = measure(t, method, "numpyro", n, repeats, devices=d)
            print(json.dumps([method, d, n, first, best, log_z]), flush=True)


def collective_ms(n, repeats=20):
    """Median ms of the two collectives a particle step adds on the global mesh: the all-reduce of a logsumexp of
    n weights (log Z, ESS, the tempering bisection) and the all-gather of n weights (resampling)."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    mesh = Mesh(np.array(jax.devices()), ("p",))
    local = np.random.default_rng(jax.process_index()).normal(size=n // jax.process_count()).astype(np.float32)
    w = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("p")), local)
    reduce = jax.jit(jax.nn.logsumexp)
    gather = jax.jit(lambda a: a * 1, out_shardings=NamedSharding(mesh, PartitionSpec()))
    out = []
    for f in (reduce, gather):
        f(w).block_until_ready()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            f(w).block_until_ready()
            times.append(time.perf_counter() - start)
        out.append(1e3 * float(np.median(times)))
    return out


def per_process(n, repeats):
    """In each process of a `ppl.launch` run (4 devices in all): one JSON line per method from process 0."""
    import ppl.distributed
    me, processes = ppl.distributed.initialize()
    t = target()
    reduce_ms, gather_ms = collective_ms(n)
    for method in OPTIONS:
        first, best, log_z = measure(t, method, "numpyro", n, repeats, devices="all")
        steps = ppl.sample(t, method=method, particles=n, seed=0, devices="all", **OPTIONS[method]).diagnostics.get(
            "n_steps", [1])[0]
        if me == 0:
            print(json.dumps([method, processes, n, first, best, log_z, steps, reduce_ms, gather_ms]), flush=True)


def across_processes(counts, n, repeats):
    """The table of `per_process` for each number of processes in `counts` (4 forced CPU devices in all)."""
    from ppl.launch import launch
    import io
    print()
    print(row(["method", "processes", "devices", "N", "first s", "best s", "particles/s", "log Z", "steps",
               "ms/step", "reduce ms", "gather ms"]))
    for p in counts:
        out = io.StringIO()
        status = launch([sys.executable, __file__, "--process-child", "--repeats", str(repeats), "--devices-n",
                         str(n)], p, local_devices=4 // p, out=out, timeout=1200,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
        lines = [s.partition("] ")[2] for s in out.getvalue().splitlines()]
        if status:
            sys.exit(out.getvalue()[-3000:])
        for method, procs, n, first, best, log_z, steps, red, gat in (json.loads(s) for s in lines
                                                                       if s.startswith('["')):
            print(row([method, procs, 4, n, f"{first:.2f}", f"{best:.3f}", f"{n / best:.3g}", f"{log_z:.4f}", steps,
                       f"{1e3 * best / steps:.1f}", f"{red:.2f}", f"{gat:.2f}"]), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--million", action="store_true", help="add N = 10^6")
    ap.add_argument("--ten-million", action="store_true", help="add N = 10^7 (batch_size 10^6, one warm run)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--devices-n", type=int, default=100_000, help="N of the device table")
    ap.add_argument("--processes", type=int, nargs="*", help="only the multi-process table: 4 CPU devices split "
                    "over each of these numbers of processes (python -m ppl.launch), e.g. --processes 1 2")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--process-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return per_device(args.devices_n, args.repeats)
    if args.process_child:
        return per_process(args.devices_n, args.repeats)
    if args.processes:
        return across_processes(args.processes, args.devices_n, args.repeats)
    per_n([1_000, 10_000, 100_000] + [1_000_000] * args.million + [10_000_000] * args.ten_million, args.repeats)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, __file__, "--child", "--repeats", str(args.repeats), "--devices-n",
                          str(args.devices_n)], env=env, capture_output=True, text=True, check=True).stdout
    print()
    print(row(["method", "devices", "N", "first s", "best s", "particles/s", "log Z"]))
    for method, d, n, first, best, log_z in (json.loads(s) for s in out.splitlines() if s.startswith("[")):
        print(row([method, d, n, f"{first:.2f}", f"{best:.3f}", f"{n / best:.3g}", f"{log_z:.4f}"]))


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\n{time.perf_counter() - start:.0f} s in all")
