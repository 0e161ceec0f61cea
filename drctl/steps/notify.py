"""The ``notify`` step type."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from drctl.errors import StepError
from drctl.steps.base import StepContext, StepInputs, StepType, published, short


class NotifyInputs(StepInputs):
    url: str = Field(description="Webhook URL; usually a secret reference.")
    message: str = Field(description="The text to send.")
    fields: dict[str, Any] = Field(default_factory=dict, description="Extra JSON fields.")
    timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds per attempt.")


class Notify(StepType[NotifyInputs, None]):
    """POST a JSON message ({"text": …, "run_id": …, …}) to a webhook (Slack, Teams, a pager)."""

    name = "notify"
    outputs = published(
        {
            "status": "The webhook's HTTP status code.",
        }
    )
    Inputs = NotifyInputs

    def runs_in_dry_run(self, inputs: NotifyInputs) -> bool:
        return False  # a dry run sends no message

    def describe(self, inputs: NotifyInputs, target: str | None) -> str:
        return f"notify webhook: {short(inputs.message)}"

    def apply(self, ctx: StepContext[NotifyInputs, None]) -> None:
        from drctl.steps.httpclient import request  # urllib and ssl load only when a step runs

        inputs = ctx.inputs
        payload = {
            "text": inputs.message,
            "run_id": ctx.run_id,
            "runbook": ctx.runbook,
            **inputs.fields,
        }
        resp = request(
            "POST", inputs.url, headers={"Content-Type": "application/json"},
            body=json.dumps(payload).encode(), timeout=min(inputs.timeout, ctx.remaining()),
        )  # fmt: skip
        ctx.output("status", resp.status)
        if not 200 <= resp.status < 300:
            raise StepError(f"webhook answered {resp.status}")
