"""Finding literal secrets written into a runbook (lint DR005) and masking them in plans.

The detector and the mask are one module so that whatever the lint calls a secret
is exactly what the plan hides.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from drctl.runbook.secrets import MASK

_SECRET_KEY = re.compile(
    r"(^|[_-])(pass(word|wd|phrase)?|secret|token|api[_-]?key|private[_-]?key|credentials?|tsig_secret|authorization)$",
    re.IGNORECASE,
)
_URL_CRED = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)([^@\s/]+)(@)", re.IGNORECASE)
_KV_PASS = re.compile(r"(\bpassword\s*=\s*)('[^']*'|[^\s;]+)", re.IGNORECASE)
_TOKENS = (
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    re.compile(r"\bxox[abpr]-[A-Za-z0-9-]{10,}\b"),
)


def _indirect(text: str) -> bool:
    """A secret reference or a template is not a literal secret."""
    return "${" in text or "{{" in text


def literal_secret(key: str | None, value: Any) -> str | None:
    """Why ``value`` (under ``key``) looks like a secret written in clear, or None."""
    if not isinstance(value, str) or not value:
        return None
    return _literal_secret(key, value)


# A runbook repeats its words (keys, types, durations) in every step, and the plan's
# inputs are scanned again each time they are shown: each pair is searched once.
@lru_cache(maxsize=4096)
def _literal_secret(key: str | None, value: str) -> str | None:
    if key is not None and _SECRET_KEY.search(key) and not _indirect(value):
        return f"field {key!r} holds a literal value"
    for match in _URL_CRED.finditer(value):
        if not _indirect(match.group(2)):
            return "a URL carries a password"
    for match in _KV_PASS.finditer(value):
        if not _indirect(match.group(2)):
            return "a connection string carries a password"
    for pattern in _TOKENS:
        if pattern.search(value):
            return "a value looks like a credential (access key, private key or token)"
    return None


def mask(key: str | None, value: Any) -> Any:
    """``value`` with literal secrets replaced by ``***``, recursively."""
    if isinstance(value, dict):
        return {k: mask(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(None, v) for v in value]
    if not isinstance(value, str) or literal_secret(key, value) is None:
        return value
    if key is not None and _SECRET_KEY.search(key):
        return MASK
    out = _URL_CRED.sub(
        lambda m: m.group(1) + (m.group(2) if _indirect(m.group(2)) else MASK) + m.group(3), value
    )
    out = _KV_PASS.sub(lambda m: m.group(1) + (m.group(2) if _indirect(m.group(2)) else MASK), out)
    for pattern in _TOKENS:
        out = pattern.sub(MASK, out)
    return out


def scan(
    value: Any, loc: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every (location, reason) of a literal secret inside ``value``."""
    # Each entry: a value, its key as text (None in a list), its parent's location and
    # its own part of it. A location is built only for a container (its children need
    # it) or a finding, not for every value scanned.
    Entry = tuple[Any, str | None, tuple[str | int, ...], Any]
    stack: list[Entry] = [(value, None, loc, _ROOT)]
    while stack:
        node, key, parent, part = stack.pop()
        if isinstance(node, dict | list):
            at = parent if part is _ROOT else (*parent, part)
            if isinstance(node, dict):
                stack.extend((v, str(k), at, k) for k, v in node.items())
            else:
                stack.extend((v, None, at, i) for i, v in enumerate(node))
        elif isinstance(node, str):
            reason = literal_secret(key, node)
            if reason is not None:
                yield (parent if part is _ROOT else (*parent, part)), reason


_ROOT = object()  # the part of the location of the value scan was given: none
