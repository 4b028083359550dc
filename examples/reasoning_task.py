"""A synthetic multi-step reasoning task, a small GRU that solves it imperfectly, and a noisy process reward model.

A problem is ``op1 d1 op2 d2 ... opK dK ; a =``: start from the digit ``a`` and apply the operations ``+ - *`` with
digits ``d_i`` mod 10 in turn (a multiplier is one of the units 1, 3, 7, 9, so that every step is a bijection and a
wrong step makes a wrong answer). The start comes last, so the solver cannot run the chain while it reads the
prompt: it writes the intermediate results one step at a time, ``r1 ; r2 ; ... ; rK ;`` then EOS, with
``r_i = r_{i-1} op_i d_i mod 10`` (``r_0 = a``), recalling each operation from its memory of the prompt. The answer
is ``rK``. The GRU is trained only partly (teacher forcing, stopped at a given held-out step accuracy), so its
steps are right most of the time and its errors compound over the chain.

The process reward model is the exact step checker seen through noise: the score of a partial solution is
``sigmoid(mu * (+1 if every step so far is right else -1) + sigma * g)`` with ``g`` a standard normal that is a
deterministic function (a hash) of the problem and the steps, so that the same partial solution always gets the
same score, as from a trained PRM, while the scores of a prefix and of its extensions are independent.
"""
import math
import time

import torch
from torch import nn

DIGITS = 10
PLUS, MINUS, TIMES, EQUALS, SEP, EOS = range(DIGITS, DIGITS + 6)
VOCAB = EOS + 1
UNITS = torch.tensor([1, 3, 7, 9])
NAMES = [str(d) for d in range(DIGITS)] + ["+", "-", "*", "=", ";", "<eos>"]
_MOD = 2147483647  # a Mersenne prime: hash states stay below 2**31, so their products fit in int64


def make_problems(n, steps, seed):
    """``n`` random problems of ``steps`` steps: prompts [n, 2 * steps + 3] and intermediate results [n, steps]."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, DIGITS, (n,), generator=g)
    ops = torch.randint(0, 3, (n, steps), generator=g)
    ds = torch.randint(0, DIGITS, (n, steps), generator=g)
    ds = torch.where(ops == 2, UNITS[ds % 4], ds)  # multiply by a unit mod 10 only: every step is a bijection
    results, r = [], a
    for i in range(steps):
        r = torch.where(ops[:, i] == 0, r + ds[:, i], torch.where(ops[:, i] == 1, r - ds[:, i], r * ds[:, i])) % DIGITS
        results.append(r)
    body = torch.stack([ops + PLUS, ds], dim=2).reshape(n, 2 * steps)
    prompts = torch.cat([body, torch.full((n, 1), SEP), a[:, None], torch.full((n, 1), EQUALS)], dim=1)
    return prompts, torch.stack(results, dim=1)


def solution_tokens(results):
    """The target solutions ``r1 ; ... ; rK ; <eos>`` [n, 2K + 1] of intermediate results [n, K]."""
    n, k = results.shape
    steps = torch.stack([results, torch.full_like(results, SEP)], dim=2).reshape(n, 2 * k)
    return torch.cat([steps, torch.full((n, 1), EOS)], dim=1)


def show(tokens):
    """A token sequence as text."""
    return " ".join(NAMES[t] for t in tokens)


class GRUSolver(nn.Module):
    """A one-layer GRU language model over the task's vocabulary."""

    def __init__(self, hidden=128, embed=32):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, VOCAB)

    def forward(self, tokens, h=None):
        """Next-token logits [n, t, VOCAB] after each of ``tokens`` [n, t], and the last hidden state [1, n, H]."""
        y, h = self.gru(self.embed(tokens), h)
        return self.out(y), h


def step_accuracy(model, prompts, results):
    """Teacher-forced accuracy of the solver's most likely result digit, over the problems and steps."""
    seq = torch.cat([prompts, solution_tokens(results)], dim=1)
    with torch.no_grad():
        logits, _ = model(seq[:, :-1])
    p = prompts.shape[1] - 1
    return (logits[:, p::2][:, :results.shape[1]].argmax(-1) == results).float().mean().item()


def train_solver(k, target, seed, hidden=128, steps=6000, batch=128, lr=1e-2, check_every=100):
    """A ``GRUSolver`` trained with teacher forcing (Adam) on fresh random ``k``-step problems and stopped once its
    held-out ``step_accuracy`` reaches ``target`` (or after ``steps`` updates): a partly trained solver.

    Returns the model (in eval mode) and a dict of the updates made, the accuracy reached and the seconds taken."""
    torch.manual_seed(seed)
    model = GRUSolver(hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    held_out = make_problems(1024, k, seed + 1)
    t0, acc = time.perf_counter(), 0.0
    for i in range(1, steps + 1):
        prompts, results = make_problems(batch, k, seed * 1_000_003 + i)
        seq = torch.cat([prompts, solution_tokens(results)], dim=1)
        logits, _ = model(seq[:, :-1])
        p = prompts.shape[1] - 1  # the logits at the "=" and after predict the solution
        loss = nn.functional.cross_entropy(logits[:, p:].reshape(-1, VOCAB), seq[:, p + 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % check_every == 0:
            acc = step_accuracy(model, *held_out)
            if acc >= target:
                break
    return model.eval(), {"updates": i, "step_accuracy": acc, "seconds": time.perf_counter() - t0}


class ProblemLM:
    """The solver conditioned on one prompt, in the stateful form ``start(n)`` / ``advance(tokens, state)``."""

    def __init__(self, model, prompt):
        self.model = model
        with torch.no_grad():
            logits, h = model(prompt[None])
        self.first = logits[0, -1]
        self.h = h[0, 0]

    def start(self, n):
        """Log-probabilities of the first solution token [n, VOCAB] and the GRU state [n, H]."""
        return torch.log_softmax(self.first, -1).expand(n, VOCAB), self.h.expand(n, -1).contiguous()

    def advance(self, tokens, state):
        """Log-probabilities of the next token [N, VOCAB] after ``tokens`` [N], and the new state [N, H]."""
        with torch.no_grad():
            logits, h = self.model(tokens[:, None], state[None].contiguous())
        return torch.log_softmax(logits[:, 0], -1), h[0]


def parse(tokens):
    """The digits written as step results in a token list (ignoring separators, EOS and padding); None if malformed.

    A well-formed solution alternates a digit and ``;``; the parse stops at EOS."""
    out, want_digit = [], True
    for t in tokens:
        t = int(t)
        if t == EOS:
            break
        if not (t < DIGITS if want_digit else t == SEP):
            return None
        if want_digit:
            out.append(t)
        want_digit = not want_digit
    return out


def answer_of(steps):
    """The answer function of a ``steps``-step task: the last result of a complete, well-formed solution, else None."""
    def answer(tokens):
        r = parse(tokens)
        return r[-1] if r is not None and len(r) == steps else None
    return answer


def _mix(h):
    """An integer hash finalizer (xor-shift-multiply rounds) of int64 states < 2**31, into [0, 2**31)."""
    for _ in range(2):
        h = ((h ^ (h >> 16)) * 0x45D9F3B) & _MOD
    return h ^ (h >> 16)


class NoisyPRM:
    """The exact step checker of one problem seen through deterministic noise (see the module docstring)."""

    def __init__(self, results, key, mu=1.5, sigma=1.0):
        self.results = results
        self.steps = len(results)
        self.key = int(key) % _MOD + 1
        self.mu, self.sigma = mu, sigma

    def correct(self, tokens, lengths):
        """Whether each partial solution is right so far [N] (bool), and a hash of its tokens [N] (int64).

        ``tokens`` [N, t] are left-padded, ``lengths`` [N] the number of real tokens; EOS and padding do not enter
        the hash, so a solution scores the same at its last step and when it ends."""
        n, t = tokens.shape
        real = torch.arange(t)[None, :] >= (t - lengths)[:, None]
        ok = torch.ones(n, dtype=torch.bool)
        h = torch.full((n,), self.key, dtype=torch.int64)
        step = torch.zeros(n, dtype=torch.int64)
        expect_digit = torch.ones(n, dtype=torch.bool)
        ended = torch.zeros(n, dtype=torch.bool)
        target = torch.cat([self.results, self.results.new_full((1,), -1)])
        for j in range(t):
            tok = tokens[:, j]
            live = real[:, j] & ~ended
            is_eos = live & (tok == EOS)
            ended |= is_eos
            live &= ~is_eos
            digit = tok < DIGITS
            ok &= ~live | (digit == expect_digit) & (digit | (tok == SEP))
            ok &= ~(live & digit) | (tok == target[step.clamp(max=self.steps)])
            h = torch.where(live, (h * 1000003 + tok + 1) % _MOD, h)
            step = step + (live & digit).long()
            expect_digit = torch.where(live, ~expect_digit, expect_digit)
        ok &= ~ended | (step == self.steps)  # an early EOS is a wrong solution
        return ok, h

    def noise(self, h):
        """A standard normal per hash (Box-Muller of two uniforms derived from it)."""
        u1 = (_mix(h) + 1).double() / (_MOD + 1)
        u2 = (_mix(h ^ 0x5BD1E995) + 1).double() / (_MOD + 1)
        return (torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)).float()

    def __call__(self, tokens, lengths):
        """The PRM score in (0, 1) of each left-padded partial solution [N, t] with ``lengths`` [N] real tokens."""
        ok, h = self.correct(tokens, lengths)
        return torch.sigmoid(self.mu * (2 * ok.float() - 1) + self.sigma * self.noise(h))


class LogitPRM:
    """The PRM's logit, mu (+-1 right / wrong so far) + sigma x noise, on left-padded prefixes and their lengths: as
    a tilt with λ = 1, γ = p · r / (1 − r)."""

    def __init__(self, prm):
        self.prm = prm

    def __call__(self, tokens, lengths):
        ok, h = self.prm.correct(tokens, lengths)
        return self.prm.mu * (2 * ok.float() - 1) + self.prm.sigma * self.prm.noise(h)
