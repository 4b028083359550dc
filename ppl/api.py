"""`ppl.sample`: compile a target, lower it to a runtime, run a method, return a `Result`."""
import time

from .backends import get_method, get_runtime
from .compiler import Compiled, compile
from .compiler.diffusion_plan import has_diffusion, plan_diffusion
from .errors import PlanError
from .target import Target


def sample(target, method="is", runtime="numpyro", device="cpu", particles=10_000, seed=0, reference=None,
           fold=True, progress=None, **options):
    """Sample `target` with `method` ('is', 'smc', 'nuts', 'hmc', 'fkc') on `runtime` ('numpyro' | 'pyro').

    `reference` (a model over the target's latent sites) replaces the planner's reference /
    proposal; `fold=False` keeps Gaussian factors unmerged. Other options go to the method.
    """
    run = get_method(method)
    rt = get_runtime(runtime, device)
    if isinstance(target, Target) and has_diffusion(target):
        if method != "fkc":
            raise PlanError(f"the target contains diffusion models; sample it with method='fkc', not {method!r}")
        compiled = plan_diffusion(target)
    else:
        compiled = target if isinstance(target, Compiled) else compile(target, reference=reference, fold=fold)
    start = time.perf_counter()
    result = run(compiled, rt, rt.key(seed), particles=particles, progress=progress, **options)
    result.wall_time = time.perf_counter() - start
    result.seed = seed
    return result
