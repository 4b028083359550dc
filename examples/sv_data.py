"""Simulate the data of examples/sv.ppl: T = 200 returns of a stochastic-volatility model with
mu = -1, phi = 0.95, sigma = 0.25 (numpy seed 10), written to examples/sv.data.json.

    x[1] ~ N(mu, sigma / sqrt(1 - phi²)),  x[t] ~ N(mu + phi (x[t-1] - mu), sigma),  y[t] ~ N(0, exp(x[t] / 2))
"""
import json
import os

import numpy as np

T, MU, PHI, SIGMA = 200, -1.0, 0.95, 0.25


def simulate(seed=10):
    rng = np.random.default_rng(seed)
    x = np.empty(T)
    x[0] = rng.normal(MU, SIGMA / np.sqrt(1 - PHI ** 2))
    for t in range(1, T):
        x[t] = rng.normal(MU + PHI * (x[t - 1] - MU), SIGMA)
    return x, rng.normal(0.0, np.exp(x / 2))


if __name__ == "__main__":
    _, y = simulate()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sv.data.json")
    with open(path, "w") as f:
        json.dump({"T": T, "y": [round(float(v), 6) for v in y]}, f)
    print(f"wrote {path}")
