"""A loaded `.ppl` program (`PPLFile`) and its runs: the targets it defines, compiled and sampled with the options
of its `sample` statements (checked by `ppl.options`), errors located at the statements."""
from .. import advice
from ..errors import PPLError, SourceError
from ..options import check as check_options
from ..collector import collector_paused
from .sequence import is_sequence

#: `sample` options that mean the same for every method: `ppl run --method` keeps them, and drops the others
GENERAL = ("runtime", "device", "devices", "seed", "reference", "fold", "marginalize", "precision")


class RunSpec:
    """`sample NAME with METHOD(options) on RUNTIME`."""

    def __init__(self, target, method, options, runtime, node):
        self.target, self.method, self.options, self.runtime, self.node = target, method, options, runtime, node

    def __repr__(self):
        return f"sample {self.target} with {self.method}({self.options}) on {self.runtime}"


class PPLFile:
    """A loaded `.ppl` program: `.data`, `.models`, `.diffusions`, `.sequences`, `.targets` (Python target
    objects), `.runs` and its `.src`.

    `.front` is the front end its messages spell options for: 'ppl' (the program's syntax), or 'cli' when
    `ppl run` runs it (its flags where it has them)."""

    def __init__(self, src):
        self.src, self.front = src, "ppl"
        self.data, self.models, self.diffusions, self.targets, self.runs, self.functions = {}, {}, {}, {}, [], {}
        self.sequences = {}
        self.symbolic = []   # data loaded without a value (symbolic=True)
        self.unbuilt = {}    # model or target name -> the symbolic datum its building needed

    def named(self):
        """Everything a target expression or a `sample` statement may name: targets, then models, diffusions and
        sequences."""
        return {**self.models, **self.diffusions, **self.sequences, **self.targets}

    def target(self, name=None):
        """The target called `name`; by default the one the first `sample` statement names, else the last."""
        name = name or self.default_name()
        if name is None:
            raise self.src.error(None, "the program defines no model, diffusion, sequence or target")
        if name in self.named():
            return self.named()[name]
        raise self.src.error(None, f"no target, model, diffusion or sequence named {name!r}; defined: "
                                   f"{', '.join(self.named()) or 'none'}")

    def kind(self, name=None):
        """'diffusion' for a target over diffusions (sampled by fkc), 'sequence' for one over sequences (sampled by
        pf, pg, bon, wbon or beam), else 'model'."""
        target = self.target(name)
        return "diffusion" if diffusions(target) else "sequence" if is_sequence(target) else "model"

    def run_spec(self, name=None):
        name = name or self.default_name()
        return next((r for r in self.runs if r.target == name), None)

    def default_name(self):
        if self.runs:
            return self.runs[0].target
        return (list(self.targets) or list(self.models) or list(self.diffusions) or list(self.sequences)
                or [None])[-1]

    def spelling(self, name=None, method=None):
        """The advice of messages made inside the block spelled for `.front` and the `sample` statement of
        target `name` (with `method`, default the statement's)."""
        spec = self.run_spec(name)
        return advice.front_end(self.front, name or self.default_name(), method or (spec.method if spec else None))

    def compile(self, name=None, reference=None, fold=None, method=None, marginalize=None):
        """`ppl.compile` of a target (with the `reference`, `fold` and `marginalize` of its `sample` statement by
        default); where
        the statement's method (or `method`) starts from the reference, a site without a normalized prior is an
        error (`ModelPlan.check_reference`); errors about a site are located at its statement."""
        from ..compiler import compile as compile_target
        spec = self.run_spec(name)
        options = spec.options if spec else {}
        reference = options.get("reference") if reference is None else reference
        fold = options.get("fold", True) if fold is None else fold
        marginalize = options.get("marginalize", True) if marginalize is None else marginalize
        method = method or (spec.method if spec else None)
        target = self.target(name)
        try:
            with self.spelling(name, method), collector_paused():
                compiled = compile_target(target, reference=reference, fold=fold, marginalize=marginalize,
                                          method=method)
                if reference is None and getattr(compiled, "improper", None) and \
                        _needs_reference(method, compiled.kind):
                    compiled.check_reference()
                return compiled
        except SourceError:
            raise
        except PPLError as e:
            raise self.locate(e, target) or self.src.relocate(None, e) from None

    def locate(self, e, target):
        """`e` as a `SourceError` at the statement of the site of `target` it names (`e.site`); None if it names
        none."""
        source = next((m.sites[e.site].source for m in target.models() if e.site in m.sites), None)
        return None if source is None else self.src.error_at(source[1], source[2], e.message, e.hint)

    def check_run(self, spec, kind=None, options=None):
        """A located error where the `sample` statement `spec` names an unknown method or kernel, an option the
        method (for plans of `kind`) or its kernel does not take, or a value out of its option's range
        (`ppl.options.check`); `options` (default: the statement's) are what the run would pass. A value is
        located where the statement writes it (unless a flag or keyword replaced it), anything else at the
        statement."""
        options = spec.options if options is None else options
        method = options.get("method", spec.method)
        try:
            with self.spelling(spec.target, method):
                check_options(method, kind, options)
        except SourceError:
            raise
        except PPLError as e:
            key = getattr(e, "option", None)
            if key is None:
                raise self.src.relocate(spec.node, e) from None
            written = next((k.value for k in spec.node.options.keywords if k.name == key), None)
            if written is None or spec.options.get(key) is not options.get(key):
                raise
            raise self.src.relocate(written, e) from None

    def run_options(self, name=None, method=None):
        """(options, dropped): what a run of target `name` with `method` takes from its `sample` statement (its
        method, runtime and options), and the names of the statement's options it leaves out. With the
        statement's own method (or none given) that is everything; with another method only the options that
        mean the same for every method (`GENERAL`): `particles = 20000` of `is` is not 20000 draws of `nuts`."""
        spec = self.run_spec(name)
        if spec is None:
            return ({} if method is None else {"method": method}), []
        same = method is None or method == spec.method
        options = {k: v for k, v in spec.options.items() if same or k in GENERAL}
        options.setdefault("runtime", spec.runtime)
        options["method"] = spec.method if same else method
        return {k: v for k, v in options.items() if v is not None}, [k for k in spec.options if k not in options]

    def sample(self, name=None, **overrides):
        """Run `ppl.sample` on a target with the options of its `sample` statement (`run_options`), updated by
        `overrides`; errors about a site are located at its statement."""
        from ..api import sample
        name = name or self.default_name()
        spec = self.run_spec(name)
        kw, _ = self.run_options(name, overrides.get("method"))
        kw.update({k: v for k, v in overrides.items() if v is not None})
        compiled = self.compile(name, reference=kw.pop("reference", None), fold=kw.pop("fold", None),
                                method=kw.get("method"), marginalize=kw.pop("marginalize", None))
        if spec:
            self.check_run(spec, compiled.kind, kw)
        try:
            with self.spelling(name, kw.get("method")):
                return sample(compiled, **kw)
        except SourceError:
            raise
        except PPLError as e:
            located = self.locate(e, self.target(name))
            if located is None:
                raise
            raise located from None


def _needs_reference(method, kind):
    """Whether `method` (a name, or None) starts from the reference π0 on plans of `kind` (every method but those
    whose `run` says `needs_reference = False`: nuts, hmc); an unknown method is `check_run`'s to report."""
    from ..backends import get_method
    try:
        return method is not None and getattr(get_method(method, kind), "needs_reference", True)
    except PPLError:
        return False


def diffusions(t):
    """The diffusion bases of target `t`, in order."""
    return [leaf for leaf, _ in t.linear() if leaf.kind == "diffusion"]
