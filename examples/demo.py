"""The main demo: one algebra, two runtimes, exact answers beside the estimates, and a figure.

    python examples/demo.py            # writes demo.png
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402
from scipy.integrate import quad  # noqa: E402

import ppl  # noqa: E402

p = ppl.model(x=ppl.Normal(1.0, 1.0), name="p")
q = ppl.model(x=ppl.Normal(-1.0, 2.0), name="q")
targets = {
    "p * q": (p * q, stats.norm(-1, np.sqrt(5)).logpdf(1), stats.norm(0.6, np.sqrt(0.8))),
    "p ** 0.5": (p ** 0.5, 0.25 * np.log(2 * np.pi) + 0.5 * np.log(2), stats.norm(1, np.sqrt(2))),
    "p.tilt(x, 0.5)": (p.tilt(lambda x: x, 0.5), 2.0 + 2.0, stats.norm(3, 1)),
    # -log q + 2 log p: precision -1/4 + 2 = 7/4, mean (1/4 + 2) / (7/4) = 9/7; log Z by quadrature
    "geometric(q, p, 2)": (ppl.geometric(q, p, 2.0),
                           np.log(quad(lambda x: np.exp(2 * stats.norm(1, 1).logpdf(x) - stats.norm(-1, 2).logpdf(x)),
                                       -30, 30)[0]), stats.norm(9 / 7, np.sqrt(4 / 7))),
}


def main(out="demo.png"):
    print(ppl.compile(p * q), "\n")
    fig, axes = plt.subplots(1, len(targets), figsize=(4 * len(targets), 3.2))
    print(f"{'target':20} {'runtime':8} {'log Z':>9} {'± se':>7} {'exact':>9} {'mean x':>8} {'ESS':>8}")
    for ax, (name, (target, exact, law)) in zip(axes, targets.items()):
        for rt, color in (("numpyro", "C0"), ("pyro", "C1")):
            r = ppl.sample(target, method="is", runtime=rt, particles=100_000, seed=0, fold=False)
            print(f"{name:20} {rt:8} {r.log_z:9.4f} {r.log_z_se:7.4f} {exact:9.4f} {r.mean('x'):8.3f} {r.ess:8.0f}")
            ax.hist(r.samples["x"][0], bins=80, weights=r.weights[0], density=True, histtype="step", color=color,
                    label=f"{rt}: log Z {r.log_z:.3f} ± {r.log_z_se:.3f}")
        xs = np.linspace(law.ppf(1e-3), law.ppf(1 - 1e-3), 200)
        ax.plot(xs, law.pdf(xs), "k--", lw=1, label=f"exact: log Z {exact:.3f}")
        ax.set(title=name, xlabel="x", ylabel="density")
        ax.legend(fontsize=7)
    fig.suptitle("importance sampling, 100,000 particles: weighted histograms against the exact density")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
