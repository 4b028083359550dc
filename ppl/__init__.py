"""ppl: declare a target distribution, get samples and log Z back, on Pyro (torch) or NumPyro (JAX).

    import ppl
    p = ppl.model(x=ppl.Normal(1.0, 1.0))
    q = ppl.model(x=ppl.Normal(-1.0, 2.0))
    r = ppl.sample(p * q, method="is", runtime="pyro", particles=100_000, seed=0)
    print(r.log_z, r.log_z_se)
"""
from . import math
from .errors import (DeviceError, InferenceError, NameResolutionError, PlanError, PPLError, ShapeError,
                     SourceError, SupportError, UnknownNameError, UserFunctionError, ValueRangeError)
from .stdlib.distributions import (Bernoulli, Beta, Binomial, Categorical, Cauchy, Dirichlet, Distribution,
                                   Exponential, Flat, Gamma, HalfCauchy, HalfNormal, HalfStudentT, InverseGamma,
                                   Laplace, LogNormal, MultivariateNormal, Normal, Poisson, StudentT, Uniform,
                                   truncated)
from .target import Model, Target, deterministic, energy, factor, geometric, model
from .stdlib.markov import MarkovChain, MarkovSpec, markov
from .compiler import compile
from .api import sample
from .expect import Expectations, expect
from .lang import load_ppl, parse
from .diffusion import diffusion, train_score
from .ode import ode
from .amortize import amortize
from .sequence import autoregressive
from .stdlib.sequence_tables import TokenPattern
from .served import (ServedError, ServedResponseError, ServerTimeout, ServerUnreachable, UnknownModelError,
                     reward_server, served, served_reward)
from .stdlib.diffusion import VESDE, VPSDE, GaussianMixture
from .result import Result
from .precision import PrecisionWarning
from .io import load

__all__ = [
    "math", "model", "deterministic", "factor", "energy", "geometric", "markov", "MarkovChain", "MarkovSpec",
    "compile", "sample", "expect", "Expectations", "Result", "Target",
    "Model", "Distribution", "Normal", "HalfNormal", "HalfCauchy", "HalfStudentT", "Cauchy", "StudentT", "LogNormal",
    "Exponential", "Gamma", "InverseGamma", "Beta", "Uniform", "Laplace", "Dirichlet", "MultivariateNormal",
    "Bernoulli", "Binomial", "Poisson", "Categorical", "Flat", "truncated", "PPLError", "NameResolutionError", "ShapeError",
    "SupportError", "ValueRangeError", "UserFunctionError", "PlanError", "UnknownNameError", "InferenceError",
    "DeviceError", "SourceError", "PrecisionWarning",
    "load_ppl", "parse", "load",
    "diffusion", "train_score", "ode", "VPSDE", "VESDE", "GaussianMixture", "autoregressive", "TokenPattern",
    "amortize",
    "served", "served_reward", "reward_server", "ServedError", "ServerUnreachable", "ServerTimeout",
    "ServedResponseError", "UnknownModelError",
]
