"""The ``http`` step type."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin

if TYPE_CHECKING:
    from drctl.steps.httpclient import Response

from pydantic import Field, model_validator

from drctl.errors import StepError
from drctl.runbook.model import no_items
from drctl.runbook.targets import HttpTarget
from drctl.steps.base import Role, StepContext, StepInputs, StepType, published, short

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
    absent: bool = Field(
        default=False,
        description="Succeed only if json_path is not in the JSON reply (no 'error' key, say).",
    )
    verify_tls: bool = Field(default=True, description="Verify the server's certificate.")
    outputs: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Values of the JSON reply to publish: output name → dotted path "
            "(`{leader: members.0.name}`); a path missing from the reply fails the step."
        ),
    )
    output_headers: list[str] = Field(
        default_factory=no_items,
        description="Reply headers to publish as outputs.headers (any case; a missing one is null).",
    )
    roles: list[Literal["verify", "lag_check", "traffic", "fence"]] | None = Field(
        default=None,
        description=(
            "What the call counts as for the safety lints. A GET/HEAD/OPTIONS may be verify "
            "and/or lag_check (default verify); another method is always mutating and may "
            "also be traffic (a load balancer's pool) or fence."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> HttpInputs:
        safe = self.method in _SAFE_METHODS
        allowed = {"verify", "lag_check"} if safe else {"traffic", "fence"}
        wrong = sorted(set(self.roles or ()) - allowed)
        if wrong:
            kind = "a read-only" if safe else f"a {self.method}"
            raise ValueError(
                f"{kind} request cannot have the role {', '.join(wrong)} "
                f"(it may have: {', '.join(sorted(allowed))})"
            )
        if self.absent and self.json_path is None:
            raise ValueError("absent: true needs the json_path that must be missing")
        if self.absent and self.equals is not None:
            raise ValueError("absent: true and equals contradict each other: choose one")
        return self


Ctx = StepContext[HttpInputs, HttpTarget | None]


class Http(StepType[HttpInputs, HttpTarget | None]):
    """Send an HTTP request and check the status and, optionally, a value in the JSON reply.

    GET, HEAD and OPTIONS requests are read-only checks; other methods mutate. With
    ``json_path`` (and ``equals``) the value in the reply is checked too, or with
    ``absent: true`` that the reply has no such key; a mutating request's ``verify``
    GETs the same URL and checks that again. TLS certificates are verified unless
    ``verify_tls: false``. ``roles`` lets a call stand for a lag check, a traffic
    switch or a fence in the safety lints.

    Publishes ``status``, ``json`` (the parsed reply), ``headers`` (the
    ``output_headers`` asked for) and one output per entry of ``outputs``.
    """

    name = "http"
    outputs = published(
        {
            "status": "The reply's HTTP status code.",
            "json": "The parsed JSON reply (absent when the reply is not JSON).",
            "headers": "The reply headers named in output_headers (null when missing).",
            "<name>": "One per entry of outputs: the JSON reply's value at that path.",
        }
    )
    Inputs = HttpInputs
    target_types = frozenset({"http"})

    def step_roles(self, inputs: HttpInputs) -> frozenset[Role]:
        claimed = frozenset(Role(r) for r in inputs.roles or ())
        if inputs.method in _SAFE_METHODS:
            return claimed if inputs.roles is not None else frozenset({Role.VERIFY})
        return claimed | {Role.MUTATING}

    def verifies(self, inputs: HttpInputs) -> bool:
        return inputs.method in _SAFE_METHODS or inputs.json_path is not None

    def describe(self, inputs: HttpInputs, target: str | None) -> str:
        where = f" on {target}" if target else ""
        expect = "/".join(str(s) for s in inputs.expect_status)
        text = f"{inputs.method} {short(inputs.url)}{where}, expect {expect}"
        if inputs.json_path is not None and inputs.absent:
            text += f" and no {inputs.json_path}"
        elif inputs.json_path is not None:
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
        return Http._value_problem(inputs, resp)

    @staticmethod
    def _value_problem(inputs: HttpInputs, resp: Response) -> str | None:
        """What is wrong with the value at json_path (None if it is as expected)."""
        path = inputs.json_path
        if path is None:
            return None
        if inputs.absent:
            if resp.json is None:
                return f"the reply is not JSON, so the absence of {path!r} proves nothing"
            try:
                value = resp.at(path)
            except StepError:
                return None
            return f"{path} is in the reply ({short(repr(value), 40)}), expected it absent"
        value = resp.at(path)
        if inputs.equals is not None and value != inputs.equals:
            return f"{path} is {value!r}, expected {inputs.equals!r}"
        return None

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        resp = self._call(ctx, inputs.method)
        ctx.output("status", resp.status)
        if resp.json is not None:
            ctx.output("json", resp.json)
        if inputs.output_headers:
            ctx.output("headers", {h: resp.headers.get(h.lower()) for h in inputs.output_headers})
        problem = self._judge(inputs, resp)
        if problem is not None:
            raise StepError(problem)
        for name, path in inputs.outputs.items():
            ctx.output(name, resp.at(path))

    def verify(self, ctx: Ctx) -> bool:
        inputs = ctx.inputs
        if inputs.method in _SAFE_METHODS:
            # Checked by apply already; on resume, ask again.
            return self._judge(inputs, self._call(ctx, inputs.method)) is None
        if inputs.json_path is None:
            return True
        resp = self._call(ctx, "GET")
        if resp.json is None:
            return False
        try:
            return self._value_problem(inputs, resp) is None
        except StepError:
            return False
