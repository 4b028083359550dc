"""Inference-time scaling on a synthetic reasoning task (Puri et al. 2025): accuracy against the number of
generations N for best-of-N ("bon"), weighted best-of-N ("wbon"), beam search ("beam"), particle filtering ("pf")
and particle Gibbs ("pg"), all through `ppl.sample` on one target per problem, `ppl.autoregressive(solver).tilt(prm)`.

The task, the partly trained GRU solver and the noisy process reward model (PRM) are in `reasoning_task.py`:
5-step chains of arithmetic mod 10, the solver writes one intermediate result per step (a step ends at ";"), the
PRM is the exact step checker seen through deterministic noise. The methods, at N generations:

* bon / wbon: N solutions from the solver; the answer of the largest final PRM score / the answer of the largest
  total score (a reward-weighted vote); the final score is that of the whole solution (aggregate="model");
* beam: keep the N/4 prefixes of largest PRM score after each step, extend each 4 times;
* pf: Puri et al.'s particle filter, potential="puri" (log-weight logit(PRM score) / T with T = 1, replaced each
  step, resampling every step), the answer by weighted vote over the final particles (select="vote");
* pg: particle Gibbs, 4 sweeps of N/4 particles (N = 2, 4: 1 and 2 sweeps of 2), the same options as pf.

N = 1 is one sample of the solver for every method. Run

    python examples/reasoning_scaling.py [reasoning_scaling.png] [--quick]

It trains the solver (about a minute and a half on one CPU thread), prints its single-sample accuracy and the
PRM's error rate, then for each of 100 held-out problems and each budget N = 1, 2, 4, ..., 64 runs every method
once and prints the accuracy of the chosen answer (± its standard error over problems) and the wall time per
generation, and plots accuracy against N. `--quick` is a smoke run (a barely trained solver, 6 problems,
N up to 8) in well under a minute.
"""
import argparse
import math
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ppl  # noqa: E402
from reasoning_task import (EOS, SEP, VOCAB, NoisyPRM, ProblemLM, answer_of, make_problems,  # noqa: E402
                            train_solver)

STEPS = 5                       # arithmetic steps per problem
TARGET_ACCURACY = 0.75          # the solver's teacher-forced step accuracy at which training stops
MU, SIGMA = 1.5, 1.5            # the PRM's logit: +-MU for a right / wrong prefix, plus SIGMA x noise
METHODS = ("bon", "wbon", "beam", "pf", "pg")
SMC_OPTIONS = {"potential": "puri", "temperature": 1.0, "select": "vote"}  # pf resamples every step under "puri"


def options(spec, n):
    """The `ppl.sample` arguments of a method at a budget of `n` >= 2 generations; `spec` is a method name, or
    "name:aggregate" for another aggregation of the PRM's step scores (e.g. "bon:prod")."""
    name, _, aggregate = spec.partition(":")
    if name == "beam":
        out = {"method": "beam", "particles": n, "beam_width": min(4, n)}
    elif name == "pf":
        out = {"method": "pf", "particles": n, **SMC_OPTIONS}
    elif name == "pg":
        sweeps = min(4, n // 2)
        out = {"method": "pg", "particles": n // sweeps, "iterations": sweeps, **SMC_OPTIONS}
    else:
        out = {"method": name, "particles": n}
    return {**out, "aggregate": aggregate} if aggregate else out


def target(model, prompt, results, key):
    """The sequence target of one problem: the solver given its prompt, tilted by the problem's PRM."""
    lm = ppl.autoregressive(ProblemLM(model, prompt), VOCAB, 2 * STEPS + 1, eos=EOS, step=SEP, name="solver")
    return lm.tilt(NoisyPRM(results, key, MU, SIGMA), 1.0)


def evaluate(model, prompts, results, budgets, seed, methods=METHODS):
    """Whether each method's answer is right, {method: bool array [budgets, problems]}, and its seconds per
    generation, {method: float}. N = 1 is one sample of the solver for every method (a single generation)."""
    answer = answer_of(STEPS)
    right = {m: np.zeros((len(budgets), len(prompts)), dtype=bool) for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    generations = dict.fromkeys(methods, 0)
    for i in range(len(prompts)):
        tgt = target(model, prompts[i], results[i], key=i)
        for b, n in enumerate(budgets):
            for m in methods:
                t0 = time.perf_counter()
                opts = options(m, n) if n > 1 else {"method": "bon", "particles": 1}
                r = ppl.sample(tgt, runtime="pyro", seed=seed * 100_003 + i * 101 + b, answer=answer, **opts)
                seconds[m] += time.perf_counter() - t0
                generations[m] += n
                right[m][b, i] = r.answer == int(results[i, -1])
    return right, {m: seconds[m] / generations[m] for m in methods}


def solver_report(model, prompts, results, n=64):
    """The solver's single-sample accuracy (of the answer; of the whole chain) and the fraction of partial solutions
    (after each step) that the PRM misjudges (score > 1/2 for a wrong one, < 1/2 for a right one), from n samples
    per problem."""
    answer, gen = answer_of(STEPS), torch.Generator().manual_seed(0)
    ans = chain = misjudged = 0
    for i in range(len(prompts)):
        lm, prm = ProblemLM(model, prompts[i]), NoisyPRM(results[i], i, MU, SIGMA)
        logp, state = lm.start(n)
        tokens = []
        for _ in range(2 * STEPS + 1):
            tokens.append(torch.multinomial(logp.exp(), 1, generator=gen)[:, 0])
            logp, state = lm.advance(tokens[-1], state)
        seq = torch.stack(tokens, 1)
        for t in range(2, 2 * STEPS + 1, 2):
            lengths = torch.full((n,), t)
            ok, _ = prm.correct(seq[:, :t], lengths)
            misjudged += int(((prm(seq[:, :t], lengths) > 0.5) != ok).sum())
        chain += int(ok.sum())
        ans += sum(answer(s.tolist()) == int(results[i, -1]) for s in seq)
    total = n * len(prompts)
    return ans / total, chain / total, misjudged / (total * STEPS)


def standard_error(p, n):
    """The binomial standard error of an accuracy p over n problems."""
    return math.sqrt(p * (1 - p) / n)


def plot(right, budgets, path, title):
    """Accuracy (± standard error over problems) against N per method, written to `path`."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, r in right.items():
        acc = r.mean(axis=1)
        se = r.std(axis=1, ddof=1) / math.sqrt(r.shape[1]) if r.shape[1] > 1 else 0 * acc
        ax.errorbar(budgets, acc, yerr=se, marker="o", capsize=3, label=m)
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xlabel("generations N")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="reasoning_scaling.png")
    ap.add_argument("--quick", action="store_true", help="a smoke run: barely trained solver, 6 problems, N <= 8")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    problems, budgets = (6, [1, 2, 4, 8]) if args.quick else (100, [1, 2, 4, 8, 16, 32, 64])
    model, info = train_solver(STEPS, TARGET_ACCURACY, seed=0, steps=100 if args.quick else 6000)
    prompts, results = make_problems(problems, STEPS, seed=12345)
    single, chain, prm_error = solver_report(model, prompts, results)
    print(f"solver: GRU, {info['updates']} updates in {info['seconds']:.0f} s, teacher-forced step accuracy "
          f"{info['step_accuracy']:.3f}; one sample: answer right {single:.3f}, whole chain right {chain:.3f}")
    print(f"PRM: sigmoid(+-{MU} + {SIGMA} * noise), misjudges {prm_error:.3f} of the prefixes it scores")
    right, per_generation = evaluate(model, prompts, results, budgets, seed=0)
    print(f"\naccuracy over {problems} problems (± standard error)")
    print(f"{'N':>4} " + " ".join(f"{m:>13}" for m in METHODS))
    for b, n in enumerate(budgets):
        cells = [f"{right[m][b].mean():.3f} ± {standard_error(right[m][b].mean(), problems):.3f}" for m in METHODS]
        print(f"{n:4d} " + " ".join(f"{c:>13}" for c in cells))
    print("ms per generation " + " ".join(f"{m} {1e3 * per_generation[m]:.2f}" for m in METHODS))
    plot(right, budgets, args.out, f"{STEPS}-step arithmetic, {problems} problems, noisy PRM")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
