"""The text of a `.ppl` program, and errors located in it (`SourceError`: file:line:col, the line, a caret)."""
import difflib

from ..errors import SourceError


class Source:
    """A program's text and file name; makes the errors located in them."""

    def __init__(self, text, filename="<string>"):
        self.text, self.filename = text, filename

    def line(self, number):
        """The text of line `number` (1-based), or None."""
        lines = self.text.splitlines()
        return lines[number - 1] if number is not None and 0 < number <= len(lines) else None

    def error_at(self, line, column, message, hint=None):
        """A `SourceError` at (line, column); with line None, in the file as a whole."""
        return SourceError(message, filename=self.filename, line=line, column=column, source_line=self.line(line),
                           hint=hint)

    def error(self, where, message, hint=None):
        """A `SourceError` at `where`: a syntax node (or anything with a line and column), or None."""
        return self.error_at(getattr(where, "line", None), getattr(where, "column", None), message, hint)

    def relocate(self, where, e):
        """The `PPLError` `e` (its message and hint) as a `SourceError` at `where`."""
        return self.error(where, e.message, e.hint)


def suggest(name, known):
    """'did you mean ...?' for the known name closest to `name`, or None."""
    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean {close[0]!r}?" if close else None
