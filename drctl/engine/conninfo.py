"""Connection strings as drills show and journal them: every secret masked, nothing else.

Two forms are read, as their clients read them:

- libpq ``key = value`` strings: values single-quoted (with ``\\'`` and ``\\\\``) or bare,
  where a backslash escapes the next character too;
- URIs (``postgresql://``, ``postgres://``, ``mongodb://``, ``mongodb+srv://``): the
  password in the user information, and secret options in the query, keys
  percent-decoded and compared case-insensitively.

A bare (unquoted) secret value runs on over the bare words after it, up to the next
``key=``: ``password=first secondhalf`` is refused by libpq with ``missing "=" after
"secondhalf"``, so "secondhalf" is a piece of the password and is masked too.

Where the two clients read a URI differently (libpq ends the user information at the
first ``@``, pymongo at the last), the larger reading is masked: showing more than
needed is a nuisance, showing a password is a leak.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

#: Options whose values are secrets: libpq's password and sslpassword, pymongo's
#: tlsCertificateKeyFilePassword and the like.
_SECRET_KEY = re.compile(r"password|secret|token", re.IGNORECASE)
#: authMechanismProperties is a secret only when it carries an AWS session token.
_AWS_PROPERTIES = "authmechanismproperties"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_CONNINFO_PAIR = re.compile(r"([A-Za-z_][\w.-]*)\s*=\s*('(?:[^'\\]|\\.)*'?|(?:\\.|[^\s\\])*\\?)")
_QUERY_KEY = re.compile(r"[?&;]([^=&;]+)=")


def _is_secret(key: str, value: str) -> bool:
    key = unquote(key).lower()
    if key == _AWS_PROPERTIES:
        return "aws_session_token" in value.lower()
    return bool(_SECRET_KEY.search(key))


_BARE_WORDS = re.compile(r"(?:\s+(?![A-Za-z_][\w.-]*\s*=)[^\s']+)*")


def _conninfo_spans(dsn: str) -> list[tuple[int, int]]:
    spans = []
    for m in _CONNINFO_PAIR.finditer(dsn):
        if not (_is_secret(m[1], m[2]) and _unescaped(m[2])):
            continue
        start, end = m.span(2)
        if not m[2].startswith("'"):
            more = _BARE_WORDS.match(dsn, end)
            end = more.end() if more else end
        spans.append((start, end))
    return spans


def _uri_spans(dsn: str, scheme_end: int) -> list[tuple[int, int]]:
    rest = dsn[scheme_end:]
    authority = rest.partition("/")[0]
    if "@" not in authority and "@" in rest:
        # No "@" before the first "/": a password holding an unencoded "/" (or "?"), or
        # an "@" further on (a database or option value). A port after the first ":"
        # says it is the latter.
        after_colon = re.split(r"[/?]", rest.partition(":")[2], maxsplit=1)[0]
        if ":" in rest and not after_colon.isdigit():
            authority = rest[: rest.rindex("@") + 1]
    spans = []
    userinfo = authority.rpartition("@")[0]
    if ":" in userinfo and userinfo.index(":") + 1 < len(userinfo):
        spans.append((scheme_end + userinfo.index(":") + 1, scheme_end + len(userinfo)))
    query = dsn.find("?", scheme_end + len(userinfo))
    if query < 0:
        return spans
    for m in _QUERY_KEY.finditer(dsn, query):
        if m.start() != query and dsn[m.start()] == "?":
            continue
        end = dsn.find("&", m.end())
        end = len(dsn) if end < 0 else end
        # A secret value runs to the next "&": ";" and "#" may be part of it.
        if _is_secret(m[1], dsn[m.end() : end]) and end > m.end():
            spans.append((m.end(), end))
    return _merged(spans)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out


def _secret_spans(dsn: str) -> list[tuple[int, int]]:
    """Where the secrets are in a connection string: (start, end) offsets, in order."""
    scheme = _SCHEME.match(dsn)
    return _uri_spans(dsn, scheme.end()) if scheme else _conninfo_spans(dsn)


def mask_dsn(dsn: str) -> str:
    """A connection string as it may be shown: every secret replaced by ``***``."""
    out, at = [], 0
    for start, end in _secret_spans(dsn):
        out += [dsn[at:start], "***"]
        at = end
    return "".join([*out, dsn[at:]])


def _unescaped(value: str) -> str:
    """A libpq value as the server gets it: quotes removed, backslash escapes applied."""
    quoted = re.fullmatch(r"'((?:[^'\\]|\\.)*)'?", value)
    inner = quoted[1] if quoted else value
    return re.sub(r"\\(.)", r"\1", inner)


def secret_values(dsn: str) -> list[str]:
    """The secret values in a connection string: as written, as the client reads them,
    and percent- or plus-decoded (URIs); longest first, so that replacing them in turn
    leaves no part of one behind."""
    found: set[str] = set()
    for start, end in _secret_spans(dsn):
        value = dsn[start:end]
        bare = _unescaped(value)
        found |= {value, bare, unquote(bare), unquote(bare.replace("+", " "))}
        if not value.startswith("'") and " " in value:
            # libpq quotes one word of a bare value (missing "=" after "WORD").
            found |= {word for word in value.split() if len(word) >= 4}
    return sorted((v for v in found if len(v) > 1 or v.isalnum()), key=len, reverse=True)
