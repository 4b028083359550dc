"""The Python functions that the `.ppl` programs of docs/language.md `use` (`ppl run ... --allow-python`):
a reward of one particle, the score of a diffusion, a sequence model and a process reward over tokens.

`use NAME from "user_functions:attr"` finds this module next to the program (a `.ppl` file in examples/), or
anywhere on the Python path.
"""
import math

import numpy as np

import ppl


def closeness(theta):
    """A reward of one particle: minus the squared distance of the school effects from 5."""
    return -ppl.math.sum(ppl.math.square(theta - 5.0))


def score(x, t):
    """The score of N(0, I) noised by ve(sigma_min = 0.01, sigma_max = 10): the marginal at time t is
    N(0, (1 + σ(t)²) I), σ(t) = 0.01 · 1000^t, so ∇ log q_t(x) = −x / (1 + σ(t)²). Batched: x [N, d], t [N]."""
    sigma = 0.01 * ppl.math.exp(t * math.log(1000.0))
    return -x / (1.0 + sigma[:, None] ** 2)


#: a bigram table over 50 tokens: log p(next | last), row 0 also the first token's law
_BIGRAM = np.log(np.random.default_rng(0).dirichlet(np.ones(50), size=50))


def tiny_lm(prefixes, lengths):
    """A bigram language model over 50 tokens as a function of (left-padded prefixes [N, W], lengths [N]): the
    next token's log-probabilities [N, 50] given the last token (the first row's law for an empty prefix)."""
    table = ppl.math.asarray(_BIGRAM, like=prefixes)
    last = prefixes[:, -1] * (lengths > 0)
    return table[last]


def prm(prefixes, lengths):
    """A process reward over the tokens so far: 1 when the last token is even (ids count from 0), else 0."""
    return ((prefixes[:, -1] % 2) == 0) * (lengths > 0) * 1.0
