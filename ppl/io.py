"""Saving and loading a `Result` as NetCDF (ArviZ `InferenceData`, h5netcdf engine).

The file is `result.to_arviz()` (equally weighted draws per chain, readable by any ArviZ
user) plus what a `Result` needs to come back unchanged:

* group `ppl_weighted` (weighted runs only): the raw draws [C, N, ...] and `log_weights` [C, N];
* attribute `ppl` of the `posterior` group: JSON with method, runtime, device, log Z and its
  standard error, wall time, seed, the diagnostics (numpy arrays tagged so they come back as
  arrays) and the original shapes of the `sample_stats` arrays; for sequence targets, the sequences (token lists
  or text) and the chosen answer; the fitted proposal of `ais` (or of `is` given one), by family and
  parameters, so a loaded fit is still a `reference=`.

The unconstrained draws of a run with a proposal go in the `ppl_weighted` group too (control variates read them).
"""
import json
import os
import warnings

import numpy as np

from .errors import PPLError
from .result import Result

WEIGHTED = "ppl_weighted"
UNCONSTRAINED = "ppl_unconstrained"


def _encode(x):
    if isinstance(x, np.ndarray):
        return {"__ndarray__": _encode(x.tolist()), "dtype": str(x.dtype)}
    if isinstance(x, dict):
        return {str(k): _encode(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_encode(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


def _decode(x):
    if isinstance(x, dict):
        if "__ndarray__" in x:
            return np.asarray(_decode(x["__ndarray__"]), dtype=x["dtype"])
        return {k: _decode(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_decode(v) for v in x]
    return x


def save(result, path):
    """Write `result` to the NetCDF file `path`; returns `path`."""
    import xarray as xr
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise PPLError(f"a result is saved to a file path (a non-empty str or os.PathLike), got {path!r}")
    folder = os.path.dirname(os.path.abspath(str(path)))
    if not os.path.isdir(folder):
        raise PPLError(f"cannot save a result to {path!s}: the folder {folder} does not exist")
    idata = result.to_arviz()
    meta = {"method": result.method, "runtime": result.runtime, "device": str(result.device),
            "log_z": result.log_z, "log_z_se": result.log_z_se, "wall_time": result.wall_time, "seed": result.seed,
            "diagnostics": result.diagnostics, "weighted": result.log_weights is not None,
            "sample_stats_shapes": {k: list(np.shape(v)) for k, v in result.sample_stats.items()}}
    meta["proposal"] = _proposal_state(result.proposal)
    if result.proposal is not None and meta["proposal"] is None:
        warnings.warn(f"the {result.proposal.family} proposal of this result is not saved (only the gaussian, "
                      f"student_t and mixture families are)", stacklevel=2)
    if result.sequences is not None:
        meta["sequences"] = result.sequences
        meta["answer"] = result.answer
    idata.posterior.attrs["ppl"] = json.dumps(_encode(meta))
    if result.log_weights is not None:
        data = {k: (("chain", "draw") + tuple(f"{k}_dim_{i}" for i in range(v.ndim - 2)), v)
                for k, v in result.samples.items()}
        data["log_weights"] = (("chain", "draw"), result.log_weights)
        if result.unconstrained is not None:
            data[UNCONSTRAINED] = (("chain", "draw", "unconstrained_dim"), np.asarray(result.unconstrained))
        idata.add_groups({WEIGHTED: xr.Dataset(data)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata.to_netcdf(str(path))
    return path


def load(path):
    """The `Result` saved by `Result.save(path)`."""
    import arviz as az
    try:
        idata = az.from_netcdf(str(path))
        meta = _decode(json.loads(idata.posterior.attrs["ppl"]))
    except (OSError, KeyError, ValueError) as e:
        raise PPLError(f"cannot load a ppl result from {path!s}: {e}") from None
    if meta["weighted"]:
        weighted = idata[WEIGHTED]
        samples = {k: weighted[k].values for k in weighted.data_vars if k not in ("log_weights", UNCONSTRAINED)}
        log_weights = weighted["log_weights"].values
        unconstrained = weighted[UNCONSTRAINED].values if UNCONSTRAINED in weighted.data_vars else None
    else:
        samples = {k: idata.posterior[k].values for k in idata.posterior.data_vars}
        log_weights = unconstrained = None
    stats = {k: idata.sample_stats[k].values.reshape(shape)
             for k, shape in meta["sample_stats_shapes"].items()} if "sample_stats" in idata.groups() else {}
    groups = {g: {k: idata[g][k].values for k in idata[g].data_vars} if g in idata.groups() else None
              for g in ("log_likelihood", "posterior_predictive", "observed_data")}
    result = Result(samples, log_weights, meta["log_z"], meta["log_z_se"], method=meta["method"],
                    runtime=meta["runtime"], device=meta["device"], diagnostics=meta["diagnostics"],
                    sample_stats=stats, log_likelihood=groups["log_likelihood"],
                    predictive=groups["posterior_predictive"], observed=groups["observed_data"],
                    sequences=meta.get("sequences"), answer=meta.get("answer"),
                    proposal=_proposal(meta.get("proposal")), unconstrained=unconstrained)
    result.wall_time, result.seed = meta["wall_time"], meta["seed"]
    return result


def _proposal_state(q):
    """A fitted proposal as its family and parameters (JSON-able), or None where it has none such (a flow)."""
    from .backends.proposals import FAMILIES
    if q is None or q.family not in FAMILIES:
        return None
    if q.family == "mixture":
        params = {"weights": q.weights, "components": [_proposal_state(c) for c in q.components]}
    else:
        params = {"mean": q.mean, "cov": q.cov, **({"df": q.df} if q.family == "student_t" else {})}
    return {"family": q.family, "sites": q.sites, **params}


def _proposal(state):
    """The proposal `_proposal_state` described (bound to its latent layout where it was)."""
    from .backends.proposals import FAMILIES
    if state is None:
        return None
    family = FAMILIES[state["family"]]
    if state["family"] == "mixture":
        q = family(state["weights"], [_proposal(c) for c in state["components"]])
    else:
        q = family(state["mean"], state["cov"], *([state["df"]] if "df" in state else []))
    if state["sites"] is None:
        return q
    return q.bound(tuple((name, tuple(shape), support) for name, shape, support in state["sites"]))
