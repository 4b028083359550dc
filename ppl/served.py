"""Served models and rewards: a sequence base whose steps come from an OpenAI-compatible server, and a process
reward model behind an HTTP endpoint (issue 31).

`ppl.served(base_url, model, ...)` is a sequence model over text. A step of a particle is one request to
`POST {base_url}/v1/completions` with the prompt and the particle's text so far, `stop=[step]` and
`max_tokens` (with `lookahead`, one request gives a particle all its remaining steps; particles asking for one
text share a request with `n=`); the server samples it
(temperature 1, top_p 1: the proposal is the served model itself, so `lm.tilt(reward, lam)` is weighted by
the reward alone). A sequence ends when a step adds no text, when the
server stops for a reason other than the step delimiter (its end-of-sequence token: finish_reason 'stop' with
a text that does not end with `step`, or vLLM's `stop_reason` None), when a step matches the `end` pattern
(its_hub's stop pattern, e.g. r"\\boxed"), or after `length` steps. Where the target needs log p(step)
(`lm ** beta`, products, `ppl.geometric`) the sampled tokens' log-probabilities are requested (`logprobs`),
and a second base scores a step it did not generate with `echo=True, logprobs` (the tokens from the step's
offset on, and, for a step that ended at the generating model's end of sequence, the eos token: `eos_text`
echoed after it); a server that does not return them (`transformers serve` ignores both) is a
`ServedResponseError`.

All requests of a step (one per particle in flight) go out at once over asynchronous HTTP (httpx, on one
background event loop), at most `concurrency` at a time per endpoint, each bounded by `timeout` seconds and
retried `retries` times with exponential backoff on transient faults (no connection, a timeout, a connection
cut mid-answer, HTTP 5xx or 429). Every fault ends as a `ServedError` naming the endpoint.

The served reward protocol (`ppl.served_reward`, `ppl.reward_server`): POST {"prompt": str, "steps": [[str,
...], ...]} (one list of steps per particle) -> {"scores": [[float, ...], ...]} (one score per step); the
reward of a prefix is the score of its newest step, aggregated over steps as the method's `aggregate` says.
"""
import asyncio
import bisect
import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .errors import PPLError, ValueRangeError
from .sequence import SequenceModel


class ServedError(PPLError):
    """A served model or reward failed: `endpoint` names the URL. A run it interrupts sets `completed`."""

    def __init__(self, message, endpoint=None, **kw):
        super().__init__(message, **kw)
        self.endpoint, self.completed = endpoint, None


class ServerUnreachable(ServedError):
    """No connection to the server, or the connection was lost (after the retries)."""


class ServerTimeout(ServedError):
    """The server did not answer within the timeout (after the retries)."""


class ServedResponseError(ServedError):
    """The server answered with an error status, malformed JSON, or not what the protocol asks for."""


class UnknownModelError(ServedError):
    """The server does not serve the requested model."""


TRANSIENT_STATUS = (429, 500, 502, 503, 504)
_loop_lock = threading.Lock()
_loop = None


def _event_loop():
    """The one background event loop that runs every endpoint's requests (started on first use)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="ppl-served", daemon=True).start()
        return _loop


class Endpoint:
    """An HTTP server reached with bounded concurrency, timeouts and retries: `post(path, bodies)` sends all
    bodies at once and returns their JSON answers in order."""

    def __init__(self, base_url, concurrency=8, timeout=60.0, retries=3, backoff=0.25, api_key=None):
        if not isinstance(base_url, str) or not re.match(r"https?://", base_url):
            raise ValueRangeError(f"base_url must be an http(s) URL, got {base_url!r}")
        for what, v, low in (("concurrency", concurrency, 1), ("retries", retries, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueRangeError(f"{what} must be an integer >= {low}, got {v!r}")
        for what, v in (("timeout", timeout), ("backoff", backoff)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or (what == "timeout" and v == 0):
                raise ValueRangeError(f"{what} must be a number of seconds > 0, got {v!r}")
        self.url = base_url.rstrip("/")
        self.concurrency, self.timeout, self.retries, self.backoff = concurrency, float(timeout), retries, backoff
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = self._sem = None

    def __repr__(self):
        return f"Endpoint({self.url!r})"

    async def _request(self, method, path, body):
        import httpx2 as httpx
        if self._client is None:       # made on the loop that uses it
            self._client = httpx.AsyncClient(headers=self.headers, timeout=self.timeout, limits=httpx.Limits(
                max_connections=self.concurrency, max_keepalive_connections=self.concurrency))
            self._sem = asyncio.Semaphore(self.concurrency)
        url, error = self.url + path, None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                async with self._sem:
                    r = await asyncio.wait_for(self._client.request(method, url, json=body), self.timeout)
            except (asyncio.TimeoutError, httpx.TimeoutException):
                error = ServerTimeout(f"{method} {url}: no answer within {self.timeout:g} s", url)
                continue
            except httpx.ConnectError as e:
                error = ServerUnreachable(f"{method} {url}: cannot connect ({e or type(e).__name__})", url)
                continue
            except httpx.TransportError as e:
                error = ServerUnreachable(f"{method} {url}: the connection failed mid-answer "
                                          f"({type(e).__name__}: {e})", url)
                continue
            if r.status_code in TRANSIENT_STATUS:
                error = ServedResponseError(f"{method} {url}: HTTP {r.status_code}: {r.text[:300]}", url)
                continue
            if r.status_code >= 400:
                raise ServedResponseError(f"{method} {url}: HTTP {r.status_code}: {r.text[:300]}", url)
            try:
                return r.json()
            except ValueError:
                raise ServedResponseError(f"{method} {url}: malformed JSON in the answer: {r.text[:200]!r}",
                                          url) from None
        tries = self.retries + 1
        raise type(error)(f"{error.message} (after {tries} {'try' if tries == 1 else 'tries'})", url)

    async def _all(self, method, path, bodies):
        tasks = [asyncio.ensure_future(self._request(method, path, b)) for b in bodies]
        try:
            return await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def post(self, path, bodies):
        """The JSON answers to POST `path` with each of `bodies`, all in flight at once (up to `concurrency`)."""
        if not bodies:
            return []
        return asyncio.run_coroutine_threadsafe(self._all("POST", path, list(bodies)), _event_loop()).result()

    def get(self, path):
        return asyncio.run_coroutine_threadsafe(self._request("GET", path, None), _event_loop()).result()


def _field(answer, url, *keys):
    """answer[k0][k1]... or a ServedResponseError naming what is missing."""
    value = answer
    for k in keys:
        try:
            value = value[k]
        except (KeyError, IndexError, TypeError):
            raise ServedResponseError(f"POST {url}: the answer has no {'.'.join(map(str, keys))}: "
                                      f"{json.dumps(answer)[:200]}", url) from None
    return value


class ServedModel(SequenceModel):
    """A sequence base over text whose steps a served model generates (see `ppl.served`)."""

    served = True

    def __init__(self, endpoint, model, step, max_tokens, length, prompt, end, extra, name, lookahead=False,
                 eos_text=None):
        super().__init__(lambda prefixes: None, 2, length, name=name)
        if step is not None and (not isinstance(step, str) or not step):
            raise ValueRangeError(f"step must be a non-empty delimiter text or None, got {step!r}")
        if not isinstance(lookahead, bool):
            raise ValueRangeError(f"lookahead must be True or False, got {lookahead!r}")
        if lookahead and step is None:
            raise ValueRangeError("lookahead=True cuts a generation into steps at the delimiter: give step= (a "
                                  "step of max_tokens tokens cannot be cut from text)")
        if eos_text is not None and (not isinstance(eos_text, str) or not eos_text):
            raise ValueRangeError(f"eos_text must be the text the server reads as its end-of-sequence token, got "
                                  f"{eos_text!r}")
        self.lookahead, self.eos_text = lookahead, eos_text
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueRangeError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        if not isinstance(prompt, str):
            raise ValueRangeError(f"prompt must be text, got {type(prompt).__name__}")
        self.endpoint, self.model, self.step, self.max_tokens = endpoint, model, step, max_tokens
        self.prompt_text, self.extra = prompt, dict(extra or {})
        self.end = None if end is None else re.compile(end)
        self.vocab = self.eos = self.pad = self.decode = self.framework = None
        self.prompt, self.delimiters = (), step
        self._checked = False
        self.takes_n = None         # whether the server answers n choices to n=: unknown until asked

    def continued(self, text):
        """This base with `text` after its prompt (`ppl serve`: the request's chat after the program's own)."""
        out = copy.copy(self)
        out.prompt_text = self.prompt_text + text
        return out

    def describe(self):
        return f"{self.name}[served {self.model or '(its model)'} at {self.endpoint.url}, length<={self.length} steps]"

    @property
    def completions(self):
        return self.endpoint.url + "/v1/completions"

    @property
    def signature(self):
        """What every base of one target must share: served text steps, the step budget and the prompt."""
        return {"served": self.served, "length": self.length, "step": self.step, "prompt": self.prompt_text,
                "lookahead": self.lookahead}

    def check_model(self):
        """Once: the model is one that GET /v1/models lists (the only one when model=None); a server without
        that route is taken at its word."""
        if self._checked:
            return
        try:
            listing = self.endpoint.get("/v1/models")
        except ServedResponseError:
            listing = None
        ids = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)] \
            if isinstance(listing, dict) else []
        if self.model is None:
            if len(ids) != 1:
                raise UnknownModelError(f"{self.endpoint.url}/v1/models lists {ids or 'no models'}: name the model "
                                        f"with ppl.served(..., model=...)", self.endpoint.url)
            self.model = ids[0]
        elif ids and self.model not in ids:
            raise UnknownModelError(f"{self.endpoint.url} does not serve model {self.model!r}; GET /v1/models lists "
                                    f"{', '.join(map(repr, ids))}", self.endpoint.url)
        self._checked = True

    def _body(self, prompt, **kw):
        return {"model": self.model, "prompt": prompt, "temperature": 1.0, "top_p": 1.0, **self.extra, **kw}

    def generate(self, prefixes, seeds, logprobs=False, steps_left=None):
        """The next steps after each prefix (generated text so far): for each, a list of (step text, ended,
        log p(step) or None) — one step, or with `lookahead` the rest of one generation of at most
        `steps_left` steps (one number per prefix), cut at the delimiters.

        Particles asking the same thing (the same prefix and steps left: the first step of all, the copies
        that resampling made of one particle) share one request with `n=` their number, as plain sampling of
        n sequences would; a server that answers fewer choices than `n` (it ignores `n`, as `transformers
        serve` does) is asked for the others one request each, and is not asked with `n` again. The n choices
        of one request are independent draws given the prompt, so the law is that of separate requests."""
        self.check_model()
        steps_left, groups = self.asks(prefixes, steps_left)
        stop = {} if self.step is None or self.lookahead else {"stop": [self.step]}
        fields = dict(stop, **({"logprobs": 1} if logprobs else {}))
        if self.takes_n is False:
            groups = [[i] for i in range(len(prefixes))]

        def body(i, n):
            return self._body(self.prompt_text + prefixes[i], seed=int(seeds[i]), **({"n": n} if n > 1 else {}),
                              max_tokens=self.max_tokens * (steps_left[i] if self.lookahead else 1), **fields)
        out = [None] * len(prefixes)
        while groups:       # at most twice: every answer has a choice, so the members left over ask alone
            missing = []
            for members, answer in zip(groups, self.endpoint.post("/v1/completions", [body(m[0], len(m))
                                                                                      for m in groups])):
                _field(answer, self.completions, "choices", 0)      # at least one choice
                choices = answer["choices"]
                if len(members) > 1:
                    self.takes_n = len(choices) >= len(members)
                for i, choice in zip(members, choices):
                    out[i] = self._pieces(choice, logprobs, steps_left[i])
                missing += members[len(choices):]
            groups = [[i] for i in missing]
        return out

    @staticmethod
    def asks(prefixes, steps_left=None):
        """(the steps left of each prefix, at least 1; the groups of prefixes that ask for the same text: the
        same prefix and steps left), as `generate` sends them: a group is one request to a server that
        answers n=."""
        steps_left = [1] * len(prefixes) if steps_left is None else [max(int(k), 1) for k in steps_left]
        same = {}
        for i, key in enumerate(zip(prefixes, steps_left)):
            same.setdefault(key, []).append(i)
        return steps_left, list(same.values())

    def _pieces(self, choice, logprobs, steps_left):
        """The steps of one choice of an answer (see `generate`)."""
        url = self.completions
        text, finish = _field(choice, url, "text"), choice.get("finish_reason")
        if not isinstance(text, str):
            raise ServedResponseError(f"POST {url}: choices[0].text is {type(text).__name__}, not text", url)
        if self.step is not None and not text.endswith(self.step) and choice.get("stop_reason") == self.step:
            text += self.step           # vLLM leaves the stop string out of the text
        values = self._log_probs(choice, url) if logprobs else None
        if not self.lookahead:
            ended = self._ends(text, text.endswith(self.step) if self.step is not None else False, finish)
            return [(text, ended, None if values is None else float(sum(v for v, _ in values)))]
        starts = [0] + [k + len(self.step) for k in _find_all(text, self.step)]
        if starts[-1] == len(text) and len(starts) > 1 and finish != "stop":
            starts.pop()        # the text ends at a delimiter and goes on: no empty step after it
        log_p = np.zeros(len(starts))           # each token's to the step it starts in (eos: the last)
        for v, o in values or ():
            log_p[bisect.bisect_right(starts, o) - 1] += v
        ends = starts[1:] + [len(text)]
        starts = starts[:steps_left]            # the steps past the budget are not taken
        out = []
        for k, (a, b) in enumerate(zip(starts, ends)):
            piece = text[a:b]
            ended = self._ends(piece, piece.endswith(self.step), finish if k == len(starts) - 1 else "length")
            out.append((piece, ended, None if values is None else float(log_p[k])))
            if ended:
                break
        return out

    def _ends(self, text, at_delimiter, finish):
        """Why a step ends its sequence: "eos" (no text, or the server's own stop before the delimiter), "end"
        (the `end` pattern), or None: it goes on."""
        if not text or (finish == "stop" and not at_delimiter):
            return "eos"
        return "end" if self.end is not None and self.end.search(text) is not None else None

    def _log_probs(self, choice, url):
        """[(log p of a generated token, its offset in the generated text)] (offsets from the tokens' texts)."""
        lp = choice.get("logprobs") or {}
        values = lp.get("token_logprobs")
        if values is None:
            raise ServedResponseError(f"POST {url} returned no token log-probabilities (choices[0].logprobs); "
                                      f"this target needs log p of each step (** beta, products, geometric): "
                                      f"serve the model with a server that returns logprobs (e.g. vLLM), or "
                                      f"use the served model as it is (lm.tilt)", url)
        tokens = lp.get("tokens")
        if tokens is None:
            if self.lookahead:
                raise ServedResponseError(f"POST {url} returned token log-probabilities without their tokens "
                                          f"(choices[0].logprobs.tokens); lookahead=True needs them to cut a "
                                          f"generation's log-probability into steps", url)
            tokens = [""] * len(values)
        offsets = np.cumsum([0] + [len(t) for t in tokens[:-1]]) if tokens else []
        return [(v, int(o)) for v, o in zip(values, offsets) if v is not None]

    def score(self, prefixes, steps, eos=None):
        """log p(step | prompt + prefix) of text this model did not generate: the echoed prompt's token
        log-probabilities from the step's offset on; where `eos[i]` (the step ended the sequence at the other
        model's end of sequence) also log p(eos | prompt + prefix + step), echoing `eos_text` after it."""
        self.check_model()
        url = self.completions
        eos = [False] * len(steps) if eos is None else list(eos)
        if any(eos) and self.eos_text is None:
            raise ValueRangeError(f"{self.name} must score a step that ended at the end of sequence, which needs "
                                  f"its log p(eos) from {self.completions}: give ppl.served(..., eos_text=...), "
                                  f"the text the server reads as its eos token (e.g. '<|endoftext|>')")
        contexts = [self.prompt_text + x for x in prefixes]
        steps = [s + self.eos_text if e else s for s, e in zip(steps, eos)]
        answers = self.endpoint.post("/v1/completions", [
            self._body(c + s, max_tokens=1, echo=True, logprobs=1) for c, s in zip(contexts, steps)])
        out = []
        for a, c, s in zip(answers, contexts, steps):
            lp = _field(a, url, "choices", 0).get("logprobs") or {}
            values, offsets = lp.get("token_logprobs"), lp.get("text_offset")
            if values is None or offsets is None:
                raise ServedResponseError(f"POST {url} (echo=True, logprobs) returned no token log-probabilities "
                                          f"with text offsets for the prompt; a second served model must score "
                                          f"text it did not generate: use a server that echoes them (e.g. vLLM)",
                                          url)
            out.append(float(sum(v for v, o in zip(values, offsets) if v is not None and len(c) <= o < len(c + s))))
        return out


def _find_all(text, sub):
    """The start of each occurrence of `sub` in `text`, left to right, not overlapping."""
    out, k = [], text.find(sub)
    while k >= 0:
        out.append(k)
        k = text.find(sub, k + len(sub))
    return out


def served(base_url, model=None, *, step="\n\n", max_tokens=256, length=16, prompt="", end=None, concurrency=8,
           timeout=60.0, retries=3, backoff=0.25, api_key=None, extra=None, name=None, lookahead=False,
           eos_text=None):
    """A sequence model served by an OpenAI-compatible server at `base_url` (vLLM, SGLang, llama.cpp,
    `transformers serve`): text in, text out.

    A step is one `/v1/completions` request: `prompt` + the text so far, at most `max_tokens` new tokens,
    stopping at `step` (the delimiter, kept in the text; None: a step is `max_tokens` tokens). A sequence ends
    when the server stops on its own (end of sequence), a step adds no text, a step matches the regular
    expression `end`, or after `length` steps. `model` is the served model's name (None: the only one GET
    /v1/models lists). Requests are sent with temperature 1 and top_p 1 plus the fields of `extra` (e.g. a
    server's own sampling settings; a server samples with its defaults for what a request does not set, and
    that sampler is the proposal). `concurrency` requests at a time, each within `timeout` seconds, `retries`
    retries after `backoff` · 2^k seconds on transient faults; `api_key` is sent as a bearer token.

    `lookahead=True`: a request asks for the rest of the sequence (at most `max_tokens` · the steps left, no
    stop string), which is cut into steps at the `step` delimiter; the particle takes the first step now and
    keeps the others as its next ones, so a sequence costs one request, as plain sampling does, until
    resampling copies it: the first copy keeps the rest, the others ask afresh, together (a kept rest is a draw from
    p(rest | text so far) whatever the resampling chose, since the weights read only the steps taken; two
    copies sharing it would not be independent). The law is then the server's law of one whole generation cut
    at the delimiters (a step is not capped at `max_tokens`); without lookahead it is the law of step-wise
    requests, which differs where re-tokenizing the text so far changes the tokens.

    Particles asking for the same text (the first step of all; the copies of one particle) share one request
    with `n=` their number where the server answers n choices (vLLM); `takes_n` is then True, and False once a
    server answered fewer (`transformers serve` ignores `n`), after which each asks alone.

    Rewards of a target with a served base read text: `reward(texts)` gets the particles' generated texts (a
    list of str), `reward(prompt, steps)` the prompt and each particle's list of steps (`ppl.served_reward`);
    each returns one real per particle."""
    endpoint = Endpoint(base_url, concurrency, timeout, retries, backoff, api_key)
    return ServedModel(endpoint, model, step, max_tokens, length, prompt, end, extra, name, lookahead, eos_text)


def served_reward(url, *, concurrency=8, timeout=60.0, retries=3, backoff=0.25, api_key=None, name="served_reward"):
    """A process reward model at `url` (the protocol of `ppl.reward_server`: POST {"prompt", "steps"} ->
    {"scores"}), as a reward `reward(prompt, steps)` of a served target: one request for all particles, the
    newest step's score of each."""
    endpoint = Endpoint(url, concurrency, timeout, retries, backoff, api_key)

    def reward(prompt, steps):
        steps = [list(s) for s in steps]
        answer = endpoint.post("", [{"prompt": prompt, "steps": steps}])[0]
        scores = _field(answer, endpoint.url, "scores")
        if not isinstance(scores, list) or len(scores) != len(steps) or any(
                not isinstance(sc, list) or len(sc) != len(st) for sc, st in zip(scores, steps)):
            got = [len(sc) if isinstance(sc, list) else sc for sc in scores] if isinstance(scores, list) else scores
            raise ServedResponseError(f"POST {endpoint.url}: the reward must return one score per step of each of the "
                                      f"{len(steps)} particles ({[len(s) for s in steps]} scores); got {got}",
                                      endpoint.url)
        try:
            return np.array([float(sc[-1]) if sc else 0.0 for sc in scores])
        except (TypeError, ValueError):
            raise ServedResponseError(f"POST {endpoint.url}: scores must be numbers, got {scores!r:.200}",
                                      endpoint.url) from None
    reward.__name__ = reward.__qualname__ = name
    reward.endpoint = endpoint
    return reward


class JSONHandler(BaseHTTPRequestHandler):
    """A request handler that answers JSON (`send_json`) and logs nothing."""

    def send_json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class RewardServer:
    """A Python reward served over HTTP under the protocol of `ppl.served_reward`; `url`, `close()`, a context
    manager, or `serve_forever()` in a process of its own."""

    def __init__(self, fn, host, port):
        class Handler(JSONHandler):
            def do_POST(self):
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    prompt, steps = body["prompt"], body["steps"]
                    if not isinstance(prompt, str) or not isinstance(steps, list):
                        raise ValueError("'prompt' must be text and 'steps' a list of lists of text")
                except (ValueError, KeyError, TypeError) as e:
                    return self.send_json(400, {"error": f"bad request: {e}"})
                try:
                    scores = [[float(v) for v in row] for row in fn(prompt, steps)]
                except Exception as e:  # noqa: BLE001 (the user's reward failed: the client gets the reason)
                    return self.send_json(500, {"error": f"the reward raised {type(e).__name__}: {e}"})
                self.send_json(200, {"scores": scores})

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread = None

    def start(self):
        """Serve from a background thread; returns self."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="ppl-reward-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self):
        self.httpd.serve_forever()

    def close(self):
        self.httpd.shutdown() if self._thread is not None else None
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def reward_server(fn, host="127.0.0.1", port=0, start=True):
    """Serve `fn(prompt, steps) -> scores` (one list of step texts per particle in, one list of floats per
    particle out, one score per step) under the protocol of `ppl.served_reward` at http://host:port (port 0:
    a free one; `.url` says which). With `start` it serves from a background thread; else call
    `.serve_forever()`, e.g. in a process of its own."""
    server = RewardServer(fn, host, port)
    return server.start() if start else server
