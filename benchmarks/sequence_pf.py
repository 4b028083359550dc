"""Our particle filter over sequences (`ppl.autoregressive(...).tilt(...)`, method 'pf') against hand-written and
library peers, side by side in one process (issue 30, part 2).

Markov target: a first-order Markov chain over V = 4 tokens, L = 16 tokens (no eos), from a fixed random table
(first-token law and rows Dirichlet(1)), tilted by the process reward R_t = (count of token 0 in x_{1:t}): the
target is γ(x) = p(x) exp(R_L(x) / λ), λ = 1 (`--lam`), and the step-t weight increment is the twisting potential
(R_t − R_{t−1}) / λ. Every sampler proposes from the chain and resamples systematically when ESS < N/2 (never
after the last step); at λ = 1 that is about 3 of the 15 possible resamplings per run at N = 2000 (at λ = 2, none:
the final ESS is 0.6 N; at λ = 0.5, nearly every step). Samplers:

  numpy     a vectorized numpy loop written here (inverse-CDF draws from the table rows, log-weights, ESS,
            systematic resampling, log Z accumulated)
  particles N. Chopin's `particles`: an FK model (M0 the first token, M the next token, logG the increment / λ),
            `particles.SMC(fk, N, resampling='systematic', ESSrmin=0.5)`
  numpyro   ours on JAX: the model is a stateful *pure* model (array state: the last token) and the reward is the
            built-in count, `ppl.TokenPattern("count", 0)` (`count(tokens, 1)` in the language), kept running token
            by token, so the whole sweep is one compiled scan of one kernel per step (`sequence_smc.KernelSweep`;
            diagnostics['compiled'])
  pyro      ours on torch, the same pure model written with torch: a Python loop over the steps around the same
            kernel, compiled (`sequence_smc.KernelSweep`; `PPL_TORCH_COMPILE=on` here, so the first
            run pays inductor's compile)

The exact log Z is a forward recursion over the last token (the tilt is a product of per-token factors
exp([x_t = 0] / λ)): α_1(v) = π(v) e^{[v=0]/λ}, α_t(v) = Σ_u α_{t−1}(u) A(u, v) e^{[v=0]/λ}, Z = Σ_v α_L(v).

GPT-2 target: a 2-layer GPT-2 built in code (vocab 50, n_embd 64, 2 heads, random init, no download), 16 tokens
after the prompt [0], tilted by the count of token 1 so far / λ (λ = 0.5). Ours: `ppl.autoregressive(model, 50, 16,
prompt=[0]).tilt(reward, λ)` on runtime 'pyro' (its key/value-cache adapter); the peer: a hand-written cached loop
(one forward of [N, 1] tokens per step with past_key_values, torch.multinomial draws, the same weights and
adaptive systematic resampling, the cache reordered by `DynamicCache.reorder_cache`).

For each (target, N, sampler): the first call at that N (it compiles, for JAX / torch) is reported separately as
"first s"; then the median wall time over `--runs` further runs with seeds 1..runs, the samplers taking turns run
by run (`timing.measure_interleaved`; `--warm`: each timed run right after an untimed one of the same sampler, so
that its code and data are in cache, which on this VM they are not after the other samplers' runs: see
`timing.measure_interleaved`) (ms per run, ms per step =
per run / L, particle-steps per second = N · L / median), ratios of medians to `particles` and to the numpy (or
hand-written GPT-2) loop, and log Z: mean over the runs − exact ± the standard error of that mean (for GPT-2,
where the exact value is out of reach, the mean log Z ± its standard error). On GPT-2 the log Z
columns over 15 runs are heavy-tailed at small N (a 150-seed check at N = 16 gave 1.794 ± 0.070 for the loop and
1.804 ± 0.065 for ours, against ≈ 2.15 at N = 4096 for both: the same downward bias of log Ẑ). torch uses 1 thread
(torch.set_num_threads(1)); numpy is single-threaded here; JAX keeps its defaults (the CPU count is printed).

    python benchmarks/sequence_pf.py [--quick] [--only markov|gpt2] [--runs R] [--particles N ...]
                                     [--gpt2-particles N ...] [--lam λ] [--runtimes numpyro pyro] [--warm]
"""
import argparse
import math
import os

import numpy as np
from timing import measure_interleaved, particles_smc

V, L, LAM = 4, 16, 1.0          # LAM: --lam
GPT_VOCAB, GPT_L, GPT_LAM, GPT_TOKEN = 50, 16, 0.5, 1


# ---- the Markov target ----------------------------------------------------------------------------------------

def markov_tables(seed=0):
    """(first-token law π [V], transition table A [V, V]), rows Dirichlet(1)."""
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(V)), rng.dirichlet(np.ones(V), size=V)


def exact_log_z(pi, a):
    """log Σ_x p(x) exp(count_0(x) / λ) by the forward recursion over the last token (float64)."""
    tilt = np.exp((np.arange(V) == 0) / LAM)
    alpha = pi * tilt
    log_scale = 0.0
    for _ in range(L - 1):
        alpha = (alpha @ a) * tilt
        s = alpha.sum()
        log_scale += math.log(s)
        alpha /= s
    return log_scale + math.log(alpha.sum())


class PureMarkov:
    """The chain as a stateful pure model on either runtime (`xp` jax.numpy or torch): the state is the last token
    [N] (an integer array), so a step is a function of arrays and the whole sweep compiles."""

    def __init__(self, pi, a, xp):
        self.xp = xp
        self.first = xp.asarray(np.log(pi).astype(np.float32))
        self.table = xp.asarray(np.log(a).astype(np.float32))

    def start(self, n):
        state = self.xp.asarray(np.zeros(n, dtype=np.int64))
        return self.xp.broadcast_to(self.first, (n, V)), state

    def advance(self, tokens, state):
        return self.table[tokens], tokens


def array_module(runtime):
    if runtime == "numpyro":
        import jax.numpy as jnp
        return jnp
    import torch
    return torch


def systematic(w, u):
    """Systematic resampling of normalized weights w [N] with one uniform u: ancestor indices [N]."""
    n = w.shape[0]
    cdf = np.cumsum(w)
    cdf[-1] = 1.0
    return np.searchsorted(cdf, (u + np.arange(n)) / n)


def numpy_runner(pi, a, n):
    """The vectorized numpy loop: returns run(seed) -> log Z."""
    cdf0 = np.cumsum(pi)
    cdf = np.cumsum(a, axis=1)
    cdf0[-1] = cdf[:, -1] = 1.0

    def run(seed):
        rng = np.random.default_rng(seed)
        x = (rng.random(n)[:, None] > cdf0[None, :]).sum(1)          # inverse CDF
        log_w = (x == 0) / LAM
        m = log_w.max()
        log_z = m + math.log(np.exp(log_w - m).mean())
        for _ in range(1, L):
            m = log_w.max()
            w = np.exp(log_w - m)
            s = w.sum()
            # ESS < N/2: resample, weights reset (ESS by a numpy sum, not `w @ w`: BLAS's thread pool took
            # 10-15 ms per dot at N = 20,000 on the loaded 2-core machine)
            if s * s / (w * w).sum() < 0.5 * n:
                x = x[systematic(w / s, rng.random())]
                log_w = np.zeros(n)
                prev = math.log(n)
            else:
                prev = m + math.log(s)
            x = (rng.random(n)[:, None] > cdf[x]).sum(1)
            log_w = log_w + (x == 0) / LAM
            m = log_w.max()
            log_z += m + math.log(np.exp(log_w - m).sum()) - prev
        return log_z
    return run


def particles_runner(pi, a, n):
    import particles
    cdf0 = np.cumsum(pi)
    cdf = np.cumsum(a, axis=1)
    cdf0[-1] = cdf[:, -1] = 1.0

    class TiltedMarkov(particles.FeynmanKac):
        """Twisted SMC for the tilted chain: X_t is the token at step t + 1."""

        def M0(self, N):
            return (np.random.rand(N)[:, None] > cdf0[None, :]).sum(1)

        def M(self, t, xp):
            return (np.random.rand(xp.shape[0])[:, None] > cdf[xp]).sum(1)

        def logG(self, t, xp, x):
            return (x == 0) / LAM

    fk = TiltedMarkov(T=L)
    return particles_smc(fk, n)


def ppl_markov_runner(pi, a, n, runtime, record):
    import ppl
    markov = ppl.autoregressive(PureMarkov(pi, a, array_module(runtime)), V, L)
    target = markov.tilt(ppl.TokenPattern("count", 0), LAM)

    def run(seed):
        with compiling_on():
            r = ppl.sample(target, method="pf", runtime=runtime, particles=n, seed=seed, progress=False)
        record["compiled"] = r.diagnostics["compiled"]
        record["resampled"] = int(np.sum(r.diagnostics["resampled"]))
        return float(r.log_z)
    return run


def compiling_on():
    """torch: the first (warm-up) run compiles the sweep's step kernel, as JAX's jit does (`PPL_TORCH_COMPILE=on`
    here)."""
    from ppl.backends.pyro_runtime import compiling
    return compiling("on")


# ---- the GPT-2 target -----------------------------------------------------------------------------------------

def tiny_gpt2():
    import torch
    import transformers
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=GPT_VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                                  bos_token_id=0, eos_token_id=GPT_VOCAB - 1)
    return transformers.GPT2LMHeadModel(cfg).eval()


def cached_loop_runner(model, n):
    """The hand-written cached loop: returns run(seed) -> log Z."""
    import inspect
    import torch
    # the cache's keyword: `cache` from transformers 5.x on, `past_key_values` before
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            out = model(input_ids=torch.zeros(n, 1, dtype=torch.long), use_cache=True)
            past = out[name]
            log_w = torch.zeros(n)
            log_z = 0.0
            for t in range(GPT_L):
                if t > 0:
                    w = torch.softmax(log_w, 0)
                    if 1.0 / float((w * w).sum()) < 0.5 * n:             # ESS < N/2
                        u = torch.rand(1, generator=g)
                        idx = torch.searchsorted(torch.cumsum(w, 0), (u + torch.arange(n)) / n).clamp_(max=n - 1)
                        tokens = tokens[idx]
                        past.reorder_cache(idx)
                        log_w = torch.zeros(n)
                    out = model(input_ids=tokens[:, None], use_cache=True, **{name: past})
                    past = out[name]
                prev = float(torch.logsumexp(log_w, 0))
                probs = torch.softmax(out.logits[:, -1].float(), -1)
                tokens = torch.multinomial(probs, 1, generator=g)[:, 0]
                log_w = log_w + (tokens == GPT_TOKEN) / GPT_LAM
                log_z += float(torch.logsumexp(log_w, 0)) - prev
        return log_z
    return run


def ppl_gpt2_runner(model, n, record):
    import ppl
    lm = ppl.autoregressive(model, GPT_VOCAB, GPT_L, prompt=[0])
    target = lm.tilt(ppl.TokenPattern("count", GPT_TOKEN), GPT_LAM)

    def run(seed):
        with compiling_on():
            r = ppl.sample(target, method="pf", runtime="pyro", particles=n, seed=seed, progress=False)
        record["compiled"] = r.diagnostics["compiled"]
        return float(r.log_z)
    return run


# ---- measuring ------------------------------------------------------------------------------------------------

def table(title, rows, n_steps, exact, ref_names):
    """Print one table; rows: [(name, N, first, times, log_z, note)]."""
    print(f"\n{title}")
    print(f"| method | N | first s | ms / run | ms / step | particle-steps/s | "
          + "".join(f"× {ref} | " for ref in ref_names)
          + f"log Z {'− exact ' if exact is not None else ''}(mean ± se) | sd log Z | note |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * len(ref_names) + "---|---:|---|")
    med = {(name, n): float(np.median(t)) for name, n, _, t, _, _ in rows}
    for name, n, first, times, log_z, note in rows:
        m = med[(name, n)]
        ratios = [f"{m / med[(ref, n)]:.2f}" if (ref, n) in med else "—" for ref in ref_names]
        centre = log_z.mean() - (exact if exact is not None else 0.0)
        se = log_z.std(ddof=1) / math.sqrt(len(log_z))
        print(f"| {name} | {n} | {first:.2f} | {1e3 * m:.2f} | {1e3 * m / n_steps:.3f} | {n * n_steps / m:.3g} | "
              + "".join(f"{r} | " for r in ratios) + f"{centre:+.4f} ± {se:.4f} | {log_z.std(ddof=1):.4f} | {note} |")


def run_markov(particles_list, runs, runtimes, warm=False):
    pi, a = markov_tables(0)
    exact = exact_log_z(pi, a)
    print(f"\nMarkov target: V = {V}, L = {L}, λ = {LAM}; exact log Z = {exact:.6f}")
    rows = []
    for n in particles_list:
        samplers = [("numpy", numpy_runner(pi, a, n), {}), ("particles", particles_runner(pi, a, n), {})]
        for rt in runtimes:
            rec = {}
            samplers.append((f"ppl {rt}", ppl_markov_runner(pi, a, n, rt, rec), rec))
        measured = measure_interleaved({name: run for name, run, _ in samplers}, runs, warm)
        for name, _, rec in samplers:
            first, times, log_z = measured[name]
            note = ""
            if rec:
                note = f"compiled={rec['compiled']}, {rec['resampled']} resamplings"
            rows.append((name, n, first, times, log_z, note))
            z = (log_z.mean() - exact) / (log_z.std(ddof=1) / math.sqrt(len(log_z)))
            print(f"  {name:>12} N={n:>6}: first {first:.2f} s, median {1e3 * np.median(times):.2f} ms, "
                  f"log Z − exact {log_z.mean() - exact:+.4f} (z = {z:+.2f}) {note}", flush=True)
    table("Markov chain, V = 4, L = 16 (log Z error over the timed runs)", rows, L, exact, ("particles", "numpy"))
    return rows


def run_gpt2(particles_list, runs, warm=False):
    model = tiny_gpt2()
    print(f"\nGPT-2 target: 2 layers, vocab {GPT_VOCAB}, n_embd 64, {GPT_L} tokens after prompt [0], "
          f"reward count of token {GPT_TOKEN} / λ = {GPT_LAM}")
    rows = []
    for n in particles_list:
        rec = {}
        measured = measure_interleaved({"hand cached loop": cached_loop_runner(model, n),
                                        "ppl pyro": ppl_gpt2_runner(model, n, rec)}, runs, warm)
        for name, (first, times, log_z) in measured.items():
            note = f"compiled={rec['compiled']}" if name == "ppl pyro" else ""
            rows.append((name, n, first, times, log_z, note))
            print(f"  {name:>16} N={n:>4}: first {first:.2f} s, median {1e3 * np.median(times):.2f} ms, "
                  f"log Z {log_z.mean():+.4f} ± {log_z.std(ddof=1) / math.sqrt(len(log_z)):.4f}", flush=True)
    table("2-layer GPT-2, 16 tokens (log Z: no exact value; compare the two rows at each N)", rows, GPT_L, None,
          ("hand cached loop",))
    return rows


def main(argv=None):
    global LAM
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs (5) and smaller GPT-2 N")
    ap.add_argument("--only", choices=("markov", "gpt2"))
    ap.add_argument("--runs", type=int, default=None, help="timed runs after the warm-up (default 15; 5 --quick)")
    ap.add_argument("--particles", type=int, nargs="+", default=[2000, 20_000])
    ap.add_argument("--gpt2-particles", type=int, nargs="+", default=None)
    ap.add_argument("--lam", type=float, default=LAM, help="the Markov target's tilt temperature λ")
    ap.add_argument("--runtimes", nargs="+", default=["numpyro", "pyro"], choices=("numpyro", "pyro"))
    ap.add_argument("--warm", action="store_true", help="time each run right after an untimed run of the same sampler")
    args = ap.parse_args(argv)
    runs = args.runs or (5 if args.quick else 15)
    if runs < 5:
        ap.error("--runs must be at least 5 (a median of >= 5 runs)")
    gpt_n = args.gpt2_particles or ([16, 64] if args.quick else [16, 64, 256])

    LAM = args.lam
    import torch
    torch.set_num_threads(1)
    print(f"CPUs: {os.cpu_count()}; torch threads: {torch.get_num_threads()}; numpy single-threaded; JAX defaults; "
          f"{runs} timed runs after one warm-up per (sampler, N)"
          f"{', each right after an untimed one (--warm)' if args.warm else ''}")
    if args.only in (None, "markov"):
        run_markov(args.particles, runs, args.runtimes, args.warm)
    if args.only in (None, "gpt2"):
        run_gpt2(gpt_n, runs, args.warm)


if __name__ == "__main__":
    main()
