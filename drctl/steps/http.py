"""The ``http`` step type."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

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


class Http(StepType):
    """Send an HTTP request and check the status and, optionally, a value in the JSON reply.

    GET, HEAD and OPTIONS requests are read-only checks; other methods mutate.
    TLS certificates are verified unless ``verify_tls: false``.
    """

    name = "http"
    Inputs = HttpInputs
    target_types = frozenset({"http"})

    def step_roles(self, inputs: StepInputs) -> frozenset[Role]:
        assert isinstance(inputs, HttpInputs)
        if inputs.method in _SAFE_METHODS:
            return frozenset({Role.VERIFY})
        return frozenset({Role.MUTATING})

    def verifies(self, inputs: StepInputs) -> bool:
        assert isinstance(inputs, HttpInputs)
        return inputs.method in _SAFE_METHODS or inputs.json_path is not None

    def describe(self, inputs: StepInputs, target: str | None) -> str:
        assert isinstance(inputs, HttpInputs)
        where = f" on {target}" if target else ""
        expect = "/".join(str(s) for s in inputs.expect_status)
        text = f"{inputs.method} {short(inputs.url)}{where}, expect {expect}"
        if inputs.json_path is not None:
            text += f" and {inputs.json_path} == {short(inputs.equals, 30)}"
        return text

    def apply(self, ctx: StepContext) -> None:
        raise NotImplementedError("http execution arrives with the engine")
