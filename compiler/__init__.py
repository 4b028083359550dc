"""The compiler: target tree -> terms -> inference graph -> plan -> runtime program."""
from ..errors import PlanError
from ..target import Target
from .diffusion_plan import DiffusionPlan
from .plan import Compiled

#: the planner for each kind of base: a target is planned by the planner of the kind of its bases
PLANNERS = {"model": Compiled, "diffusion": DiffusionPlan}


def compile(target, reference=None, fold=True):
    """Compile a target: the inference graph, the checks and the plan, by the planner of its bases' kind
    (models: `Compiled`, the reference / rest plan and the layout; diffusion bases: `DiffusionPlan`, for FKC).
    A target with only energies or rewards is planned as a model target."""
    if isinstance(target, tuple(PLANNERS.values())):
        return target
    if not isinstance(target, Target):
        raise PlanError(f"expected a target (ppl.model(...) or an expression of targets), got {type(target).__name__}")
    kinds = list(dict.fromkeys(leaf.kind for leaf, _ in target.linear() if leaf.kind in PLANNERS))
    if "diffusion" in kinds:
        if reference is not None:
            raise PlanError("reference= applies to model targets; a diffusion target starts from its SDE's prior")
        return DiffusionPlan(target)
    return Compiled(target, reference=reference, fold_closed_forms=fold)


__all__ = ["Compiled", "DiffusionPlan", "PLANNERS", "compile"]
