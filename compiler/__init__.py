"""The compiler: target tree -> terms -> inference graph -> plan -> runtime program."""
from ..errors import PlanError
from ..target import Target
from .diffusion_plan import DiffusionPlan
from .plan import ModelPlan
from .sequence_plan import SequencePlan

#: the planner for each kind of base: a target is planned by the planner of the kind of its bases
PLANNERS = {"model": ModelPlan, "diffusion": DiffusionPlan, "sequence": SequencePlan}


def compile(target, reference=None, fold=True, marginalize=True, method=None):
    """Compile a target: the inference graph, the checks and the plan, by the planner of its bases' kind
    (models: `ModelPlan`, the reference / rest plan and the layout; diffusion bases: `DiffusionPlan`, for FKC;
    sequence models: `SequencePlan`). `marginalize=False` keeps every latent site (`marginalize.py`;
    `method`, the method it is compiled for, enables the rules that name it: conjugate pairs for is and smc).
    A target with only energies or rewards is planned as a model target; one that mixes kinds goes to the
    planner of its non-model kind, which says what it cannot combine."""
    if isinstance(target, tuple(PLANNERS.values())):
        return target
    if not isinstance(target, Target):
        raise PlanError(f"expected a target (ppl.model(...) or an expression of targets), got {type(target).__name__}")
    kinds = {leaf.kind for leaf, _ in target.linear() if leaf.kind in PLANNERS}
    kind = min(kinds - {"model"}, default="model")
    if kind == "model":
        return ModelPlan(target, reference=reference, fold=fold, marginalize=marginalize, method=method)
    return PLANNERS[kind](target, reference=reference, fold=fold)


__all__ = ["ModelPlan", "DiffusionPlan", "PLANNERS", "SequencePlan", "compile"]
