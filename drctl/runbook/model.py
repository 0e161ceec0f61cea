"""The typed runbook model (``apiVersion: drctl/v1``), as validated from YAML.

These models say what a runbook may contain. Step ``with`` inputs and target fields
are validated afterwards against the step type's and target type's own models,
because those are only known once the type name is read.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from drctl.runbook.durations import parse_duration

API_VERSION = "drctl/v1"
LINT_CODES = ("DR001", "DR002", "DR003", "DR004", "DR005", "DR006", "DR007")

# Brackets are kept out of ids because fan-out instances are named ``id[item]``.
Slug = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", strict=True)]
Duration = Annotated[float, BeforeValidator(parse_duration, json_schema_input_type=str | float)]
LintCode = Literal["DR001", "DR002", "DR003", "DR004", "DR005", "DR006", "DR007"]
ParamType = Literal["str", "int", "float", "bool", "duration", "list", "map"]


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


def no_items() -> list[Any]:
    """A new empty list: the default factory of list fields in pydantic models.

    Not ``list`` itself: pydantic reads a default factory's signature as it builds a
    model, and a builtin's signature is parsed from its text by tokenize, which compiles
    its regular expressions first (~2 ms at every start, before the first step).
    """
    return []


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


class Metadata(_Model):
    """Who the runbook is for and what it does."""

    name: Slug
    description: str = ""
    owner: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class Objectives(_Model):
    """Recovery objectives a drill is measured against."""

    rto: Duration | None = None
    rpo: Duration | None = None


class ParamSpec(_Model):
    """A typed runbook parameter, bound from ``-p key=value`` or ``--params-file``."""

    type: ParamType = "str"
    default: Any = None
    required: bool = False
    choices: list[Any] | None = None
    description: str = ""


class ApproveSpec(_Model):
    """``approve: {count, not_by_starter, expires}``: a gate that other people open.

    Approvals are given with ``drctl approve RUN_ID STEP`` from any machine sharing the
    state store, each for exactly the plan hash and the gate's rendered text; ``--yes``,
    ``--approve`` and the prompt count only as the vote of whoever runs drctl.
    """

    count: int = Field(default=1, ge=1, le=10)
    not_by_starter: bool = False
    expires: Duration | None = Field(default=None, gt=0)


class Settings(_Model):
    """Execution settings; command-line flags override them."""

    state: str | None = None
    lock: str | None = None
    step_timeout: Duration = 300.0
    concurrency: int = Field(default=8, ge=1, le=1024)
    #: Steps a plan may fan out to; the compiler refuses more before expanding them.
    max_steps: int = Field(default=10_000, ge=1, le=50_000)
    cooldown: Duration | None = Field(
        default=None,
        description=(
            "Refuse a new mutating run on the same lock key this soon after the last one "
            "finished (e.g. 1h), read from the state store; --override-cooldown --reason "
            "TEXT runs anyway, journaled."
        ),
    )
    identity_env: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = (
        None
    )


class Retries(_Model):
    """How often and how patiently a failed step is tried again."""

    attempts: int = Field(default=1, ge=1, le=100)
    delay: Duration = 0.0
    backoff: float = Field(default=1.0, ge=1.0, le=10.0)
    max_delay: Duration | None = None


class Fallback(_Model):
    """``on_failure: {run: ID}``: run a step from ``fallbacks`` instead of failing."""

    run: Slug


OnFailure = Literal["abort", "continue", "rollback"] | Fallback


class RollbackSpec(_Model):
    """A custom undo for a step: a step of its own, run when the run rolls back."""

    type: str
    target: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeout: Duration | None = None
    description: str | None = None


class StepSpec(_Model):
    """One step as written in the runbook, before templating and expansion."""

    id: Slug
    type: str
    target: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    requires: Annotated[list[str] | None, BeforeValidator(_one_or_many)] = None
    when: str | bool | None = None
    for_each: list[Any] | str | None = None
    as_: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = Field(
        default="item", alias="as"
    )
    timeout: Duration | None = None
    retries: Retries | None = None
    on_failure: OnFailure = "abort"
    rollback: RollbackSpec | None = None
    approve: bool | ApproveSpec = False
    description: str | None = None
    acknowledge: list[LintCode] = Field(default_factory=no_items)
    fences: Slug | None = Field(
        default=None,
        description=(
            "On a fence step: the target it fences (e.g. old_primary), when that is not its "
            "own target (a control-plane or shell fence). A promote accepts the fence's "
            "verified success as proof that this target is fenced."
        ),
    )
    #: The targets a ``target`` (or a fan-out over targets) decided at run time may name.
    target_one_of: list[Slug] | None = Field(default=None, min_length=1)
    #: Steps this verification step verifies (for DR004), when it checks them through
    #: another target (a write through the DNS name verifies the promote).
    verifies: Annotated[
        list[Slug] | None,
        BeforeValidator(_one_or_many, json_schema_input_type=str | list[str] | None),
    ] = None
    #: Stop conditions read from just before this step starts until it ends.
    guards: list[GuardSpec] = Field(default_factory=no_items)


class GuardSpec(_Model):
    """A stop condition: a read-only step evaluated in the background while the run lasts.

    It reads every ``every``; ``trip_after`` failed readings in a row trip it, and the run
    then halts (launches nothing more, lets in-flight steps finish; resumable) or rolls
    back (halts, then undoes completed mutating steps in reverse). A reading that cannot
    be taken (the system does not answer) counts as a failure under ``on_error: trip``
    and is left out under ``on_error: ignore``.
    """

    id: Slug
    type: str
    target: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    every: Duration = Field(default=10.0, gt=0)
    trip_after: int = Field(default=3, ge=1, le=1000)
    on_trip: Literal["halt", "rollback"] = "halt"
    on_error: Literal["trip", "ignore"] = "trip"
    timeout: Duration | None = None
    description: str | None = None

    def as_step(self) -> StepSpec:
        """The guard's reading as a step spec, compiled like any step."""
        return StepSpec.model_validate(
            {"id": self.id, "type": self.type, "target": self.target, "with": self.with_,
             "timeout": self.timeout, "description": self.description}
        )  # fmt: skip


class RunbookHeader(_Model):
    """Everything in a runbook but its steps (validated apart so one bad step hides nothing)."""

    api_version: Literal["drctl/v1"] = Field(alias="apiVersion")
    kind: Literal["Runbook"]
    metadata: Metadata
    objectives: Objectives = Field(default_factory=Objectives)
    params: dict[Slug, ParamSpec] = Field(default_factory=dict)
    targets: dict[Slug, dict[str, Any]] = Field(default_factory=dict)
    settings: Settings = Field(default_factory=Settings)
    acknowledge: list[LintCode] = Field(default_factory=no_items)


class Runbook(RunbookHeader):
    """A whole runbook file: the header, the steps, and the fallback steps."""

    steps: list[StepSpec] = Field(min_length=1)
    fallbacks: list[StepSpec] = Field(
        default_factory=no_items,
        description="Steps that run only when a step's on_failure names them.",
    )
    guards: list[GuardSpec] = Field(
        default_factory=no_items,
        description="Stop conditions read in the background from the run's start to its end.",
    )


StepSpec.model_rebuild()
