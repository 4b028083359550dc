"""Effect handlers of the site interpreter (`lower.Evaluator.run`), as NumPyro's `apply_stack`.

Each step of the evaluation order is a message {"type": "latent" | "det", "name", "node", "value", "stop"}
that goes through the evaluator's stack of handlers, innermost first (`process`); the first handler that gives
it a value wins, a deterministic site that none gives is computed from what it reads, and the handlers that saw
the message see it again on the way out, outermost last (`postprocess`). The data and observed values the
sites read go through the stack once, as an "inputs" message {"obs", "data"} ({model: {name: array}}), when a
handler is pushed or popped. The stack is resolved in Python while a runtime traces the site functions (jit,
vmap): it adds nothing to the compiled program.

    with program.handlers(condition(obs), substitute(data=data)):   # another context's observations and data
        program.log_parts(z)
"""


class Handler:
    """One effect: `process(msg)` on the way in, `postprocess(msg)` on the way out (both may change msg)."""

    def process(self, msg):
        pass

    def postprocess(self, msg):
        pass


def apply_stack(stack, msg):
    """Run `msg` through `stack` (outermost first in the list): process innermost first until one sets "stop",
    then postprocess outward over the handlers that processed it."""
    seen = 0
    for handler in reversed(stack):
        seen += 1
        handler.process(msg)
        if msg["stop"]:
            break
    return seen


def postprocess(stack, msg, seen):
    for handler in stack[len(stack) - seen:]:
        handler.postprocess(msg)


def _override(base, new):
    return {m: {**v, **new.get(m, {})} for m, v in base.items()} if new else base


class substitute(Handler):
    """Latent sites take the given values ({name: value}); models read the given data ({model: {name: array}},
    overriding theirs; arrays may be tracers)."""

    def __init__(self, values=None, data=None):
        self.values, self.data = values or {}, data

    def process(self, msg):
        if msg["type"] == "inputs":
            msg["data"] = _override(msg["data"], self.data)
        elif msg["type"] == "latent" and msg["value"] is None and msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]


class condition(Handler):
    """Observed sites take the given observed values ({model: {name: array}}, overriding the model's; arrays may be
    tracers): one traced program for a family of targets that differ only in their observations."""

    def __init__(self, obs):
        self.obs = obs

    def process(self, msg):
        if msg["type"] == "inputs":
            msg["obs"] = _override(msg["obs"], self.obs)


class block(Handler):
    """The steps `hide(msg)` selects are not evaluated: no handler outside this one sees them and they take no
    value (what reads them must not be evaluated either)."""

    def __init__(self, hide):
        self.hide = hide

    def process(self, msg):
        if msg["type"] != "inputs" and self.hide(msg):
            msg["stop"] = msg["hidden"] = True


class trace(Handler):
    """Records each step's message, by site name, on the way out (`.steps`)."""

    def __init__(self):
        self.steps = {}

    def postprocess(self, msg):
        if msg["type"] != "inputs":
            self.steps[msg["name"]] = msg
