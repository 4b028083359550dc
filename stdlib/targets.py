"""Standard targets with known answers (log Z and, where known, moments), as Python targets.

Each constructor returns a `Known(name, target, log_z, reference=None, moments={})`; pass `reference` to
`ppl.sample(..., reference=known.reference)` where it is set. Data come from the shared reference folder
(`reference_dir()`: $PPL_REFERENCE, else ../shared/reference next to the repository), never from the repo.
"""
import json
import math
import os
from collections import namedtuple
from pathlib import Path

import numpy as np

from ..errors import PPLError
from ..target import energy, factor, model
from .distributions import Flat, HalfCauchy, HalfNormal, Normal, Bernoulli

Known = namedtuple("Known", "name target log_z reference moments", defaults=(None, {}))


def reference_dir():
    """The shared reference folder: $PPL_REFERENCE, else <repo root>/../shared/reference; PPLError if absent."""
    path = Path(os.environ.get("PPL_REFERENCE") or Path(__file__).resolve().parents[1].parent / "shared" / "reference")
    if not path.is_dir():
        raise PPLError(f"reference data not found at {path}; set PPL_REFERENCE to the shared/reference folder")
    return path


def _posteriordb(folder, file):
    return json.loads((reference_dir() / "posteriordb" / folder / file).read_text())


#: the `.ppl` programs in examples/ and their data in ../shared/reference/posteriordb
EXAMPLE_DATA = {
    "eight_schools_noncentered": "eight_schools-eight_schools_noncentered/eight_schools.data.json",
    "arK": "arK-arK/arK.data.json",
    "garch11": "garch-garch11/garch.data.json",
    "low_dim_gauss_mix": "low_dim_gauss_mix-low_dim_gauss_mix/low_dim_gauss_mix.data.json",
}


def example_paths(name):
    """(examples/NAME.ppl, its posteriordb data file) for one of `EXAMPLE_DATA`; PPLError if data is absent."""
    root = Path(__file__).resolve().parents[1]
    return root / "examples" / f"{name}.ppl", reference_dir() / "posteriordb" / EXAMPLE_DATA[name]


def gaussian_mixture(d=10, separation=4.0, weights=(0.1, 0.2, 0.3, 0.4), ref_scale=5.0):
    """Σ_k w_k N(μ_k, I) in d dimensions, μ_k = (±s, ±s, 0, ...) (four modes 2s apart), log Z = 0.

    Written as x ~ N(0, ref_scale² I) times the factor mixture(x) / N(x; 0, ref_scale² I)."""
    signs = [(1, 1), (1, -1), (-1, 1), (-1, -1)][:len(weights)]
    means = np.zeros((len(weights), d))
    means[:, :2] = separation * np.array(signs, dtype=float)
    log_w = [math.log(w) for w in weights]
    c0 = -0.5 * d * math.log(2 * math.pi)

    def log_ratio(x):
        from .. import math as pm
        comps = [log_w[k] + c0 - 0.5 * pm.sum(pm.square(x - pm.namespace(x).asarray(means[k])))
                 for k in range(len(weights))]
        ref = c0 - d * math.log(ref_scale) - 0.5 * pm.sum(pm.square(x)) / ref_scale ** 2
        m = comps[0]
        for c in comps[1:]:
            m = pm.namespace(x).maximum(m, c)
        return m + pm.log(sum(pm.exp(c - m) for c in comps)) - ref

    target = model(name="gaussian_mixture", x=Normal(0.0, ref_scale, shape=(d,)), mix=factor(log_ratio, ["x"]))
    mean = np.asarray(weights) @ means
    return Known("gaussian_mixture", target, 0.0,
                 moments={"x": (mean, np.sqrt(1 + np.asarray(weights) @ (means - mean) ** 2)),
                          "means": means, "weights": np.asarray(weights)})


def many_well(d=32, ref_scale=2.0):
    """log γ = Σ_i [−x_{2i−1}⁴ + 6 x_{2i−1}² + 0.5 x_{2i−1} − 0.5 x_{2i}²]; log Z = (d/2) ln(11784.50927 √(2π))."""
    if d % 2:
        raise PPLError(f"many_well needs an even dimension, got {d}")

    def E(x):
        a, b = x[0::2], x[1::2]
        return (a ** 4 - 6 * a ** 2 - 0.5 * a + 0.5 * b ** 2).sum()

    per_pair = math.log(11784.50927) + 0.5 * math.log(2 * math.pi)
    return Known(f"many_well_{d}", energy(E, x=Flat(d)), d / 2 * per_pair,
                 reference=model(name="many_well_ref", x=Normal(0.0, ref_scale, shape=(d,))))


def eight_schools():
    """Non-centered eight schools with posteriordb priors: μ ~ N(0, 5), τ ~ half-Cauchy(5), θ̃ ~ N(0, 1),
    y_j ~ N(μ + τ θ̃_j, σ_j); log Z = −31.311347."""
    data = _posteriordb("eight_schools-eight_schools_noncentered", "eight_schools.data.json")
    m = model(name="eight_schools", data={"sigma": np.asarray(data["sigma"], float)},
              mu=Normal(0.0, 5.0), tau=HalfCauchy(5.0), theta_tilde=Normal(0.0, 1.0, shape=(8,)),
              y=lambda mu, tau, theta_tilde, sigma: Normal(mu + tau * theta_tilde, sigma))
    return Known("eight_schools", m.condition(y=np.asarray(data["y"], float)), -31.311347)


def sblrc_blr():
    """Bayesian linear regression: β ~ N(0, 10) (D = 5), σ ~ half-N(10), y ~ N(Xβ, σ); log Z = −194.967589."""
    data = _posteriordb("sblrc-blr", "sblrc.data.json")
    x = np.asarray(data["X"], float)
    m = model(name="sblrc_blr", data={"X": x}, beta=Normal(0.0, 10.0, shape=(x.shape[1],)), sigma=HalfNormal(10.0),
              y=lambda beta, sigma, X: Normal(X @ beta, sigma))
    return Known("sblrc_blr", m.condition(y=np.asarray(data["y"], float)), -194.967589)


def german_credit(rows=None):
    """Logistic regression on standardized UCI German credit (+ bias): w ~ N(0, I₂₅), y ~ Bernoulli(logit Xw);
    log Z = −529.175 ± 0.001 (all 1000 rows; `rows` keeps the first rows, log Z then unknown)."""
    raw = np.loadtxt(reference_dir() / "german_credit" / "german.data-numeric")
    feats = (raw[:, :-1] - raw[:, :-1].mean(0)) / raw[:, :-1].std(0)
    x = np.concatenate([feats, np.ones((len(raw), 1))], axis=1)
    y = raw[:, -1] - 1
    if rows is not None:
        x, y = x[:rows], y[:rows]
    m = model(name="german_credit", data={"X": x}, w=Normal(0.0, 1.0, shape=(x.shape[1],)),
              y=lambda w, X: Bernoulli(logits=X @ w))
    moments = {"w0": (-0.7351, 0.0898), "bias": (-1.2033, 0.0919)}
    return Known("german_credit", m.condition(y=y), -529.175 if rows is None else None, moments=moments)
