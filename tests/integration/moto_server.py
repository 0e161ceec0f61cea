"""moto's server for the AWS step types' integration tests, and what they need around it.

Import the fixtures explicitly from a test module::

    from tests.integration.moto_server import aws_env_fixture, moto_fixture, moto_server_fixture  # noqa: F401

(the fixtures are named ``aws_env``, ``moto_server`` and ``moto``; the functions are not,
so a test's ``moto`` parameter does not shadow an import)

``moto_server`` is moto's ``ThreadedMotoServer`` on 127.0.0.1 and a free port, one per
test module, with moto's request recorder writing to the module's temporary directory
(so a test can count the calls drctl sent). ``moto`` hands each test that server with
every backend reset, the recording emptied, and ``aws_env`` applied: dummy credentials
(never real ones; the secret is ``DUMMY_SECRET``, which no output may contain) and no
AWS configuration or profile from the machine.

``DenyingProxy`` sits in front of the server and answers chosen requests the way AWS
refuses them (HTTP 403, ``AccessDenied``, in the service's own XML), passing the rest
through. It exists because moto's IAM simulation cannot check Route 53's GET requests in
server mode (every signed GET fails with SignatureDoesNotMatch) and its Route 53 errors
are XML that botocore does not parse; RDS's are fine, so its tests use moto's IAM.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import re
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

DUMMY_KEY_ID = "AKIADRCTLTESTDUMMY01"
DUMMY_SECRET = "drctl-dummy-secret-Kq7wP2vX9zL4mN8r"
#: Bound on one HTTP exchange with the local server (it answers in milliseconds).
HTTP_TIMEOUT = 10.0

_ROUTE53_CHANGE = re.compile(r"^POST /2013-04-01/hostedzone/[^/]+/rrset/?$")


class MotoServer:
    """A running moto server: its endpoint, a reset, its recorded requests, IAM on and off."""

    def __init__(self, recording: Path) -> None:
        from moto.moto_api import recorder
        from moto.server import ThreadedMotoServer

        self._recording = recording
        # moto reads MOTO_RECORDER_FILEPATH once, at import; this server records here.
        recorder._location = str(recording)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def stop(self) -> None:
        self._post("/moto-api/recorder/stop-recording")
        self._server.stop()

    def _post(self, path: str, data: bytes = b"") -> str:
        # Not form-encoded: moto reads reset-auth's number from the raw body.
        request = urllib.request.Request(
            self.endpoint + path, data=data, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as reply:
            return str(reply.read().decode())

    def reset(self) -> None:
        """Every backend emptied, IAM checks off, and a fresh recording started."""
        self._post("/moto-api/reset")
        self._post("/moto-api/reset-auth", b"inf")
        self._post("/moto-api/recorder/reset-recording")
        self._post("/moto-api/recorder/start-recording")

    def forget_requests(self) -> None:
        """Empty the recording (call it after arranging a test, before drctl runs)."""
        self._post("/moto-api/recorder/reset-recording")

    @contextlib.contextmanager
    def iam_enforced(self) -> Iterator[None]:
        """moto checks every request's signature and IAM policy while inside."""
        self._post("/moto-api/reset-auth", b"0")
        try:
            yield
        finally:
            self._post("/moto-api/reset-auth", b"inf")

    def requests(self) -> list[dict[str, Any]]:
        """The recorded requests: method, path, body (text), oldest first."""
        found = []
        text = self._recording.read_text() if self._recording.exists() else ""
        for line in text.splitlines():
            entry = json.loads(line)
            body = entry.get("body") or ""
            if entry.get("body_encoded"):
                body = base64.b64decode(body).decode(errors="replace")
            found.append(
                {"method": entry["method"], "path": urlsplit(entry["url"]).path, "body": body}
            )
        return found

    def count(self, operation: str) -> int:
        """How many times ``operation`` was called since the last reset."""
        total = 0
        for r in self.requests():
            if operation == "ChangeResourceRecordSets":
                total += bool(_ROUTE53_CHANGE.match(f"{r['method']} {r['path']}"))
            else:
                total += bool(re.search(rf"(^|&)Action={operation}(&|$)", r["body"]))
        return total


@pytest.fixture(name="aws_env")
def aws_env_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Dummy AWS credentials and no machine AWS configuration; returns the dummy secret."""
    for name in (
        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ROUTE53", "AWS_ENDPOINT_URL_RDS", "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return DUMMY_SECRET


@pytest.fixture(name="moto_server", scope="module")
def moto_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's ThreadedMotoServer on 127.0.0.1 and a free port, for one test module."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = MotoServer(tmp_path_factory.mktemp("moto") / "recording.jsonl")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="moto")
def moto_fixture(moto_server: MotoServer, aws_env: str) -> MotoServer:
    """The module's moto server, reset, recording, with dummy credentials in the environment."""
    moto_server.reset()
    return moto_server


# -- answering as AWS does when it refuses -------------------------------------------------

_XMLNS = {
    "route53": "https://route53.amazonaws.com/doc/2013-04-01/",
    "rds": "http://rds.amazonaws.com/doc/2014-10-31/",
}


class DenyingProxy:
    """An HTTP proxy to moto that refuses requests matching ``deny`` with AWS's AccessDenied.

    ``deny`` holds regular expressions over ``"METHOD /path"``; the refusal names the
    IAM action the way AWS does. Everything else is passed to moto unchanged.
    """

    def __init__(self, upstream: str, service: str, deny: list[str], action: str) -> None:
        self.upstream = urlsplit(upstream)
        self.deny = [re.compile(d) for d in deny]
        self.refused: list[str] = []
        body = (
            f'<?xml version="1.0"?>\n<ErrorResponse xmlns="{_XMLNS[service]}"><Error>'
            "<Type>Sender</Type><Code>AccessDenied</Code><Message>User: "
            "arn:aws:iam::123456789012:user/drctl-test is not authorized to perform: "
            f"{action} because no identity-based policy allows the {action} action"
            "</Message></Error><RequestId>drctl-test</RequestId></ErrorResponse>"
        ).encode()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                line = f"{self.command} {urlsplit(self.path).path}"
                if any(d.search(line) for d in proxy.deny):
                    proxy.refused.append(line)
                    self._reply(403, [("Content-Type", "text/xml")], body)
                    return
                conn = http.client.HTTPConnection(
                    str(proxy.upstream.hostname), proxy.upstream.port, timeout=HTTP_TIMEOUT
                )
                try:
                    conn.request(self.command, self.path, body=data, headers=dict(self.headers))
                    got = conn.getresponse()
                    headers = [
                        (k, v)
                        for k, v in got.getheaders()
                        if k.lower() not in ("content-length", "connection", "transfer-encoding")
                    ]
                    self._reply(got.status, headers, got.read())
                finally:
                    conn.close()

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=HTTP_TIMEOUT)
