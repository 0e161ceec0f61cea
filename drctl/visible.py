"""Text made safe to show: control, format and separator characters visibly escaped.

Everything drctl writes to a terminal or into markdown passes through ``visible`` last,
so a runbook string, a ``-p`` value or a server's error text cannot move the cursor,
clear the screen, set the window title, reorder text (U+202E) or hide itself
(zero-width characters): a reviewer reads ``\\u001b[2K``, not an erased line.

The escapes are JSON's (``\\t``, ``\\r``, ``\\uXXXX``, surrogate pairs past U+FFFF), so
applied to JSON output they keep it valid and decode to the same strings. Line feeds
are kept: they are the line structure of every format drctl writes. Applying it twice
changes nothing.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_SHORT = {"\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}
#: Unicode categories that are never shown as themselves: controls, format characters
#: (bidi overrides, zero-width), line and paragraph separators, surrogates, unassigned.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_CANDIDATES = re.compile(r"[^\n\x20-\x7e]")


def visible(text: str) -> str:
    """``text`` with every character that a terminal or markdown would not show as itself escaped."""
    if text.isascii() and text.isprintable():
        return text
    return _CANDIDATES.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    return _escaped(match.group())


@lru_cache(maxsize=1024)
def _escaped(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    if unicodedata.category(char) not in _HIDDEN:
        return char
    code = ord(char)
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"
