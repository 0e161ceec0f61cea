"""The HTTP calls of the http, notify and wait steps (standard library only)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from drctl.errors import StepError, StepTimeout, Unreachable

MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    json: Any
    #: The reply's headers, names lower-cased (HTTP header names are case-insensitive).
    headers: dict[str, str] = field(default_factory=dict)

    def at(self, path: str) -> Any:
        """The value at a dotted path (``data.items.0.state``) in the JSON body."""
        node = self.json
        for part in path.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise StepError(f"response has no {path!r} (stopped at {part!r})")
        return node


def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float,
    verify_tls: bool = True,
) -> Response:
    if timeout <= 0:
        raise StepTimeout("no time left for the HTTP request")
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    context = ssl.create_default_context()
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            status, raw = resp.status, resp.read(MAX_BODY)
            got = resp.headers
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(MAX_BODY), exc.headers
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise StepTimeout(f"{method} {url}: timed out") from exc
        if isinstance(reason, OSError):
            # Refused, no route, name not resolved: the server did not answer at all.
            raise Unreachable(f"{method} {url}: {reason}") from exc
        raise StepError(f"{method} {url}: {reason}") from exc
    except TimeoutError as exc:
        raise StepTimeout(f"{method} {url}: timed out") from exc
    except ConnectionError as exc:
        raise Unreachable(f"{method} {url}: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise StepError(f"{method} {url}: {exc}") from exc
    text = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(text) if text.strip() else None
    except ValueError:
        parsed = None
    headers = {name.lower(): value for name, value in (got.items() if got else ())}
    return Response(status, text, parsed, headers)
