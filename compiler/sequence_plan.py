"""Planning for sequence targets: log γ(x) = Σ_i β_i log p_i(x) + Σ_j c_j r_j(x) over token sequences x.

The target tree (`**`, `*`, `geometric`, `tilt` over `ppl.autoregressive` bases) is walked into exponents
β_i per distinct base and coefficients c_j per reward, from the nodes' `linear` expansion. The bases must
share a vocabulary, a maximum length, eos, the step delimiters and the prompt length; ordinary models and
diffusion bases cannot be mixed in. A reward reads the prefixes (and optionally their lengths).
"""
from ..errors import ShapeError
from ..sequence import SITE
from .graph import build_graph
from .terms import exponents


def check_agree(first, other, what):
    """A ShapeError naming `what` unless the sequence models `first` and `other` agree in every key of their
    `signature` (vocabulary, length, eos, steps, prompt length, pad; for served bases their own keys)."""
    for key, value in first.signature.items():
        if other.signature.get(key) != value:
            raise ShapeError(f"{what} must agree in {key}: {value!r} against {other.signature.get(key)!r}")


class SequencePlan:
    """`bases` [(SequenceModel, β)], `rewards` [(Reward, c)] and what the bases share (`vocab`, `length`,
    `eos`, `pad`, `delimiters`, `prompt` length, `decode`)."""

    kind = "sequence"      # the methods registered for this kind sample it (backends.get_method)

    def __init__(self, target, reference=None, fold=True):
        self.target = target
        self.bases, self.rewards = exponents(target, reference, "sequence", "ppl.autoregressive",
                                             "the prefixes (and optionally their lengths): reward(prefixes) or "
                                             "reward(prefixes, lengths)", (1, 2))
        first = self.bases[0][0]
        for b, _ in self.bases[1:]:
            check_agree(first, b, f"sequence models {first.name} and {b.name} combined by *")
        self.vocab, self.length, self.eos, self.pad = first.vocab, first.length, first.eos, first.pad
        self.delimiters, self.prompt_length = first.delimiters, len(first.prompt)
        self.decode = next((b.decode for b, _ in self.bases if b.decode is not None), None)
        names = {p: ("latent", SITE) for r, _ in self.rewards for p in r.parents}
        self.graph = build_graph(target, [], names)

    def __str__(self):
        steps = "one token" if self.delimiters is None else f"a chunk up to token {', '.join(map(str, self.delimiters))}"
        lines = [f"target: {self.target.describe()}",
                 f"site: {SITE} (at most {self.length} tokens of {self.vocab}; eos {self.eos}); a step is {steps}",
                 "sequence factors (log γ = Σ β_i log p_i + Σ c_j r_j):"]
        lines += [f"  {beta:+g} x log {b.name}" for b, beta in self.bases]
        lines += [f"  {c:+g} x reward {r.name}" for r, c in self.rewards]
        lines.append("proposal: the normalized combination of the bases per token; rewards on prefixes are twisting "
                     "potentials (methods 'pf', 'pg', 'bon', 'wbon', 'beam')")
        return "\n".join(lines)
