"""Pattern rewards over generated texts (the bases of a served model, `ppl.served`): each maps a list of N texts
to float64 [N]. They are the text counterparts of `sequence_tables.REWARDS` over tokens and read the same in the
language: `count(text, "ab")`, `contains(text, "yes")`, `starts_with(text, "A")`, `ends_with(text, ".")`,
`length(text)` (characters), and `matches(text, "[0-9]+")` (a regular expression found anywhere).
"""
import re

import numpy as np


def _each(texts, fn):
    return np.array([float(fn(t)) for t in texts], dtype=np.float64)


def count(texts, pattern):
    """How many times `pattern` occurs in each text (overlaps counted, as over tokens)."""
    found = re.compile(f"(?={re.escape(pattern)})")
    return _each(texts, lambda t: sum(1 for _ in found.finditer(t)))


def contains(texts, pattern):
    """1.0 where `pattern` occurs in the text, else 0.0."""
    return _each(texts, lambda t: pattern in t)


def starts_with(texts, pattern):
    """1.0 where the text starts with `pattern`, else 0.0."""
    return _each(texts, lambda t: t.startswith(pattern))


def ends_with(texts, pattern):
    """1.0 where the text ends with `pattern`, else 0.0."""
    return _each(texts, lambda t: t.endswith(pattern))


def matches(texts, pattern):
    """1.0 where the regular expression `pattern` matches somewhere in the text, else 0.0."""
    found = re.compile(pattern)
    return _each(texts, lambda t: found.search(t) is not None)


def length(texts):
    """The number of characters of each text."""
    return _each(texts, len)


#: the text-pattern rewards by name: (function, whether it takes a pattern)
REWARDS = {"count": (count, True), "contains": (contains, True), "starts_with": (starts_with, True),
           "ends_with": (ends_with, True), "matches": (matches, True), "length": (length, False)}
