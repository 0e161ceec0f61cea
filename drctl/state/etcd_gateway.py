"""The wire to an etcd v3 cluster: its HTTP/JSON gateway, each member in turn.

``etcd3gw`` (imported when a gateway is made) carries the requests; its errors, and its
transport's, become StateError here, once, saying what each member answered.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from drctl.errors import StateError, UsageError

#: Rounds over every member one request may take (also bounded by ``retry_for``).
_MAX_ROUNDS = 100
_ROUND_PAUSE = 0.2


@dataclass(frozen=True)
class EtcdUrl:
    """``etcd://HOST:PORT[,HOST:PORT…]/PREFIX``, parsed."""

    endpoints: tuple[tuple[str, int], ...]
    prefix: str

    @classmethod
    def parse(cls, spec: str) -> EtcdUrl:
        """Raises UsageError naming ``--state`` for anything but a well-formed URL."""
        scheme = "etcd://"
        if not spec.startswith(scheme):
            raise _bad_url(spec, "it must start with etcd://")
        hosts, slash, prefix = spec[len(scheme) :].partition("/")
        prefix = unquote(prefix).strip("/")
        if not slash or not prefix:
            raise _bad_url(spec, "give a key prefix after the members, e.g. etcd://h1:2379/drctl")
        endpoints = []
        for member in hosts.split(","):
            host, colon, port = member.rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise _bad_url(spec, f"member {member!r} is not HOST:PORT")
            endpoints.append((host, int(port)))
        return cls(tuple(endpoints), prefix)

    def __str__(self) -> str:
        members = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.endpoints)
        return f"etcd://{members}/{self.prefix}"


def _bad_url(spec: str, why: str) -> UsageError:
    return UsageError(
        f"--state: malformed etcd URL {spec!r}: {why}",
        hint="etcd://HOST:PORT[,HOST:PORT…]/PREFIX, e.g. etcd://10.0.0.1:2379,10.0.1.1:2379/drctl",
    )


class EtcdGateway:
    """Requests to one cluster: members tried in turn, retried for ``retry_for`` seconds."""

    def __init__(self, url: EtcdUrl, *, timeout: float, retry_for: float) -> None:
        from etcd3gw import exceptions
        from etcd3gw.client import Etcd3Client

        self.location = str(url)
        self._errors = exceptions
        self._retry_for = retry_for
        self._endpoints = [f"{h}:{p}" for h, p in url.endpoints]
        self._clients = [
            Etcd3Client(host=h, port=p, timeout=timeout, api_path="/v3/") for h, p in url.endpoints
        ]
        self._current = 0
        self._mutex = threading.Lock()

    def unreachable(self, exc: StateError) -> bool:
        """True if ``exc`` says no member answered (rather than what one answered)."""
        return isinstance(exc.__cause__, (self._errors.Etcd3Exception, OSError, ValueError))

    def call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST to the gateway: each member in turn, starting with the last that answered,
        round after round until ``retry_for`` has passed (an election takes a moment).

        A retried write may have been applied already (a member timed out after the
        cluster committed it): the operations below make every write safe to repeat or
        find out that it landed.
        """
        errors = self._errors
        failed: dict[int, Exception] = {}
        last: Exception | None = None
        deadline = time.monotonic() + self._retry_for
        with self._mutex:
            first = self._current
        count = len(self._clients)
        for attempt in range(_MAX_ROUNDS * count):
            if attempt and attempt % count == 0:
                if time.monotonic() >= deadline:
                    break
                time.sleep(_ROUND_PAUSE)
            index = (first + attempt) % count
            client = self._clients[index]
            try:
                answer: dict[str, Any] = client.post(client.get_url(path), json=payload)
            except errors.Etcd3Exception as exc:
                # Down or cut off, or without a leader on its side: another may answer.
                failed[index] = last = exc
                continue
            except (OSError, ValueError) as exc:  # the client's transport below its own errors
                failed[index] = last = exc
                continue
            with self._mutex:
                self._current = index
            return answer
        each = "; ".join(
            f"{self._endpoints[i]}: {_reason(exc)}" for i, exc in sorted(failed.items())
        )
        raise StateError(
            f"state store {self.location}: no majority of its members answered within "
            f"{self._retry_for:g}s ({each})",
            hint="the run stopped before its next step; once a majority of the etcd members "
            "is back, continue it with drctl resume",
        ) from last

    def range(self, key: str, *, prefix: bool = False) -> list[tuple[str, bytes, int]]:
        """(key, value, mod_revision) of ``key``, or of every key starting with it."""
        payload: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            payload["range_end"] = _b64(_prefix_end(key))
        answer = self.call("kv/range", payload)
        return [
            (_unb64(kv["key"]).decode(), _unb64(kv.get("value", "")), int(kv["mod_revision"]))
            for kv in answer.get("kvs", [])
        ]

    def get(self, key: str) -> tuple[bytes, int] | None:
        found = self.range(key)
        return (found[0][1], found[0][2]) if found else None

    def commit(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> int | None:
        """The revision the transaction wrote, or None if a comparison failed."""
        answer = self.call("kv/txn", {"compare": compare, "success": success, "failure": []})
        if not answer.get("succeeded", False):
            return None
        return int(answer["header"]["revision"])

    def grant(self, ttl: int) -> int:
        """A new etcd lease of ``ttl`` seconds; its id."""
        return int(self.call("lease/grant", {"TTL": ttl, "ID": 0})["ID"])

    def keep_alive(self, lease: int) -> int:
        """Renew ``lease``; the TTL it has now, or -1 if it expired (or was revoked)."""
        answer = self.call("lease/keepalive", {"ID": lease})
        return int(answer.get("result", {}).get("TTL", -1))

    def revoke(self, lease: int) -> None:
        """End ``lease`` and delete the keys attached to it."""
        self.call("kv/lease/revoke", {"ID": lease})

    def close(self) -> None:
        for client in self._clients:
            client.session.close()


# -- the gateway's JSON: keys and values are base64 ------------------------------------------


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _prefix_end(prefix: str) -> bytes:
    raw = bytearray(prefix.encode())
    raw[-1] += 1  # prefixes here end in "/" or a run id character, never 0xff
    return bytes(raw)


def absent(key: str) -> dict[str, Any]:
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def unchanged(key: str, mod_revision: int) -> dict[str, Any]:
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}


def equals(key: str, value: str) -> dict[str, Any]:
    return {"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(value)}


def put(key: str, value: bytes, lease: int | None = None) -> dict[str, Any]:
    put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease is not None:
        put["lease"] = str(lease)
    return {"request_put": put}


def delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


def _reason(exc: Exception) -> str:
    """etcd's own words where it gave them (the gateway's JSON error), else a short cause."""
    text = str(getattr(exc, "detail_text", None) or exc)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and (parsed.get("message") or parsed.get("error")):
        return str(parsed.get("message") or parsed.get("error"))
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower() or "Timeout" in type(exc).__name__:
        return "no answer (timed out)"
    text = text.strip()
    return text.splitlines()[0] if text else type(exc).__name__
