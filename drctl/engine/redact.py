"""The one redaction layer: every resolved secret is masked in every sink.

Secrets are registered as they are resolved; the journal, the terminal, JSON
events and step output all pass through the same Redactor before leaving memory.

A secret rarely reaches a sink exactly as it was resolved, so each one is registered
in every form it can take on the way: each line of a multi-line value, the value as
``repr`` and JSON quote it (escaped backslashes, quotes, ``\\n``), URL-encoded, base64
(at every alignment inside a longer encoded text) and hex, and, for a connection
string, each secret piece a client library may quote on its own (libpq's ``missing
"=" after "secondhalf"``). A text cut short by whoever produced it (a step's last
output line is cut at 200 characters) may end with the start of a secret, or begin
with its end: those pieces are masked too.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any
from urllib.parse import quote, quote_plus

from drctl.engine.conninfo import secret_values
from drctl.runbook.secrets import MASK

#: Shorter values would mask ordinary words and digits everywhere; secrets this short
#: are refused at resolution time instead (see engine.secrets).
MIN_SECRET_LENGTH = 4
#: What a cut text may end with after the cut.
_CUT_MARKS = ("…", "...")


class Redactor:
    """Masks registered secret values, in every form they take, in text and in nested data."""

    def __init__(self) -> None:
        self._secrets: list[str] = []
        #: Forms whose cut pieces are masked too (not whole connection strings: their
        #: start is ``host=…``, and their secret pieces are registered on their own).
        self._edges: list[str] = []
        #: Every run of MIN_SECRET_LENGTH characters in those forms: a text whose ends are
        #: not among them holds no cut piece, which spares most texts the search.
        self._grams: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        if len(value) < MIN_SECRET_LENGTH:
            return
        forms = secret_forms(value)
        edges = forms - _forms(value) if _connection_string(value) else forms
        with self._lock:
            # Longest first, so a secret containing another is masked whole.
            self._secrets = sorted({*self._secrets, *forms}, key=lambda s: (-len(s), s))
            self._edges = sorted({*self._edges, *edges}, key=lambda s: (-len(s), s))
            self._grams = self._grams | {
                e[i : i + MIN_SECRET_LENGTH]
                for e in edges
                for i in range(len(e) - MIN_SECRET_LENGTH + 1)
            }

    def text(self, value: str) -> str:
        secrets = self._secrets
        if not secrets:
            return value
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return _mask_cut_ends(value, self._edges, self._grams)

    def data(self, value: Any) -> Any:
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


def secret_forms(value: str) -> set[str]:
    """Every form of ``value`` a sink may receive, each at least MIN_SECRET_LENGTH long."""
    pieces = {value}
    pieces |= {line.strip("\r") for line in value.splitlines()}
    if _connection_string(value):
        pieces |= set(secret_values(value))
    return set().union(*(_forms(piece) for piece in pieces))


def _forms(piece: str) -> set[str]:
    """``piece`` as repr, JSON, URL encoding, hex and base64 write it."""
    if len(piece) < MIN_SECRET_LENGTH:
        return set()
    raw = piece.encode("utf-8", "surrogatepass")
    forms = {
        piece,
        repr(piece)[1:-1],
        json.dumps(piece)[1:-1],
        json.dumps(piece, ensure_ascii=False)[1:-1],
        quote(piece, safe=""),
        quote(piece),
        quote_plus(piece),
        raw.hex(),
        raw.hex().upper(),
        *_base64_cores(raw),
    }
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def _connection_string(value: str) -> bool:
    return ("=" in value or "://" in value) and bool(secret_values(value))


def _base64_cores(raw: bytes) -> set[str]:
    """The base64 characters that encode only ``raw``, at each of the three alignments
    it can have inside a longer encoded text (``user:password`` in a Basic header)."""
    out = set()
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * pad + raw).decode("ascii")
            first = (pad * 8 + 5) // 6  # characters holding a padding bit
            last = (pad + len(raw)) * 8 // 6  # characters holding only known bits
            out.add(text[first:last])
            if pad == 0:
                out |= {text, text.rstrip("=")}
    return out


def _mask_cut_ends(text: str, secrets: list[str], grams: frozenset[str]) -> str:
    """Mask the start of a secret at the end of ``text`` (before a cut mark), and the end
    of a secret at its start: what is left of a secret when someone cut the text."""
    body = text
    mark = next((m for m in _CUT_MARKS if body.endswith(m)), "")
    body = body[: len(body) - len(mark)]
    n = MIN_SECRET_LENGTH
    if body[-n:] not in grams and body[:n] not in grams:
        return text
    for secret in secrets:
        for size in range(min(len(secret), len(body)) - 1, MIN_SECRET_LENGTH - 1, -1):
            if body.endswith(secret[:size]):
                body = body[:-size] + MASK
                break
        for size in range(min(len(secret), len(body)) - 1, MIN_SECRET_LENGTH - 1, -1):
            if body.startswith(secret[-size:]):
                body = MASK + body[size:]
                break
    return body + mark
