"""FKC with learned scores: train at a high temperature, anneal to lower ones (Skreta et al. 2025, Table 3 setup).

The paper trains DEM on LJ-13 at T_L = 2 and anneals to T = 1.5 and 0.8 (β = T_L / T = 1.33 and 2.5), comparing
the target-score SDE and the tempered-noise SDE, each without and with FKC weights, against a model trained at
the target temperature. Here the Boltzmann density is `DoubleWells` (d = 8 tilted double wells
E(x) = Σ_i 2 (x_i² − 1)² + 0.5 x_i at T = 2, with exact draws of its powers q_0^β, the wells at T = 2/β), so every
row is scored against exact samples:

  x-W2         mean over coordinates of the 1-d W2 between marginals (the paper's distance-W2 analogue)
  E-W1, E-W2   1-d W1 / W2 between the energy distributions of sample and exact draws (the paper's energy-W1/W2)
  well         |fraction of coordinates in the deeper (left) well − exact|
  log Z − ex   FKC's log(Z_0 / Z_T) against quadrature (`DoubleWells.log_norm`; O(dt) bias, see backends/fkc.py)

Scores: `ppl.train_score` (MLP ε-predictor, denoising score matching) on 20,000 exact draws at T = 2, and of
the target q_0^β for the "trained at T" row; "exact score" rows use the closed-form noised score of the wells at
T = 2 (no learning error: what FKC itself achieves). VP SDE (β 0.1 → 20), 10,000 particles, 500 steps.

Measured (3 seeds, numpyro, 2 shared CPU cores; train 256 × 3 MLP, 10,000 Adam steps, about 60 s per score;
mean over seeds, cpu = process time per run):

    T = 1.5 (β = 1.33)            x-W2   E-W1   E-W2   well   log Z − ex (sd)   cpu s
    noise floor                   .019   .059   .073   .005
    target score                  .075   .154   .198   .002   —                 15.3
    target score + FKC            .031   .119   .145   .002   +0.17 (0.09)      15.3
    tempered noise                .088   .158   .250   .004   —                 13.1
    tempered noise + FKC          .047   .154   .196   .004   +0.14 (0.09)      13.5
    trained at T                  .024   .213   .279   .003   —                 11.8
    exact score + FKC             .034   .065   .100   .004   +0.16 (0.06)      32.5
    exact score + FKC + MALA      .017   .035   .058   .003   +0.07 (0.004)     63.2
    exact score + MALA + path     .018   .045   .085   .003   −0.006 (0.011)    65.3

    T = 0.8 (β = 2.5)
    noise floor                   .020   .032   .073   .001
    target score                  .122   .724   .770   .011   —                 13.6
    target score + FKC            .169   .178   .205   .010   +0.59 (1.08)      15.0
    tempered noise                .207   1.056  1.122  .028   —                 12.5
    tempered noise + FKC          .201   .344   .399   .034   −17.8 (1.31)      12.3
    trained at T                  .028   .283   .324   .002   —                 11.2
    exact score + FKC             .302   .237   .259   .016   +1.46 (0.27)      31.3
    exact score + FKC + MALA      .024   .029   .049   .002   +1.35 (0.018)     60.0
    exact score + MALA + path     .022   .034   .046   .002   +0.02 (0.04)      58.8

As in the paper's Table 3, FKC cuts the energy error of the annealed learned score by 1.3× at β = 1.33 and 4×
at β = 2.5 (target score; 3× with tempered noise), and beats the score trained at the target temperature in
energy (0.18 vs 0.28) though not in the marginals (x-W2 0.17 vs 0.03). At β = 2.5 the weights alone collapse the
genealogy (x-W2 0.30 even with the exact score); one MALA move per step brings every metric to its floor, but
needs log q_t, which a learned score does not give. Tempered noise is unstable for β > 2 (FKC warns; its
log Z is off by −18). The log Z bias is the O(dt) bias of the left-point increments; where log q_t is known,
`increments="path"` removes it (+1.35 → +0.02; the path rows from a later run, with their own exact draws).

    python benchmarks/fkc_learned.py [--seeds 3] [--particles 10000] [--steps 500] [--train-steps 10000]
                                     [--hidden 256] [--runtime numpyro] [--configs ...]
"""
import argparse
import time
import warnings

import numpy as np

import ppl
from fkc_gmm40 import equal_weights
from ppl.stdlib.diffusion import DoubleWells

SDE = ppl.VPSDE(0.1, 20.0)
T_TRAIN, TEMPERATURES, T_MIN = 2.0, (1.5, 0.8), 1e-3
#: (score, sampler options) of each row: score "learned" (at T_TRAIN), "direct" (trained at T) or "exact"
CONFIGS = {
    "target score": ("learned", dict(corrected=False)),
    "target score + FKC": ("learned", dict()),
    "tempered noise": ("learned", dict(corrected=False, noise="tempered")),
    "tempered noise + FKC": ("learned", dict(noise="tempered")),
    "trained at T": ("direct", dict(corrected=False)),
    "exact score + FKC": ("exact", dict()),
    "exact score + FKC + MALA": ("exact", dict(moves=1)),
    "exact score + MALA + path": ("exact", dict(moves=1, increments="path")),
}


def w_1d(a, b, p):
    """p-Wasserstein distance of two equal-size 1-d samples (sorted matching)."""
    return float(np.mean(np.abs(np.sort(a) - np.sort(b)) ** p) ** (1 / p))


def metrics(x, y, wells):
    ex, ey = wells.energy(x), wells.energy(y)
    return {"x-W2": float(np.mean([w_1d(x[:, i], y[:, i], 2) for i in range(x.shape[1])])),
            "E-W1": w_1d(ex, ey, 1), "E-W2": w_1d(ex, ey, 2),
            "well": abs(float(np.mean(x < 0)) - float(np.mean(y < 0)))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--particles", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--train-steps", type=int, default=10_000)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--runtime", default="numpyro")
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS),
                    default=[c for c in CONFIGS if CONFIGS[c][0] != "exact"], help="rows (default: the learned ones)")
    args = ap.parse_args()
    wells, rng = DoubleWells(temperature=T_TRAIN), np.random.default_rng(2024)
    train = lambda beta: ppl.train_score(wells.sample(20_000, rng, beta), SDE, hidden=args.hidden,  # noqa: E731
                                         depth=3, steps=args.train_steps, seed=0)
    needs = {CONFIGS[c][0] for c in args.configs}
    scores = {"exact": wells}
    if "learned" in needs:
        start = time.process_time()
        scores["learned"] = train(1.0)
        print(f"trained the T = {T_TRAIN:g} score in {time.process_time() - start:.0f} s cpu")
    configs = args.configs
    names = ["x-W2", "E-W1", "E-W2", "well"]
    print(f"{wells!r}, {SDE!r}, {args.particles} particles, {args.steps} steps, {args.runtime}, {args.seeds} seeds")
    for temp in TEMPERATURES:
        beta = T_TRAIN / temp
        if "direct" in needs:
            scores["direct"] = train(beta)
        lz = wells.log_norm(SDE, T_MIN, beta) - wells.log_norm(SDE, SDE.T, beta)
        floor = metrics(wells.sample(args.particles, rng, beta), wells.sample(args.particles, rng, beta), wells)
        print(f"\nT = {temp:g} (beta = {beta:.3g}); exact log Z = {lz:.3f}; noise floor: "
              + ", ".join(f"{k} {v:.3f}" for k, v in floor.items()))
        print(f"{'row':26s} " + " ".join(f"{k:>7s}" for k in names) + f" {'logZ-ex':>8s} {'sd':>6s} {'cpu s':>6s}")
        for config in configs:
            which, options = CONFIGS[config]
            q = ppl.diffusion(scores[which], SDE, wells.dim)
            rows, lzs, cpus = [], [], []
            for seed in range(args.seeds):
                t0 = time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")   # tempered noise warns for beta > 2: measured on purpose
                    r = ppl.sample(q if which == "direct" else q ** beta, method="fkc", runtime=args.runtime,
                                   particles=args.particles, steps=args.steps, t_min=T_MIN, seed=seed, **options)
                cpus.append(time.process_time() - t0)
                log_w = None if r.log_weights is None else r.log_weights[0]
                x = equal_weights(r.samples["x"][0], log_w, args.particles, rng)
                m = metrics(x, wells.sample(args.particles, rng, beta), wells)
                rows.append([m[k] for k in names])
                lzs.append(np.nan if r.log_z is None else r.log_z - lz)
            lz_text = f"{np.mean(lzs):+8.3f} {np.std(lzs, ddof=1):6.3f}" if np.isfinite(lzs[0]) else f"{'—':>8s} {'':6s}"
            print(f"{config:26s} " + " ".join(f"{v:7.3f}" for v in np.mean(rows, 0)) + f" {lz_text} "
                  f"{np.mean(cpus):6.1f}", flush=True)


if __name__ == "__main__":
    main()
