"""Our adaptive tempered SMC (JAX and torch runtimes) against BlackJAX's `adaptive_tempered_smc`.

Same targets (10-d Gaussian mixture, log Z = 0; German credit logistic regression, log Z = −529.175), the same
particle count, target ESS 0.5, systematic resampling at every step (`--resample-threshold 0.5`: ours only
when ESS < N/2) and the same number of HMC moves per step with the same number of leapfrog steps. BlackJAX keeps
its (hand-set) step size and identity mass; ours whitens moves by the particle covariance, tunes the step size
between steps and jitters it per particle (its defaults).
Wall time per run excludes the one-time jit compilation (a warm-up run on both sides).

    python benchmarks/smc_vs_blackjax.py [--particles N ...] [--seeds S] [--moves M] [--leapfrog L]
                                         [--resample-threshold T] [--targets ...] [--no-torch]
"""
import argparse
import math
import time

import numpy as np

import ppl
from ppl.stdlib import targets as T


def blackjax_target(name):
    """(log prior, log likelihood, prior sampler, BlackJAX HMC step size) in plain JAX for the same targets."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp
    if name == "gaussian_mixture":
        known = T.gaussian_mixture()
        means, log_w, d, s = (jnp.asarray(known.moments["means"]), jnp.log(jnp.asarray(known.moments["weights"])),
                              10, 5.0)

        def log_prior(x):
            return jnp.sum(jax.scipy.stats.norm.logpdf(x, 0.0, s))

        def log_lik(x):
            comps = log_w - 0.5 * jnp.sum((x - means) ** 2, -1) - 0.5 * d * jnp.log(2 * jnp.pi)
            return logsumexp(comps) - log_prior(x)

        return log_prior, log_lik, (lambda key, n: s * jax.random.normal(key, (n, d))), 0.3
    raw = np.loadtxt(T.reference_dir() / "german_credit" / "german.data-numeric")
    feats = (raw[:, :-1] - raw[:, :-1].mean(0)) / raw[:, :-1].std(0)
    x = jnp.asarray(np.concatenate([feats, np.ones((len(raw), 1))], axis=1), dtype=jnp.float32)
    y = jnp.asarray(raw[:, -1] - 1, dtype=jnp.float32)

    def log_prior(w):
        return jnp.sum(jax.scipy.stats.norm.logpdf(w))

    def log_lik(w):
        logits = x @ w
        return jnp.sum(y * logits - jax.nn.softplus(logits))

    return log_prior, log_lik, (lambda key, n: jax.random.normal(key, (n, 25))), 0.05


def run_blackjax(name, particles, moves, leapfrog, seed):
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.smc import extend_params, resampling
    log_prior, log_lik, sample_prior, step = blackjax_target(name)
    dim = 10 if name == "gaussian_mixture" else 25
    params = extend_params(dict(step_size=step, inverse_mass_matrix=jnp.ones(dim), num_integration_steps=leapfrog))
    smc = blackjax.adaptive_tempered_smc(log_prior, log_lik, blackjax.hmc.build_kernel(), blackjax.hmc.init, params,
                                         resampling.systematic, 0.5, num_mcmc_steps=moves)
    step_fn = _BJ_CACHE.setdefault((name, particles, moves, leapfrog), jax.jit(smc.step))
    key = jax.random.PRNGKey(seed)
    key, k0 = jax.random.split(key)
    state = smc.init(sample_prior(k0, particles))
    log_z, steps = 0.0, 0
    while float(state.tempering_param) < 1.0:
        key, sub = jax.random.split(key)
        state, info = step_fn(sub, state)
        log_z += float(info.log_likelihood_increment)
        steps += 1
    return log_z, steps


_BJ_CACHE = {}


def run_ours(compiled, runtime, particles, moves, leapfrog, threshold, seed):
    r = ppl.sample(compiled, method="smc", runtime=runtime, particles=particles, seed=seed, kernel="hmc",
                   moves=moves, kernel_options={"n_leapfrog": leapfrog}, resampler="systematic", target_ess=0.5,
                   resample_threshold=threshold, progress=False)
    return r.log_z, r.diagnostics["n_steps"][0]


def timed(fn, seeds):
    fn(10_000)  # warm-up: jit compilation
    out = []
    for s in seeds:
        t0 = time.perf_counter()
        log_z, steps = fn(s)
        out.append((time.perf_counter() - t0, log_z, steps))
    return np.array(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, nargs="+", default=[2000, 1000])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--moves", type=int, default=5)
    ap.add_argument("--leapfrog", type=int, default=5)
    ap.add_argument("--resample-threshold", type=float, default=1.0)
    ap.add_argument("--targets", nargs="+", default=["gaussian_mixture", "german_credit"])
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    seeds = list(range(args.seeds))
    rows = []
    for name, n in zip(args.targets, args.particles * len(args.targets)):
        known = getattr(T, name)()
        compiled = ppl.compile(known.target)
        runners = {"ppl numpyro (JAX)": lambda s: run_ours(compiled, "numpyro", n, args.moves, args.leapfrog,
                                                                    args.resample_threshold, s),
                   "blackjax": lambda s: run_blackjax(name, n, args.moves, args.leapfrog, s)}
        if not args.no_torch:
            runners["ppl pyro (torch)"] = lambda s: run_ours(compiled, "pyro", n, args.moves, args.leapfrog,
                                                                   args.resample_threshold, s)
        for label, fn in runners.items():
            res = timed(fn, seeds)
            err = res[:, 1] - known.log_z
            rows.append((name, n, label, res[:, 0].mean(), res[:, 2].mean(), err.mean(), np.sqrt(np.mean(err ** 2)),
                         res[:, 1].std(ddof=1)))
            print(f"done {name} {label}", flush=True)
    head = f"{'target':18s} {'N':>6s} {'sampler':20s} {'wall s':>8s} {'steps':>6s} {'bias':>8s} {'RMSE':>8s} {'sd':>8s}"
    print(f"\nmoves/step = {args.moves} HMC x {args.leapfrog} leapfrog, {len(seeds)} seeds; log Z error = estimate - exact")
    print(head)
    print("-" * len(head))
    for name, n, label, wall, steps, bias, rmse, sd in rows:
        print(f"{name:18s} {n:6d} {label:20s} {wall:8.3f} {steps:6.1f} {bias:8.3f} {rmse:8.3f} {sd:8.3f}")


if __name__ == "__main__":
    main()
