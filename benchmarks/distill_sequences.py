"""Distilling a steered reasoning target into the solver (BRAIn on sequences, `ppl.amortize`), then steering the
distilled model with particle filtering, on the synthetic task of `examples/reasoning_task.py`.

The task: chains of arithmetic mod 10 (`--steps` of them, 3 by default to stay within minutes), the partly
trained GRU solver of `reasoning_task.train_solver` (teacher-forced step accuracy 0.75) as p_SFT, the noisy
process reward model as verifier. The steered target of problem c is

    π_c(y) ∝ p_SFT(y | c) · exp(r_c(y) / λ),     r_c(y) = logit PRM_c(y) = ±μ (right / wrong so far) + σ · noise,

(σ = 1; `--reward exact`: σ = 0, the exact step checker, the same function of the steps on every problem)

read on prefixes as twisting potentials by pf (potential 'diff': consistent for π_c). The solver becomes a
stateful module (`SolverLM`) read after the prompt (`Prompted`), so one copy of it, q_θ, serves every problem.

(a) Distillation on training problems, 3 seeds each: BRAIn (α̂ − β̂), its ablation without the baseline
    (α̂ only), and best-of-N distillation (RAFT / ReST: fine-tune on the largest-reward draw of n from the current
    model); on held-out problems: the mean reward r of draws of q_θ, KL(q_θ ‖ p_SFT) on them, and the accuracy of
    one draw's answer.
    Then the reward at equal KL along each run's training draws, BRAIn against the ablation paired by seed.
(b) Accuracy against the inference budget N = 1…64 on held-out problems: pf on π_c with the base as proposal,
    pf on π_c with the distilled model (BRAIn, seed 0) as proposal, and the distilled model alone (N draws,
    majority vote); answers by weighted vote. Training compute is printed beside it (generations and seconds).
(e) With --fresh-chunks K: the model of (b) is instead BRAIn trained on fresh problems, each drawn once
    (K x 250 steps x --fresh-batch problems), its held-out scores printed as it trains.

    python benchmarks/distill_sequences.py [--steps 3] [--problems 60] [--reward prm|exact] [--train-problems 128]
        [--batch 8] [--particles 16] [--sampler q|base] [--lr 3e-3] [--train-steps 300] [--seeds 3] [--no-curves]
        [--fresh-chunks K] [--fresh-batch 64] [--fresh-seed 0] [--quick]

Measured (2 shared CPU cores, 1 torch thread, 211 s in all; 3-step problems, 128 training problems, 300 steps
x 8 problems x 16 draws = 38400 generations and 10-13 s per run; means over seeds 0-2):

    (a)            held-out: reward  KL(q|p)  acc     training: reward  KL(q|p)  acc
        SFT                  -0.149   0       0.464             -0.203   0       0.421
        BRAIn                -0.273   0.985   0.425              1.267   0.795   0.853
        no baseline          -0.259   0.767   0.449              1.329   0.901   0.851
        best-of-N            -0.586   1.998   0.370              1.092   1.777   0.785

On the problems it was trained on, distillation takes one draw's accuracy from 0.42 to 0.85, BRAIn and its
ablation alike (reward on the training draws at KL 0.59 / 0.79: 0.72 / 1.22 with the baseline, 0.79 / 1.33
without), both far ahead of best-of-N distillation (0.23 / 0.36 at the same KL). Nothing generalizes to new
problems (held-out accuracy 0.43-0.45 against 0.46): not because of the PRM's noise (the exact checker does the
same, (c)) but because 128 problems seen ~19 times each are learnt by heart; (e) shows what fresh problems give.

BRAIn against its ablation at equal KL depends on the number of draws n per problem. Reward on the training
draws (on-policy, sampler q) at four KL levels, BRAIn minus the ablation, paired by seed (mean ± se):

    draws n  seeds  KL levels                  BRAIn - no baseline                     t
    2        16     0.84 0.89 0.94 0.99        +0.222 +0.255 +0.248 +0.271 (± 0.07-0.08)  2.8 3.4 3.5 3.8
    4         8     0.62 0.82                  -0.019 +0.007 (± 0.06-0.07)                -0.3 0.1
    16        8     0.45 0.55 0.65 0.75        -0.064 -0.039 -0.086 -0.088 (± 0.03-0.07)  -1.3 each

With two draws (DPO-sft's setting, which the paper shows is BRAIn with two samples and an argmax) the baseline
is what keeps the ablation from drifting: on-policy, α̂ sums to 1 over two draws of q_θ, so Σ α̂ ∇log q_θ pushes
up whatever was drawn, and the ablation's KL(q‖p) runs from 0.53 to 2.11 over the run while its reward stays at
0.00-0.03; BRAIn, whose α̂ − 1/n cancels that push, ends at reward 0.52, KL 1.17 (16 seeds: one draw's training
accuracy 0.625 against 0.469). With 16 draws the mean score over 16 x 8 draws is small already (the baseline
changes the gradient's variance x0.96 at θ = SFT and x1.26 at the trained θ, against 350-540x near convergence
in tests/test_amortize_sequences.py) and the two are level. Drawing from p instead (`--sampler base`, 4 seeds)
the baseline hurts: BRAIn ends at training reward 0.74 with on-policy KL(q‖p) 2.80 against the ablation's 1.29
at 0.69. Its objective, the self-normalized KL Σ α̂ log(α̂ / β̂), sees q_θ only through its ratios on p's draws:
the training draws' own β̂-weighted estimate of KL(q‖p) read 0.10-0.29 through the run while q_θ's own draws
put it at 2.80 (table (a)). The ablation's −Σ α̂ log q_θ pins q_θ's mass on the draws themselves.

    (b) accuracy of the voted answer, 60 problems, distilled = BRAIn seed 0
             held-out problems               training problems
      N   pf base  pf distilled  alone    pf base  pf distilled  alone
      1    0.533      0.383      0.383     0.333      0.883      0.883
      2    0.650      0.533      0.433     0.633      0.917      0.883
      4    0.800      0.567      0.433     0.750      0.933      0.917
      8    0.933      0.783      0.450     0.917      0.983      0.950
     16    0.950      0.900      0.500     0.950      0.983      0.950
     64    0.950      0.967      0.483     0.933      0.950      0.983

On the training problems pf on the distilled proposal reaches pf-on-base's accuracy with 1/4 of the generations
or fewer (N = 2: 0.917 against 0.917 at N = 8; N = 1: 0.883 against 0.750 at N = 4); on held-out problems it
does not (a proposal that is wrong there costs accuracy at small N), but pf still corrects it as N grows (0.967
at N = 64), while the distilled model alone stays at 0.48. Training compute: 38400 generations, 13 s, against
60 x 127 generations for one pass of (b).

(c) What carries over to new problems (seed 0; accuracy of one draw of q_θ, 60 held-out problems x 32 draws, and
60 of the training problems; the same held-out problems in every row, whose spread between sampling seeds of the
SFT row is 0.446-0.464). "fresh": `--train-problems 20000`, 300 steps draw 9600 problems, ~7600 distinct.

    reward  training problems  batch  lr     held-out acc  KL(q|p)   training acc
    SFT                                      0.463         0         0.421 (of the 128)
    exact   128                  8    3e-3   0.471         0.81      0.922
    exact   2400                 8    3e-3   0.445         0.50      0.493
    exact   fresh               32    3e-3   0.495         0.43      0.507
    exact   fresh               32    1e-2   0.408         1.32      0.460
    prm     fresh               32    3e-3   0.502         0.21      0.498
    supervised on the true solutions of 9600 fresh problems (teacher forcing, from the SFT weights):
            75 steps x 128, lr 1e-2: 0.510; 300 steps x 32, lr 3e-3: 0.530

With the exact checker and 128 problems q_θ still learns the training answers (0.92) and not arithmetic (0.47):
the previous diagnosis (memorizing the PRM's noise) is not the cause; repetition is. On fresh problems both
rewards give a small held-out gain (0.46 -> 0.50; the noisy PRM as much as the exact checker once no problem
comes back), a little less than supervised training on as many problems; 153600 generations (120-170 s on the
shared cores) buy about what 9600 labelled solutions do. pf on these proposals, held-out problems, each with its
own π_c (the exact checker's for the exact-reward model), voted answer:

              exact reward, fresh, b32               prm reward, fresh, b32
      N   pf base  pf distilled  alone        pf base  pf distilled  alone
      1    0.450      0.550      0.550         0.450      0.517      0.517
      2    0.567      0.750      0.517         0.567      0.617      0.500
      4    0.800      0.817      0.467         0.800      0.817      0.450
      8    0.950      0.917      0.483         0.900      0.950      0.467
     16    1.000      0.983      0.583         1.000      0.950      0.583
     64    1.000      1.000      0.550         1.000      0.983      0.583

(SE ~0.065 at 0.5, ~0.03 at 0.9.) The distilled proposal helps at N <= 2 and matches pf on the base from N = 4;
the goal (pf-on-base accuracy with <= 1/4 of the generations) is not met on held-out problems after this much
training: pf distilled at N = 1 / 2 / 4 gives 0.55 / 0.75 / 0.82 against pf base's 0.80 / 0.95 / 1.00 at
4 / 8 / 16. Twenty times the training meets it, (e).

(d) BRAIn against its ablation at equal KL, 128 training problems, prm reward, 300 steps, 3 seeds; q_θ scored
on-policy every 50 steps (32 training problems x 16 draws: reward r and KL(q‖p_SFT)), the reward at equal KL
by linear interpolation along each seed's run (levels up to the smallest KL every run reaches), mean (sd):

    sampler  draws x problems  lr    ESS/n  method       reward at KL level                     final reward, KL
    q        16 x 8           3e-3   0.78   KL           0.160    0.320    0.480    0.640
                                            BRAIn        0.10(3)  0.36(6)  0.83(9)  1.34(5)    1.37  0.66
                                            no baseline  0.15(0)  0.45(1)  0.90(3)  1.29(9)    1.37  0.70
    q        4 x 8            3e-3   0.78   KL           0.199    0.397    0.596    0.795
                                            BRAIn        0.10(5)  0.36(9)  0.72(21) 0.92(12)   1.06  0.71
                                            no baseline  0.10(12) 0.36(24) 0.52(29) 0.54(20)   0.71  1.26
    q        64 x 2           3e-3   0.60   KL           0.159    0.317    0.476    0.634
                                            BRAIn        0.11(7)  0.38(14) 0.48(19) 0.65(9)    0.78  0.67
                                            no baseline  0.10(2)  0.36(4)  0.52(7)  0.42(18)   0.68  1.16
    q        16 x 8           1e-3   0.72   KL           0.110    0.219    0.329    0.438
                                            BRAIn        0.18(5)  0.50(7)  0.86(6)  0.97(13)   1.14  0.47
                                            no baseline  0.14(5)  0.45(11) 0.76(16) 0.93(22)   1.18  0.62
    q        16 x 8           1e-2   0.56   KL           0.529    1.059    1.588    2.118
                                            BRAIn       -0.03(11) 0.09(22) 0.22(33) -0.01(22) -0.02  3.14
                                            no baseline -0.08(6)  0.00(11) 0.10(17) 0.20(23)   0.15  2.89
    base     16 x 8           3e-3   0.46   KL           0.144    0.289    0.433    0.578
                                            BRAIn        0.06(3)  0.28(6)  0.49(9)  0.64(13)   0.67  2.92
                                            no baseline  0.19(5)  0.53(10) 0.96(14) 1.33(3)    1.34  0.60

(the benchmark's `--sampler/--particles/--batch/--lr` run these settings; its own equal-KL table reads the
training draws' estimates instead of fresh on-policy draws.) On-policy, the baseline matters where the draws are
few: with 4 draws per problem BRAIn ends at reward 1.06 / KL 0.71 against 0.71 / 1.26 without it (64 draws x 2
problems: 0.78 / 0.67 against 0.68 / 1.16), and at lr 1e-3 it is ahead at every KL level, by less than one sd;
with 16 draws at lr 3e-3 the two are the same, and at lr 1e-2 both diverge. (Over 8 seeds, paired, the 4-draw
difference is within noise; over 16 seeds, 2 draws show it clearly: the table after (a).) With draws from p_SFT
(α̂ does not depend on θ) the baseline hurts: the ablation is a weighted maximum likelihood on fixed draws of
π_c and converges (1.34 at KL 0.60), while BRAIn's q_θ moves its mass off p's draws and KL(q‖p) runs to 2.9 at
reward 0.67.

(e) BRAIn on fresh problems, 20x the training of (c): `--particles 8 --fresh-chunks 24` (6000 steps x 64 new
problems x 8 draws = 3.07 M generations, 671 s on one thread; every problem drawn once, Adam restarted every 250
steps), prm reward, lr 3e-3. Held-out scores (60 problems x 32 draws) as it trains:

    steps   generations   s     reward  KL(q|p)  acc         steps   generations   s     reward  KL(q|p)  acc
      250      128000     30    0.033   0.227    0.516        3500     1792000    405    0.698   0.652    0.716
     1000      512000    116    0.217   0.364    0.569        4250     2176000    487    0.780   0.718    0.767
     2000     1024000    234    0.617   0.561    0.707        5500     2816000    616    0.688   0.673    0.718
     2750     1408000    317    0.706   0.631    0.735        5750     2944000    644    1.015   0.809    0.829
                                                               6000     3072000    671    1.400   0.895    0.948

One draw's accuracy climbs from 0.46 to a plateau at 0.70-0.73 (2000-5500 steps), then to 0.95 within the last
500 steps: q_θ learns the arithmetic. Exactly, by enumerating the 1000 well-formed solutions of each held-out
problem (`ExactAccuracy`, now printed on each line): the probability of a right answer is 0.463 under the SFT,
0.711 / 0.819 / 0.944 under q_θ at 5500 / 5750 / 6000 steps, and 0.933 under the target π_c itself. Then,
held-out problems, voted answer:

      N   pf base  pf distilled  alone
      1    0.533      0.933      0.933
      2    0.650      0.983      0.967
      4    0.800      0.983      0.983
      8    0.933      0.950      1.000
     16    0.950      0.950      1.000
     64    0.950      0.967      1.000

pf on the distilled proposal reaches pf-on-base's accuracy with 1/4 of the generations or fewer at every budget
(N = 1: 0.933 against 0.800 at N = 4; N = 2: 0.983 against 0.933 at N = 8; N = 4: 0.983 against 0.950 at
N = 16): the goal is met on held-out problems, for 3.07 M training generations (671 s) against 60 x 127
generations for one pass of (b). From N = 8 the distilled model alone (1.000) is ahead of pf on either proposal
(0.95-0.98): pf targets π_c, whose answers the noisy PRM sometimes tilts wrong (π_c's accuracy 0.933), while q_θ
ends sharper than π_c on right answers (0.944).

Another seed of the problems and draws (`--fresh-seed 1 --fresh-chunks 32`, 8000 steps, 4.10 M generations; on a
machine shared with the test suite, so 1376 s): the same plateau at 0.70-0.74 (1500-3000 steps), the jump at
3250-3500 steps (0.830, then 0.951), then 0.92-0.98 to the end (0.980 at 8000 steps, KL(q|p) 1.05). (b) at the
end: pf distilled 0.967 / 1.000 / 1.000 / 1.000 at N = 1 / 2 / 4 / 8 against pf base 0.800 / 0.933 / 0.950 /
0.933 at N = 4 / 8 / 16 / 32; the distilled model alone 0.967 at N = 1, 1.000 from N = 4.
"""
import argparse
import copy
import itertools
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
import ppl  # noqa: E402
from ppl.amortize_sequences import AmortizedSequences, Prompted, _Distiller, _Member, _Trainable  # noqa: E402
from ppl.backends.runtime import get_runtime  # noqa: E402
from reasoning_task import (EOS, SEP, VOCAB, LogitPRM, NoisyPRM, answer_of, make_problems,  # noqa: E402
                            solution_tokens, train_solver)

MU, SIGMA, LAM = 1.5, 1.0, 0.5      # the PRM of reasoning_task (its defaults), the tilt's λ


class SolverLM(nn.Module):
    """The GRU solver in the stateful form over prompt + tokens: start(n) is the empty sequence (zero state; its
    first-token law is never used, every prompt is non-empty), advance feeds one token."""

    def __init__(self, solver):
        super().__init__()
        self.solver = solver

    def start(self, n):
        return torch.zeros(n, VOCAB), torch.zeros(n, self.solver.gru.hidden_size)

    def advance(self, tokens, h):
        logits, h = self.solver(tokens[:, None], h[None].contiguous())
        return torch.log_softmax(logits[:, 0], -1), h[0]


def make_family(base, prompts, results, steps, sigma=SIGMA):
    """Problem index i -> π_i: the solver after prompt i, tilted by its PRM logit / λ (noise scale `sigma`; 0 is
    the exact step checker ±μ)."""
    def family(i):
        lm = ppl.autoregressive(Prompted(base, prompts[i]), VOCAB, 2 * steps + 1, eos=EOS, step=SEP, name="solver")
        return lm.tilt(LogitPRM(NoisyPRM(results[i], int(i), MU, sigma)), LAM)
    return family


def best_of_n(family, base, contexts, steps, n, batch, lr, seed):
    """Best-of-N distillation (RAFT / ReST): each step draws n sequences per context from the current model and
    takes an Adam step on −mean_c log q_θ(y_best(c) | c), y_best the draw of largest reward."""
    q = _Trainable(copy.deepcopy(base), VOCAB)
    d = _Distiller(family, q, get_runtime("pyro"), None)
    d.members.update({j: _Member(family, c, f"context {j}") for j, c in enumerate(contexts)})
    opt = torch.optim.Adam(q.params, lr=lr)
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    start, history = time.perf_counter(), {"reward": [], "kl_base": []}
    for _ in range(steps):
        b = d.batch(sorted(rng.choice(len(contexts), size=batch, replace=False).tolist()), n, gen, None)
        loss = -b["log_q"].gather(1, b["reward"].argmax(-1)[:, None]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        stats = d.stats(b)
        for k in history:
            history[k].append(stats[k])
    return AmortizedSequences(family, q.module, {k: np.array(v) for k, v in history.items()},
                              time.perf_counter() - start, steps * batch * n, contexts)


def trajectory(run, windows):
    """(KL(q ‖ p_SFT), reward r) [windows] on one run's training draws, averaged over each window of steps."""
    return (np.array([run.history["kl_base"][w].mean() for w in windows]),
            np.array([run.history["reward"][w].mean() * LAM for w in windows]))


def reward_at(kl, reward, levels):
    """The reward at each KL level, by linear interpolation along a run's (KL, reward) trajectory; NaN where the
    run's KL does not reach the level."""
    order = np.argsort(kl)
    return np.interp(levels, kl[order], reward[order], left=np.nan, right=np.nan)


def gradient_variance(family, module, contexts, seed, reps=20, n=16, batch=8):
    """Trace of the covariance of the minibatch gradient with and without the baseline, from the same draws of
    q_θ = `module` (reps minibatches of `batch` contexts)."""
    q = _Trainable(copy.deepcopy(module), VOCAB)
    d = _Distiller(family, q, get_runtime("pyro"), None)
    d.members.update({j: _Member(family, c, f"context {j}") for j, c in enumerate(contexts)})
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    out = {True: [], False: []}
    for _ in range(reps):
        b = d.batch(sorted(rng.choice(len(contexts), size=batch, replace=False).tolist()), n, gen, None)
        for baseline in out:
            g = torch.autograd.grad(d.loss(b, baseline), q.params, retain_graph=True)
            out[baseline].append(torch.cat([x.reshape(-1) for x in g]))
    return [torch.stack(out[k]).var(0).sum().item() for k in (True, False)]


def held_out_scores(amortized, family, problems, answer, results, n, seed):
    """On held-out problems, from n draws of q_θ each: mean reward r, KL(q_θ ‖ p_SFT) = mean log q − log p, and
    the fraction of draws whose answer is right."""
    q = _Trainable(amortized.model, VOCAB)
    d = _Distiller(family, q, get_runtime("pyro"), None)
    d.members.update({i: _Member(family, i, f"problem {i}") for i in problems})
    reward, kl, right = [], [], []
    gen = torch.Generator().manual_seed(seed)
    for i in problems:
        m = d.members[i]
        b = d.batch([i], n, gen, None, grad=False)
        reward.append(float(b["reward"].mean()) * LAM)
        kl.append(float((b["log_q"].double() - b["log_p"]).mean()))
        # the answers of n further draws of q_θ
        r = ppl.sample(q.lm(m), method="pf", runtime="pyro", particles=n, seed=seed + i, answer=answer)
        right.append(np.mean([a == int(results[i, -1]) for a in r.diagnostics["answers"]]))
    return float(np.mean(reward)), float(np.mean(kl)), float(np.mean(right))


class ExactAccuracy:
    """By enumerating the 10^k well-formed solutions of each problem: the probability of a right answer under
    π_c (`target`, computed once) and, called with a `SolverLM`, under that model; means over the problems
    (whose PRMs have `keys`)."""

    def __init__(self, base, prompts, results, keys, k, sigma=SIGMA):
        digits = torch.tensor(list(itertools.product(range(10), repeat=k)))
        self.prompts, self.solutions = prompts, solution_tokens(digits)
        self.right = [digits[:, -1] == res[-1] for res in results]
        lengths = torch.full((len(digits),), self.solutions.shape[1])
        rewards = [LogitPRM(NoisyPRM(res, int(key), MU, sigma))(self.solutions, lengths).double()
                   for res, key in zip(results, keys)]
        self.target = float(np.mean([torch.softmax(lp + r / LAM, 0)[right].sum()
                                     for lp, r, right in zip(self.log_probs(base), rewards, self.right)]))

    def log_probs(self, model):
        """log model(y | c) of every solution y [10^k], for each problem."""
        out = []
        for prompt in self.prompts:
            seq = torch.cat([prompt[None].expand(len(self.solutions), -1), self.solutions], 1)
            with torch.no_grad():
                logits, _ = model.solver(seq[:, :-1])
            lp = torch.log_softmax(logits.double(), -1)[:, prompt.shape[0] - 1:]
            out.append(lp.gather(2, self.solutions[:, :, None])[:, :, 0].sum(1))
        return out

    def __call__(self, model):
        return float(np.mean([lp.exp()[right].sum() for lp, right in zip(self.log_probs(model), self.right)]))


FRESH_CHUNK = 250      # steps per `ppl.amortize` call of `distill_fresh` (a call plans its contexts up front)


def distill_fresh(base, family, prompts, results, held, answer, k, chunks, batch, draws, lr, sigma, seed):
    """BRAIn on fresh problems, each drawn once: `chunks` calls of `ppl.amortize`, each of FRESH_CHUNK steps on
    batch × FRESH_CHUNK new problems, training one q_θ in place (Adam restarts at each call), the held-out
    scores printed after each (and for k <= 3 the exact accuracy, `ExactAccuracy`). Returns q_θ as an
    `AmortizedSequences` of `family`."""
    q, generations, seconds = copy.deepcopy(base), 0, 0.0
    exact = ExactAccuracy(base, prompts[held], results[held], held, k, sigma) if k <= 3 else None
    for c in range(chunks):
        new_prompts, new_results = make_problems(batch * FRESH_CHUNK, k, seed=1000 + c + 100_000 * seed)
        a = ppl.amortize(make_family(base, new_prompts, new_results, k, sigma), list(range(batch * FRESH_CHUNK)),
                         proposal=q, seed=c + 100_000 * seed, steps=FRESH_CHUNK, particles=draws, batch=batch,
                         lr=lr, progress=False)
        generations, seconds = generations + a.generations, seconds + a.seconds
        out = AmortizedSequences(family, q, seconds=seconds, generations=generations)
        reward, kl, acc = held_out_scores(out, family, held, answer, results, 32, 0)
        print(f"{(c + 1) * FRESH_CHUNK:6d} steps {generations:9d} generations {seconds:6.0f} s   held-out: reward "
              f"{reward:6.3f}  KL(q|p) {kl:.3f}  accuracy of one draw {acc:.3f}" +
              (f", exact {exact(q):.3f} (π_c's {exact.target:.3f})" if exact else ""), flush=True)
    return out


def accuracy_curve(family, amortized, problems, results, budgets, answer, seed):
    """Accuracy of the voted answer at each budget N for pf with the base, pf with the distilled proposal, and
    the distilled model alone; and the seconds each took."""
    rows = {k: np.zeros((len(budgets), len(problems))) for k in ("pf base", "pf distilled", "distilled alone")}
    seconds = dict.fromkeys(rows, 0.0)
    for j, i in enumerate(problems):
        target, q = family(i), amortized(i)
        for b, n in enumerate(budgets):
            runs = {"pf base": (target, None), "pf distilled": (target, q), "distilled alone": (q, None)}
            for k, (tgt, prop) in runs.items():
                t0 = time.perf_counter()
                r = ppl.sample(tgt, method="pf", runtime="pyro", particles=n, seed=seed * 7919 + 101 * i + b,
                               proposal=prop, select="vote", answer=answer)
                seconds[k] += time.perf_counter() - t0
                rows[k][b, j] = r.answer == int(results[i, -1])
    return rows, seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="arithmetic steps per problem")
    ap.add_argument("--problems", type=int, default=60, help="held-out problems")
    ap.add_argument("--train-problems", type=int, default=128, help="training problems (contexts)")
    ap.add_argument("--train-steps", type=int, default=300, help="distillation steps")
    ap.add_argument("--batch", type=int, default=8, help="problems per distillation step")
    ap.add_argument("--particles", type=int, default=16, help="draws per problem and step")
    ap.add_argument("--sampler", choices=("q", "base"), default="q",
                    help="BRAIn's draws: from the current q_θ, or from p_SFT (off-policy)")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate")
    ap.add_argument("--reward", choices=("prm", "exact"), default="prm",
                    help="the noisy PRM's logit (σ = 1), or the exact step checker ±μ (σ = 0)")
    ap.add_argument("--seeds", type=int, default=3, help="distillation runs per method (seeds 0, 1, ...)")
    ap.add_argument("--no-curves", action="store_true", help="(a) only: skip the accuracy curves (b)")
    ap.add_argument("--fresh-chunks", type=int, default=0,
                    help=f"(e): distill the model of (b) on fresh problems, this many x {FRESH_CHUNK} steps")
    ap.add_argument("--fresh-batch", type=int, default=64, help="(e): new problems per step")
    ap.add_argument("--fresh-seed", type=int, default=0, help="(e): the seed of its problems and draws")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 seeds, 10 steps, 6 problems, N <= 8")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    k = args.steps
    seeds, train_steps, problems, budgets = ((2, 10, 6, [1, 2, 4, 8]) if args.quick else
                                             (args.seeds, args.train_steps, args.problems, [1, 2, 4, 8, 16, 32, 64]))
    if seeds < 2:
        ap.error("--seeds must be at least 2 (the equal-KL comparison is paired over seeds)")
    t0 = time.perf_counter()
    solver, info = train_solver(k, 0.75, seed=0, steps=100 if args.quick else 6000)
    print(f"solver: {k}-step problems, GRU trained {info['updates']} updates to teacher-forced step accuracy "
          f"{info['step_accuracy']:.3f} in {info['seconds']:.0f} s")
    base = SolverLM(solver)
    m = args.train_problems
    train_prompts, train_results = make_problems(m, k, seed=777)
    test_prompts, test_results = make_problems(problems, k, seed=12345)
    prompts, results = torch.cat([train_prompts, test_prompts]), torch.cat([train_results, test_results])
    family = make_family(base, prompts, results, k, SIGMA if args.reward == "prm" else 0.0)
    train, held = list(range(m)), list(range(m, m + problems))
    seen = train[:min(problems, m)]          # training problems scored like the held-out ones
    answer = answer_of(k)
    draws = args.particles
    options = {"steps": train_steps, "particles": draws, "batch": args.batch, "lr": args.lr, "progress": False,
               "sampler": None if args.sampler == "q" else "base"}

    print(f"\n(a) distillation on {m} problems ({args.reward} reward), {train_steps} steps x {args.batch} problems "
          f"x {draws} draws from {args.sampler}; scored on {problems} "
          f"held-out and {len(seen)} training problems x 32 draws (reward r, KL(q|p_SFT), accuracy of one draw)")
    sets = {"held-out": held, "training": seen}
    print(f"{'':>20}" + "".join(f"{name + ' problems':>27}" for name in sets))
    print(f"{'method':>14} {'seed':>4} " + f"{'reward':>8} {'KL(q|p)':>8} {'acc':>8} " * len(sets) +
          f"{'train s':>8} {'generations':>11}")
    sft = AmortizedSequences(family, copy.deepcopy(base))
    cells = [x for name in sets for x in held_out_scores(sft, family, sets[name], answer, results, 32, 0)]
    print(f"{'SFT':>14} {'-':>4} " + " ".join(f"{x:8.3f}" for x in cells))
    table, models = {}, {}
    for seed in range(seeds):
        for name in ("BRAIn", "no baseline", "best-of-N"):
            if name == "best-of-N":
                a = best_of_n(family, base, train, train_steps, draws, args.batch, options["lr"], seed)
            else:
                a = ppl.amortize(family, train, proposal=copy.deepcopy(base), seed=seed, baseline=name == "BRAIn",
                                 **options)
            cells = [x for group in sets.values() for x in held_out_scores(a, family, group, answer, results, 32, 0)]
            table.setdefault(name, []).append(cells)
            models[name, seed] = a
            print(f"{name:>14} {seed:4d} " + " ".join(f"{x:8.3f}" for x in cells) +
                  f" {a.seconds:8.1f} {a.generations:11d}")
    print("mean (sd) over seeds:")
    for name, rows in table.items():
        r = np.array(rows)
        print(f"{name:>14}      " + " ".join(f"{mu:8.3f}" for mu in r.mean(0)) + "   (" +
              " ".join(f"{sd:.3f}" for sd in r.std(0)) + ")")

    for label, module in (("SFT", base), ("BRAIn seed 0", models["BRAIn", 0].model)):
        with_b, without_b = gradient_variance(family, module, train, 0)
        print(f"gradient variance (trace, 20 minibatches) at θ = {label}: with the baseline {with_b:.4g}, without "
              f"{without_b:.4g} (x{without_b / with_b:.2f})")
    size = max(train_steps // 10, 1)
    windows = [slice(i, i + size) for i in range(0, train_steps - size + 1, size)]
    print(f"\ntraining draws, mean over seeds and windows of {size} steps: KL(q|p) -> reward, and the reward at "
          f"equal KL (linear interpolation along each seed's run)")
    curves = {name: [trajectory(models[name, s], windows) for s in range(seeds)] for name in table}
    for name, runs in curves.items():
        kl, reward = np.mean(runs, axis=0)
        print(f"{name:>14} " + "  ".join(f"{k:.3f}->{r:.3f}" for k, r in zip(kl, reward)))
    lo = max(kl.min() for runs in curves.values() for kl, _ in runs)         # levels every run passes through
    hi = min(kl.max() for runs in curves.values() for kl, _ in runs)
    levels = np.linspace(lo, hi, 4)
    print(f"{'KL level':>14} " + " ".join(f"{v:13.3f}" for v in levels))
    at = {name: np.array([reward_at(kl, reward, levels) for kl, reward in runs]) for name, runs in curves.items()}
    for name, r in at.items():
        print(f"{name:>14} " + " ".join(f"{m:6.3f} ({sd:.2f})" for m, sd in zip(r.mean(0), r.std(0, ddof=1))))
    d = at["BRAIn"] - at["no baseline"]                 # paired by seed: the same draws of problems and seeds
    se = d.std(0, ddof=1) / math.sqrt(seeds)
    print(f"{'BRAIn - no b.':>14} " + " ".join(f"{m:+6.3f} ±{s:.2f}" for m, s in zip(d.mean(0), se)) +
          f"   (mean ± se over {seeds} seeds; t = " + ", ".join(f"{t:.1f}" for t in d.mean(0) / se) + ")")
    if args.sampler == "base":
        print("(draws of p: these are self-normalized over p's draws (β̂), blind to q_θ's mass where p does not "
              "draw; the on-policy KL(q|p) is table (a)'s)")

    brain = models["BRAIn", 0]
    if args.fresh_chunks:
        print(f"\n(e) BRAIn on fresh problems for (b): {args.fresh_chunks} x {FRESH_CHUNK} steps x {args.fresh_batch} "
              f"new problems x {draws} draws, lr {args.lr}")
        brain = distill_fresh(base, family, prompts, results, held, answer, k, args.fresh_chunks, args.fresh_batch,
                              draws, args.lr, SIGMA if args.reward == "prm" else 0.0, args.fresh_seed)
        sets = {"held-out": held}
    for name, group in ({} if args.no_curves else sets).items():
        print(f"\n(b) accuracy of the voted answer over {len(group)} {name} problems against N (distilled: BRAIn "
              f"{'on fresh problems' if args.fresh_chunks else 'seed 0'}, trained on {brain.generations} generations "
              f"in {brain.seconds:.0f} s)")
        rows, seconds = accuracy_curve(family, brain, group, results, budgets, answer, seed=0)
        print(f"{'N':>4} " + " ".join(f"{m:>18}" for m in rows))
        for b, n in enumerate(budgets):
            cells = [f"{rows[m][b].mean():.3f} ± {rows[m][b].std(ddof=1) / math.sqrt(len(group)):.3f}" for m in rows]
            print(f"{n:4d} " + " ".join(f"{c:>18}" for c in cells))
        print("seconds in all: " + ", ".join(f"{m} {s:.1f}" for m, s in seconds.items()))
    print(f"total wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
