"""Secret references: ``${env:NAME}`` and ``${file:path}``.

A runbook never holds a secret, only a reference to one. The compiler checks the
references' syntax and carries them through to the plan unchanged; only the engine
resolves them, at execution time, and registers every resolved value with the
redaction layer so it is masked as ``***`` in every output.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MASK = "***"

# Anything that starts like a reference is checked, so a typo is an error, not a literal.
_CANDIDATE = re.compile(r"\$\{([^}]*)\}?")
_VALID = re.compile(r"^(env):([A-Za-z_][A-Za-z0-9_]*)$|^(file):(\S.*)$")
SCHEMES = ("env", "file")


@dataclass(frozen=True)
class SecretRef:
    """One reference found in a string: its scheme, its argument and its text."""

    scheme: str
    name: str
    text: str


class SecretRefSyntaxError(ValueError):
    """Raised by :func:`find_refs` for a ``${...}`` that is not a valid reference."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"{text!r} is not a valid secret reference: {reason}")
        self.text = text


def find_refs(value: str) -> list[SecretRef]:
    """The secret references in ``value``; raises SecretRefSyntaxError on a malformed one."""
    refs = []
    for match in _CANDIDATE.finditer(value):
        text = match.group(0)
        if not text.endswith("}"):
            raise SecretRefSyntaxError(text, "missing closing '}'")
        body = match.group(1).strip()
        valid = _VALID.match(body)
        if valid is None:
            scheme = body.split(":", 1)[0]
            if ":" not in body:
                reason = "expected ${env:NAME} or ${file:path}"
            elif scheme not in SCHEMES:
                reason = f"unknown scheme {scheme!r} (known: env, file)"
            else:
                reason = "bad name (env names are letters, digits and '_')"
            raise SecretRefSyntaxError(text, reason)
        scheme = valid.group(1) or valid.group(3)
        name = valid.group(2) or valid.group(4)
        refs.append(SecretRef(scheme, name, text))
    return refs


def has_refs(value: str) -> bool:
    return "${" in value


def iter_strings(value: object) -> Iterator[str]:
    """Every string inside a nested structure of dicts and lists."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from iter_strings(v)


class SecretUnavailable(LookupError):
    """Raised by :func:`resolve` when an environment variable or file is missing."""


def resolve(value: str, environ: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """Replace the references in ``value``; returns the text and the secret values used.

    Only the engine calls this, at execution time.
    """
    env = os.environ if environ is None else environ
    secrets: list[str] = []
    out = value
    for ref in find_refs(value):
        if ref.scheme == "env":
            if ref.name not in env:
                raise SecretUnavailable(f"{ref.text}: environment variable {ref.name} is not set")
            secret = env[ref.name]
        else:
            path = Path(ref.name).expanduser()
            try:
                secret = path.read_text(encoding="utf-8").rstrip("\n")
            except OSError as exc:
                raise SecretUnavailable(f"{ref.text}: cannot read {path}: {exc.strerror}") from None
        secrets.append(secret)
        out = out.replace(ref.text, secret)
    return out, secrets
