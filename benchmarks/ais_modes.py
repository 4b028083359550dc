"""AIS and multimodal targets (issue 36): how often the mode search finds every mode, log Z calibration, and
false alarms on unimodal targets, over seeds (and a proposal at one mode, which must be warned about).

Per target and configuration: mean log Z and its sd over seeds against the exact value, the mean reported se,
the z-scores' mean and sd, the runs whose search found more than one mode, and the runs that warned that the
proposal missed a mode. Targets: the issue's 10-d bimodal ½ N(3·1, I) + ½ N(−3·1, I) (and 0.8 / 0.2), the
10-d four-mode mixture of `ppl.stdlib.targets`, and the unimodal eight schools and German credit.

    python benchmarks/ais_modes.py [--runtime numpyro|pyro] [--seeds S] [--particles N]
"""
import argparse
import math
import warnings

import numpy as np

import ppl
from ppl.backends.proposals import Gaussian
from ppl.stdlib import targets as T


def bimodal(w=0.5, d=10, s=3.0, scale=5.0):
    """w N(s·1, I) + (1 − w) N(−s·1, I), log Z = 0, as x ~ N(0, scale² I) times mixture(x) / N(x; 0, scale² I)
    (the test's target, `tests/test_ais.py`, with unequal weights)."""
    c0 = -0.5 * d * math.log(2 * math.pi)

    def log_ratio(x):
        up, down = (math.log(p) + c0 - 0.5 * ppl.math.sum(ppl.math.square(x - m)) for p, m in ((w, s), (1 - w, -s)))
        ref = c0 - d * math.log(scale) - 0.5 * ppl.math.sum(ppl.math.square(x)) / scale ** 2
        return ppl.math.log_sum_exp(up, down) - ref
    return ppl.model(x=ppl.Normal(0.0, scale, shape=(d,)), mix=ppl.factor(log_ratio, ["x"]))


def cases():
    """(label, target, exact log Z, options)."""
    out = [("bimodal 0.5/0.5", bimodal(), 0.0, {}), ("bimodal 0.5/0.5 student_t", bimodal(), 0.0,
                                                     {"family": "student_t"}),
           ("bimodal 0.8/0.2", bimodal(0.8), 0.0, {}), ("4-mode mixture", T.gaussian_mixture().target, 0.0, {}),
           ("bimodal, proposal at 3·1", bimodal(), 0.0, {"proposal": Gaussian(3.0 * np.ones(10), np.eye(10))})]
    for name in ("eight_schools", "german_credit"):
        try:
            known = getattr(T, name)()
        except ppl.PPLError:    # shared reference data absent
            continue
        out.append((name, known.target, known.log_z, {}))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtime", default="numpyro")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--particles", type=int, default=1000)
    args = p.parse_args()
    print(f"{'target':28s} {'mean log Z':>11s} {'sd':>8s} {'mean se':>8s} {'z mean':>7s} {'z sd':>6s} "
          f"{'>1 mode':>8s} {'warned':>7s}")
    for label, target, exact, options in cases():
        log_z, se, several, warned = [], [], 0, 0
        for seed in range(args.seeds):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                r = ppl.sample(target, method="ais", particles=args.particles, seed=seed, runtime=args.runtime,
                               progress=False, **options)
            log_z.append(r.log_z)
            se.append(r.log_z_se)
            several += len(r.diagnostics["modes"]) > 1
            warned += any("missed modes" in str(w.message) for w in caught)
        log_z, se = np.array(log_z), np.array(se)
        z = (log_z - exact) / np.maximum(se, 1e-300)
        print(f"{label:28s} {log_z.mean():11.4f} {log_z.std(ddof=1):8.4f} {se.mean():8.2g} {z.mean():+7.2f} "
              f"{z.std(ddof=1):6.2f} {several:4d}/{args.seeds:<3d} {warned:3d}/{args.seeds:<3d}", flush=True)


if __name__ == "__main__":
    main()
