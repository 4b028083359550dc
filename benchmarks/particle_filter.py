"""Our particle filter (`method="pf"`, NumPyro and Pyro runtimes) against the `particles` library's bootstrap filter.

Models (the same data for every sampler):
  lg  linear-Gaussian, d = 1, T = 100: x[0] ~ N(0, 1/(1-0.9²)), x[t] ~ N(0.9 x[t-1], 1), y[t] ~ N(x[t], 1)
      (`particles.kalman.LinearGauss(rho=0.9, sigmaX=1, sigmaY=1)`); exact log-likelihood by the Kalman filter
  sv  stochastic volatility, T = 200: mu = -1, phi = 0.95, sigma = 0.25 (`particles.state_space_models.StochVol`)

  sw  switching linear-Gaussian, 2 regimes, T = 100 (tests/test_rbpf.py): s[t] ~ GAMMA[s[t-1]],
      x[t] ~ N(a[s[t]] x[t-1], q[s[t]]), y[t] ~ N(x[t], 0.7); ppl's pf is the Rao–Blackwellized filter (particles
      over s, a Kalman filter of x per particle) against the numpy bootstrap filter over (s, x) of that test (the
      same resampling) and `particles`' bootstrap filter over the joint state (s, x), a structured array
      (`switching_ssm`; ppl's bootstrap pf does not run over two paths)

The marginalized rows (lg only): the compiler integrates the linear-Gaussian path out and `pf` is the Kalman
filter (`marginalize=True`, the default; the bootstrap rows pass `marginalize=False`), beside `particles`'
own Kalman filter (`particles.kalman.Kalman`): variance 0 and the error of float arithmetic, at the cost of one
filter (N only sets how many smoothed paths are drawn).

For each (model, N, sampler): the first run's wall time ("first run s": it compiles, JAX's scan and torch's
per-step kernel, `PPL_TORCH_COMPILE=on` here; a warm inductor cache on disk makes torch's shorter), then over
`--seeds` further runs the median wall time per run and per time step, the variance of log Z over seeds, for lg
the mean error of log Z against the Kalman value (± its standard error), and particle-steps per second
(N · T / median time). Both filters resample systematically when ESS < N/2 (`particles`:
`resampling="systematic", ESSrmin=0.5`, its defaults; ours: `resample_threshold=0.5, resampler="systematic"`),
both with the bootstrap proposal. All samplers run in one process with `--threads` CPU threads each (default 1,
as numpy's elementwise operations that `particles` runs: torch's intra-op threads and XLA's Eigen pool are set
to it; with 2 threads on a 2-core machine that other work shares, torch's parallel kernels wait on a descheduled
thread for milliseconds).

Run:

    python benchmarks/particle_filter.py [--particles 1000 10000 100000] [--seeds 10] [--device cpu|cuda]
                                         [--runtimes numpyro pyro] [--models lg sv sw] [--threads 1]

(`--runtimes` with no names runs `particles` and the Kalman column only). `particles` is optional; install it
without its dependencies, which pin numpy<2 in its metadata although it runs on numpy 2 (installing them would
downgrade numpy and jax):

    pip install --no-deps particles

It needs numba (for its variance estimators) and scipy, which the test extra already brings.
"""
import argparse
import math
import os
import sys

import numpy as np
from timing import measure, particles_smc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from ssm_reference import LinearGaussianSSM, simulate_sv  # noqa: E402

LG = {"rho": 0.9, "sigmaX": 1.0, "sigmaY": 1.0}
SV = {"mu": -1.0, "phi": 0.95, "sigma": 0.25}
LENGTH = {"lg": 100, "sv": 200, "sw": 100}


def make_data(model):
    """(y [T], exact log-likelihood or None)."""
    if model == "lg":
        m = LinearGaussianSSM(LG["rho"], LG["sigmaX"] ** 2, 1.0, LG["sigmaY"] ** 2, 0.0,
                              LG["sigmaX"] ** 2 / (1 - LG["rho"] ** 2))
        _, y = m.simulate(LENGTH[model], seed=0)
        return y[:, 0], m.kalman(y)["log_lik"]
    if model == "sw":
        from test_rbpf import simulate
        return simulate(LENGTH[model]), None
    _, y = simulate_sv(LENGTH[model], seed=0, **SV)
    return y, None


# ---- the two samplers: each returns a function seed -> log Z ------------------------------------------------

def switching_ssm():
    """The switching model as a `particles` state-space model over the joint state (s, x), a structured array
    (fields s: int, x: float): s[0] ~ (1/2, 1/2), x[0] ~ N(0, 1); s[t] ~ GAMMA[s[t-1]], x[t] | s[t] ~
    N(a[s[t]] x[t-1], q[s[t]]); y[t] ~ N(x[t], r)."""
    from collections import OrderedDict

    from particles import distributions as dists
    from particles import state_space_models as ssm
    from test_rbpf import GAMMA, A, Q, R

    class Regime(dists.DiscreteDist):
        """s ∈ {0, 1} with P(s = 1) = p1 (one per particle): `Categorical` draws a row at a time in Python."""

        def __init__(self, p1):
            self.p1 = p1

        def rvs(self, size=None):
            return (np.random.rand(size) < self.p1).astype(np.int64)   # numpy's global generator, as particles

        def logpdf(self, s):
            return np.log(np.where(s == 1, self.p1, 1.0 - self.p1))

    class Switching(ssm.StateSpaceModel):
        def PX0(self):
            return dists.StructDist(OrderedDict(s=Regime(0.5), x=dists.Normal(0.0, 1.0)))

        def PX(self, t, xp):
            return dists.StructDist(OrderedDict(   # x's law reads the new regime v["s"], drawn first
                s=Regime(GAMMA[xp["s"], 1]),
                x=dists.Cond(lambda v: dists.Normal(loc=A[v["s"]] * xp["x"], scale=Q[v["s"]]))))

        def PY(self, t, xp, x):
            return dists.Normal(loc=x["x"], scale=R)
    return Switching()


def particles_runner(model, y, n):
    from particles import state_space_models as ssm
    from particles.kalman import LinearGauss
    if model == "lg":
        ssm_model = LinearGauss(**LG)
    elif model == "sw":
        ssm_model = switching_ssm()
    else:
        ssm_model = ssm.StochVol(mu=SV["mu"], rho=SV["phi"], sigma=SV["sigma"])
    fk = ssm.Bootstrap(ssm=ssm_model, data=y)
    return particles_smc(fk, n)


def ppl_target(model, y):
    import ppl
    if model == "lg":
        return ppl.model(
            data={"a": LG["rho"], "q": LG["sigmaX"], "r": LG["sigmaY"],
                  "s0": LG["sigmaX"] / math.sqrt(1 - LG["rho"] ** 2)},
            x=ppl.markov(init=lambda s0: ppl.Normal(0.0, s0),
                         step=lambda prev, a, q: ppl.Normal(a * prev, q), length=len(y)),
            y=lambda x, r: ppl.Normal(x, r),
        ).condition(y=y)
    return ppl.model(
        data=dict(SV),
        x=ppl.markov(init=lambda mu, phi, sigma: ppl.Normal(mu, sigma / ppl.math.sqrt(1 - phi ** 2)),
                     step=lambda prev, mu, phi, sigma: ppl.Normal(mu + phi * (prev - mu), sigma), length=len(y)),
        y=lambda x: ppl.Normal(0.0, ppl.math.exp(x / 2)),
    ).condition(y=y)


def particles_kalman_runner(y):
    from particles.kalman import Kalman, LinearGauss
    model = LinearGauss(**LG)

    def run(seed):
        kf = Kalman(ssm=model, data=y)
        kf.filter()
        return float(np.sum(kf.logpyt))
    return run


def ppl_runner(model, y, n, runtime, device, marginalize=False):
    import ppl
    from ppl.backends.pyro_runtime import compiling
    # compiled once: the filter is jitted once per compiled target
    target = ppl.compile(ppl_target(model, y), marginalize=marginalize)

    def run(seed):
        with compiling("on"):    # torch: the first (warm-up) run compiles the filter's step, as JAX's jit does
            r = ppl.sample(target, method="pf", particles=n, seed=seed, runtime=runtime, device=device,
                           resample_threshold=0.5, resampler="systematic", smoother=None, progress=False)
        return float(r.log_z)

    return run


def switching_samplers(y, n, runtimes, device):
    """The switching model's rows: (name, make) with make() -> (seed -> log Z); ppl's pf is the RBPF."""
    import ppl
    import test_rbpf

    def rbpf(rt):
        target = ppl.compile(test_rbpf.switching(y), method="pf")
        return lambda seed: float(ppl.sample(target, method="pf", particles=n, seed=seed, runtime=rt, device=device,
                                             resample_threshold=0.5, resampler="systematic", progress=False).log_z)
    return ([("bootstrap (numpy)", lambda: lambda seed: test_rbpf.bootstrap_log_z(y, n, seed))]
            + [(f"ppl {rt} RBPF", lambda rt=rt: rbpf(rt)) for rt in runtimes])


# ---- measuring ----------------------------------------------------------------------------------------------

def row(model, n, sampler, first, times, log_z, exact):
    med = float(np.median(times))
    steps = n * LENGTH[model] / med
    if exact is None:
        err = "—"
    else:
        e, se = log_z.mean() - exact, log_z.std(ddof=1) / math.sqrt(len(log_z))
        err = f"{e:+.3f} ± {se:.3f}" if se > 0 else f"{e:+.1e} (exact)"
    return (f"| {model} | {n:>6} | {sampler} | {first:.3f} | {med:.4f} | {1e3 * med / LENGTH[model]:.3f} | "
            f"{log_z.var(ddof=1):.4f} | {err} | {steps:.3g} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--particles", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--runtimes", nargs="*", default=["numpyro", "pyro"], choices=("numpyro", "pyro"))
    ap.add_argument("--models", nargs="+", default=["lg", "sv", "sw"], choices=("lg", "sv", "sw"))
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of torch and XLA (numpy's are 1)")
    args = ap.parse_args(argv)
    if args.seeds < 2:
        ap.error("--seeds must be at least 2 (a variance over seeds)")
    if "jax" in sys.modules:
        print("note: JAX was imported before main(): --threads does not reach XLA")
    if args.threads == 1:   # read when JAX starts its CPU backend
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    import torch
    torch.set_num_threads(args.threads)

    try:
        import particles  # noqa: F401
        have_particles = True
    except ImportError:
        have_particles = False
        print("SKIP particles: the `particles` library is not installed (pip install --no-deps particles)")

    data = {m: make_data(m) for m in args.models}
    print(f"Bootstrap particle filters, systematic resampling when ESS < N/2 (particles: resampling='systematic', "
          f"ESSrmin=0.5; ppl: resample_threshold=0.5, resampler='systematic'); {args.seeds} timed seeds after "
          f"one first run; ppl device {args.device}, particles on CPU (numpy); {args.threads} CPU thread(s) "
          f"for torch and XLA.")
    for m, (y, exact) in data.items():
        if exact is not None:
            print(f"{m}: T = {len(y)}, Kalman log-likelihood {exact:.4f}")
    print()
    print("| model | N | sampler | first run s | median s/run | ms/step | var log Z | mean log Z − Kalman | "
          "particle-steps/s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    failures = []
    for m in args.models:
        y, exact = data[m]
        for n in args.particles:
            samplers = switching_samplers(y, n, args.runtimes, args.device) if m == "sw" else []
            if have_particles:
                samplers.append(("particles", lambda: particles_runner(m, y, n)))
            for rt in args.runtimes if m != "sw" else ():
                samplers.append((f"ppl {rt}", lambda rt=rt: ppl_runner(m, y, n, rt, args.device)))
            if m == "lg":
                if have_particles:
                    samplers.append(("particles Kalman", lambda: particles_kalman_runner(y)))
                for rt in args.runtimes:
                    samplers.append((f"ppl {rt} marginalized (Kalman)",
                                     lambda rt=rt: ppl_runner(m, y, n, rt, args.device, marginalize=True)))
            for name, make in samplers:
                try:
                    first, times, log_z = measure(make(), args.seeds)
                except Exception as e:  # noqa: BLE001 (a sampler that cannot run is reported, not fatal)
                    print(f"| {m} | {n:>6} | {name} | — | — | — | — | — | — |  ({type(e).__name__}: {str(e)[:80]})")
                    continue
                print(row(m, n, name, first, times, log_z, exact), flush=True)
                if exact is not None:
                    spread = log_z.std(ddof=1) / math.sqrt(len(log_z))
                    if spread == 0.0 and abs(log_z.mean() - exact) > 1e-3:
                        failures.append(f"{m} N={n} {name}: exact log Z off the Kalman value by "
                                        f"{log_z.mean() - exact:.2e}")
                    z = (log_z.mean() - exact) / spread if spread > 0 else 0.0
                    if abs(z) > 4:
                        failures.append(f"{m} N={n} {name}: mean log Z off the Kalman value by {z:.1f} se")
    for f in failures:
        print("CHECK FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
