"""`ppl serve` (ppl/serve.py, issue 31 item 3): a steering program behind an OpenAI-compatible endpoint.

Real server processes on 127.0.0.1 (free ports), queried with the official `openai` client, unchanged, and with
`curl`: `examples/serve_steering.ppl` (its sequences read the request's tokens as the data `prompt`; in CI), and
(slow: importing transformers twice takes ~12 s) a Python factory over a small GPT-2 built here with a
byte-level BPE tokenizer trained here (`tokenizers`), both saved to a temporary folder (no downloads). A run of
the same program, prompt and seed in this process gives the same answer and log Z ± se (to 1e-5); bad requests
get OpenAI's error form (checked in-process with FastAPI's test client).
"""
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import ppl

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "examples" / "serve_steering.ppl"
DATA = ROOT / "examples" / "steering.data.json"

#: the factory the server imports (`gpt2_factory:make`), beside the saved model and tokenizer
FACTORY = '''
"""A tilted tiny GPT-2 for `ppl serve`: the chat text is encoded after BOS, a sequence is 6 tokens or ends
at EOS, the process reward counts even token ids."""
import os

import transformers

import ppl

FOLDER = os.path.dirname(os.path.abspath(__file__))
tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(FOLDER)
model = transformers.GPT2LMHeadModel.from_pretrained(FOLDER).eval()


def even(prefixes):
    return ((prefixes % 2) == 0).sum(1) * 1.0


def make(prompt):
    ids = [tokenizer.bos_token_id] + tokenizer.encode(prompt)
    lm = ppl.autoregressive(model, vocab=len(tokenizer), length=6, eos=tokenizer.eos_token_id, prompt=ids,
                            decode=tokenizer.decode)
    return lm.tilt(even, lam=0.5), {"method": "pf", "runtime": "pyro", "particles": 64}
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_tiny_gpt2(folder):
    """A byte-level BPE tokenizer trained on a few sentences and a random 2-layer GPT-2 over its vocabulary."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    import torch
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["the cat sat on the mat", "a dog and a cat", "hello world"] * 10,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                                eos_token="<|endoftext|>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=len(fast), n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                  initializer_range=0.3, bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(folder)
    (folder / "gpt2_factory.py").write_text(FACTORY)


class Served:
    """`ppl serve ARGS` as a process in `cwd` on a free port: its base URL; stopped by `close()`."""

    def __init__(self, args, cwd):
        self.port = free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.log = Path(cwd) / f"serve-{self.port}.log"     # a file, not a pipe nobody reads
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "ppl.serve", *args, "--port", str(self.port)],
                                         cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ppl serve exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.close()
        raise RuntimeError("ppl serve did not start within 120 s")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    save_tiny_gpt2(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2_server(gpt2_folder):
    server = Served(["gpt2_factory:make", "--allow-python", "--model-name", "tiny-gpt2"], gpt2_folder)
    yield server
    server.close()


@pytest.fixture(scope="module")
def factory(gpt2_folder):
    """The server's factory module, imported in this process."""
    sys.path.insert(0, str(gpt2_folder))
    try:
        import gpt2_factory
    finally:
        sys.path.remove(str(gpt2_folder))
    yield gpt2_factory
    sys.modules.pop("gpt2_factory", None)


@pytest.fixture(scope="module")
def ppl_server(tmp_path_factory):
    """`ppl serve examples/serve_steering.ppl` as a process."""
    server = Served([str(PROGRAM), "--data", str(DATA), "--model-name", "steer", "--particles", "300"],
                    tmp_path_factory.mktemp("serve"))
    yield server
    server.close()


def local_run(prompt, seed, particles):
    """The served program's run in this process (prompt tokens from 1, as a request writes them)."""
    table = json.loads(DATA.read_text())["table"]
    prog = ppl.load_ppl(str(PROGRAM), table=table, prompt_length=len(prompt), prompt=prompt)
    return prog.sample(seed=seed, particles=particles)


def tokens_text(ids):
    return "[" + ", ".join(str(t + 1) for t in ids) + "]"


def test_openai_client_against_a_served_program(ppl_server):
    """The official client, unchanged: the answer and log Z ± se are those of the same run in this process; the
    extra field `particles` sets the budget; an unknown model is the client's NotFoundError, n = 2 a
    BadRequestError."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=ppl_server.url + "/v1", api_key="x")
    assert [m.id for m in client.models.list()] == ["steer"]
    messages = [{"role": "system", "content": "1"}, {"role": "user", "content": "[3]"}]
    reply = client.chat.completions.create(model="steer", messages=messages, seed=3, extra_body={"particles": 200})
    local = local_run([1, 3], seed=3, particles=200)
    info = reply.model_extra["ppl"]
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == tokens_text(local.answer) and local.answer in local.sequences
    assert info["log_z"] == pytest.approx(local.log_z, abs=1e-5)
    assert info["se"] == pytest.approx(local.log_z_se, abs=1e-5)
    assert (info["generations"], info["method"], info["particles"], info["seed"]) == (200, "pf", 200, 3)
    assert reply.usage.prompt_tokens == 2 and reply.usage.completion_tokens == len(local.answer)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4", messages=messages)
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.chat.completions.create(model="steer", messages=messages, n=2)


def test_curl_against_a_served_program(ppl_server):
    """curl: the answer of the server's budget (--particles 300) and seed 1, and a 404 in OpenAI's form."""
    if shutil.which("curl") is None:
        pytest.skip("no curl")

    def curl(body):
        out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", ppl_server.url + "/v1/chat/completions",
                              "-H", "Content-Type: application/json", "-d", json.dumps(body)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        text, code = out.rsplit("\n", 1)
        return int(code), json.loads(text)
    code, body = curl({"model": "steer", "messages": [{"role": "user", "content": "2"}], "seed": 1})
    local = local_run([2], seed=1, particles=300)
    assert code == 200 and body["ppl"]["log_z"] == pytest.approx(local.log_z, abs=1e-5)
    assert body["choices"][0]["message"]["content"] == tokens_text(local.answer)
    code, body = curl({"model": "nope", "messages": [{"role": "user", "content": "2"}]})
    assert code == 404 and body["error"]["code"] == "model_not_found"


@pytest.mark.slow
def test_runs_leave_the_event_loop_free(ppl_server):
    """Two long runs in flight (one at a time, in a worker thread): /health answers at once meanwhile, and each
    request gets its own run (its seed)."""
    from concurrent.futures import ThreadPoolExecutor
    from urllib.request import Request, urlopen

    def post(seed):
        body = {"model": "steer", "messages": [{"role": "user", "content": "2"}], "seed": seed, "particles": 100_000}
        request = Request(ppl_server.url + "/v1/chat/completions", data=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json"})
        with urlopen(request, timeout=120) as reply:
            return json.load(reply)
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(post, seed) for seed in (1, 2)]
        time.sleep(0.5)
        start = time.monotonic()
        with urlopen(ppl_server.url + "/health", timeout=10) as reply:
            assert json.load(reply)["status"] == "ok"
        latency = time.monotonic() - start
        busy = not all(r.done() for r in runs)
        first, second = [r.result()["ppl"] for r in runs]
    assert busy and latency < 0.5, (busy, latency)
    assert (first["seed"], second["seed"]) == (1, 2) and first["log_z"] != second["log_z"]
    assert abs(first["log_z"] - second["log_z"]) < 4 * math.hypot(first["se"], second["se"])


@pytest.fixture(scope="module")
def client():
    """The `.ppl` program's app in this process (FastAPI's test client)."""
    from starlette.testclient import TestClient
    from ppl.serve import app
    return TestClient(app(str(PROGRAM), data=str(DATA), model_name="steer"))


def ask(client, content="1 3", **fields):
    return client.post("/v1/chat/completions",
                       json={"model": "steer", "messages": [{"role": "user", "content": content}], **fields})


def test_ppl_program_reads_the_request_tokens(client):
    """The request's tokens are the program's data `prompt`: the run is `PPLFile.sample` of that program."""
    reply = ask(client, "[1, 3]", seed=5, particles=200, max_tokens=12)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    local = local_run([1, 3], seed=5, particles=200)
    assert body["choices"][0]["message"]["content"] == tokens_text(local.answer)
    assert body["ppl"]["log_z"] == pytest.approx(local.log_z, abs=1e-5)
    assert body["ppl"]["se"] == pytest.approx(local.log_z_se, abs=1e-5)
    assert body["usage"]["prompt_tokens"] == 2 and body["choices"][0]["finish_reason"] in ("stop", "length")
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/v1/models").json()["data"][0]["id"] == "steer"


@pytest.mark.parametrize("fields, status, param", [
    ({"model": "other"}, 404, "model"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "hello"}]}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "1 9"}]}, 400, "messages"),     # token 9 of 4
    ({"n": 3}, 400, "n"),
    ({"stream": True}, 400, "stream"),
    ({"temperature": 0.7}, 400, "temperature"),
    ({"top_p": 0.9}, 400, "top_p"),
    ({"max_tokens": 4}, 400, "max_tokens"),
    ({"stop": ["\n"]}, 400, "stop"),
    ({"logprobs": True}, 400, "logprobs"),
    ({"seed": -1}, 400, "seed"),
    ({"particles": 0}, 400, "particles"),
    ({"particles": 10 ** 9}, 400, "particles"),
])
def test_bad_requests_get_openai_errors(client, fields, status, param):
    body = {"model": "steer", "messages": [{"role": "user", "content": "1"}], **fields}
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_malformed_body_and_unknown_route(client):
    reply = client.post("/v1/chat/completions", content=b"{not json")
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["error"]["message"]
    assert client.get("/v1/nothing").json()["error"]["type"] == "invalid_request_error"


def test_python_factory_sees_the_chat_as_text():
    """A callable program gets the chat rendered by `chat_text` (or `render=`); its decoded answer is the reply."""
    import numpy as np
    from starlette.testclient import TestClient
    from ppl.serve import app, chat_text
    seen = []
    letters = "ab."
    table = np.log([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])

    def make(prompt):
        seen.append(prompt)
        lm = ppl.autoregressive(lambda x: ppl.math.asarray(table, like=x)[x[:, -1]], vocab=3, length=4, eos=2,
                                prompt=[0], decode=lambda seq: "".join(letters[t] for t in seq))
        return lm, {"runtime": "pyro", "particles": 50}
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text",
                                                                                      "text": "ab"}]}]
    for render, text in ((None, "system: be brief\nuser: ab\nassistant:"), (lambda m: m[-1]["content"], "ab")):
        client = TestClient(app(make, model_name="m", render=render))
        reply = client.post("/v1/chat/completions", json={"model": "m", "messages": messages, "seed": 2}).json()
        assert seen[-1] == text
        local = ppl.sample(make(text)[0], method="pf", runtime="pyro", particles=50, seed=2)
        assert reply["choices"][0]["message"]["content"] == local.answer
        assert reply["ppl"]["log_z"] == pytest.approx(local.log_z, abs=1e-6)
    assert chat_text([{"role": "user", "content": "hi"}]) == "hi"


def test_program_refusals(tmp_path):
    """A factory without --allow-python, a .ppl program without a `prompt` datum: errors at start."""
    from ppl.serve import app
    with pytest.raises(ppl.PPLError, match="allow-python"):
        app("gpt2_factory:make")
    with pytest.raises(ppl.PPLError, match="data prompt"):
        app(str(ROOT / "examples" / "steering.ppl"), data=str(DATA))


@pytest.mark.slow
def test_openai_client_against_a_served_gpt2(gpt2_server, factory):
    """The official client, unchanged: the answer and log Z ± se are those of the same run in this process;
    the extra field `particles` sets the budget; an unknown model is the client's NotFoundError."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=gpt2_server.url + "/v1", api_key="x")
    assert [m.id for m in client.models.list()] == ["tiny-gpt2"]
    messages = [{"role": "user", "content": "the cat"}]
    reply = client.chat.completions.create(model="tiny-gpt2", messages=messages, seed=3,
                                           extra_body={"particles": 32})
    target, options = factory.make("the cat")
    local = ppl.sample(target, **{**options, "particles": 32, "seed": 3})
    info = reply.model_extra["ppl"]
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == local.answer and local.answer in local.sequences
    assert info["log_z"] == pytest.approx(local.log_z, abs=1e-4)
    assert info["se"] == pytest.approx(local.log_z_se, abs=1e-4)
    assert (info["generations"], info["method"], info["particles"], info["seed"]) == (32, "pf", 32, 3)
    assert reply.usage.prompt_tokens == 1 + len(factory.tokenizer.encode("the cat"))
    assert 1 <= reply.usage.completion_tokens <= 6
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4", messages=messages)
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.chat.completions.create(model="tiny-gpt2", messages=messages, n=2)
