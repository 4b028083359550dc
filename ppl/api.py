"""`ppl.sample`: compile a target, lower it to a runtime, run a method, return a `Result`."""
import inspect
import time

import numpy as np

from . import advice
from .backends import get_method, get_runtime, marginals, sharding
from .compiler import compile
from .compiler.shapes import check_size
from .errors import PlanError
from .options import check_names, check_unset, check_values
from .precision import check as check_precision


def sample(target, method="is", runtime="numpyro", device="cpu", particles=10_000, seed=0, reference=None,
           fold=True, progress=None, precision="float32", devices=None, marginalize=True, **options):
    """Sample `target` with `method` ('is', 'smc', 'nuts', 'hmc', 'fkc') on `runtime` ('numpyro' | 'pyro').

    `reference` (a model over the target's latent sites) replaces the planner's reference /
    proposal; for 'is' and 'ais' it may also be a fitted proposal on the unconstrained space (`r.proposal` of
    an 'ais' run, `ppl.amortize(...)(context)`); `fold=False` keeps Gaussian factors unmerged; `precision`
    ('float32' | 'float64') is the float type of every array of the run (a `ppl.PrecisionWarning` says when
    float32 rounding looks to have broken it); `devices` (an integer, "all" or a list of JAX devices; methods
    'is', 'smc', 'pf', 'fkc' on runtime 'numpyro') splits the particles over several devices, with global
    resampling (`backends/sharding.py`), and the chains of 'nuts' and 'hmc'. `marginalize` (True): sites the
    compiler can integrate out exactly (a linear-Gaussian state path: `compiler/marginalize.py`) are, and their
    draws given each draw of the rest come back in `samples`; False samples every site. Other options go to
    the method. Every option is checked before the run (`ppl.options`): its value, and that the method takes it.
    """
    get_method(method)    # a known name, before compiling
    from .backends.proposals import Proposal
    if isinstance(reference, Proposal):    # a fitted density on the unconstrained space (e.g. r.proposal)
        if "proposal" not in inspect.signature(get_method(method)).parameters:
            raise PlanError(f"reference= a fitted proposal ({reference!r}) is a density on the unconstrained "
                            f"space, which methods 'is' and 'ais' sample from; method {method!r} takes a "
                            f"reference model: reference=ppl.model(...)")
        reference, options = None, {**options, "proposal": reference}
    given = check_values({"seed": seed, "particles": particles, "fold": fold, "progress": progress,
                          "marginalize": marginalize, "precision": precision,
                          **{k: v for k, v in options.items() if v is not None}})
    seed, particles, progress = given["seed"], given["particles"], given["progress"]
    rt = get_runtime(runtime, device, precision, devices)
    # a fitted proposal is a density over the sites it was fitted on: the rules that name their methods (conjugate
    # pairs) keep those sites
    compiled = compile(target, reference=reference, fold=given["fold"], marginalize=given["marginalize"],
                       method=None if options.get("proposal") is not None else method)
    options = check_names(method, compiled.kind, {**given, **{k: v for k, v in options.items() if v is None}})
    run = get_method(method, compiled.kind)
    check_unset(run, options)
    sharding.check(method, run, particles, rt.n_devices)
    dim = getattr(compiled, "dim", None)
    if dim:
        check_size(f"{particles} particles of dimension {dim}", particles * dim, np.dtype(rt.precision).itemsize,
                   hint=f"use fewer particles ({advice.options(method, particles=...)})" +
                   (f" or batches ({advice.options(method, batch_size=...)})" if method in ("is", "smc") else ""))
    start = time.perf_counter()
    with rt.scope():
        result = run(compiled, rt, rt.key(seed), particles=particles, progress=progress, **options)
        if getattr(compiled, "marginals", None) and method != "pf":
            result = marginals.draw(compiled, rt, rt.split(rt.key(seed + 1), 2)[1], result)
    result.wall_time = time.perf_counter() - start
    result.seed = seed
    check_precision(result, getattr(compiled, "layout", None), rt.precision)
    return result
