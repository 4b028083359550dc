"""Inference-time scaling on the synthetic reasoning task of examples/reasoning_scaling.py (issue 11), over seeds.

One solver (the example's partly trained GRU) and the example's noisy PRM; each of `--problems` held-out problems
is solved by every method at every budget N with `--seeds` sampler seeds (the same seeds for every method, so
the comparisons are paired). Prints

* accuracy per method and N: the mean over problems of each problem's accuracy over the seeds, ± its standard
  error over problems (which includes the seed-to-seed variation);
* the margins PF − BoN and PF − WBoN per N, ± the standard error of the paired per-problem differences;
* the wall time per generation of each method (all of `ppl.sample`: generation, PRM calls, bookkeeping);
* the overhead of the SMC bookkeeping: `method="pf"` against plain batched sampling of the same number of
  sequences from the same model (a loop of `advance` calls with categorical sampling, no weights), one token a
  step, without a reward (pf on the untilted model) and with the PRM (pf on the tilted target against the loop
  that also calls the PRM after every token), as a % of the plain loop's time per step, for the trained GRU
  and a wider one.

By default the table also has "bon:prod" and "wbon:prod": BoN and WBoN whose final reward is the product of the
PRM's scores of all steps (aggregate="prod") instead of the last one, the same step-level information PF uses.

Entropic resampling (issue 30, part 4), made consistent: "tpf" is the particle filter of the declared target
γ = p_solver · r / (1 − r), r the PRM's score of the whole solution (the tilt by the PRM's logit; potentials ψ_s/ψ_{s−1}
on the prefixes, potential="diff", resampling when ESS < N/2, answer by weighted vote), "tpf:ess" and
"tpf:entropy" the same with resample_temperature="ess" / "entropy" (its_hub's schedules: resample by p̃ ∝ W^{1/T}
during the first half of the length, early_phase=0.5, and carry the weights W/p̃). The three share the target and
the seeds, so "tpf:ess − tpf" and "tpf:entropy − tpf" are paired margins. (Puri et al.'s "pf", potential="puri",
replaces the weights each step and targets p · Π_s r_s/(1 − r_s): a resampling temperature does not apply there.)

    python benchmarks/reasoning_scaling.py [--problems 100] [--seeds 5] [--budgets 1 2 4 8 16 32 64]
                                           [--methods bon wbon beam pf pg bon:prod wbon:prod tpf tpf:ess tpf:entropy]
                                           [--no-overhead]

About 15 minutes on one CPU thread with the defaults; the tpf methods are not among them (add them with
--methods; about a minute per seed for the three).

Measured with `--methods bon pf tpf tpf:ess tpf:entropy --seeds 2 --no-overhead` (2 seeds instead of 5 to keep
the run at 6 minutes: 2 for the solver, 4 for the table; 2 CPU cores shared with other jobs, one torch thread;
the solver's single sample is right 0.282 of the time, the PRM misjudges 0.153 of the prefixes):

    accuracy, 100 problems x 2 seeds (mean ± standard error over problems)
       N           bon            pf           tpf       tpf:ess   tpf:entropy
       1 0.260 ± 0.034 0.260 ± 0.034 0.260 ± 0.034 0.260 ± 0.034 0.260 ± 0.034
       2 0.345 ± 0.035 0.440 ± 0.040 0.345 ± 0.035 0.345 ± 0.035 0.345 ± 0.035
       4 0.465 ± 0.038 0.695 ± 0.035 0.550 ± 0.039 0.505 ± 0.038 0.515 ± 0.039
       8 0.655 ± 0.040 0.835 ± 0.030 0.750 ± 0.034 0.690 ± 0.037 0.675 ± 0.039
      16 0.660 ± 0.042 0.915 ± 0.026 0.685 ± 0.041 0.670 ± 0.042 0.690 ± 0.038
      32 0.680 ± 0.044 0.900 ± 0.028 0.750 ± 0.037 0.730 ± 0.039 0.730 ± 0.039
      64 0.685 ± 0.045 0.920 ± 0.025 0.740 ± 0.041 0.765 ± 0.039 0.735 ± 0.038

    entropic resampling against T = 1 (paired over problems, ± standard error)
       N       tpf:ess - tpf   tpf:entropy - tpf
       2      +0.000 ± 0.000      +0.000 ± 0.000
       4      -0.045 ± 0.021      -0.035 ± 0.016
       8      -0.060 ± 0.028      -0.075 ± 0.027
      16      -0.015 ± 0.031      +0.005 ± 0.031
      32      -0.020 ± 0.023      -0.020 ± 0.023
      64      +0.025 ± 0.028      -0.005 ± 0.027

    ms per generation: bon 1.99, pf 2.03, tpf 1.39, tpf:ess 1.38, tpf:entropy 2.45 (a shared machine: the
    schedules' cost is a few vector operations per step)

Kept consistent, the flattening does not buy accuracy here: at N = 4-8 the entropic variants are 0.035-0.075
below T = 1 (about 2-3 standard errors), at N >= 16 within one standard error of it; at N = 2 nothing changes
(ESS >= 1 = N/2: no resampling). The consistent target itself (tilt by the PRM's odds of the whole solution) is a
weaker selector than Puri et al.'s product of the step potentials ("pf": 0.92 against 0.74 at N = 64).
"""
import argparse
import math
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import ppl  # noqa: E402
from reasoning_scaling import MU, SIGMA, STEPS, TARGET_ACCURACY, evaluate, options, solver_report  # noqa: E402
from reasoning_scaling import evaluate as evaluate_example  # noqa: E402
from reasoning_task import (EOS, SEP, VOCAB, GRUSolver, LogitPRM, NoisyPRM, ProblemLM, answer_of,  # noqa: E402
                            make_problems, train_solver)

ENTROPIC = {"tpf": None, "tpf:ess": "ess", "tpf:entropy": "entropy"}   # method -> resample_temperature


def logit_target(model, prompt, results, key):
    """The solver given its prompt, tilted by the logit of the problem's PRM (the target of the tpf methods)."""
    lm = ppl.autoregressive(ProblemLM(model, prompt), VOCAB, 2 * STEPS + 1, eos=EOS, step=SEP, name="solver")
    return lm.tilt(LogitPRM(NoisyPRM(results, key, MU, SIGMA)), 1.0)


def evaluate(model, prompts, results, budgets, seed, methods):
    """The example's `evaluate` for its methods, and the same loop (same seeds per problem and budget, N = 1 one
    sample of the solver) for the tpf methods."""
    known = [m for m in methods if m not in ENTROPIC]
    right, seconds = evaluate_example(model, prompts, results, budgets, seed, known) if known else ({}, {})
    answer = answer_of(STEPS)
    for m in methods:
        if m not in ENTROPIC:
            continue
        right[m] = np.zeros((len(budgets), len(prompts)), dtype=bool)
        t, generations = 0.0, 0
        for i in range(len(prompts)):
            tgt = logit_target(model, prompts[i], results[i], key=i)
            for b, n in enumerate(budgets):
                t0 = time.perf_counter()
                opts = ({"method": "pf", "particles": n, "select": "vote", "resample_temperature": ENTROPIC[m]}
                        if n > 1 else {"method": "bon", "particles": 1})
                r = ppl.sample(tgt, runtime="pyro", seed=seed * 100_003 + i * 101 + b, answer=answer, **opts)
                t += time.perf_counter() - t0
                generations += n
                right[m][b, i] = r.answer == int(results[i, -1])
        seconds[m] = t / generations
    return right, seconds


def plain_sampling(lm, n, gen, prm=None):
    """n sequences of the solver by a loop of `advance` calls with categorical sampling (no weights, no
    resampling), calling `prm` on the prefixes after each step when given."""
    logp, state = lm.start(n)
    tokens = []
    for t in range(2 * STEPS + 1):
        tokens.append(torch.multinomial(logp.exp(), 1, generator=gen)[:, 0])
        logp, state = lm.advance(tokens[-1], state)
        if prm is not None:
            prm(torch.stack(tokens, 1), torch.full((n,), t + 1))
    return torch.stack(tokens, 1)


def median_time(fn, repeats):
    """The median wall time of `repeats` calls of fn (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def overhead(model, prompt, results, sizes, repeats):
    """Rows (N, plain ms/step, pf ms/step, overhead %, plain+PRM ms/step, pf+PRM ms/step, overhead %) for `model`,
    with one-token steps in both (chunked steps make every particle wait for the longest chunk of each step: a
    cost of synchronous resampling, not of the bookkeeping)."""
    lm = ProblemLM(model, prompt)
    prm = NoisyPRM(results, 0, MU, SIGMA)
    base = ppl.autoregressive(lm, VOCAB, 2 * STEPS + 1, eos=EOS, name="solver")
    tilted = base.tilt(prm, 1.0)
    gen = torch.Generator().manual_seed(0)
    steps = 2 * STEPS + 1  # tokens per sequence: a step of the plain loop is one token for all particles
    rows = []
    for n in sizes:
        pf = options("pf", n)
        t = [median_time(lambda: plain_sampling(lm, n, gen), repeats),
             median_time(lambda: ppl.sample(base, method="pf", runtime="pyro", particles=n, seed=1), repeats),
             median_time(lambda: plain_sampling(lm, n, gen, prm), repeats),
             median_time(lambda: ppl.sample(tilted, runtime="pyro", seed=1, **pf), repeats)]
        ms = [1e3 * x / steps for x in t]
        rows.append((n, ms[0], ms[1], 100 * (ms[1] / ms[0] - 1), ms[2], ms[3], 100 * (ms[3] / ms[2] - 1)))
    return rows


def margins(title, per_problem, budgets, pairs, width):
    """Print the paired accuracy margins a − b over problems (mean ± standard error) per budget."""
    labels = [f"{a} - {b}" for a, b in pairs]
    cw = max(width, *(len(label) for label in labels))
    print(f"\n{title}")
    print(f"{'N':>4} " + " ".join(f"{label:>{cw}}" for label in labels))
    for j, n in enumerate(budgets):
        cells = [mean_se(per_problem[a][:, j] - per_problem[b][:, j]) for a, b in pairs]
        print(f"{n:4d} " + " ".join(f"{f'{mean:+.3f} ± {se:.3f}':>{cw}}" for mean, se in cells))


def mean_se(x):
    """Mean and standard error over the first axis."""
    return x.mean(0), x.std(0, ddof=1) / math.sqrt(x.shape[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--methods", nargs="+", default=["bon", "wbon", "beam", "pf", "pg", "bon:prod", "wbon:prod"])
    ap.add_argument("--overhead-sizes", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--overhead-only", action="store_true", help="only the bookkeeping table")
    ap.add_argument("--no-overhead", action="store_true", help="no bookkeeping table")
    ap.add_argument("--overhead-hidden", type=int, nargs="+", default=[128, 1024],
                    help="GRU widths for the overhead table (the trained 128, and untrained wider ones: the time of a "
                         "step does not depend on the weights)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, info = train_solver(STEPS, TARGET_ACCURACY, seed=0)
    prompts, results = make_problems(args.problems, STEPS, seed=12345)
    single, chain, prm_error = solver_report(model, prompts, results)
    print(f"solver: GRU(128), {info['updates']} updates in {info['seconds']:.0f} s; one sample: answer right "
          f"{single:.3f}, whole chain right {chain:.3f}; PRM misjudges {prm_error:.3f} of the prefixes")
    if not args.overhead_only:
        scaling(model, prompts, results, args)
    if args.no_overhead:
        return
    print(f"\nSMC bookkeeping: pf vs plain batched sampling of the same N sequences, ms per token step "
          f"(median of {args.repeats})")
    print(f"{'GRU':>5} {'N':>5} {'plain':>8} {'pf':>8} {'overhead':>9} {'plain+PRM':>10} {'pf+PRM':>8} {'overhead':>9}")
    for hidden in args.overhead_hidden:
        solver = model if hidden == model.gru.hidden_size else GRUSolver(hidden=hidden).eval()
        for n, a, b, o, c, d, p in overhead(solver, prompts[0], results[0], args.overhead_sizes, args.repeats):
            print(f"{hidden:5d} {n:5d} {a:8.3f} {b:8.3f} {o:8.0f}% {c:10.3f} {d:8.3f} {p:8.0f}%")


def scaling(model, prompts, results, args):
    """The accuracy, margin and wall-time tables."""
    t0 = time.perf_counter()
    runs = [evaluate(model, prompts, results, args.budgets, seed, args.methods) for seed in range(args.seeds)]
    per_problem = {m: np.mean([r[m] for r, _ in runs], axis=0).T for m in args.methods}  # [problems, budgets]
    print(f"\naccuracy, {args.problems} problems x {args.seeds} seeds (mean ± standard error over problems; "
          f"{time.perf_counter() - t0:.0f} s)")
    width = max(13, max(map(len, args.methods)))
    print(f"{'N':>4} " + " ".join(f"{m:>{width}}" for m in args.methods))
    for b, n in enumerate(args.budgets):
        cells = []
        for m in args.methods:
            mean, se = mean_se(per_problem[m][:, b])
            cells.append(f"{mean:.3f} ± {se:.3f}")
        print(f"{n:4d} " + " ".join(f"{c:>{width}}" for c in cells))
    baselines = [m for m in args.methods if m != "pf" and m.split(":")[0] in ("bon", "wbon")]
    if "pf" in args.methods and baselines:
        margins("margins (paired over problems, ± standard error)", per_problem, args.budgets,
                [("pf", m) for m in baselines], width)
    entropic = [m for m in ("tpf:ess", "tpf:entropy") if m in args.methods]
    if "tpf" in args.methods and entropic:
        margins("entropic resampling against T = 1 (paired over problems, ± standard error)", per_problem,
                args.budgets, [(m, "tpf") for m in entropic], width)
    print("\nwall time per generation (ms, mean over seeds)")
    print("  " + "  ".join(f"{m} {1e3 * np.mean([s[m] for _, s in runs]):.2f}" for m in args.methods))


if __name__ == "__main__":
    main()
