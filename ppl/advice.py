"""Advice in the user's own terms: options spelled for the front end a run came from, and warnings shown at
the user's line rather than at one inside this package.

A message names options, `options("nuts", num_warmup=2000)`, and the front end in use (`front_end`) spells
them: from Python `num_warmup=2000`; in a `.ppl` program `sample T with nuts(num_warmup = 2000)`; on the
command line `--warmup 2000` where `ppl run` has a flag for the option, else the program's spelling.
"""
import contextlib
import contextvars
import os
import sys
import warnings
from typing import NamedTuple


class Front(NamedTuple):
    """The front end ('python', 'ppl' or 'cli') and, for a program, the target and method of its `sample`
    statement."""
    kind: str = "python"
    target: str = "..."
    method: str = "is"


_FRONT = contextvars.ContextVar("ppl_front_end", default=Front())

#: `ppl run`'s flags for options of the methods (nuts, hmc, pmmh)
METHOD_FLAGS = {"chains": "--chains", "num_warmup": "--warmup", "num_samples": "--draws"}
#: `ppl run`'s flags for options of every method
RUN_FLAGS = {"runtime": "--runtime", "device": "--device", "particles": "--particles", "devices": "--devices"}
#: every option `ppl run` sets with a flag (precision="float64" is --float64)
FLAGS = {**METHOD_FLAGS, **RUN_FLAGS, "seed": "--seed", "method": "--method"}
#: the packages whose frames a warning skips (the folders of `ppl`)
PACKAGES = ("ppl", "ppl.compiler", "ppl.backends", "ppl.stdlib")


@contextlib.contextmanager
def front_end(kind, target=None, method=None):
    """Spell the advice of messages made inside the block for front end `kind` ('python' | 'ppl' | 'cli'), a
    program's `target` sampled with `method`."""
    token = _FRONT.set(Front(kind, target or "...", method or "is"))
    try:
        yield
    finally:
        _FRONT.reset(token)


class _Name(str):
    """A name of the program (a model), spelled without quotes."""


def _value(v, kind):
    """`v` as written in `kind`: 'python', 'ppl' or a command-line 'flag'."""
    if isinstance(v, _Name):
        return str(v)
    if v is Ellipsis:
        return "..."
    if isinstance(v, bool):
        return str(v) if kind == "python" else str(v).lower()
    if isinstance(v, str):
        return {"python": repr(v), "ppl": f'"{v}"'}.get(kind, v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def options(method, switch=False, **values):
    """`values` (option name -> value; `...` for one the user chooses) of `method` as the user sets them;
    with `switch`, also the choice of `method` itself."""
    front = _FRONT.get()
    if front.kind == "python":
        given = ({"method": method} if switch else {}) | values
        return ", ".join(f"{k}={_value(v, 'python')}" for k, v in given.items())
    flags = []
    if front.kind == "cli":
        if switch:
            flags.append(f"--method {method}")
        if values.get("precision") == "float64":
            flags.append("--float64")
        flags += [f"{FLAGS[k]} {'N' if v is Ellipsis else _value(v, 'flag')}" for k, v in values.items()
                  if k in FLAGS]
        values = {k: v for k, v in values.items() if k not in FLAGS and k != "precision"}
    said = [" ".join(flags)] if flags else []
    if values or not flags:
        args = ", ".join(f"{k} = {_value(v, 'ppl')}" for k, v in values.items())
        said.append(f"sample {front.target} with {method}" + (f"({args})" if args else ""))
    return " and ".join(said)


def reference(sites, method=None):
    """A reference model over `sites` for `method` (default: the program's), as the user passes one."""
    front = _FRONT.get()
    if front.kind == "python":
        return f"reference=ppl.model({', '.join(f'{s}=...' for s in sites)})"
    body = "; ".join(f"{s} ~ ..." for s in sites)
    return f"a reference model, model ref {{ {body} }}, and {options(method or front.method, reference=_Name('ref'))}"


def condition(site):
    """Conditioning the target on a value of `site`, as the user writes it."""
    front = _FRONT.get()
    if front.kind == "python":
        return f"target.condition({site}=...)"
    return f"target {front.target} = ... | {site} = ..."


def noncentered(site):
    """How to reparametrize `site` (a name, maybe indexed) as a shift and scale of a standard normal."""
    s = site.split("[")[0]
    if _FRONT.get().kind == "python":
        return (f"{s}_raw=ppl.Normal(0, 1), {s}=ppl.deterministic(lambda loc, scale, {s}_raw: loc + scale * "
                f"{s}_raw)")
    return f"{s}_raw ~ normal(0, 1) and {s} = loc + scale * {s}_raw"


def warn(message, category):
    """`warnings.warn` shown at the first caller outside this package: the user's line."""
    folders = tuple(os.path.dirname(sys.modules[p].__file__) + os.sep for p in PACKAGES if p in sys.modules)
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename.startswith(folders):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
