"""Data whose values are not given: `ppl check` without `--data`.

A missing datum is a `Symbolic` placeholder; any use of its value (its shape, a number, an index) raises
`NeedsData`, which stops building the model or target that needed it, so every check that needs a value is
skipped rather than made against an invented one. `NeedsData` is a `BaseException`: the interpreter's
handlers, which turn a runtime's errors into located `SourceError`s, must not catch it.
"""


class NeedsData(BaseException):
    """A check needed the value of the symbolic datum `name`."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name


class Symbolic:
    """The value of datum `name`, unknown: reading it in any way raises `NeedsData(name)`."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<data {self.name}: not given>"

    def _need(self, *args, **kwargs):
        raise NeedsData(self.name)

    __array__ = __float__ = __int__ = __index__ = __bool__ = __len__ = __iter__ = __getitem__ = _need
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _need
    __pow__ = __rpow__ = __neg__ = __lt__ = __le__ = __gt__ = __ge__ = __floordiv__ = __mod__ = _need
    __array_function__ = __array_ufunc__ = _need

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise NeedsData(self.name)
