"""`pf` against a served model (`ppl.served`, issue 31) versus the server's own plain sampling, on one machine.

The server: a real `transformers serve` process on 127.0.0.1 serving the small GPT-2 of tests/served_gpt2.py
(random weights, vocabulary {a, b, newline, space, eos}; `--embd`/`--layers` make it larger). A sequence is at
most L = `--steps` steps of at most `--tokens` tokens ending at a newline (or at eos).

For each N and concurrency c (requests in flight at once):

  plain      N whole sequences from the server, as a user of the server alone would ask for them: `n=` in one
             request where the server honours it (`transformers serve` ignores `n`, which is checked here), else
             N concurrent requests of up to L · tokens tokens, c at a time
  stepwise   the same N sequences step by step, as any step-level method must ask for them: L rounds of N
             concurrent requests (prompt + text so far, stop at the newline), c at a time, from a bare asyncio +
             httpx loop: the floor of a step-level sampler on this server
  pf         ppl.sample(ppl.served(..., concurrency=c).tilt(#a), method='pf', particles=N), runtime 'pyro'
  look       the same with ppl.served(..., lookahead=True)

reported as generations (sequences) per second, pf's time over each baseline, the completion requests of
stepwise and pf ("req": pf sends more, since resampling gives the slots of ended sequences to live ones,
which go on), and pf's time per request over stepwise's ("per request": our overhead over a bare client);
"look": pf with `lookahead=True` (one request gives a particle the rest of its generation, cut at the
newlines; a copy made by resampling asks afresh), its requests, the distinct texts it asked for ("n=": its
requests to a server that answers n=, where the particles asking for one text share a request; `transformers
serve` does not, so all copies ask one request each here), and its time over plain's. The median of `--runs`
runs (after a first one that warms the server and the JAX/torch kernels).

    python benchmarks/served.py [--particles 16 64 256] [--concurrency 1 8 32] [--steps 4] [--tokens 4] [--runs 3]
"""
import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import ppl  # noqa: E402
from ppl.served import Endpoint, ServedModel  # noqa: E402
from served_gpt2 import Server, build_model  # noqa: E402


#: completion requests sent (pf's, counted by wrapping `Endpoint.post`, and the step-wise loop's), and the
#: distinct texts pf asked for (wrapping `ServedModel.generate`): its requests to a server that answers n=
REQUESTS, DISTINCT = [0], [0]
_post, _generate = Endpoint.post, ServedModel.generate


def _counted_post(self, path, bodies):
    REQUESTS[0] += len(bodies) if path == "/v1/completions" else 0
    return _post(self, path, bodies)


def _counted_generate(self, prefixes, seeds, logprobs=False, steps_left=None):
    DISTINCT[0] += len(ServedModel.asks(prefixes, steps_left)[1])
    return _generate(self, prefixes, seeds, logprobs, steps_left)


Endpoint.post, ServedModel.generate = _counted_post, _counted_generate


def count_a(texts):
    return np.array([t.count("a") for t in texts], dtype=float)


async def _requests(url, bodies, c):
    import httpx2
    sem = asyncio.Semaphore(c)
    async with httpx2.AsyncClient(timeout=120, limits=httpx2.Limits(max_connections=c)) as client:
        async def one(body):
            async with sem:
                r = await client.post(url + "/v1/completions", json=body)
                r.raise_for_status()
                return r.json()["choices"]
        return await asyncio.gather(*[one(b) for b in bodies])


def plain(url, model, n, c, steps, tokens):
    body = {"model": model, "prompt": "a", "max_tokens": steps * tokens, "temperature": 1.0, "top_p": 1.0}
    if len(asyncio.run(_requests(url, [dict(body, n=n)], 1))[0]) == n:      # the server honours n=
        return
    asyncio.run(_requests(url, [body] * n, c))


def stepwise(url, model, n, c, steps, tokens):
    texts, live = [""] * n, list(range(n))
    for _ in range(steps):
        if not live:
            break
        REQUESTS[0] += len(live)
        out = asyncio.run(_requests(url, [{"model": model, "prompt": "a" + texts[i], "max_tokens": tokens,
                                           "stop": ["\n"], "temperature": 1.0, "top_p": 1.0} for i in live], c))
        for i, choices in zip(live, out):
            texts[i] += choices[0]["text"]
        # what ends a sequence for ppl.served: no text, or a stop that is not the delimiter (eos)
        live = [i for i, choices in zip(live, out) if choices[0]["text"] and (
            choices[0]["finish_reason"] != "stop" or choices[0]["text"].endswith("\n"))]


def pf(url, model, n, c, steps, tokens, seed, lookahead=False):
    lm = ppl.served(url, model, step="\n", max_tokens=tokens, length=steps, prompt="a", concurrency=c,
                    lookahead=lookahead)
    return ppl.sample(lm.tilt(count_a, 1.0), method="pf", particles=n, seed=seed, runtime="pyro")


def timed(fn, runs):
    """(median seconds, median requests, median distinct texts asked) over `runs` runs after a first one."""
    fn(0)
    times, requests, distinct = [], [], []
    for k in range(runs):
        REQUESTS[0] = DISTINCT[0] = 0
        t = time.perf_counter()
        fn(k + 1)
        times.append(time.perf_counter() - t)
        requests.append(REQUESTS[0])
        distinct.append(DISTINCT[0])
    return statistics.median(times), statistics.median(requests), statistics.median(distinct)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--embd", type=int, default=16)
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as path:
        build_model(path, args.embd, args.layers)
        server = Server(path)
        try:
            url = server.url
            print(f"transformers serve, GPT-2 n_embd={args.embd} n_layer={args.layers}, L={args.steps} steps of "
                  f"<= {args.tokens} tokens; {os.cpu_count()} CPUs; median of {args.runs} runs")
            print(f"{'N':>5} {'c':>4} {'plain s':>9} {'stepwise s':>11} {'(req)':>6} {'pf s':>8} {'(req)':>6} "
                  f"{'pf gen/s':>9} {'pf/plain':>9} {'pf/stepwise':>12} {'per request':>12} {'look s':>8} "
                  f"{'(req)':>6} {'(n=)':>5} {'look/plain':>11}")
            for n in args.particles:
                for c in args.concurrency:
                    t_plain, _, _ = timed(lambda k: plain(url, path, n, c, args.steps, args.tokens), args.runs)
                    t_step, r_step, _ = timed(lambda k: stepwise(url, path, n, c, args.steps, args.tokens), args.runs)
                    t_pf, r_pf, _ = timed(lambda k: pf(url, path, n, c, args.steps, args.tokens, k), args.runs)
                    t_la, r_la, g_la = timed(lambda k: pf(url, path, n, c, args.steps, args.tokens, k, True), args.runs)
                    print(f"{n:>5} {c:>4} {t_plain:>9.3f} {t_step:>11.3f} {r_step:>6.0f} {t_pf:>8.3f} {r_pf:>6.0f} "
                          f"{n / t_pf:>9.1f} {t_pf / t_plain:>9.2f} {t_pf / t_step:>12.2f} "
                          f"{(t_pf / r_pf) / (t_step / r_step):>12.2f} {t_la:>8.3f} {r_la:>6.0f} {g_la:>5.0f} "
                          f"{t_la / t_plain:>11.2f}", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
