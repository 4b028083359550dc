"""Error types. Every problem a user can cause raises a subclass of `PPLError`."""


class PPLError(Exception):
    """Base class of every error this package raises on bad input or a failed run.

    `site` names the model site the error is about (None if none): a `.ppl` program locates the error at the
    site's statement (`PPLError(message, site="theta")`). `hint` (None if none) says what to do: `str(e)` is
    'message; hint', and a `.ppl` program shows the hint on a line of its own; `.message` is the message alone.
    """

    def __init__(self, *args, site=None, hint=None):
        super().__init__(*((f"{args[0]}; {hint}", *args[1:]) if hint and args else args))
        self.site, self.hint, self.message = site, hint, (args[0] if args else "")


class NameResolutionError(PPLError):
    """A name (a function argument, a site, a data value) does not resolve."""


class ShapeError(PPLError):
    """Shapes disagree: sites combined by `*`, data, or a reward's output."""


class SupportError(PPLError):
    """Supports of one site disagree between factors, or a value is outside its support."""


class ValueRangeError(PPLError):
    """A parameter of the algebra is out of range (beta <= 0, lam <= 0, ...)."""


class PlanError(PPLError):
    """The planner cannot build a normalized, sampleable reference for the target."""


class UnknownNameError(PPLError):
    """An unknown distribution, method, runtime, resampler or option."""


class UserFunctionError(PPLError):
    """A user function (a site, a reward, an energy) raised or returned something it must not."""


class DeviceError(PPLError):
    """A device request the runtime or method cannot serve (several devices on torch, more than JAX sees)."""


class InferenceError(PPLError):
    """A run failed loudly: every weight vanished, the schedule stalled, non-finite densities."""


#: the hint of an error about a density that was NaN or +inf somewhere
UNDEFINED_DENSITY_HINT = ("return -inf where a value is outside its domain, e.g. "
                          "ppl.math.where(x > 0, ppl.math.log(x), -inf)")


class SourceError(PPLError):
    """An error located in `.ppl` source text: `file:line:col: message`, the line and a caret."""

    def __init__(self, message, *, filename="<string>", line=None, column=None, source_line=None, hint=None):
        super().__init__(message, hint=hint)
        self.filename, self.line, self.column, self.source_line = filename, line, column, source_line
        self.args = (self.render(),)

    def render(self):
        where = f"{self.filename}:{self.line}:{self.column}: " if self.line is not None else f"{self.filename}: "
        out = [where + self.message]
        if self.source_line is not None:
            out.append("    " + self.source_line.rstrip("\n"))
            if self.column is not None:
                out.append("    " + " " * (self.column - 1) + "^")
        if self.hint:
            out.append("hint: " + self.hint)
        return "\n".join(out)
