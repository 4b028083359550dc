"""A Hugging Face causal LM as a sequence model (`CausalLM`: key/value cache, waiting particles fed `pad` with
attention mask 0 and held positions, the cache reordered on resampling), against full forward passes and
against exact log Z by enumeration (issue 30, part 5).

The setup: a random 2-layer GPT-2 built in code, vocabulary 6, length 5, eos 5, steps are chunks ending at
token 4 (eos inside a chunk ends the sequence), prompt [bos] (or [bos, 3]), a process reward on prefixes. The
exact log Z sums p(x) e^{r(x)/λ} over all 3906 sequences (each ends at its first eos or after 5 tokens), with
log-probabilities from a float64 full forward pass of the same network.

Measured (pyro runtime, CPU): the cached adapter's next-token rows along real PF runs (ragged chunks, eos,
resampling at every step) are within 2e-6 of the float64 full forward; the same seed gives the same particles
and log Z with the cache as with a full forward at every step (prefix callable); and z = (log Ẑ − log Z)/se is
centred: 100 seeds, N = 1000, chunks at 4, reward (#2 + 1/2 [last = 1]) / 1.5: z mean −0.04 ± 0.07, sd 0.70
(adaptive resampling) and −0.05 ± 0.07, sd 0.70 (resampling every step); 50 seeds, N = 20000: −0.03 ± 0.12,
sd 0.86. (The 7 positive z of the issue were noise: seeds 0–6 of other configurations also average +0.5 to
+0.8 while 100 seeds average ≈ 0; sd < 1 because the Eve-based se is conservative.)
"""
import itertools
import math

import numpy as np
import pytest

import ppl

V, L, EOS, DELIM, BOS = 6, 5, 5, 4, 0


def tiny_gpt2(vocab=V):
    """A 2-layer GPT-2 with random, sharp weights, built in code (no download)."""
    transformers = pytest.importorskip("transformers")
    import torch
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                  initializer_range=0.3, bos_token_id=0, eos_token_id=vocab - 1)
    return transformers.GPT2LMHeadModel(cfg).eval()


def as_double(model):
    """A float64 copy of the network."""
    import copy
    return copy.deepcopy(model).double().eval()


def reward(prefixes):
    """Process reward on the generated tokens so far: the number of 2s, plus 1/2 if the newest token is 1."""
    return ((prefixes == 2) * 1.0).sum(1) + 0.5 * (prefixes[:, -1] == 1)


def final_reward(x):
    return x.count(2) + 0.5 * (x[-1] == 1)


def sequences():
    """Every sequence: it ends at its first eos or after L tokens (3906 for V = 6, L = 5)."""
    return sorted({x[:x.index(EOS) + 1] if EOS in x else x for x in itertools.product(range(V), repeat=L)})


def sequence_log_probs(model64, prompt, seqs):
    """log p(x | prompt) of each sequence by one uncached float64 forward pass."""
    import torch
    padded = [list(prompt) + list(x) + [EOS] * (L - len(x)) for x in seqs]
    with torch.no_grad():
        lp = torch.log_softmax(model64(torch.as_tensor(padded)).logits, -1).numpy()
    p = len(prompt)
    return np.array([sum(lp[i, p - 1 + t, v] for t, v in enumerate(x)) for i, x in enumerate(seqs)])


def exact_log_z(model, prompt, lam):
    seqs = sequences()
    logs = sequence_log_probs(as_double(model), prompt, seqs) + np.array([final_reward(x) for x in seqs]) / lam
    return float(logs.max() + math.log(np.exp(logs - logs.max()).sum()))


def full_forward(model):
    """The same network as a prefix callable: a full forward pass at every step, no cache. `prefixes` are exact
    (one call per distinct length, rows of other lengths are not read), so no padding is needed."""
    import torch

    def next_logprobs(prefixes):
        with torch.no_grad():
            return model(prefixes).logits[:, -1]
    return next_logprobs


def left_padded(model):
    """The same network on left-padded prefixes and their lengths (one call per step): attention mask 0 on the
    padding and positions counted from each row's first token."""
    import torch

    def next_logprobs(prefixes, lengths):
        cols = prefixes.shape[1]
        mask = (torch.arange(cols).reshape(1, -1) >= cols - lengths.reshape(-1, 1)).long()
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        with torch.no_grad():
            return model(prefixes, attention_mask=mask, position_ids=pos).logits[:, -1]
    return next_logprobs


def pf(net, prompt, lam, seed, particles=2000, threshold=1.0, step=DELIM):
    lm = ppl.autoregressive(net, V, L, eos=EOS, step=step, prompt=prompt)
    return ppl.sample(lm.tilt(reward, lam), method="pf", runtime="pyro", particles=particles, seed=seed,
                      resample_threshold=threshold)


def test_cache_follows_ragged_chunks_and_reordering():
    """Driven as the generator drives it — chunks of different lengths (particles wait with pad, mask 0 and
    held positions), ended particles fed pad for the rest, resampling with repeated ancestors — the adapter's
    per-token log-probabilities sum to each sequence's float64 full-forward log-probability."""
    import torch
    from ppl.backends import get_runtime
    from ppl.stdlib.language_models import next_token
    model = tiny_gpt2()
    m = next_token(ppl.autoregressive(model, V, 3 * L, eos=EOS, step=DELIM, prompt=[BOS, 3]), get_runtime("pyro"))
    g = torch.Generator().manual_seed(1)
    n = 12
    rows, state = m.start(n)
    seqs, logp, done = [[] for _ in range(n)], np.zeros(n), np.zeros(n, dtype=bool)
    propose = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.6, 0.08])   # chunks of ~3 tokens, some ending at eos
    stale = torch.zeros(n, dtype=torch.bool)
    for _ in range(3):                                          # steps
        if stale.any():                                         # the chunks' last tokens, after the reordering
            last = torch.as_tensor([s[-1] if s else 0 for s in seqs])
            new, state = m.advance(last, stale, state, None)
            rows = torch.where(stale[:, None], new, rows)
        inside, stale = ~torch.as_tensor(done), torch.zeros(n, dtype=torch.bool)
        while inside.any():                                     # one token per particle still inside its chunk
            lp = torch.log_softmax(rows.double(), -1)
            tok = torch.multinomial(propose, n, replacement=True, generator=g)     # scored by the adapter's law
            for i in torch.nonzero(inside).flatten().tolist():
                seqs[i].append(int(tok[i]))
                logp[i] += float(lp[i, tok[i]])
                done[i] = int(tok[i]) == EOS or len(seqs[i]) >= 3 * L
            ended = torch.as_tensor(done)
            go = inside & ~ended & (tok != DELIM)               # the chunk goes on: feed the token now
            stale |= inside & ~ended & (tok == DELIM)           # the chunk ended: fed at the next step
            if go.any():
                new, state = m.advance(tok, go, state, None)
                rows = torch.where(go[:, None], new, rows)
            inside = go
        idx = torch.where(torch.rand(n, generator=g) < 0.4, torch.randint(0, n, (n,), generator=g), torch.arange(n))
        state, rows, stale = m.reorder(state, idx), rows[idx], stale[idx]
        seqs, logp, done = [list(seqs[i]) for i in idx.tolist()], logp[idx.numpy()], done[idx.numpy()]
    lengths = {len(s) for s in seqs}
    assert len(lengths) > 3 and max(lengths) > 6 and 0 < done.sum() < n, (lengths, done)
    model64 = as_double(model)
    for i, s in enumerate(seqs):
        with torch.no_grad():
            want = torch.log_softmax(model64(torch.as_tensor([[BOS, 3] + s])).logits[0, 1:], -1)
        assert abs(logp[i] - float(want[torch.arange(len(s)), torch.as_tensor(s)].sum())) < 1e-4
        if not done[i] and not stale[i]:     # and the law of its next token
            assert torch.allclose(torch.log_softmax(rows[i].double(), -1), want[-1], atol=1e-4)


def test_cached_pf_is_the_full_forward_pf():
    """One seed, resampling at every step, chunked steps with eos: the cached adapter, a full forward pass per
    step on exact prefixes, and one on left-padded prefixes with an attention mask give the same particles and
    log Z (their next-token rows agree to float32 rounding)."""
    model = tiny_gpt2()
    runs = [pf(net, [BOS, 3], 1.0, seed=3, particles=400)
            for net in (model, full_forward(model), left_padded(model))]
    for r in runs[1:]:
        assert abs(r.log_z - runs[0].log_z) < 1e-4
        assert sum(a == b for a, b in zip(r.sequences, runs[0].sequences)) >= 0.99 * len(r.sequences)
    assert len({len(s) for s in runs[0].sequences}) > 1


def z_scores(model, prompt, lam, seeds, particles, threshold):
    log_z = exact_log_z(model, prompt, lam)
    return np.array([(r.log_z - log_z) / r.log_z_se
                     for r in (pf(model, prompt, lam, s, particles, threshold) for s in seeds)])


def test_pf_log_z_centred_few_seeds():
    """12 seeds of N = 1000 with resampling at every step: every |z| < 4 and the mean within ±0.8 (sd of z is
    ≈ 0.7–0.85 here, so ±0.8 is ≈ 3.5 standard errors of the mean; the issue saw +0.74 over 7 seeds)."""
    z = z_scores(tiny_gpt2(), [BOS], 1.5, range(12), 1000, 1.0)
    assert np.all(np.abs(z) < 4), z
    assert abs(z.mean()) < 0.8, z


@pytest.mark.slow
@pytest.mark.parametrize("prompt, lam", [([BOS], 1.5), ([BOS, 3], 1.0)])
@pytest.mark.parametrize("threshold", [None, 1.0])
def test_pf_log_z_centred_many_seeds(prompt, lam, threshold):
    """100 seeds of N = 2000: a t-test of mean z = 0 (log Ẑ is biased low by ≈ Var/2, so a slightly negative
    mean is expected, a positive one is not), and the spread of z (the Eve-based se is conservative: sd < 1)."""
    z = z_scores(tiny_gpt2(), prompt, lam, range(100), 2000, threshold)
    t = z.mean() / z.std(ddof=1) * math.sqrt(len(z))
    assert -3.0 < t < 2.5, (z.mean(), z.std(ddof=1), t)
    assert 0.5 < z.std(ddof=1) < 1.3, z.std(ddof=1)
