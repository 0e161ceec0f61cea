"""The ``http`` step type."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin

if TYPE_CHECKING:
    from drctl.steps.httpclient import Response

from pydantic import Field

from drctl.errors import StepError
from drctl.runbook.targets import HttpTarget
from drctl.steps.base import Role, StepContext, StepInputs, StepType, short

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class HttpInputs(StepInputs):
    method: Literal["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str = Field(description="Absolute URL, or a path joined to an http target's base_url.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Values may be secret references."
    )
    body: str | None = Field(default=None, description="Raw request body.")
    json_body: Any = Field(default=None, alias="json", description="A JSON request body.")
    expect_status: list[int] = Field(default=[200], description="Status codes that mean success.")
    json_path: str | None = Field(
        default=None, description="Dotted path into the JSON response, e.g. 'data.state'."
    )
    equals: Any = Field(default=None, description="Value expected at json_path.")
    verify_tls: bool = Field(default=True, description="Verify the server's certificate.")


Ctx = StepContext[HttpInputs, HttpTarget | None]


class Http(StepType[HttpInputs, HttpTarget | None]):
    """Send an HTTP request and check the status and, optionally, a value in the JSON reply.

    GET, HEAD and OPTIONS requests are read-only checks; other methods mutate. With
    ``json_path`` (and ``equals``) the value in the reply is checked too; a mutating
    request's ``verify`` GETs the same URL and checks that value again.
    TLS certificates are verified unless ``verify_tls: false``.
    """

    name = "http"
    Inputs = HttpInputs
    target_types = frozenset({"http"})

    def step_roles(self, inputs: HttpInputs) -> frozenset[Role]:
        if inputs.method in _SAFE_METHODS:
            return frozenset({Role.VERIFY})
        return frozenset({Role.MUTATING})

    def verifies(self, inputs: HttpInputs) -> bool:
        return inputs.method in _SAFE_METHODS or inputs.json_path is not None

    def describe(self, inputs: HttpInputs, target: str | None) -> str:
        where = f" on {target}" if target else ""
        expect = "/".join(str(s) for s in inputs.expect_status)
        text = f"{inputs.method} {short(inputs.url)}{where}, expect {expect}"
        if inputs.json_path is not None:
            text += f" and {inputs.json_path} == {short(inputs.equals, 30)}"
        return text

    @staticmethod
    def _call(ctx: Ctx, method: str) -> Response:
        from drctl.steps.httpclient import request  # urllib and ssl load only when a step runs

        inputs, target = ctx.inputs, ctx.target
        url = inputs.url
        if target is not None and "://" not in url:
            url = urljoin(target.base_url.rstrip("/") + "/", url.lstrip("/"))
        headers = {**(target.headers if target else {}), **inputs.headers}
        body = None
        if inputs.json_body is not None:
            body = json.dumps(inputs.json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif inputs.body is not None:
            body = inputs.body.encode()
        verify_tls = inputs.verify_tls and (target is None or target.verify_tls)
        return request(
            method, url, headers=headers, body=body if method == inputs.method else None,
            timeout=min(ctx.remaining(), 60.0), verify_tls=verify_tls,
        )  # fmt: skip

    @staticmethod
    def _judge(inputs: HttpInputs, resp: Response) -> str | None:
        if resp.status not in inputs.expect_status:
            return f"status {resp.status}, expected {'/'.join(map(str, inputs.expect_status))}"
        if inputs.json_path is not None:
            value = resp.at(inputs.json_path)
            if inputs.equals is not None and value != inputs.equals:
                return f"{inputs.json_path} is {value!r}, expected {inputs.equals!r}"
        return None

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        resp = self._call(ctx, inputs.method)
        ctx.output("status", resp.status)
        if resp.json is not None:
            ctx.output("json", resp.json)
        problem = self._judge(inputs, resp)
        if problem is not None:
            raise StepError(problem)

    def verify(self, ctx: Ctx) -> bool:
        inputs = ctx.inputs
        if inputs.method in _SAFE_METHODS:
            # Checked by apply already; on resume, ask again.
            return self._judge(inputs, self._call(ctx, inputs.method)) is None
        if inputs.json_path is None:
            return True
        resp = self._call(ctx, "GET")
        try:
            return resp.json is not None and resp.at(inputs.json_path) == inputs.equals
        except StepError:
            return False
