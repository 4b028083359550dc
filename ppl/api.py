"""`ppl.sample`: compile a target, lower it to a runtime, run a method, return a `Result`."""
import time

from .backends import get_method, get_runtime
from .compiler import compile
from .errors import PlanError


def sample(target, method="is", runtime="numpyro", device="cpu", particles=10_000, seed=0, reference=None,
           fold=True, progress=None, **options):
    """Sample `target` with `method` ('is', 'smc', 'nuts', 'hmc', 'fkc') on `runtime` ('numpyro' | 'pyro').

    `reference` (a model over the target's latent sites) replaces the planner's reference /
    proposal; `fold=False` keeps Gaussian factors unmerged. Other options go to the method.
    """
    run = get_method(method)
    rt = get_runtime(runtime, device)
    compiled = compile(target, reference=reference, fold=fold)
    allowed = getattr(compiled, "methods", None)
    if allowed is not None and method not in allowed:
        raise PlanError(f"the target contains {compiled.what}; sample it with method={allowed[0]!r}, not {method!r}")
    start = time.perf_counter()
    result = run(compiled, rt, rt.key(seed), particles=particles, progress=progress, **options)
    result.wall_time = time.perf_counter() - start
    result.seed = seed
    return result
