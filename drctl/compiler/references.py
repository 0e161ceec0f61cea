"""Plain references: templates whose every hole is ``{{ a.b[0]['c'] }}``, read without Jinja.

Most of a runbook's templates only read a value (``{{ params.nodes[1].dsn }}``, or text
around a few such holes). Jinja lexes, parses, generates Python and compiles each one,
a millisecond or two apiece; a runbook has dozens. This module recognises that subset of
Jinja's syntax and reads it as Jinja's sandbox would for plain data: an attribute of a
``dict`` that is one of its keys (and not a ``dict`` attribute), a key of a ``dict``, an
index into a ``list``. Anything else — a filter, an operator, a name the context lacks,
a missing key, any other kind of object — is left to Jinja (``NotPlain``), so values,
errors and budgets are Jinja's own.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPACE = re.compile(r"[ \t\n]*")
#: ``[0]``, ``['key']``, ``["key"]``: keys without escapes, quotes, braces or newlines.
_CONSTANT = re.compile(r"\[(?:(0|[1-9][0-9]*)|'([\w\-.:/@ ]*)'|\"([\w\-.:/@ ]*)\")\]", re.ASCII)
#: Names Jinja reads as something other than a variable (constants, operators, the
#: template's own ``self``, macro and loop variables): left to Jinja.
_RESERVED = frozenset(
    {"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if",
     "else", "self", "caller", "varargs", "kwargs", "loop"}
)  # fmt: skip
#: Accesses in one template, nested subscripts included; a longer chain is left to
#: Jinja, whose parse checks its depth.
MAX_ACCESSES = 16


class NotPlain(Exception):
    """Raised while reading a reference that is not plain data: Jinja must render it."""


class Ref:
    """``head`` and its accesses in order: ``(True, name)`` an attribute, ``(False, key)``
    a subscript, whose key is a constant or another reference."""

    __slots__ = ("head", "path")

    def __init__(self, head: str, path: tuple[tuple[bool, str | int | Ref], ...]) -> None:
        self.head = head
        self.path = path

    def parts(self) -> tuple[str, ...]:
        """The dotted name Jinja's tree gives (``templating._chain``): up to the first
        subscript that is not a constant."""
        parts = [self.head]
        for _, key in self.path:
            if isinstance(key, Ref):
                break
            parts.append(str(key))
        return tuple(parts)

    def nested(self) -> list[Ref]:
        """This reference and those in its subscripts, in the order Jinja's tree lists them."""
        found = [self]
        for _, key in self.path:
            if isinstance(key, Ref):
                found.extend(key.nested())
        return found

    def read(self, context: dict[str, Any], step: Any) -> Any:
        """The value, calling ``step`` once per access as the sandbox's getattr/getitem do."""
        if self.head not in context:
            raise NotPlain(self.head)
        value = context[self.head]
        for attribute, key in self.path:
            at = key.read(context, step) if isinstance(key, Ref) else key
            step()
            value = _attribute(value, at) if attribute else _item(value, at)
        return value


def _attribute(obj: Any, name: Any) -> Any:
    # The sandbox tries getattr first: a plain dict has only its class's attributes.
    if type(obj) is dict and type(name) is str and name in obj and not hasattr(dict, name):
        return obj[name]
    raise NotPlain(name)


def _item(obj: Any, key: Any) -> Any:
    if type(obj) is dict and type(key) in (str, int) and key in obj:
        return obj[key]
    if type(obj) is list and type(key) is int and 0 <= key < len(obj):
        return obj[key]
    raise NotPlain(key)


#: A parsed template: its text and references in order.
Parsed = tuple[str | Ref, ...]


@lru_cache(maxsize=4096)
def parse(text: str) -> Parsed | None:
    """``text`` as literal text and references, or None if Jinja must read it."""
    if "\r" in text:
        return None  # Jinja normalises newlines in literal text
    out: list[str | Ref] = []
    at = 0
    budget = [MAX_ACCESSES]
    while at < len(text):
        start = text.find("{{", at)
        literal = text[at:] if start < 0 else text[at:start]
        if "{%" in literal or "{#" in literal:
            return None
        if literal:
            out.append(literal)
        if start < 0:
            break
        at = _SPACE.match(text, start + 2).end()  # type: ignore[union-attr]
        found = _reference(text, at, budget)
        if found is None:
            return None
        ref, at = found
        at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
        if not text.startswith("}}", at):
            return None
        out.append(ref)
        at += 2
    return tuple(out)


def _reference(text: str, at: int, budget: list[int]) -> tuple[Ref, int] | None:
    head = _NAME.match(text, at)
    if head is None or head.group() in _RESERVED:
        return None
    at = head.end()
    path: list[tuple[bool, str | int | Ref]] = []
    while at < len(text):
        if text.startswith(".", at):
            name = _NAME.match(text, at + 1)
            if name is None or name.group() in _RESERVED:
                return None
            path.append((True, name.group()))
            at = name.end()
        elif text.startswith("[", at):
            constant = _CONSTANT.match(text, at)
            if constant is not None:
                number, single, double = constant.groups()
                key: str | int | Ref = (
                    int(number) if number is not None else single if single is not None else double
                )
                at = constant.end()
            else:
                inner = _reference(text, at + 1, budget)
                if inner is None or not text.startswith("]", inner[1]):
                    return None
                key, at = inner[0], inner[1] + 1
            path.append((False, key))
        else:
            break
        budget[0] -= 1
        if budget[0] < 0:
            return None
    return Ref(head.group(), tuple(path)), at
