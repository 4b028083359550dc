"""Time parsing, lowering (load_ppl) and ppl.compile of the posteriordb example programs.

    python benchmarks/parse_compile.py [--repeat 20]

Prints the median wall time of each stage per example, after one warm-up run (the
first run of a process also pays for importing JAX/torch and building the grammar).
"""
import argparse
import json
import statistics
import time

from ppl import load_ppl, parse
from ppl.stdlib.targets import EXAMPLE_DATA, example_paths



def median_ms(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    t = time.perf_counter()
    parse("model m { x ~ normal(0, 1) }")
    print(f"grammar build + first parse: {1000 * (time.perf_counter() - t):.1f} ms (once per process)")
    print(f"{'example':28s} {'lines':>5s} {'parse ms':>9s} {'load ms':>8s} {'compile ms':>11s} {'total ms':>9s}")
    for name in EXAMPLE_DATA:
        program, path = example_paths(name)
        data = json.loads(path.read_text())
        text = program.read_text()
        load_ppl(text, data=data).compile()  # warm-up
        t_parse = median_ms(lambda: parse(text), args.repeat)
        t_load = median_ms(lambda: load_ppl(text, data=data), args.repeat)
        prog = load_ppl(text, data=data)
        t_comp = median_ms(lambda: prog.compile(), args.repeat)
        print(f"{name:28s} {text.count(chr(10)):5d} {t_parse:9.2f} {t_load:8.2f} {t_comp:11.1f} "
              f"{t_load + t_comp:9.1f}")
    print("parse: text -> AST; load: parse + checks + lowering to ppl targets (includes parse);\n"
          "compile: ppl.compile (terms, graph, plan, and a shape trace of every site on numpy)")


if __name__ == "__main__":
    main()
