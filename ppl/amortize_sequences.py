"""Distilling a family of steered sequence targets into one sequence model (BRAIn on sequences; Pandey et al.
2024, arXiv 2402.02479), reached through `ppl.amortize(family, contexts)` when `family(c)` is a sequence target.

A member of the family is γ_c(y) = p(y | c)^β · exp(Σ_j c_j r_j(y)) over token sequences y (one
`ppl.autoregressive` base p, the SFT model, with exponent β, and rewards r_j read on the complete sequence,
e.g. `lm(prompt=c).tilt(r_c, lam)`: c_j = 1/λ). A model q_θ(y | c) is trained on it: each Adam step draws a
minibatch of contexts and n sequences y_1..y_n ~ r per context (r = q_θ at the current θ, the base p, or a fixed
proposal), sets

    α̂_i = normalized γ_c(y_i) / r(y_i),      β̂_i = normalized q_θ(y_i | c) / r(y_i),

and follows −∇ of the loss −Σ_i (α̂_i − β̂_i) log q_θ(y_i | c) (weights held fixed; `brain_weights`), an estimate
of −∇_θ KL(π_c ‖ q_θ) whose β̂ term is the self-normalized baseline; `baseline=False` drops it (the paper's
ablation, Σ_i α̂_i ∇ log q_θ(y_i | c)). log q_θ of all the minibatch's sequences is one teacher-forced pass,
batched over sequences and contexts.

q_θ reads the context as prompt tokens: it is a Hugging Face causal LM (the prompt is the base's `prompt`) or a
torch `nn.Module` with `start(n) -> (log_probs [n, V], state)` and `advance(tokens [N], state)` over tokens
from the empty sequence, conditioned by feeding it the prompt (`Prompted(module, prompt)`, the form a family's
stateful base takes). By default it is a deep copy of the family's base module. The result, `AmortizedSequences`,
gives `amortized(c)`: a sequence model (`ppl.autoregressive`) to sample alone, to combine in the algebra, or to
pass as `proposal=` to 'pf' on family(c) (the weights carry γ_c / q_θ, so log Z is family(c)'s). Torch only
(runtime 'pyro'); saving is the module's own `state_dict` / `save_pretrained`.
"""
import copy
import math
import numbers
import sys
import time

import numpy as np

from .amortize_brain import brain_weights
from .amortize_family import _call_family
from .errors import PlanError, PPLError, ShapeError, UnknownNameError, ValueRangeError
from .sequence import SequenceModel, autoregressive
from .target import Target, call_user

#: what every member of a family (and q_θ's sequence model) must share
SHARED = ("vocab", "length", "eos", "step", "pad")


def _torch():
    import torch
    return torch


# ------------------------------------------------------------------------------------------ the models
def _tree(fn, state):
    if isinstance(state, (tuple, list)):
        return type(state)(_tree(fn, s) for s in state)
    return fn(state)


def _tree2(fn, a, b):
    if isinstance(a, (tuple, list)):
        return type(a)(_tree2(fn, x, y) for x, y in zip(a, b))
    return fn(a, b)


def _is_causal_lm(obj):
    from .stdlib.language_models import is_causal_lm
    return is_causal_lm(obj)


def _prompt_states(module, prompts):
    """(log-probabilities [B, V], state) of a stateful module after each of `prompts` (B token tuples, fed
    left-padded: a row keeps its state until its prompt starts), one `advance` per column for all rows."""
    torch = _torch()
    b, width = len(prompts), max(len(p) for p in prompts)
    out, state = module.start(b)
    if width:
        cols = torch.tensor([[0] * (width - len(p)) + list(p) for p in prompts]).long()
        live = torch.tensor([[False] * (width - len(p)) + [True] * len(p) for p in prompts])
        for j in range(width):
            new_out, new_state = module.advance(cols[:, j], state)
            keep = live[:, j]
            out = torch.where(keep[:, None], new_out, out)
            state = _tree2(lambda a, s: torch.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, s), new_state, state)
    return out, state


def _prompted_rows(module, prompts):
    """(log-probabilities [N, V], state) of a stateful module after each row's prompt (N token tuples), the
    distinct prompts fed once."""
    torch = _torch()
    unique = list(dict.fromkeys(prompts))
    out, state = _prompt_states(module, unique)
    rows = torch.tensor([unique.index(p) for p in prompts])
    return out[rows], _tree(lambda a: a[rows], state)


class Prompted(_torch().nn.Module):
    """A stateful module (`start(n)`, `advance(tokens, state)` from the empty sequence) after the prompt: the
    stateful form of `ppl.autoregressive` (`start(n)` gives the law of the first token after the prompt), run
    without gradients. A family's base `ppl.autoregressive(Prompted(sft, c), ...)` shares `sft` over contexts,
    and q_θ (by default a copy of `sft`) reads each context's prompt the same way."""

    def __init__(self, module, prompt):
        super().__init__()
        if not (hasattr(module, "start") and hasattr(module, "advance")):
            raise PPLError(f"Prompted needs a module with start(n) and advance(tokens, state); got "
                           f"{type(module).__name__}")
        self.module, self.prompt = module, tuple(int(t) for t in prompt)

    def prompts(self, n):
        return [self.prompt] * n

    def start(self, n):
        with _torch().no_grad():
            return _prompted_rows(self.module, self.prompts(n))

    def advance(self, tokens, state):
        with _torch().no_grad():
            return self.module.advance(tokens, state)


class _Rows(Prompted):
    """Prompted with a prompt per row: the draws of a minibatch of contexts in one walk."""

    def __init__(self, module, prompts):
        super().__init__(module, ())
        self.rows = prompts

    def prompts(self, n):
        return self.rows


def _rows_lm(module, prompts, like):
    """A stateful module after a prompt per row, as a sequence model with the tokens, length, eos and pad of
    `like`."""
    return autoregressive(_Rows(module, prompts), like.vocab, like.length, eos=like.eos, pad=like.pad)


def _walk(lm, rt, n, tokens=None, length=None, gen=None):
    """Sequences of the sequence model `lm` token by token, batched over n: drawn (`gen` a torch Generator)
    or teacher-forced (`tokens` [n, L] right-padded with pad, `length` [n] generated tokens, eos included).
    Returns (tokens, length, log p(tokens)) without gradients. One forward per token, for all n."""
    from .stdlib.language_models import next_token
    torch = _torch()
    m = next_token(lm, rt)
    prompt = rt.asindex(list(lm.prompt)).reshape(1, -1)
    draw = tokens is None
    if draw:
        tokens = torch.full((n, lm.length), lm.pad, dtype=torch.long)
        length = torch.zeros(n, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    total = torch.zeros(n, dtype=torch.float64)

    def on_prefixes(fn, arity, t=None):
        prefixes = torch.cat([prompt.expand(n, -1), tokens[:, :t + 1]], dim=1)
        return fn(prefixes, torch.full((n,), prefixes.shape[1])) if arity == 2 else fn(prefixes)

    with torch.no_grad():
        out, state = m.start(n)
        for t in range(lm.length):
            row = torch.log_softmax(torch.as_tensor(out).double(), -1)
            if draw:
                tok = torch.multinomial(row.exp(), 1, generator=gen)[:, 0]
                tok = torch.where(done, lm.pad, tok)
                tokens[:, t] = tok
                length = length + (~done).long()
            live = t < length
            tok = tokens[:, t]
            total = total + torch.where(live, row.gather(1, tok[:, None])[:, 0], 0.0)
            done = ~live | (tok == lm.eos) if lm.eos is not None else ~live
            if bool(done.all()) or t == lm.length - 1:
                break
            out, state = m.advance(tok, ~done, state, lambda fn, arity, t=t: on_prefixes(fn, arity, t))
    return tokens, length, total


class _Trainable:
    """q_θ(y | c) of a torch module that reads prompts: `log_prob(prompts, tokens, length)` [N] teacher-forced
    in one pass (with gradients), and `lm(member)`, its sequence model for a member of the family."""

    def __init__(self, module, vocab):
        torch = _torch()
        self.vocab = vocab
        self.hf = _is_causal_lm(module)
        if not isinstance(module, torch.nn.Module) or not (self.hf or (hasattr(module, "start")
                                                                         and hasattr(module, "advance"))):
            raise PPLError(f"the model q_θ must be trainable: a torch nn.Module with start(n) and advance(tokens, "
                           f"state), or a Hugging Face causal LM; got {type(module).__name__}")
        self.params = [p for p in module.parameters() if p.requires_grad]
        if not self.params:
            raise PPLError(f"the model q_θ ({type(module).__name__}) is not trainable: it has no parameters that "
                           f"require gradients")
        self.module = module.eval()         # log q_θ must be the density it samples from (no dropout)

    def log_prob(self, prompts, tokens, length):
        """log q_θ(tokens_i | prompts_i) [N]: prompts a list of N token tuples, tokens [N, L] right-padded."""
        torch = _torch()
        n, width = tokens.shape
        if self.hf:
            p = max(len(q) for q in prompts)
            if p == 0:
                raise PlanError("a causal LM needs a prompt of at least one token (e.g. its BOS token)")
            ids = torch.tensor([[0] * (p - len(q)) + list(q) for q in prompts]).long()
            ids = torch.cat([ids, tokens], dim=1)
            gen = torch.arange(width)[None, :] < length[:, None]
            mask = torch.cat([torch.tensor([[0] * (p - len(q)) + [1] * len(q) for q in prompts]), gen.long()], 1)
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            logits = self.module(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, p - 1:p + width - 1]
        else:
            out, state = _prompted_rows(self.module, prompts)
            outs = [out]
            for t in range(width - 1):
                out, state = self.module.advance(tokens[:, t], state)
                outs.append(out)
            logits = torch.stack(outs, dim=1)
            gen = torch.arange(width)[None, :] < length[:, None]
        if logits.shape[-1] != self.vocab:
            raise ShapeError(f"the model q_θ gives log-probabilities over {logits.shape[-1]} tokens; the family's "
                             f"vocabulary has {self.vocab}")
        lp = torch.log_softmax(logits.float(), -1).gather(2, tokens[:, :, None])[:, :, 0]
        return torch.where(gen, lp, 0.0).sum(1)

    def lm(self, m):
        """The sequence model q_θ(· | c) for member m (the base's vocabulary, length, eos, steps, prompt)."""
        b = m.base
        nxt = self.module if self.hf else Prompted(self.module, m.prompt)
        return autoregressive(nxt, b.vocab, b.length, eos=b.eos, step=b.delimiters, prompt=b.prompt, pad=b.pad,
                              decode=b.decode, name=f"{b.name}_distilled")


# ------------------------------------------------------------------------------------------ the family
def _kind(c):
    if isinstance(c, (list, tuple, np.ndarray)) or hasattr(c, "detach"):
        return "a token sequence"
    if isinstance(c, numbers.Integral) and not isinstance(c, bool):
        return "an integer"
    return f"a {type(c).__name__}"


def _contexts(contexts, what="contexts"):
    """The contexts as a list (rows of an array or tensor), all of one type, non-empty."""
    if hasattr(contexts, "detach"):
        contexts = contexts.detach().cpu().numpy()
    if isinstance(contexts, (str, bytes, dict)) or contexts is None or not hasattr(contexts, "__len__"):
        raise PPLError(f"{what} must be a list of contexts (prompts, or whatever the family reads), got "
                       f"{type(contexts).__name__}")
    out = list(contexts)
    if not out:
        raise PPLError(f"{what} must be non-empty")
    kinds = [_kind(c) for c in out]
    for j, k in enumerate(kinds):
        if k != kinds[0]:
            raise PPLError(f"{what} must all be of one type: context 0 is {kinds[0]}, context {j} is {k}")
    return out


class _Member:
    """family(c) planned: its base p (`base`, exponent `beta`), rewards [(Reward, coefficient)], and the prompt
    q_θ reads (a `Prompted` base's prompt, else the base's `prompt`)."""

    def __init__(self, family, c, where):
        plan = _call_family(family, c, where, kind="sequence")
        if len(plan.bases) != 1:
            raise PlanError(f"sequence distillation needs one sequence model per member of the family (the base "
                            f"p_SFT); on {where} the target has {len(plan.bases)}: "
                            f"{', '.join(b.name for b, _ in plan.bases)}")
        (self.base, self.beta), = plan.bases
        self.rewards, self.where, self.context = plan.rewards, where, c
        nxt = self.base.next_logprobs
        self.module = nxt.module if isinstance(nxt, Prompted) else nxt
        self.prompt = nxt.prompt if isinstance(nxt, Prompted) else self.base.prompt

    def signature(self):
        b = self.base
        return {"vocab": b.vocab, "length": b.length, "eos": b.eos, "step": b.delimiters, "pad": b.pad}


def _agree(members, first):
    """Every member shares vocabulary, length, eos, steps and pad with `first` (else a ShapeError naming them)."""
    want = first.signature()
    for m in members:
        have = m.signature()
        for key in SHARED:
            if have[key] != want[key]:
                raise ShapeError(f"the family's members disagree in {key}: {first.where} has {want[key]!r}, "
                                 f"{m.where} has {have[key]!r}")


def _rewards(m, rt, tokens, length):
    """R(y) = Σ_j c_j r_j(y) [n] of member m on complete sequences (what the twisted potentials telescope to,
    aggregate 'model'): r_j on the left-padded sequences and their lengths, or on the exact sequences of each
    length."""
    from .backends.generation import left_aligned
    torch = _torch()
    n = tokens.shape[0]
    total = torch.zeros(n, dtype=torch.float64)
    for r, coef in m.rewards:
        def check(value, k, r=r):
            if not hasattr(value, "shape") or tuple(value.shape) != (k,):
                raise ShapeError(f"reward {r.name} returned {getattr(value, 'shape', type(value).__name__)} for {k} "
                                 f"sequences; a reward on a sequence target returns one real per sequence, [N]")
            return torch.as_tensor(value).double()
        if len(r.parents) == 2:
            cols = int(length.max())
            left = left_aligned(rt, tokens, length, cols, 0, m.base.pad)
            value = check(call_user(lambda: r.fn(left, length), {}, f"reward {r.name}"), n)
        else:
            value = torch.zeros(n, dtype=torch.float64)
            for t in torch.unique(length).tolist():
                rows = torch.nonzero(length == t)[:, 0]
                part = call_user(lambda: r.fn(tokens[rows, :t]), {}, f"reward {r.name}")
                value[rows] = check(part, len(rows))
        total = total + coef * value
    return total


# ------------------------------------------------------------------------------------------ training
class _Distiller:
    """One minibatch of the BRAIn estimator: draws from r, the log-densities and weights, the loss and the
    logged statistics."""

    def __init__(self, family, q, rt, sampler):
        self.family, self.q, self.rt, self.sampler = family, q, rt, sampler
        self.members, self._lms = {}, {}

    def _lm(self, key, m, what):
        """The sequence model that r is for member m: q_θ's, or the fixed proposal's (checked)."""
        if (key, what) not in self._lms:
            if what == "q":
                lm = self.q.lm(m)
            else:
                lm = call_user(lambda: self.sampler(m.context), {}, "the sampler")
                if not isinstance(lm, SequenceModel):
                    raise PPLError(f"the sampler must give a sequence model (ppl.autoregressive) for each context; "
                                   f"on {m.where} it gave {type(lm).__name__}")
                if lm.signature != m.base.signature:
                    raise ShapeError(f"the sampler's sequence model for {m.where} differs from the family's base: "
                                     f"{lm.signature} against {m.base.signature}")
            self._lms[key, what] = lm
        return self._lms[key, what]

    def batch(self, keys, n, gen, sampler, grad=True):
        """For members `keys` [B]: n draws each from r, and {log_gamma, log_q (with gradients when `grad`),
        log_r (None when r = q_θ), log_p, reward} [B, n] as torch arrays. A stateful q_θ, and a base that is one
        stateful module after each context's prompt, draw and score the whole minibatch in one walk."""
        torch = _torch()
        ms = [self.members[k] for k in keys]
        prompts = [m.prompt for m in ms for _ in range(n)]
        big, like = len(prompts), ms[0].base
        shared = all(isinstance(m.base.next_logprobs, Prompted) and m.module is ms[0].module for m in ms)
        base = _rows_lm(ms[0].module, prompts, like) if shared else None
        rows = [slice(j * n, (j + 1) * n) for j in range(len(keys))]

        def each(fn):           # fn(key, member, its rows) -> arrays [n] per context, concatenated to [B n]
            return [torch.cat(p) for p in zip(*(fn(k, m, r) for k, m, r in zip(keys, ms, rows)))]
        if sampler is None and not self.q.hf:
            y, length, log_r = _walk(_rows_lm(self.q.module, prompts, like), self.rt, big, gen=gen)
        elif sampler == "base" and shared:
            y, length, log_r = _walk(base, self.rt, big, gen=gen)
        else:
            y, length, log_r = each(lambda k, m, r: _walk(
                m.base if sampler == "base" else self._lm(k, m, "q" if sampler is None else "fixed"), self.rt, n,
                gen=gen))
        if sampler == "base":
            log_p = log_r
        else:
            log_p = (_walk(base, self.rt, big, y, length)[2] if shared else
                     each(lambda k, m, r: _walk(m.base, self.rt, n, y[r], length[r]))[2])
        log_r = None if sampler is None else log_r
        reward = each(lambda k, m, r: [_rewards(m, self.rt, y[r], length[r])])[0]
        with torch.enable_grad() if grad else torch.no_grad():
            log_q = self.q.log_prob(prompts, y, length).reshape(len(keys), n)
        betas = torch.tensor([m.beta for m in ms], dtype=torch.float64)[:, None]
        log_p, reward = log_p.reshape(len(keys), n), reward.reshape(len(keys), n)
        return {"log_gamma": betas * log_p + reward, "log_q": log_q, "log_r": None if log_r is None else
                log_r.reshape(len(keys), n), "log_p": log_p, "reward": reward}

    @staticmethod
    def loss(b, baseline=True):
        """−mean_c Σ_i w_i log q_θ(y_i | c), w = α̂ − β̂ (or α̂ without the baseline), weights held fixed."""
        log_q = b["log_q"]
        alpha, beta = brain_weights(b["log_gamma"], log_q.double(), b["log_r"])
        w = (alpha - beta if baseline else alpha).to(log_q.dtype)
        return -(w * log_q).sum(-1).mean()

    @staticmethod
    def stats(b):
        """Per-minibatch means over contexts: `kl` Σ α̂ (log γ − log q) − log Ẑ (the self-normalized estimate of
        KL(π_c ‖ q_θ)), `ess` 1 / (n Σ α̂²), and under q_θ (self-normalized by β̂) the `reward` R and
        `kl_base` = KL(q_θ ‖ p) estimated as Σ β̂ (log q − log p)."""
        torch = _torch()
        log_q = b["log_q"].detach().double()
        log_r = log_q if b["log_r"] is None else b["log_r"]
        alpha, beta = brain_weights(b["log_gamma"], log_q, b["log_r"])
        n = log_q.shape[-1]
        log_w = torch.where(torch.isfinite(b["log_gamma"]), b["log_gamma"] - log_r, -math.inf)
        log_z = torch.logsumexp(log_w, -1) - math.log(n)
        fin = torch.isfinite(b["log_gamma"])
        kl = (torch.where(fin, alpha * (b["log_gamma"] - log_q), 0.0)).sum(-1) - log_z
        return {"kl": float(kl.mean()), "ess": float((1.0 / (n * (alpha * alpha).sum(-1))).mean()),
                "reward": float((beta * b["reward"]).sum(-1).mean()),
                "kl_base": float((beta * (log_q - b["log_p"])).sum(-1).mean())}


def _sampler(sampler):
    if sampler is None or (isinstance(sampler, str) and sampler == "base"):
        return sampler
    if isinstance(sampler, str) or not callable(sampler) or isinstance(sampler, (Target, SequenceModel)):
        raise UnknownNameError(f"sampler must be None (q_θ itself), 'base' (the family's base p) or a fixed "
                               f"proposal, a function context -> sequence model (e.g. an earlier distillation); got "
                               f"{sampler!r:.60}")
    return sampler


def _count(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueRangeError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def is_sequence_family(family, contexts):
    """Whether family(first context) is a target over sequence models (`ppl.autoregressive`)."""
    try:
        target = family(contexts[0])
        return isinstance(target, Target) and any(leaf.kind == "sequence" for leaf, _ in target.linear())
    except Exception:  # noqa: BLE001 (not a sequence family: the family of model targets reports its own errors)
        return False


def amortize_sequences(family, contexts, model=None, runtime=None, device="cpu", steps=1000, particles=32, batch=16,
                       lr=3e-3, sampler=None, seed=0, baseline=True, held_out=None, eval_every=25, patience=4,
                       progress=None):
    """Distill the sequence targets `family(c)`, c in `contexts`, into one model q_θ(y | c) (module docstring).

    family: c -> a sequence target with one base, e.g. `ppl.autoregressive(Prompted(sft, c), V, L).tilt(r_c, lam)`
        or `ppl.autoregressive(hf_model, V, L, prompt=c).tilt(...)`; every member shares vocabulary, length, eos,
        steps and pad.
    contexts: a list of contexts, all of one type (prompts, problem ids, ...).
    model: q_θ, a torch module with start/advance over prompt + tokens or a Hugging Face causal LM (trained in
        place); None: a deep copy of the family's base module.
    sampler: None (r = q_θ at the current θ), 'base' (the family's base p) or a fixed proposal, a function
        context -> sequence model over the same tokens (e.g. an earlier `AmortizedSequences`).
    Each of `steps` Adam steps (learning rate `lr`) uses `batch` contexts and `particles` draws per context;
    `baseline=False` drops the β̂ baseline. `held_out`: contexts scored every `eval_every` steps by the mean of
    log q_θ(y | c) − log γ_c(y) over `particles` draws of q_θ per context (an unbiased estimate of
    KL(q_θ ‖ π_c) − log Z_c, which a collapsing q_θ cannot hide from, unlike self-normalized estimates); after
    `patience` scores without improvement training stops and q_θ returns to its best state. A progress bar
    shows where stderr is a terminal (`progress=None`) or when `progress=True`.
    Returns an `AmortizedSequences`."""
    torch = _torch()
    from .backends.runtime import get_runtime
    if not callable(family):
        raise PPLError(f"family must be a callable context -> sequence target, got {type(family).__name__}")
    if runtime not in (None, "pyro"):
        raise PlanError(f"sequence families are distilled into torch modules (or Hugging Face models) on runtime "
                        f"'pyro'; got runtime={runtime!r}")
    contexts = _contexts(contexts)
    steps, particles, batch = _count("steps", steps, 1), _count("particles", particles, 2), _count("batch", batch, 1)
    eval_every, patience = _count("eval_every", eval_every, 1), _count("patience", patience, 1)
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueRangeError(f"lr must be a positive number, got {lr!r}")
    sampler = _sampler(sampler)
    rt = get_runtime("pyro", device)
    members = [_Member(family, c, f"training context {j}") for j, c in enumerate(contexts)]
    held = [] if held_out is None else _contexts(held_out, "held_out")
    if held and _kind(held[0]) != _kind(contexts[0]):
        raise PPLError(f"held_out contexts must be of the training contexts' type: those are "
                       f"{_kind(contexts[0])}, held-out context 0 is {_kind(held[0])}")
    held_members = [_Member(family, c, f"held-out context {j}") for j, c in enumerate(held)]
    _agree(members + held_members, members[0])
    if len(members) > 1 and len({m.prompt for m in members}) == 1:
        raise PlanError(f"every member of the family gives q_θ the same prompt {members[0].prompt}: q_θ reads the "
                        f"context through the base's prompt (ppl.autoregressive(hf_model, ..., prompt=c) or "
                        f"Prompted(module, c))")
    if model is None:
        base = members[0].module
        if any(m.module is not base for m in members):
            raise PlanError("the family's members have different base modules: give model= (q_θ) to train")
        if not (isinstance(base, torch.nn.Module) and (_is_causal_lm(base) or isinstance(
                members[0].base.next_logprobs, Prompted))):
            raise PPLError(f"q_θ is by default a copy of the family's base, which must then be a Hugging Face causal "
                           f"LM or Prompted(module, prompt); this base is "
                           f"{type(members[0].base.next_logprobs).__name__}: give model=")
        model = copy.deepcopy(base)
    q = _Trainable(model, members[0].base.vocab)
    return _train(family, contexts, members, held, held_members, q, rt, sampler, steps, particles, batch, lr, seed,
                  baseline, eval_every, patience, progress)


def _bar(progress, total):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="amortize", unit="step")


def _train(family, contexts, members, held, held_members, q, rt, sampler, steps, particles, batch, lr, seed,
           baseline, eval_every, patience, progress):
    from .errors import InferenceError
    torch = _torch()
    d = _Distiller(family, q, rt, sampler)
    d.members.update(enumerate(members))
    d.members.update({("held", j): m for j, m in enumerate(held_members)})
    opt = torch.optim.Adam(q.params, lr=lr)
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    b = min(batch, len(members))
    history = {k: [] for k in ("loss", "kl", "ess", "reward", "kl_base")}
    history["held_out"], best, best_state, worse, generations = [], math.inf, None, 0, 0
    bar = _bar(progress, steps)
    start = time.perf_counter()
    try:
        for s in range(steps):
            out = d.batch(sorted(rng.choice(len(members), size=b, replace=False).tolist()), particles, gen, sampler)
            loss = d.loss(out, baseline)
            if not torch.isfinite(loss):
                raise InferenceError("the distillation loss became non-finite (log q_θ overflowing, or no draw with "
                                     "a finite target density): lower lr")
            opt.zero_grad()
            loss.backward()
            opt.step()
            generations += b * particles
            for k, v in {"loss": loss.item(), **d.stats(out)}.items():
                history[k].append(v)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(kl=f"{history['kl'][-1]:.3f}", ess=f"{history['ess'][-1]:.2f}",
                                reward=f"{history['reward'][-1]:.3f}", refresh=False)
            if held and (s + 1) % eval_every == 0:
                keys = [("held", j) for j in range(len(held))]
                draws = d.batch(keys, particles, torch.Generator().manual_seed(seed + 1), None, grad=False)
                score = float((draws["log_q"].double() - draws["log_gamma"]).mean())
                generations += len(keys) * particles
                history["held_out"].append((s + 1, score))
                if score < best:
                    best, best_state, worse = score, copy.deepcopy(q.module.state_dict()), 0
                else:
                    worse += 1
                    if worse >= patience:
                        break
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None:
        q.module.load_state_dict(best_state)
    history = {k: (np.array(v, dtype=np.float64) if k != "held_out" else v) for k, v in history.items()}
    return AmortizedSequences(family, q.module, history, time.perf_counter() - start, generations, contexts,
                              baseline=baseline)


class AmortizedSequences:
    """A distilled sequence model q_θ(y | c) of a family of sequence targets. `amortized(c)` is its sequence
    model for context c (`ppl.autoregressive`, with family(c)'s vocabulary, length, eos, steps and prompt): sample
    it alone, combine it in the algebra, or pass it as `proposal=` to 'pf' on family(c).

    Attributes: `model` (the trained module: save with its `state_dict()` / `save_pretrained`, and rebuild with
    `AmortizedSequences(family, model)`), `history` (per step: `loss`, `kl` the self-normalized KL(π_c ‖ q_θ)
    estimate, `ess` the ESS / n of the weights, `reward` the mean of R = Σ c_j r_j under q_θ, `kl_base`
    KL(q_θ ‖ p) on the draws; `held_out` [(step, mean of log q_θ − log γ_c on the held-out contexts)]),
    `seconds` and `generations` (sequences drawn)
    of training, `contexts`, `baseline`."""

    runtime = "pyro"

    def __init__(self, family, model, history=None, seconds=0.0, generations=0, contexts=(), baseline=True):
        self.family, self.contexts, self.baseline = family, contexts, baseline
        self.history, self.seconds, self.generations = history or {}, seconds, generations
        self._q, self.model = None, model

    def _member(self, c):
        m = _Member(self.family, c, "the context")
        if self._q is None:
            self._q = _Trainable(self.model, m.base.vocab)
        return m

    def __call__(self, c):
        """q_θ(· | c) as a sequence model."""
        m = self._member(c)
        return self._q.lm(m)

    def log_prob(self, c, sequences):
        """log q_θ(y | c) [K] (numpy) of token sequences y (each ends at its eos or at the length), one
        teacher-forced pass."""
        torch = _torch()
        m = self._member(c)
        seqs = [list(map(int, y)) for y in sequences]
        if any(not 1 <= len(y) <= m.base.length for y in seqs):
            raise ShapeError(f"sequences must have 1 to {m.base.length} tokens")
        tokens = torch.tensor([y + [m.base.pad] * (m.base.length - len(y)) for y in seqs]).long()
        with torch.no_grad():
            out = self._q.log_prob([m.prompt] * len(seqs), tokens, torch.tensor([len(y) for y in seqs]))
        return out.double().numpy()

    def __repr__(self):
        steps = len(self.history.get("loss", ()))
        return f"AmortizedSequences({type(self.model).__name__}, contexts={len(self.contexts)}, steps={steps})"
