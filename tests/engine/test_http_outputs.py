"""The http step's outputs (status, headers, JSON values by path) and its absent-key check, on a real loopback server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from drctl.errors import StepError
from drctl.steps.http import Http, HttpInputs
from drctl.testing import FakeContext

CLUSTER = {"leader": "node3", "members": [{"name": "node2", "lag": 0}, {"name": "node3", "lag": 0}]}


@pytest.fixture
def api() -> Iterator[str]:
    """A loopback server: /cluster answers JSON with an X-Etag header, /text answers plain text."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/cluster":
                body, kind = json.dumps(CLUSTER).encode(), "application/json"
            else:
                body, kind = b"not json", "text/plain"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("X-Etag", "v42")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _apply(**inputs: Any) -> FakeContext[HttpInputs, None]:
    ctx = FakeContext(HttpInputs(**inputs))
    Http().apply(ctx)
    return ctx


def test_http_publishes_status_headers_and_values_by_path(api: str) -> None:
    """outputs maps names to JSON paths, output_headers picks headers in any case; status is always published."""
    ctx = _apply(
        url=f"{api}/cluster",
        outputs={"leader": "leader", "second": "members.0.name"},
        output_headers=["x-etag", "X-Missing"],
    )
    assert ctx.outputs["status"] == 200
    assert ctx.outputs["leader"] == "node3" and ctx.outputs["second"] == "node2"
    assert ctx.outputs["headers"] == {"x-etag": "v42", "X-Missing": None}
    with pytest.raises(StepError, match=r"response has no 'members.5.name'"):
        _apply(url=f"{api}/cluster", outputs={"x": "members.5.name"})


def test_http_can_require_a_json_key_to_be_absent(api: str) -> None:
    """absent: true passes when json_path is missing, fails when it is present, and a non-JSON reply proves nothing."""
    _apply(url=f"{api}/cluster", json_path="error", absent=True)
    with pytest.raises(StepError, match=r"leader is in the reply \('node3'\), expected it absent"):
        _apply(url=f"{api}/cluster", json_path="leader", absent=True)
    with pytest.raises(StepError, match="not JSON"):
        _apply(url=f"{api}/text", json_path="error", absent=True)
    ctx = FakeContext(HttpInputs(url=f"{api}/cluster", json_path="error", absent=True))
    assert Http().verify(ctx) is True
