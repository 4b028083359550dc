"""The `ppl` command line.

    ppl run FILE [--data data.json] [--target NAME] [--method is|ais|smc|nuts|...] [--runtime numpyro|pyro]
                 [--device cpu|cuda] [--particles N] [--seed S] [--float64] [--out result.nc] [--plot out.png]
                 [--allow-python] [--chains C] [--warmup W] [--draws D]    (the last three: nuts, hmc, pmmh)
                 [--devices K|all]    (is, smc, pf, fkc on numpyro: the particles split over K devices)
                 [--distributed]      (one of several processes: ppl.distributed; devices default to all)
    ppl check FILE [--data data.json]            parse and check (names, shapes, supports, the plan); without
                                                 --data, missing data are symbolic and what needs them is skipped
    ppl compile FILE [--data data.json] --graph  print the plan and the inference graph
    ppl serve PROGRAM [--host H] [--port P] ...  serve a steering program as an OpenAI-compatible chat endpoint

A sequence target prints log Z ± se, the ESS per step, the chosen answer and the top sequences by total weight,
tokens counted from 1 as the language counts them.

Errors in the program print `file:line:col: message`, the line and a caret, and exit with status 2.
"""
import argparse
import os
import sys
import warnings

from .advice import METHOD_FLAGS, RUN_FLAGS
from .backends import runtime as runtimes
from .errors import PPLError


#: flags passed to the method as its options (the method must take them)
FLAG_OPTIONS = {flag: option for option, flag in METHOD_FLAGS.items()}


def _parser():
    p = argparse.ArgumentParser(prog="ppl", description="Declare a target distribution in a .ppl file; get "
                                                        "samples and log Z back.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("file", help="the .ppl program")
        sp.add_argument("--data", help="a JSON file with the values of the program's `data` declarations")
        sp.add_argument("--allow-python", action="store_true",
                        help="allow `use NAME from \"module:attr\"` to import and call Python code")

    run = sub.add_parser("run", help="sample a target and print a summary and log Z")
    common(run)
    run.add_argument("--target", help="the target to sample (default: the one of the first `sample` statement)")
    run.add_argument("--method", help="models: is, ais, smc, nuts, hmc, pf, pmmh; diffusions: fkc; sequences: pf, pg, "
                                      "bon, wbon, beam (default: the file's, else fkc for a diffusion target, pf for "
                                      "a sequence target and is for others); replaces the file's method, whose "
                                      "options are then not used but for runtime, device(s), seed, reference, fold "
                                      "and precision")
    run.add_argument("--runtime", choices=runtimes.names(), help=f"default: the file's, else {runtimes.DEFAULT}")
    run.add_argument("--device", help="cpu or cuda (default cpu)")
    run.add_argument("--particles", type=int, help="number of particles / draws")
    run.add_argument("--seed", type=int, help="default: the file's seed =, else 0")
    for flag, option in FLAG_OPTIONS.items():
        run.add_argument(flag, type=int, dest=option, help=f"{option} of nuts, hmc or pmmh")
    run.add_argument("--devices", type=_devices, help="split the particles over K JAX devices, or all of them "
                     "(is, smc, pf, fkc on numpyro)")
    run.add_argument("--distributed", action="store_true",
                     help="join the other processes of a multi-process run (JAX_COORDINATOR_ADDRESS, "
                          "JAX_NUM_PROCESSES, JAX_PROCESS_ID or SLURM's; see `python -m ppl.launch`): the "
                          "particles split over every device of every process, and only process 0 prints and "
                          "writes files")
    run.add_argument("--float64", action="store_true",
                     help='compute in float64 (precision="float64"; default: the file\'s, else float32)')
    run.add_argument("--out", help="save the result as NetCDF (.nc): ArviZ InferenceData that ppl.load reads back")
    run.add_argument("--plot", help="save a figure of the result")
    check = sub.add_parser("check", help="parse and check a program")
    common(check)
    comp = sub.add_parser("compile", help="print the inference plan (and graph)")
    common(comp)
    comp.add_argument("--target", help="the target to compile")
    comp.add_argument("--graph", action="store_true", help="also print the inference graph")
    from .serve import add_arguments as serve_arguments
    serve_arguments(sub.add_parser("serve", help="serve a steering program as an OpenAI-compatible chat endpoint"))
    return p


def graph_text(g):
    """The inference graph as text: each node with its kind, then each edge."""
    lines = [f"graph: {g.number_of_nodes()} nodes, {g.number_of_edges()} edges", "nodes:"]
    for n, a in g.nodes(data=True):
        extra = "".join(f" {k}={v}" for k, v in a.items() if k not in ("role", "folded_from") and v is not None)
        lines.append(f"  {n}  [{a.get('role', '?')}{extra}]")
    lines.append("edges:")
    lines.extend(f"  {u} -> {v}" for u, v in g.edges())
    return "\n".join(lines)


def _check_output(path, what, extensions):
    """Refuse an output path before a run, not after it: it must name a file with a known extension that can be
    written (tried by opening it for appending; a file the probe created is removed again)."""
    if not path.strip():
        raise PPLError(f"{what}: empty file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PPLError(f"{what} {path}: the folder {folder} does not exist")
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext not in extensions:
        raise PPLError(f"{what} {path}: unknown extension {'.' + ext if ext else '(none)'}; use one of "
                       f"{', '.join('.' + e for e in sorted(extensions))}")
    existed = os.path.exists(path)
    try:
        with open(path, "ab"):
            pass
    except OSError as e:
        raise PPLError(f"{what} {path}: cannot write there ({e.strerror})") from None
    if not existed:
        os.remove(path)


def _run(prog, args):
    if args.out is not None:
        _check_output(args.out, "--out", {"nc"})
    if args.plot is not None:
        from matplotlib.backend_bases import FigureCanvasBase
        _check_output(args.plot, "--plot", set(FigureCanvasBase.get_supported_filetypes()))
    name = args.target or prog.default_name()
    spec = prog.run_spec(name)
    options, dropped = prog.run_options(name, args.method)
    if dropped:
        print(f"note: --method {args.method}: the options {', '.join(dropped)} of line {spec.node.line} "
              f"(sample {spec.target} with {spec.method}) are not used", file=sys.stderr)
    options.setdefault("method", {"diffusion": "fkc", "sequence": "pf"}.get(prog.kind(name), "is"))
    method = options["method"]
    if args.seed is not None or "seed" not in options:
        options["seed"] = 0 if args.seed is None else args.seed
    for key in RUN_FLAGS:
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    from .backends import get_method, option_names
    for flag, key in FLAG_OPTIONS.items():
        if getattr(args, key) is not None:
            if key not in option_names(get_method(method)):
                raise PPLError(f"{flag}: method {method!r} has no option {key}; it is an option of nuts, hmc "
                               f"and pmmh")
            options[key] = getattr(args, key)
    options.setdefault("runtime", runtimes.DEFAULT)
    if args.float64:
        options["precision"] = "float64"
    if sys.stderr.isatty():
        options.setdefault("progress", True)
    result = prog.sample(name, **options)
    if result.sequences is not None:
        _print_sequences(result, shift="answer" not in options)
    else:
        import pandas as pd
        with pd.option_context("display.max_rows", 60, "display.max_columns", None, "display.width", 200):
            print(result.summary())
    if result.log_z is not None:
        se = f" ± {result.log_z_se:.4g}" if getattr(result, "log_z_se", None) is not None else ""
        print(f"log Z = {result.log_z:.6g}{se}")
        if not se and result.diagnostics.get("log_z_note"):
            print(f"  ({result.diagnostics['log_z_note']})")
    used = ", ".join(f"{k}={_option_text(v)}" for k, v in sorted(options.items())
                     if k not in ("method", "runtime", "progress"))
    print(f"method {method}({used}) on {options['runtime']}, {getattr(result, 'wall_time', float('nan')):.2f} s")
    if args.out is not None:
        result.save(args.out)
        print(f"saved {args.out}")
    if args.plot is not None:
        result.plot(args.plot)
        print(f"saved {args.plot}")


def _option_text(value):
    """An option's value as the language writes it (a model or other object by its name)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (int, float)) or value is None:
        return str(value)
    if isinstance(value, dict):
        return value.get("name", "?") + "(" + ", ".join(f"{k}={_option_text(v)}" for k, v in value.items()
                                                         if k != "name") + ")"
    return getattr(value, "name", None) or type(value).__name__


def _tokens_text(seq, shift=1):
    """A sequence of token ids as the language writes it (from 1), or its text."""
    if isinstance(seq, str):
        return repr(seq)
    return "[" + ", ".join(str(int(t) + shift) for t in seq) + "]"


def sequence_table(result, top=5):
    """[(total weight, sequence)] of the `top` heaviest distinct sequences of a sequence result (weights pooled
    over its chains; equal weights where the method has none)."""
    import numpy as np
    from .weights import Weights
    seqs = result.sequences
    if result.log_weights is not None:
        w = Weights(result.log_weights).pooled().normalized().reshape(-1)
    else:
        w = np.full(len(seqs), 1.0 / len(seqs))
    totals = {}
    for s, x in zip(seqs, w):
        key = s if isinstance(s, str) else tuple(s)
        totals[key] = totals.get(key, 0.0) + float(x)
    return sorted(((v, k) for k, v in totals.items()), key=lambda vk: -vk[0])[:top]


def _print_sequences(result, shift=True):
    """What `ppl run` prints of a sequence result: ESS per step, the answer and the top sequences, tokens from 1."""
    import numpy as np
    n = len(result.sequences)
    ess = result.diagnostics.get("ess")
    if ess is not None and len(ess):
        print("ESS per step: " + " ".join(f"{float(e):.0f}" for e in np.ravel(ess)) + f"  (of {n} sequences)")
    answer = result.answer
    shown = _tokens_text(answer) if shift and isinstance(answer, (list, tuple, str)) else repr(answer)
    print(f"answer: {shown}")
    print("top sequences (total weight):")
    for w, s in sequence_table(result):
        print(f"  {w:8.4f}  {_tokens_text(s)}")


def _check(prog, filename):
    """Compile every target (or model) that could be built; say what the symbolic data left unchecked."""
    for name in list(prog.targets) or list(prog.models) + list(prog.diffusions) + list(prog.sequences):
        prog.compile(name)
    for spec in prog.runs:
        prog.check_run(spec, None if spec.target in prog.unbuilt else prog.compile(spec.target).kind)
    kinds = [(prog.models, "model(s)"), (prog.diffusions, "diffusion(s)"), (prog.sequences, "sequence(s)"),
             (prog.targets, "target(s)")]
    built = ", ".join(f"{len(d)} {what}" for d, what in kinds if d) or "nothing"
    print(f"{filename}: ok (syntax, names, types and {len(prog.runs)} sample statement(s) checked; {built} built"
          + (f", {len(prog.unbuilt)} checked symbolically)" if prog.unbuilt else ")"))
    if prog.symbolic:
        print(f"symbolic data (no --data): {', '.join(prog.symbolic)}; pass --data to check shapes and values")
        for name, datum in prog.unbuilt.items():
            print(f"  {name}: checked up to where it needs the value of {datum}")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as `warning: message`, without the internal source line Python shows; one of another library
    (ArviZ, JAX, ...) says whose it is: `warning (arviz): message`."""
    ours = category.__module__.split(".")[0] == "ppl"
    print(f"warning{'' if ours else f' ({_origin(filename)})'}: {message}", file=file or sys.stderr)


def _origin(filename):
    """The package a source file belongs to (the folder after site-packages), else the file's name."""
    parts = os.path.normpath(filename).split(os.sep)
    return parts[parts.index("site-packages") + 1] if "site-packages" in parts[:-1] else os.path.basename(filename)


def main(argv=None):
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():   # restores warnings.showwarning on return
        warnings.showwarning = _show_warning
        return _main(args)


def _devices(text):
    """--devices: a positive integer or 'all'."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of devices or 'all', got {text!r}") from None


def _main(args):
    from .lang import load_ppl
    if args.command == "serve":
        from .serve import main as serve
        return serve(args)
    try:
        if getattr(args, "distributed", False):
            from . import distributed
            distributed.initialize()
            if args.devices is None:
                args.devices = "all"
            if not distributed.is_main():      # the same result on every process: process 0 tells it
                sys.stdout = open(os.devnull, "w")
                args.out = args.plot = None
        prog = load_ppl(args.file if args.file.endswith(".ppl") else _read(args.file), data=args.data,
                        allow_python=args.allow_python, filename=args.file, symbolic=args.command == "check")
        prog.front = "cli"
        if args.command == "check":
            _check(prog, args.file)
        elif args.command == "compile":
            compiled = prog.compile(args.target)
            print(compiled)
            if args.graph:
                print(graph_text(compiled.graph))
        else:
            _run(prog, args)
    except PPLError as e:
        print(str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def _version():
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("ppl")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _read(path):
    from .errors import SourceError
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise SourceError(f"cannot read program: {e.strerror}", filename=path) from None
    except UnicodeDecodeError:
        raise SourceError("cannot read program: not a UTF-8 text file", filename=path) from None


if __name__ == "__main__":
    sys.exit(main())
