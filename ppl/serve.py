"""`ppl serve`: a steering program served as an OpenAI-compatible chat endpoint (issue 31, item 3).

`POST /v1/chat/completions` answers a chat request by sampling a sequence target for the request's prompt and
returning the chosen answer (`Result.answer`) as the assistant message; `GET /v1/models` lists the one model,
`GET /health` says the server is up. The response is a standard `chat.completion` object plus the field
`"ppl"`: log Z, its standard error, the number of generations, the method, the ESS per step, the particles and
the seed of the run. A program is

* a Python factory `make(prompt) -> target` or `-> (target, options)`: `prompt` is the chat as text
  (`chat_text`, or the `render=` of `app`), the target a sequence target of the Python API (e.g. a Hugging
  Face model in memory whose tokenizer encodes the prompt, `decode=` giving text), `options` those of
  `ppl.sample` (method, runtime, particles, ...);
* a `.ppl` program that declares `data prompt_length : int` and `data prompt : int[prompt_length]` and uses
  `prompt` as the prompt of its sequences: the request's messages are token lists written as the language
  writes them (from 1: "1 3" or "[1, 3]"), concatenated; the answer is written back the same way;
* a `.ppl` program whose sequences are served models (`served("url", ...)`, over text): each base's prompt is
  followed by the chat as text (`chat_text`), and the answer is text (its_hub's inference as a service: a
  chat request answered by steering a served model).

Options, lowest precedence first: the program's (the `.ppl` file's `sample` statement or the factory's), the
server's (`method=`, `runtime=`, `particles=`, `seed=`), the request's `seed` and extra field `particles`
(at most `max_particles`). What a request asks and the program cannot honour — `n` > 1, `stream`, a
`temperature` or `top_p` other than 1 (the program samples its declared target), `max_tokens` below the
program's length, `stop`, `logprobs`, tools — is a 400 error in OpenAI's form `{"error": {"message", "type",
"param", "code"}}`, as is an option the method refuses (a `ValueRangeError`, e.g. particles not a multiple of
beam_width); an unknown model is a 404; another `PPLError` of the run a 500 ("server_error"). `usage` counts the
prompt's tokens and the answer's. A program is built once per prompt (the last `CACHED` kept, so that a repeated
prompt reuses compiled runs); runs are CPU-bound: they run in worker threads, at most `concurrency` at a time
(default 1), the event loop staying free.
"""
import argparse
import asyncio
import functools
import importlib
import os
import re
import sys
import threading
import time
import uuid
from collections import OrderedDict

from .errors import PPLError, ValueRangeError

#: request fields that only have their neutral value here (the program samples its declared target)
NEUTRAL = {"temperature": 1, "top_p": 1, "frequency_penalty": 0, "presence_penalty": 0}
#: request fields the server cannot honour when given (not null, not false, not empty)
REFUSED = ("stop", "logprobs", "top_logprobs", "tools", "tool_choice", "functions", "function_call",
           "logit_bias", "audio", "modalities", "prediction")
#: programs (a target and its options per prompt) kept built, so that a repeated prompt reuses compiled runs
CACHED = 8


class RequestError(PPLError):
    """A chat request the server cannot honour: the HTTP status, OpenAI's error type, the field at fault."""

    def __init__(self, message, status=400, kind="invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status, self.kind, self.param, self.code = status, kind, param, code

    def body(self):
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


def chat_text(messages):
    """The default rendering of a chat as one prompt text: a single message is its content; several are
    `role: content` lines, then `assistant:` (the turn the answer takes)."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"


def parse_tokens(text):
    """Token ids (from 0) of a list written as the language writes it, from 1: "1 3", "1, 3" or "[1, 3]"."""
    words = [w for w in re.split(r"[\s,]+", text.strip().removeprefix("[").removesuffix("]")) if w]
    if not all(w.isdigit() and int(w) >= 1 for w in words):
        raise RequestError(f"a message of this program is a list of tokens counted from 1 (e.g. \"1 3\" or "
                           f"\"[1, 3]\"), got {text[:80]!r}", param="messages")
    return [int(w) - 1 for w in words]


class PythonProgram:
    """A factory `make(prompt text) -> target | (target, options)`; the chat is rendered by `render`."""

    def __init__(self, make, render=chat_text):
        if not callable(make):
            raise PPLError(f"a served program must be a .ppl file or a callable make(prompt) -> target, got "
                           f"{type(make).__name__}")
        self.make, self.render = make, render
        self.name = getattr(make, "__name__", type(make).__name__)

    def prompt(self, messages):
        return self.render(messages)

    def build(self, prompt):
        built = self.make(prompt)
        target, options = built if isinstance(built, tuple) else (built, {})
        if not _sequence_bases(target):
            raise PPLError(f"the served program {self.name} must return a sequence target (ppl.autoregressive "
                           f"and its algebra), got {type(target).__name__}")
        from .api import sample
        return target, dict(options), functools.partial(sample, target)

    @staticmethod
    def text(answer):
        return answer if isinstance(answer, str) else str(answer)


class PPLProgram:
    """A `.ppl` program whose sequences read the data `prompt` (tokens) of length `prompt_length`, or whose
    sequences are served models (`served(...)`, text): their prompts are then followed by the request's chat."""

    def __init__(self, path, data=None, target=None, allow_python=False, method=None):
        from .lang import load_ppl
        from .lang.load import _read_data
        self.path, self.allow_python, self.method = path, allow_python, method
        self.data = _read_data(data, path)
        checked = load_ppl(path, data=self.data, allow_python=allow_python, symbolic=True)
        self.served = any(getattr(s, "served", False) for s in checked.sequences.values())
        if not self.served and ("prompt" not in checked.data or "prompt_length" not in checked.data):
            raise PPLError(f"{path}: a served .ppl program takes the request's tokens as its prompt: declare "
                           f"`data prompt_length : int` and `data prompt : int[prompt_length]` and give the "
                           f"sequences `prompt = prompt` (or its sequences are served models, which take the "
                           f"chat as text)")
        self.target = target or checked.default_name()
        if self.target not in checked.named() and self.target not in checked.unbuilt:
            raise PPLError(f"{path}: no target or sequence named {self.target!r}")
        self.name = os.path.basename(path)
        self.loaded = load_ppl(path, data=self.data, allow_python=allow_python) if self.served else None

    def prompt(self, messages):
        if self.served:
            return chat_text(messages)
        return tuple(t for m in messages for t in parse_tokens(m["content"]))

    def build(self, prompt):
        from .lang import load_ppl
        if self.served:     # the served bases' prompts are followed by the chat
            from .api import sample
            prog = self.loaded
            target = prog.target(self.target).substitute(
                lambda leaf: leaf.continued(prompt) if getattr(leaf, "served", False) else leaf)
            run = functools.partial(sample, target)
        else:
            data = {**self.data, "prompt": [t + 1 for t in prompt], "prompt_length": len(prompt)}
            try:
                prog = load_ppl(self.path, data=data, allow_python=self.allow_python)
            except PPLError as e:     # the program loaded at start: what fails now is the request's prompt
                raise RequestError(f"the prompt {[t + 1 for t in prompt]} does not fit {self.name}: {e}",
                                   param="messages") from None
            target, run = prog.target(self.target), functools.partial(prog.sample, self.target)
        if prog.kind(self.target) != "sequence":
            raise PPLError(f"{self.path}: {self.target!r} is not a sequence target")
        options, _ = prog.run_options(self.target, self.method)   # the file's, or those another method takes
        return target, options, run

    @staticmethod
    def text(answer):
        from .cli import _tokens_text
        return _tokens_text(answer) if isinstance(answer, (list, tuple)) else str(answer)


def load_program(spec, data=None, target=None, allow_python=False, method=None):
    """The program named by `spec`: a `.ppl` path (run with `method`, else its own), or `module:function` (a
    Python factory, only with `allow_python`; the module looked up in the working directory first, then on the
    Python path)."""
    if not isinstance(spec, str):
        return PythonProgram(spec)
    if spec.endswith(".ppl"):
        return PPLProgram(spec, data, target, allow_python, method)
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise PPLError(f"program {spec!r}: give a .ppl file or a Python factory as module:function")
    if not allow_python:
        raise PPLError(f"program {spec!r} imports Python module {module!r}: refused without --allow-python")
    if data is not None or target is not None:
        raise PPLError(f"program {spec!r}: --data and --target are options of a .ppl program")
    sys.path.insert(0, os.getcwd())
    try:
        make = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise PPLError(f"program {spec!r}: cannot import it ({e})") from None
    finally:
        sys.path.remove(os.getcwd())
    return PythonProgram(make)


def _sequence_bases(target):
    """The sequence models a target is built from ([] if it has other bases, or is no target)."""
    children = target.children() if hasattr(target, "children") else ()
    if not children:
        return [target] if getattr(target, "kind", None) == "sequence" else []
    bases = [_sequence_bases(c) for c in children]
    return [b for c in bases for b in c] if all(bases) else []


class Server:
    """What the endpoints share: the program, the model's name, the server's options, the built programs
    (per prompt, at most `CACHED`), the run slots."""

    def __init__(self, program, model_name, options, concurrency):
        self.program, self.model_name, self.options = program, model_name, options
        self.built, self.lock = OrderedDict(), threading.Lock()
        self.slots = asyncio.Semaphore(concurrency)
        self.created = int(time.time())

    def model_card(self):
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "ppl"}

    def build(self, prompt):
        """(target, options, sample(**options)) of a prompt, built once while among the last `CACHED`."""
        with self.lock:
            if prompt not in self.built:
                self.built[prompt] = self.program.build(prompt)
                if len(self.built) > CACHED:
                    self.built.popitem(last=False)
            self.built.move_to_end(prompt)
            return self.built[prompt]

    def run(self, prompt, overrides, max_tokens):
        """(Result, the first base, the options used) of one request, in a worker thread."""
        target, options, sample = self.build(prompt)
        base = _sequence_bases(target)[0]
        if max_tokens is not None and max_tokens < getattr(base, "length", 0):
            raise RequestError(f"max_tokens={max_tokens}: the program generates up to {base.length} tokens; give "
                               f"at least that or omit it", param="max_tokens")
        options = {"method": "pf", "seed": 0, **options, **self.options, **overrides, "progress": False}
        return sample(**options), base, options


def check_request(body, model_name, max_particles):
    """(messages, overrides, max_tokens) of a chat request, or a RequestError saying what cannot be honoured."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if body.get("model") != model_name:
        raise RequestError(f"The model {body.get('model')!r} does not exist; this server serves {model_name!r}",
                           status=404, param="model", code="model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content}", param="messages")
    out = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):     # content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise RequestError("only text content parts can be served", param="messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(content, str):
            raise RequestError("each message must be an object with a string role and text content",
                               param="messages")
        out.append({"role": m["role"], "content": content})
    if body.get("n") not in (None, 1):
        raise RequestError("n must be 1: a run returns one chosen answer (ask for more particles instead)",
                           param="n")
    if body.get("stream"):
        raise RequestError("stream is not supported: the answer is chosen at the end of the run", param="stream")
    for field, neutral in NEUTRAL.items():
        if body.get(field) not in (None, neutral):
            raise RequestError(f"{field} must be {neutral} or omitted: the program samples its declared target "
                               f"(sharpen or steer it in the program)", param=field)
    for field in REFUSED:
        if body.get(field) not in (None, False, [], {}):
            raise RequestError(f"{field} is not supported by a steering program", param=field)
    fmt = body.get("response_format")
    if fmt not in (None, {"type": "text"}):
        raise RequestError("response_format must be text", param="response_format")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
        raise RequestError(f"max_tokens must be an integer, got {max_tokens!r}", param="max_tokens")
    overrides = {}
    for field, low, high in (("seed", 0, 2 ** 63 - 1), ("particles", 1, max_particles)):
        v = body.get(field)
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise RequestError(f"{field} must be an integer in [{low}, {high}], got {v!r}", param=field)
            overrides[field] = v
    return out, overrides, max_tokens


def completion(result, base, options, model_name, text):
    """The chat.completion object of a run, with the run's log Z ± se and generations under "ppl"."""
    import numpy as np
    d = result.diagnostics
    chosen, lengths = d.get("chosen"), d.get("lengths")
    completion_tokens, finish = 0, "stop"
    if chosen is not None and lengths is not None:
        completion_tokens = int(np.ravel(lengths)[chosen])
        tokens = result.samples.get("tokens")
        if tokens is not None and completion_tokens:
            last = int(tokens.reshape(-1, tokens.shape[-1])[chosen, completion_tokens - 1])
            finish = "stop" if getattr(base, "eos", None) == last else "length"
    ess = d.get("ess")
    prompt = getattr(base, "prompt", ())
    prompt_tokens = 0 if isinstance(prompt, str) else len(prompt)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model_name, "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text(result.answer)},
                     "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
        "ppl": {"log_z": result.log_z, "se": result.log_z_se, "generations": d.get("generations"),
                "method": result.method, "particles": options.get("particles"), "seed": options.get("seed"),
                "ess": None if ess is None else [float(e) for e in np.ravel(ess)], "wall_time": result.wall_time},
    }


def app(program, model_name="ppl", method=None, runtime=None, particles=None, seed=None, max_particles=100_000,
        concurrency=1, render=None, data=None, target=None, allow_python=False):
    """The ASGI app (FastAPI) serving `program`: a `.ppl` path, `module:function` (with `allow_python`) or a
    callable `make(prompt) -> target | (target, options)` (see the module docstring); `render(messages) ->
    prompt text` replaces `chat_text` for a Python factory. `method`, `runtime`, `particles`, `seed` override
    the program's options; a request may set `seed` and `particles` (<= `max_particles`)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    program = load_program(program, data, target, allow_python, method)
    if render is not None:
        if not isinstance(program, PythonProgram):
            raise PPLError("render= applies to a Python factory; a .ppl program reads tokens")
        program.render = render
    for what, v, low in (("max_particles", max_particles, 1), ("concurrency", concurrency, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise PPLError(f"{what} must be an integer >= {low}, got {v!r}")
    options = {k: v for k, v in (("method", method), ("runtime", runtime), ("particles", particles),
                                 ("seed", seed)) if v is not None}
    server = Server(program, model_name, options, concurrency)
    api = FastAPI(title=f"ppl serve {program.name}")

    def error(e):
        return JSONResponse(e.body(), status_code=e.status)

    @api.exception_handler(HTTPException)
    async def http_error(request, e):      # unknown routes and methods, in OpenAI's form
        return error(RequestError(str(e.detail), status=e.status_code,
                                  kind="invalid_request_error" if e.status_code < 500 else "server_error"))

    @api.exception_handler(Exception)
    async def internal_error(request, e):      # a bug or a failing user function: still OpenAI's form
        return error(RequestError(f"internal error: {type(e).__name__}: {e}", status=500, kind="server_error"))

    @api.get("/health")
    async def health():
        return {"status": "ok", "model": model_name}

    @api.get("/v1/models")
    async def models():
        return {"object": "list", "data": [server.model_card()]}

    @api.get("/v1/models/{name}")
    async def model(name: str):
        if name != model_name:
            return error(RequestError(f"The model {name!r} does not exist", status=404, param="model",
                                      code="model_not_found"))
        return server.model_card()

    @api.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            try:
                body = await request.json()
            except ValueError:
                raise RequestError("the request body is not valid JSON") from None
            messages, overrides, max_tokens = check_request(body, model_name, max_particles)
            prompt = program.prompt(messages)
            async with server.slots:
                result, base, used = await run_in_threadpool(server.run, prompt, overrides, max_tokens)
            return completion(result, base, used, model_name, program.text)
        except RequestError as e:
            return error(e)
        except ValueRangeError as e:     # an option out of range for the method, e.g. the request's particles
            return error(RequestError(f"the program cannot run this request: {e}"))
        except PPLError as e:
            return error(RequestError(f"the program failed on this request: {e}", status=500, kind="server_error"))
    return api


def run(program, host="127.0.0.1", port=8000, log_level="warning", **options):
    """Serve `program` (see `app`, which takes `options`) on http://host:port until interrupted."""
    import uvicorn
    served = app(program, **options)
    print(f"serving {options.get('model_name', 'ppl')!r} on http://{host}:{port}/v1", file=sys.stderr, flush=True)
    uvicorn.run(served, host=host, port=port, log_level=log_level)


def add_arguments(parser):
    """The arguments of `ppl serve PROGRAM [...]` on an argparse parser."""
    parser.add_argument("program", help="a .ppl program (its sequences read the data prompt) or, with "
                                        "--allow-python, a Python factory module:function (prompt -> target)")
    parser.add_argument("--data", help="a JSON file with the values of the .ppl program's other data")
    parser.add_argument("--target", help="the .ppl target to serve (default: the first `sample` statement's)")
    parser.add_argument("--allow-python", action="store_true",
                        help="allow a Python factory and `use NAME from \"module:attr\"` in the program")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="default 8000")
    parser.add_argument("--model-name", default="ppl", help="the model name requests give (default ppl)")
    parser.add_argument("--method", help="pf, pg, bon, wbon or beam (default: the program's, else pf)")
    from .backends import runtime as runtimes
    parser.add_argument("--runtime", choices=runtimes.names(),
                        help=f"default: the program's, else {runtimes.DEFAULT}")
    parser.add_argument("--particles", type=int, help="the budget of a run (default: the program's)")
    parser.add_argument("--seed", type=int, help="the seed of a request that gives none (default: the program's)")
    parser.add_argument("--max-particles", type=int, default=100_000,
                        help="the most particles a request may ask for (default 100000)")
    parser.add_argument("--concurrency", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--log-level", default="warning", help="uvicorn's log level (default warning)")
    return parser


def main(args):
    """`ppl serve` with parsed `args`: serve until interrupted; 2 on a PPLError (printed), 130 on Ctrl-C."""
    try:
        run(args.program, host=args.host, port=args.port, log_level=args.log_level, model_name=args.model_name,
            method=args.method, runtime=args.runtime, particles=args.particles, seed=args.seed,
            max_particles=args.max_particles, concurrency=args.concurrency, data=args.data, target=args.target,
            allow_python=args.allow_python)
    except PPLError as e:
        print(str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(add_arguments(argparse.ArgumentParser(prog="ppl serve")).parse_args()))
