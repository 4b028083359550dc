"""Beam search on a process reward ('beam'), the baseline of Snell et al. 2024 and Puri et al. 2025.

N = `particles` sequences; after each step the N / `beam_width` prefixes of largest aggregated reward R_s
(`generation`) are kept and each is continued `beam_width` times (sampled from the proposal), until every
sequence has ended. No weights and no log Z: the answer is that of the largest final R (or of the largest
total R over the final beams with `select='vote'`). Budget = N generations.
"""
import numpy as np

from ..errors import ValueRangeError
from . import integer, method
from .generation import generator
from .sequence_smc import sequence_result


@method("beam", kind="sequence")
def run(plan, rt, key, particles=64, progress=None, beam_width=4, aggregate="model", proposal=None, answer=None,
        select="argmax"):
    """Beam search of a sequence target (see the module docstring)."""
    n = integer(particles, "beam: particles", 1)
    width = integer(beam_width, "beam_width", 1)
    if n % width:
        raise ValueRangeError(f"beam search keeps particles / beam_width beams: particles={n} must be a multiple of "
                              f"beam_width={width}")
    if not plan.rewards:
        raise ValueRangeError("beam search ranks prefixes by a process reward; the target has none (use .tilt)")
    gen = generator(plan, rt, proposal, aggregate, "diff")
    gen.prepare(n)
    s, states = gen.start(n)
    force, forced = rt.xp.zeros((n,)) > 0, rt.asindex(np.zeros(gen.width, dtype=int))
    for k in rt.split(key, plan.length):
        s, states = gen.step(k, s, states, force, forced, pure=False)
        gen.check(rt.to_numpy(s.nan))
        if gen.finished(s):
            break
        r = rt.to_numpy(gen.reward(s))
        keep = np.argsort(-r, kind="stable")[:n // width]
        idx = rt.asindex(np.repeat(keep, width))
        s = rt.tree_map(lambda a: rt.xp.take(a, idx, axis=0), s)
        states = gen.reorder(states, idx)
    return sequence_result(gen, [(s, None)], "beam", rt, answer, select, by="reward")
