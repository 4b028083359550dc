"""Sequence models as bases of the algebra: `ppl.autoregressive(next_logprobs, vocab, length, ...)`.

A sequence model is p_M(x) = Π_t p_M(x_t | c, x_<t) over tokens 0..V−1 after a prompt c; a sequence ends at
its first `eos` or after `length` tokens. It composes with the algebra as models do — `lm ** beta`,
`lm1 * lm2` (one vocabulary), `ppl.geometric(lm_u, lm_c, w)`, `lm.tilt(reward, lam)` with a process reward
read on prefixes — and such targets are sampled over time steps, a step being one token or a chunk of tokens
up to a delimiter (`step=`), by methods 'pf', 'pg', 'bon', 'wbon' and 'beam' (DESIGN §8). Its one site is
the token sequence, `tokens`.
"""
import itertools
import numbers

from .errors import PPLError, ShapeError, ValueRangeError
from .math import module_framework
from .target import Target

SITE = "tokens"


def _token(value, vocab, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < vocab:
        raise ValueRangeError(f"{what} must be a token id in [0, {vocab}), got {value!r}")
    return int(value)


def _delimiters(step, vocab, decode):
    """The token ids that end a step: None (a step is one token), or a tuple of ids."""
    if step is None:
        return None
    if isinstance(step, str):
        if decode is None:
            raise PPLError(f"step={step!r} is text: give decode= (token ids -> str) to find the tokens that end "
                           f"a step, or give their ids")
        ids = tuple(v for v in range(vocab) if step in decode([v]))
        if not ids:
            raise PPLError(f"no token of the vocabulary decodes to text containing step={step!r}")
        return ids
    ids = (step,) if isinstance(step, numbers.Integral) else tuple(step)
    return tuple(_token(v, vocab, "a step delimiter") for v in ids)


class SequenceModel(Target):
    """An autoregressive base: `next_logprobs` (see `ppl.autoregressive`), vocabulary size `vocab`, at most
    `length` generated tokens, `eos`, the step delimiters, the `prompt`, the `pad` token and `decode`."""

    kind = "sequence"
    site = SITE
    served = False          # a base over text whose steps a server generates (`ppl.served`)
    _ids = itertools.count()

    def __init__(self, next_logprobs, vocab, length, eos=None, step=None, prompt=None, pad=None, decode=None,
                 name=None):
        if not callable(next_logprobs) and not hasattr(next_logprobs, "advance"):
            raise PPLError(f"next_logprobs must be callable (prefixes [N, t] -> log-probabilities [N, vocab]), "
                           f"an object with start(n) and advance(tokens, state), or a causal LM module; got "
                           f"{type(next_logprobs).__name__}")
        for what, v, low in (("vocab", vocab, 2), ("length", length, 1)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise ShapeError(f"{what} must be an integer >= {low}, got {v!r}")
        self.next_logprobs, self.vocab, self.length = next_logprobs, int(vocab), int(length)
        self.eos = None if eos is None else _token(eos, self.vocab, "eos")
        self.pad = _token(pad, self.vocab, "pad") if pad is not None else (self.eos if self.eos is not None else 0)
        self.prompt = tuple(_token(v, self.vocab, "a prompt token") for v in (prompt or ()))
        if decode is not None and not callable(decode):
            raise PPLError(f"decode must be callable (token ids -> str), got {type(decode).__name__}")
        self.decode = decode
        self.delimiters = _delimiters(step, self.vocab, decode)
        self.framework = module_framework(next_logprobs)
        self.name = name or f"lm{next(self._ids)}"

    def models(self):
        return []

    def _rebuild(self, children):
        return self

    def describe(self):
        return f"{self.name}[sequence, V={self.vocab}, length<={self.length}]"

    @property
    def label(self):
        return f"sequence {self.name}"

    @property
    def signature(self):
        """What every base of one target must share: vocabulary, length, eos, steps, prompt length, pad."""
        return {"served": self.served, "vocab": self.vocab, "length": self.length, "eos": self.eos,
                "step": self.delimiters, "prompt length": len(self.prompt), "pad": self.pad}


def autoregressive(next_logprobs, vocab, length, eos=None, step=None, prompt=None, pad=None, decode=None,
                   name=None):
    """A sequence model over tokens 0..vocab−1, up to `length` generated tokens. `next_logprobs` is

    * a callable `f(prefixes) -> [N, vocab]`: log-probabilities (or logits: rows are normalized) of the next
      token for a batch of prefixes, an integer array [N, P + t] of the runtime (prompt and generated tokens,
      left-padded with `pad`, so the last column is each particle's newest token); a torch `nn.Module` of
      this form runs on runtime 'pyro';
    * a stateful model with `start(n) -> (log_probs [n, vocab], state)` (the first token's law, given the
      prompt it holds) and `advance(tokens [N], state) -> (log_probs, state)`, `state` a tensor or a
      tuple/list of them with leading axis N (a recurrent state): one forward pass per step, the state
      permuted on resampling;
    * a Hugging Face causal LM passed in memory (needs `prompt`, at least a BOS token): its key/value cache
      is reused across steps and reordered on resampling.

    `eos` ends a sequence (others go on); `step` is None (a step is one token), a delimiter token id (or ids),
    or text (with `decode`: the tokens whose text contains it) — a step then is a chunk up to the delimiter;
    `decode(ids) -> str` turns sequences into text in results."""
    return SequenceModel(next_logprobs, vocab, length, eos, step, prompt, pad, decode, name)
