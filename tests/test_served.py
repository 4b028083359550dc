"""Served models and rewards (`ppl.served`, issue 31) against a real `transformers serve` process on 127.0.0.1.

The served model: a random 2-layer GPT-2 over a byte-level BPE tokenizer trained here with `tokenizers` on
the alphabet {a, b, newline, space} with no merges (vocabulary 5 with <|endoftext|> = eos), so that text and
tokens correspond one to one and re-tokenizing a particle's text gives back its tokens: the served text-level
law is then the token-level law of the same network in memory. Its generation_config samples the model itself
(do_sample, top_k 0, top_p 1, temperature 1). A step is one token (`max_tokens=1`, `step=None`), a sequence
ends at eos (the server returns no text) or after L = 4 steps; the target tilts by the number of 'a's, so
log Z = log Σ_x p(x) e^{#a(x)} by enumeration of the 5^4 sequences with a float64 forward pass.

Fault cases: a closed port, an unknown model name, a server that answers slowly, malformed and truncated
JSON, a reward endpoint returning the wrong number of scores, a target needing log-probabilities that the
server does not return (`transformers serve` ignores `logprobs`), and (slow) the server killed mid-run.
"""
import contextlib
import http.server
import itertools
import json
import math
import random
import re
import threading
import time

import numpy as np
import pytest

import ppl
from ppl.served import JSONHandler

from served_gpt2 import Server, build_model, free_port

pytest.importorskip("transformers")
pytest.importorskip("fastapi")
pytest.importorskip("httpx2")

L = 4


@pytest.fixture(scope="module")
def served_gpt2(tmp_path_factory):
    """(the Server, its model directory, the model and tokenizer in memory); the server starts here and is
    waited for at its first `url`, so a test can compute in memory meanwhile."""
    path = tmp_path_factory.mktemp("served_gpt2")
    model, tok = build_model(path)
    server = Server(path)
    yield server, str(path), model, tok
    server.stop()


def count_a(texts):
    return np.array([t.count("a") for t in texts], dtype=float)


def exact_log_z(model, tok):
    """log Σ_x p(x | 'a') e^{#a(x)} over the sequences of at most L tokens ending at their first eos."""
    import copy

    import torch
    seqs = [list(b) + [0] for k in range(L) for b in itertools.product(range(1, 5), repeat=k)]
    seqs += [list(b) for b in itertools.product(range(1, 5), repeat=L)]
    with torch.no_grad():
        lp = torch.log_softmax(copy.deepcopy(model).double()(torch.tensor([[1] + x + [0] * (L - len(x))
                                                                           for x in seqs])).logits, -1).numpy()
    logs = np.array([sum(lp[i, t, v] for t, v in enumerate(x)) + tok.decode(x, skip_special_tokens=True).count("a")
                     for i, x in enumerate(seqs)])
    return float(logs.max() + math.log(np.exp(logs - logs.max()).sum()))


def test_pf_on_served_model_matches_in_memory_and_exact(served_gpt2):
    """pf on lm.tilt(#a) served (text steps, weights from the reward alone) and in memory (the same network
    as a causal LM, token steps): both log Z within 4 se of the exact one and of each other."""
    server, _, model, tok = served_gpt2
    exact = exact_log_z(model, tok)
    local = ppl.autoregressive(model, vocab=5, length=L, eos=0, prompt=[1], decode=tok.decode)
    in_memory = ppl.sample(local.tilt(lambda prefixes: (prefixes == 1).sum(1) * 1.0, 1.0), method="pf",
                           particles=1000, seed=0, runtime="pyro")
    lm = ppl.served(server.url, step=None, max_tokens=1, length=L, prompt="a", timeout=30)
    served = ppl.sample(lm.tilt(count_a, 1.0), method="pf", particles=128, seed=0, runtime="pyro")
    print(f"exact {exact:.4f}  served {served.log_z:.4f} ± {served.log_z_se:.4f}  in memory "
          f"{in_memory.log_z:.4f} ± {in_memory.log_z_se:.4f}")
    assert abs(served.log_z - exact) < 4 * served.log_z_se + 1e-3, (served.log_z, served.log_z_se, exact)
    assert abs(in_memory.log_z - exact) < 4 * in_memory.log_z_se + 1e-3, (in_memory.log_z, exact)
    assert abs(served.log_z - in_memory.log_z) < 4 * math.hypot(served.log_z_se, in_memory.log_z_se)
    assert all(isinstance(t, str) and set(t) <= set("ab \n") for t in served.sequences)
    assert served.samples["steps"].shape == (1, 128) and served.diagnostics["generations"] == 128
    assert served.answer in served.sequences


# ---- faults ----------------------------------------------------------------------------------------------

class Fake(http.server.BaseHTTPRequestHandler):
    """A misbehaving server: `behaviour` of the class says how it answers every POST."""

    behaviour = "slow"

    def do_GET(self):
        self._send(b'{"object": "list", "data": [{"id": "m"}]}')

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.behaviour == "slow":
            time.sleep(1.0)
            return self._send(b'{"choices": [{"text": "a", "finish_reason": "length"}]}')
        if self.behaviour == "malformed":
            return self._send(b'{"choices": [{"text": "a", ')
        # truncated: announces more than it sends, then closes
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "200")
        self.end_headers()
        self.wfile.write(b'{"choices": [')
        self.wfile.flush()
        self.close_connection = True

    def _send(self, data):
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):      # the client gave up waiting (the slow case)
            pass

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(handler):
    """The URL of a ThreadingHTTPServer with `handler` on a free port of 127.0.0.1, in a thread."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def fake_server(behaviour):
    return serving(type("Handler", (Fake,), {"behaviour": behaviour}))


def run_pf(lm, reward=count_a, particles=4):
    return ppl.sample(lm.tilt(reward, 1.0), method="pf", particles=particles, seed=0, runtime="pyro")


def test_closed_port_is_unreachable_after_bounded_retries():
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ppl.ServerUnreachable, match=rf"{url}/v1/models: cannot connect.*after 3 tries"):
        run_pf(ppl.served(url, model="m", retries=2, backoff=0.01))
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("behaviour, error, message", [
    ("slow", ppl.ServerTimeout, r"/v1/completions: no answer within 0.2 s \(after 2 tries\); the run stopped in "
                                r"step 1: 0 of 4 generations had completed"),
    ("malformed", ppl.ServedResponseError, r"/v1/completions: malformed JSON in the answer"),
    ("truncated", ppl.ServerUnreachable, r"/v1/completions: the connection failed mid-answer.*after 2 tries"),
])
def test_misbehaving_server_is_a_named_error(behaviour, error, message):
    with fake_server(behaviour) as url:
        t0 = time.monotonic()
        with pytest.raises(error, match=message) as info:
            run_pf(ppl.served(url, model="m", length=2, timeout=0.2, retries=1, backoff=0.01))
        assert info.value.endpoint == url + "/v1/completions" and info.value.completed == 0
        assert time.monotonic() - t0 < 10


def test_unknown_model_names_the_served_ones(served_gpt2):
    url, path = served_gpt2[0].url, served_gpt2[1]
    with pytest.raises(ppl.UnknownModelError, match=rf"{url} does not serve model 'gpt-9'; .* lists '{path}'"):
        run_pf(ppl.served(url, model="gpt-9"))


def test_log_probabilities_the_server_does_not_return(served_gpt2):
    """`transformers serve` ignores `logprobs`: lm ** 2 needs them, and says so."""
    url = served_gpt2[0].url
    lm = ppl.served(url, step=None, max_tokens=1, length=2, prompt="a")
    with pytest.raises(ppl.ServedResponseError, match=r"/v1/completions returned no token log-probabilities"):
        ppl.sample((lm ** 2).tilt(count_a, 1.0), method="pf", particles=4, seed=0, runtime="pyro")


def test_reward_endpoint_with_wrong_number_of_scores(served_gpt2):
    with ppl.reward_server(lambda prompt, steps: [[1.0] * (len(s) + 1) for s in steps]) as prm:
        lm = ppl.served(served_gpt2[0].url, step=None, max_tokens=1, length=2, prompt="a")
        with pytest.raises(ppl.ServedResponseError, match=rf"POST {prm.url}: the reward must return one score per "
                                                          rf"step of each of the 4 particles"):
            run_pf(lm, ppl.served_reward(prm.url))


@pytest.mark.slow
def test_served_reward_gives_the_in_process_answer(served_gpt2):
    """The #a reward as a process reward model in a reward server (one score per step, the newest one read):
    bon, wbon and beam run on it; pf's log Z within 4 se of the exact one."""
    server, _, model, tok = served_gpt2
    url = server.url

    def prm(prompt, steps):
        return [[("".join(s[:k + 1])).count("a") for k in range(len(s))] for s in steps]
    with ppl.reward_server(prm) as srv:
        lm = ppl.served(url, step=None, max_tokens=1, length=L, prompt="a")
        target = lm.tilt(ppl.served_reward(srv.url), 1.0)
        r = ppl.sample(target, method="pf", particles=256, seed=1, runtime="numpyro")
        assert abs(r.log_z - exact_log_z(model, tok)) < 4 * r.log_z_se
        for method in ("bon", "wbon", "beam"):
            out = ppl.sample(target, method=method, particles=8, seed=0, runtime="pyro")
            assert out.answer in out.sequences and len(out.sequences) == 8
        pg = ppl.sample(target, method="pg", particles=8, iterations=2, seed=0, runtime="pyro")
        assert len(pg.sequences) == 16 and all(ref in pg.sequences for ref in pg.diagnostics["references"])


@pytest.mark.slow
def test_server_killed_mid_run(served_gpt2):
    """A second server, killed by the reward after the first step: ServerUnreachable naming it, after the
    retries, with the number of generations that had completed."""
    second = Server(served_gpt2[1])
    url = second.url
    calls = []

    def reward(texts):
        calls.append(1)
        if len(calls) == 2:
            second.stop()
        return count_a(texts)
    try:
        lm = ppl.served(url, step=None, max_tokens=1, length=L, prompt="a", retries=2,
                        backoff=0.05)
        t0 = time.monotonic()
        with pytest.raises(ppl.ServerUnreachable, match=r"127.0.0.1:\d+/v1/completions: cannot connect.*after 3 "
                                                        r"tries\); the run stopped in step 3: \d+ of 16 generations"):
            run_pf(lm, reward, particles=16)
        assert time.monotonic() - t0 < 30
    finally:
        second.stop()


# ---- log-probabilities: a server that returns them ---------------------------------------------------------

class Markov(JSONHandler):
    """A completions server of a first-order Markov chain over the characters a, b (and eos: None) that returns
    token log-probabilities: of the sampled tokens with `logprobs`, of the prompt's with `echo` (vLLM's format,
    one token per character), and `n` independent choices for n=."""

    table = {}
    prompts = None      # a list: the prompt of every request is appended to it

    def do_GET(self):
        self.send_json(200, {"object": "list", "data": [{"id": "markov"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.prompts is not None:
            self.prompts.append(body["prompt"])
        prompt, rng = body["prompt"], random.Random(body.get("seed"))
        if body.get("echo"):        # "$": the eos token's text
            lps = [None] + [math.log(self.table[u][None if v == "$" else v]) for u, v in zip(prompt, prompt[1:])]
            return self.send_json(200, {"choices": [{"text": prompt, "finish_reason": "length", "logprobs": {
                "tokens": list(prompt), "token_logprobs": lps, "text_offset": list(range(len(prompt)))}}]})
        self.send_json(200, {"choices": [self.draw(prompt, body, rng) for _ in range(body.get("n", 1))]})

    def draw(self, prompt, body, rng):
        text, lps, finish = "", [], "length"
        for _ in range(body["max_tokens"]):
            row = self.table[(prompt + text)[-1]]
            v = rng.choices(list(row), weights=list(row.values()))[0]
            lps.append(math.log(row[v]))
            if v is None:
                finish = "stop"
                break
            text += v
        choice = {"text": text, "finish_reason": finish}
        if body.get("logprobs") is not None:
            choice["logprobs"] = {"token_logprobs": lps, "tokens": list(text) + [""] * (finish == "stop")}
        return choice


def markov_server(table):
    return serving(type("Handler", (Markov,), {"table": table}))


def chain_log_probs(table, prompt, length):
    """{sequence (a tuple of characters, None for eos): log p} over the sequences of at most `length` steps."""
    out, frontier = {}, {(): 0.0}
    for _ in range(length):
        grown = {}
        for x, lp in frontier.items():
            for v, p in table[(prompt + "".join(x))[-1]].items():
                (out if v is None else grown)[x + (v,)] = lp + math.log(p)
        frontier = grown
    out.update(frontier)
    return out


P1 = {"a": {"a": 0.5, "b": 0.3, None: 0.2}, "b": {"a": 0.2, "b": 0.6, None: 0.2}}
P2 = {"a": {"a": 0.1, "b": 0.9}, "b": {"a": 0.7, "b": 0.3}}
P3 = {"a": {"a": 0.6, "b": 0.4}, "b": {"a": 0.3, "b": 0.7}}


def log_sum_exp(values):
    values = np.array(list(values))
    return float(values.max() + math.log(np.exp(values - values.max()).sum()))


P4 = {"a": {"a": 0.3, "b": 0.3, None: 0.4}, "b": {"a": 0.4, "b": 0.5, None: 0.1}}


def test_scoring_an_ended_step_needs_eos_text():
    with markov_server(P1) as u1, markov_server(P4) as u4:
        lm1, lm4 = (ppl.served(u, step=None, max_tokens=1, length=3, prompt="a") for u in (u1, u4))
        with pytest.raises(ppl.PPLError, match=r"must score a step that ended at the end of sequence.*eos_text="):
            ppl.sample(lm1 * lm4, method="pf", particles=16, seed=0, runtime="pyro")


@pytest.mark.slow
def test_product_of_served_models_that_end_at_eos():
    """lm1 * lm4, both ending at eos: lm4 scores lm1's last step with log p4(eos) (eos_text echoed after it):
    log Z within 4 se of Σ_x p1(x) p4(x)."""
    with markov_server(P1) as u1, markov_server(P4) as u4:
        lm1 = ppl.served(u1, step=None, max_tokens=1, length=3, prompt="a")
        lm4 = ppl.served(u4, step=None, max_tokens=1, length=3, prompt="a", eos_text="$")
        product = ppl.sample(lm1 * lm4, method="pf", particles=256, seed=0, runtime="pyro")
        p1, p4 = chain_log_probs(P1, "a", 3), chain_log_probs(P4, "a", 3)
        exact = log_sum_exp(p1[x] + p4[x] for x in p1)
        print(f"lm1 * lm4: {product.log_z:.4f} ± {product.log_z_se:.4f}, exact {exact:.4f}")
        assert abs(product.log_z - exact) < 4 * product.log_z_se, (product.log_z, product.log_z_se, exact)


@pytest.mark.slow
def test_power_and_product_of_served_models_with_log_probabilities():
    """lm ** 2 (the step's weight β log p − log p from the sampled tokens' log-probabilities, eos included) and
    lm2 * lm3 (lm3 scores lm2's steps by echo): log Z within 4 se of Σ_x p(x)² and Σ_x p2(x) p3(x)."""
    with markov_server(P1) as u1, markov_server(P2) as u2, markov_server(P3) as u3:
        lm1, lm2, lm3 = (ppl.served(u, step=None, max_tokens=1, length=3, prompt="a") for u in (u1, u2, u3))
        power = ppl.sample(lm1 ** 2, method="pf", particles=256, seed=0, runtime="pyro")
        exact = log_sum_exp(2 * lp for lp in chain_log_probs(P1, "a", 3).values())
        print(f"lm ** 2: {power.log_z:.4f} ± {power.log_z_se:.4f}, exact {exact:.4f}")
        assert abs(power.log_z - exact) < 4 * power.log_z_se + 1e-9, (power.log_z, power.log_z_se, exact)
        product = ppl.sample(lm2 * lm3, method="pf", particles=256, seed=0, runtime="pyro")
        p2, p3 = chain_log_probs(P2, "a", 3), chain_log_probs(P3, "a", 3)
        exact = log_sum_exp(p2[x] + p3[x] for x in p2)
        print(f"lm2 * lm3: {product.log_z:.4f} ± {product.log_z_se:.4f}, exact {exact:.4f}")
        assert abs(product.log_z - exact) < 4 * product.log_z_se + 1e-9, (product.log_z, product.log_z_se, exact)


# ---- lookahead: one request gives a particle the rest of its generation -------------------------------------

def test_lookahead_cuts_a_generation_into_steps():
    """The pieces of one answer: cut after each delimiter, at most the steps left; an eos right after a
    delimiter is an empty ended step (as step-wise requests see it); each token's log-probability goes to the
    step it starts in, the eos token's to the last, and the tokens of steps past the budget to none."""
    lm = ppl.served("http://127.0.0.1:1", model="m", step="b", max_tokens=5, lookahead=True)

    def pieces(text, finish, steps_left, logprobs=False):
        tokens = list(text) + [""] * (finish == "stop")
        answer = {"choices": [{"text": text, "finish_reason": finish, "logprobs": {
            "tokens": tokens, "token_logprobs": [-(k + 1.0) for k in range(len(tokens))]}}]}
        return lm._pieces(answer["choices"][0], logprobs, steps_left)
    assert pieces("aab", "length", 5) == [("aab", None, None)]
    assert pieces("aabab", "stop", 5) == [("aab", None, None), ("ab", None, None), ("", "eos", None)]
    assert pieces("abaa", "stop", 5) == [("ab", None, None), ("aa", "eos", None)]
    assert pieces("abbab", "length", 2) == [("ab", None, None), ("b", None, None)]
    assert pieces("", "stop", 3) == [("", "eos", None)]
    assert pieces("abaa", "stop", 5, True) == [("ab", None, -3.0), ("aa", "eos", -12.0)]
    assert pieces("abab", "stop", 2, True) == [("ab", None, -3.0), ("ab", None, -7.0)]
    with pytest.raises(ppl.PPLError, match="lookahead=True cuts a generation into steps at the delimiter"):
        ppl.served("http://127.0.0.1:1", step=None, lookahead=True)


def cut_chain(table, prompt, delimiter, length, power, tilt=1.0):
    """Σ_x p(x)^power tilt^{#a(x)} over the texts x of a Markov chain's generation (eos: None) cut after its
    `length`-th `delimiter`: the fixed point of the recursion over (last character, delimiters so far), the law
    `lookahead` samples (the chain's generations practically never reach the token cap)."""
    f = {(c, k): 0.0 for c in "ab" for k in range(length)}
    for _ in range(2000):
        f = {(c, k): table[c][None] ** power + sum(
            table[c][v] ** power * (tilt if v == "a" else 1.0) * (1.0 if v == delimiter and k + 1 == length
                                                                   else f[v, k + (v == delimiter)])
            for v in "ab") for c in "ab" for k in range(length)}
    return math.log(f[prompt[-1], 0])


@pytest.mark.parametrize("takes_n", [True, False])
def test_lookahead_pf_matches_the_cut_generation_law(takes_n):
    """pf with lookahead on the Markov server (steps end at 'b', at most 3 of them): lm.tilt(#a, 1.5), which
    resamples, and lm ** 2 (each step's log-probability from its tokens) within 4 se of the exact log Z, and far
    fewer requests than one per particle and step: one per particle and copy, or with a server that answers n=
    (vLLM) one per distinct text asked for (the first step of all particles is one request)."""
    requests = []

    class Counting(Markov):
        table = P4

        def do_POST(self):
            requests.append(1)
            return super().do_POST()

        def send_json(self, code, payload):     # a server that ignores n= answers one choice
            if not takes_n and "choices" in payload:
                payload = dict(payload, choices=payload["choices"][:1])
            return super().send_json(code, payload)
    with serving(Counting) as url:
        lm = ppl.served(url, step="b", max_tokens=20, length=3, prompt="a", lookahead=True)
        tilted = ppl.sample(lm.tilt(count_a, 1.5), method="pf", particles=256, seed=0, runtime="pyro")
        exact = cut_chain(P4, "a", "b", 3, 1, math.exp(1 / 1.5))
        print(f"lookahead tilt: {tilted.log_z:.4f} ± {tilted.log_z_se:.4f}, exact {exact:.4f}, {len(requests)} "
              f"requests")
        assert abs(tilted.log_z - exact) < 4 * tilted.log_z_se, (tilted.log_z, tilted.log_z_se, exact)
        assert lm.takes_n is takes_n and tilted.diagnostics["resampled"].any()
        assert len(requests) < (32 if takes_n else 2 * 256)
        power = ppl.sample(lm ** 2, method="pf", particles=256, seed=0, runtime="pyro")
        exact = cut_chain(P4, "a", "b", 3, 2)
        print(f"lookahead lm ** 2: {power.log_z:.4f} ± {power.log_z_se:.4f}, exact {exact:.4f}, {len(requests)} "
              f"requests in all")
        assert abs(power.log_z - exact) < 4 * power.log_z_se, (power.log_z, power.log_z_se, exact)


# ---- served bases in the language ---------------------------------------------------------------------------

def test_served_base_in_ppl_matches_the_cut_generation_law():
    """`sequence lm = served("url", ...)` with a text-pattern reward: log Z within 4 se of the exact one."""
    with markov_server(P1) as url:
        program = ppl.load_ppl(f"""
sequence lm = served("{url}", step = "b", max_tokens = 20, length = 3, prompt = "a", lookahead = true)
target steered = lm * exp(count(text, "a") / 4)
sample steered with pf(particles = 256) on pyro
""")
        r = program.sample(seed=0)
        exact = cut_chain(P1, "a", "b", 3, 1, math.exp(0.25))
        assert abs(r.log_z - exact) < 4 * r.log_z_se, (r.log_z, r.log_z_se, exact)
        assert all(isinstance(t, str) for t in r.sequences)


def test_text_rewards_in_ppl_are_the_python_ones():
    """Text patterns, a `use`d function of the texts, `served_reward("url")` and arithmetic on them give, at one
    seed, the log Z of the same reward written in Python."""
    import sys
    import types

    def prm(prompt, steps):
        return [[float(s.count("b")) for s in st] for st in steps]
    module = types.ModuleType("text_reward_module")
    module.vowels = lambda texts: np.array([t.count("a") * 0.5 for t in texts])
    sys.modules["text_reward_module"] = module
    try:
        with ppl.reward_server(prm) as server, markov_server(P1) as url:
            program = ppl.load_ppl(f"""
use vowels from "text_reward_module:vowels"
sequence lm = served("{url}", step = "b", max_tokens = 20, length = 3, prompt = "a", lookahead = true)
target steered = lm * exp((2 * contains(text, "aa") - 0.5 * length(text) + (count(text, "ab") > 1) + vowels(text)
                           + served_reward("{server.url}") + matches(text, "^b+$")) / 4)
sample steered with pf(particles = 64) on pyro
""", allow_python=True)
            lm = ppl.served(url, step="b", max_tokens=20, length=3, prompt="a", lookahead=True)
            reward = ppl.served_reward(server.url)

            def by_hand(prompt, steps):
                texts = ["".join(s) for s in steps]
                return np.array([2.0 * ("aa" in t) - 0.5 * len(t) + (sum(t[i:i + 2] == "ab" for i in range(len(t)))
                                                                      > 1) + 0.5 * t.count("a")
                                 + bool(re.fullmatch("b+", t)) for t in texts]) + np.asarray(reward(prompt, steps))
            r = program.sample(seed=3)
            expected = ppl.sample(lm.tilt(by_hand, 4.0), method="pf", particles=64, seed=3, runtime="pyro")
            assert r.log_z == pytest.approx(expected.log_z, abs=1e-9)
    finally:
        del sys.modules["text_reward_module"]


def _served_program(options="length = 3", target=None):
    head = f'sequence lm = served("http://127.0.0.1:1", {options})\n'
    return head + (f"target t = {target}\nsample t with pf(particles = 4)\n" if target else "")


@pytest.mark.parametrize("program, message", [
    (_served_program(target='lm * exp(count(text, 2))'), r'a text pattern is a non-empty string: count\(text, "ab"\)'),
    (_served_program(target='lm * exp(count(tokens, "a"))'), r"the first argument of count is text"),
    (_served_program(target='lm * exp(contain(text, "a"))'),
     r"(?s)unknown function 'contain' in a reward over text.*'contains'"),
    (_served_program(target='lm * exp(served_reward(1))'), r"served_reward takes the reward endpoint's URL"),
    (_served_program('length = 3, step = 2'), r'step is text: a string literal, step = "..."'),
    (_served_program('length = 3, lookahead = 1'), r"lookahead is true or false"),
    (_served_program('length = 0'), r"length must be an integer >= 1"),
    (_served_program('step = "b"'), r"served needs length = L, the most steps a sequence generates"),
    (_served_program('length = 3, timeout = -1'), r"timeout must be a positive number"),
    (_served_program('length = 3, lookahed = true'), r"(?s)served has no option 'lookahed'.*lookahead"),
])
def test_served_bases_and_text_rewards_in_ppl_refuse_with_located_errors(program, message):
    with pytest.raises(ppl.PPLError, match=message):
        ppl.load_ppl(program)


def test_ppl_serve_steers_a_served_model_for_a_chat(tmp_path):
    """`ppl serve` of a .ppl program over a served base (its_hub's inference as a service): the chat follows the
    program's prompt in every request to the model, and the reply is the run of that target in this process."""
    pytest.importorskip("uvicorn")
    from starlette.testclient import TestClient
    from ppl.serve import app
    prompts = []

    with serving(type("Recording", (Markov,), {"table": P1, "prompts": prompts})) as url:
        path = tmp_path / "steer.ppl"
        path.write_text(f'sequence lm = served("{url}", step = "b", max_tokens = 20, length = 3, prompt = "a", '
                        f'lookahead = true)\ntarget steered = lm * exp(count(text, "a") / 4)\n'
                        f'sample steered with pf(particles = 32) on pyro\n')
        client = TestClient(app(str(path), model_name="steer"))
        reply = client.post("/v1/chat/completions", json={"model": "steer", "seed": 4,
                                                          "messages": [{"role": "user", "content": "b"}]})
        assert reply.status_code == 200, reply.text
        assert prompts and all(p.startswith("ab") for p in prompts)
        lm = ppl.served(url, step="b", max_tokens=20, length=3, prompt="ab", lookahead=True)
        local = ppl.sample(lm.tilt(count_a, 4.0), method="pf", particles=32, seed=4, runtime="pyro")
        body = reply.json()
        assert body["choices"][0]["message"]["content"] == local.answer
        assert body["ppl"]["log_z"] == pytest.approx(local.log_z, abs=1e-9)
