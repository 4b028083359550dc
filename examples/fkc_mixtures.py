"""Annealing, products and guidance of diffusion models with Feynman–Kac correctors (FKC), on 2-D mixtures.

Figure (fkc_mixtures.png): rows anneal q^3 / product q_up * q_down / guidance q^(1-w) q_c^w (w = 2); columns
exact target density, uncorrected reverse SDE, FKC. Then the 40-mode mixture (means uniform in [-40, 40]^2,
sd 2.13, all scaled by 1/50) annealed with beta = 3 using exact noised scores: W2 and MMD to exact draws of the
tempered mixture for uncorrected vs FKC over 5 seeds. Runs in a few minutes on a CPU.

    python examples/fkc_mixtures.py [--runtime numpyro] [--particles 2000] [--steps 500]
"""
import argparse

import numpy as np
from scipy.optimize import linear_sum_assignment

import ppl

SDE = ppl.VPSDE()
FOUR = ppl.GaussianMixture([[-1.5, -1.5], [-1.5, 1.5], [1.5, -1.5], [1.5, 1.5]], sd=[0.35, 0.7, 0.7, 0.7])
UP = ppl.GaussianMixture([[-1.5, 1.5], [1.5, 1.5]], sd=0.5)
DOWN = ppl.GaussianMixture([[-1.5, -1.5], [1.5, -1.5]], sd=0.5)


def w2(x, y):
    """Exact 2-Wasserstein distance between two equal-size empirical measures (assignment problem)."""
    cost = np.sum((x[:, None] - y[None]) ** 2, -1)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def mmd(x, y):
    """Unbiased squared MMD with a Gaussian kernel, bandwidth = median pairwise distance of y."""
    def k(a, b, h):
        return np.exp(-np.sum((a[:, None] - b[None]) ** 2, -1) / (2 * h * h))
    h = np.median(np.sqrt(np.sum((y[:, None] - y[None]) ** 2, -1)))
    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x, h), k(y, y, h), k(x, y, h)
    return float((kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1)) - 2 * kxy.mean())


def figure(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    q, qu, qd = (ppl.diffusion(m, SDE, 2) for m in (FOUR, UP, DOWN))
    rows = [("anneal q^3", q ** 3, lambda x: 3 * FOUR.log_prob(x)),
            ("product q_up * q_down", qu * qd, lambda x: UP.log_prob(x) + DOWN.log_prob(x)),
            ("guidance q^(-1) q_up^2", ppl.geometric(q, qu, 2.0), lambda x: -FOUR.log_prob(x) + 2 * UP.log_prob(x))]
    g = np.linspace(-3.5, 3.5, 200)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    fig, axes = plt.subplots(3, 3, figsize=(10, 10), sharex=True, sharey=True)
    for (title, target, log_density), ax in zip(rows, axes):
        lp = log_density(grid)
        ax[0].imshow(np.exp(lp - lp.max()).reshape(200, 200), origin="lower", extent=(-3.5, 3.5, -3.5, 3.5))
        ax[0].set_ylabel(title)
        for col, corrected in ((1, False), (2, True)):
            r = ppl.sample(target, method="fkc", runtime=args.runtime, particles=args.particles, steps=args.steps,
                           corrected=corrected, resample=0.5, seed=0)
            x = r.samples["x"][0]
            ax[col].scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
    for ax, name in zip(axes[0], ("exact target", "uncorrected", "FKC")):
        ax.set_title(name)
    for a in axes.ravel():
        a.set_xlim(-3.5, 3.5)
        a.set_ylim(-3.5, 3.5)
    fig.tight_layout()
    fig.savefig("fkc_mixtures.png", dpi=120)
    print("wrote fkc_mixtures.png")


def forty_modes(args):
    rng = np.random.default_rng(0)
    mix = ppl.GaussianMixture(rng.uniform(-40, 40, size=(40, 2)) / 50, sd=2.13 / 50)
    exact, _ = mix.power(3)
    target = ppl.diffusion(mix, SDE, 2) ** 3
    n = 1000
    table = {False: [], True: []}
    for seed in range(5):
        ref = exact.sample(n, np.random.default_rng(100 + seed))
        for corrected in (False, True):
            r = ppl.sample(target, method="fkc", runtime=args.runtime, particles=n, steps=args.steps,
                           corrected=corrected, resample=0.5, seed=seed)
            x = r.samples["x"][0]
            table[corrected].append((w2(x, ref), mmd(x, ref)))
    print(f"40-mode mixture ** 3, {n} particles, {args.steps} steps, {args.runtime}; mean ± sd over 5 seeds")
    print(f"{'sampler':12s} {'W2':>18s} {'MMD^2':>22s}")
    for corrected, name in ((False, "uncorrected"), (True, "FKC")):
        a = np.asarray(table[corrected])
        print(f"{name:12s} {a[:, 0].mean():10.4f} ± {a[:, 0].std():.4f} {a[:, 1].mean():12.5f} ± {a[:, 1].std():.5f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runtime", default="numpyro")
    ap.add_argument("--particles", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=500)
    args = ap.parse_args()
    figure(args)
    forty_modes(args)
