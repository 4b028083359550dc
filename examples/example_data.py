"""Simulate the data of the CLI examples (posteriordb's own data stay in ../shared/reference, not here):
examples/arK.data.json, garch11.data.json and low_dim_gauss_mix.data.json, numpy seed 1.
examples/eight_schools.data.json holds the classic eight-schools data (Rubin 1981).

    arK:                y_t = 0.2 + Σ_k β_k y_{t−k} + N(0, 0.2²),  β = (0.5, −0.2, 0.15, −0.1, 0.05),  T = 200
    garch11:            σ_t² = 0.5 + 0.2 (y_{t−1} − 5)² + 0.6 σ_{t−1}²,  y_t ~ N(5, σ_t),  σ_1 = 0.5,  T = 200
    low_dim_gauss_mix:  y_n ~ 0.4 N(−2.75, 1) + 0.6 N(2.75, 1),  N = 1000
"""
import json
import os

import numpy as np


def ar_k(rng, T=200, beta=(0.5, -0.2, 0.15, -0.1, 0.05), alpha=0.2, sigma=0.2):
    y = np.zeros(T)
    for t in range(T):
        past = y[max(t - len(beta), 0):t][::-1]
        y[t] = alpha + np.dot(beta[:len(past)], past) + rng.normal(0.0, sigma)
    return {"K": len(beta), "T": T, "y": y}


def garch11(rng, T=200, mu=5.0, alpha0=0.5, alpha1=0.2, beta1=0.6, sigma1=0.5):
    y, var = np.zeros(T), sigma1 ** 2
    for t in range(T):
        if t:
            var = alpha0 + alpha1 * (y[t - 1] - mu) ** 2 + beta1 * var
        y[t] = rng.normal(mu, np.sqrt(var))
    return {"T": T, "y": y, "sigma1": sigma1}


def low_dim_gauss_mix(rng, N=1000, theta=0.4, mu=(-2.75, 2.75)):
    first = rng.uniform(size=N) < theta
    return {"N": N, "y": np.where(first, rng.normal(mu[0], 1.0, N), rng.normal(mu[1], 1.0, N))}


def _write(name, data):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.data.json")
    with open(path, "w") as f:
        json.dump({k: [round(float(v), 6) for v in x] if isinstance(x, np.ndarray) else x
                   for k, x in data.items()}, f)
    print(f"wrote {path}")


if __name__ == "__main__":
    rng = np.random.default_rng(1)
    for name, simulate in (("arK", ar_k), ("garch11", garch11), ("low_dim_gauss_mix", low_dim_gauss_mix)):
        _write(name, simulate(rng))
    _write("eight_schools", {"J": 8, "y": [28, 8, -3, 7, -1, 1, 18, 12], "sigma": [15, 10, 16, 11, 9, 11, 10, 18]})
