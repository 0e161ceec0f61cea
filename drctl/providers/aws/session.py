"""boto3 clients for the AWS step types (Route 53, RDS, EC2), with every error translated once.

::

    StepError
    ├── Unreachable           (drctl.errors) no answer from the endpoint within the timeouts
    └── AwsError              AWS answered with an error, or the request could not be made
        ├── AccessDenied      no usable credentials, or they lack the permission (HTTP 401/403)
        └── NotFound          the zone, change, cluster, instance, interface or security
                              group does not exist (or is hidden)

A client is made for one step phase from the target (``region``, ``profile``,
``endpoint_url``), with connect and read timeouts bounded by the step's remaining time
and botocore's standard retry mode capped at three tries, so a hung endpoint fails the
step instead of hanging drctl. Credentials come from boto3's own chain (environment,
shared files and profiles, SSO, instance role); they are never part of a target, and a
secret key or session token that shows up in an error text is masked before it is raised.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from drctl.errors import StepError, Unreachable
from drctl.runbook.targets import AwsTarget, Route53Target
from drctl.steps.base import StepContext

#: Error codes that mean "these credentials may not do this" (or are not valid at all).
ACCESS_CODES = frozenset(
    {
        "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthFailure",
        "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException",
        "UnrecognizedClientException", "InvalidAccessKeyId", "MissingAuthenticationToken",
    }
)  # fmt: skip
#: Route 53, RDS and EC2 spell "does not exist" a few ways; all of them start or end like these.
_NOT_FOUND_MARKS = ("NoSuch", "NotFound")
#: EC2's answer to a ``DryRun=True`` request that the credentials may make.
DRY_RUN_PERMITTED = "DryRunOperation"
#: EC2 appends an encoded policy-evaluation blob (kilobytes) to UnauthorizedOperation.
_ENCODED_FAILURE = re.compile(r"\s*Encoded authorization failure message:\s*\S+")


class AwsError(StepError):
    """Raised when an AWS call fails; ``code`` is AWS's error code (empty if none)."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class AccessDenied(AwsError):
    """Raised when there are no usable credentials, or AWS refuses them the operation."""


class NotFound(AwsError):
    """Raised when the resource named in the call does not exist (or the caller cannot see it)."""


def import_client() -> None:
    """Import boto3 and botocore (about 0.3 s) ahead of the first call."""
    import boto3  # noqa: F401
    import botocore.config  # noqa: F401


_sessions: dict[str | None, Any] = {}
#: boto3 sessions are not thread-safe while making clients; steps may run concurrently.
_session_lock = threading.Lock()


def _text(value: Any) -> str | None:
    """A target field as a string, with empty meaning unset (templates render None as '')."""
    text = "" if value is None else str(value).strip()
    return text or None


class Aws:
    """One AWS service's client for one step phase; every operation goes through ``call``.

    Build it with ``Aws.open(service, target, ctx)``; tests may wrap any botocore client
    (one with a ``Stubber`` attached, say) with ``Aws(client, service)``.
    """

    def __init__(self, client: Any, service: str, *, profile: str | None = None) -> None:
        self.client = client
        self.service = service
        self.profile = profile

    @classmethod
    def open(
        cls, service: str, target: AwsTarget | Route53Target, ctx: StepContext, *, cap: float = 30.0
    ) -> Aws:
        """A client for the target's region, profile and endpoint, bounded by ``ctx.remaining()``."""
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError

        profile = _text(target.profile)
        budget = max(2.0, min(cap, ctx.remaining()))
        config = Config(
            connect_timeout=min(5.0, budget),
            read_timeout=max(2.0, budget / 3),
            retries={"mode": "standard", "total_max_attempts": 3},
            user_agent_appid="drctl",
        )
        try:
            with _session_lock:
                session = _sessions.get(profile)
                if session is None:
                    session = _sessions[profile] = boto3.session.Session(profile_name=profile)
                client = session.client(
                    service,
                    region_name=_text(target.region),
                    endpoint_url=_text(target.endpoint_url),
                    config=config,
                )
        except BotoCoreError as exc:
            raise translate(exc, service, "(client setup)", profile) from exc
        return cls(client, service, profile=profile)

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """``client.<operation>(**params)``; any botocore error becomes an AwsError."""
        from botocore.exceptions import BotoCoreError, ClientError

        method = getattr(self.client, operation)
        try:
            return dict(method(**params))
        except (ClientError, BotoCoreError) as exc:
            api = self.client.meta.method_to_api_mapping.get(operation, operation)
            raise translate(exc, self.service, api, self.profile) from exc

    def permitted(self, operation: str, **params: Any) -> None:
        """``operation`` with ``DryRun=True`` (EC2): returns if AWS says it would be allowed.

        EC2 answers a permitted dry run with the error ``DryRunOperation``; a refusal is the
        AccessDenied that the real call would get, so ``check`` proves the permission
        without changing anything.
        """
        try:
            self.call(operation, DryRun=True, **params)
        except AwsError as exc:
            if exc.code != DRY_RUN_PERMITTED:
                raise


def translate(exc: Exception, service: str, api: str, profile: str | None = None) -> StepError:
    """The one place a botocore exception becomes drctl's: what failed, why, and what to do."""
    from botocore import exceptions as bx

    what = f"{service} {api}"
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error") or {}
        # Some endpoints (moto's among them) nest the error one level deeper.
        nested = (exc.response.get("Errors") or {}).get("Error") or {}
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code") or nested.get("Code") or "")
        message = _scrub(str(error.get("Message") or nested.get("Message") or ""))
        message = _ENCODED_FAILURE.sub(
            " (aws sts decode-authorization-message decodes AWS's reason)", message
        )
        said = f"{code or f'HTTP {status}'}: {message}" if message else code or f"HTTP {status}"
        if code in ACCESS_CODES or (not code and status in (401, 403)):
            who = f"profile {profile}" if profile else "the default credential chain"
            return AccessDenied(
                f"{what}: {said} — the credentials from {who} are not allowed "
                f"{service}:{api}; grant it, or run with credentials that have it",
                code=code,
                status=status,
            )
        if code.startswith(_NOT_FOUND_MARKS[0]) or _NOT_FOUND_MARKS[1] in code:
            return NotFound(f"{what}: {said}", code=code, status=status)
        return AwsError(f"{what}: {said}", code=code, status=status)
    text = _scrub(str(exc))
    credentials = (
        bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError,
        bx.ProfileNotFound, bx.NoAuthTokenError, bx.TokenRetrievalError, bx.SSOError,
    )  # fmt: skip
    if isinstance(exc, credentials):
        return AccessDenied(
            f"{what}: no usable AWS credentials: {text} — set the target's profile, "
            "AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, bx.NoRegionError):
        return AwsError(f"{what}: no AWS region: set the target's region")
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError):
        return Unreachable(f"{what}: no answer: {text}")
    if isinstance(exc, bx.HTTPClientError):
        return Unreachable(f"{what}: connection failed: {text}")
    return AwsError(f"{what}: {text}")


def _scrub(text: str) -> str:
    """Mask a secret access key or session token from the environment if a message holds one."""
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        value = os.environ.get(name, "")
        if len(value) >= 8 and value in text:
            text = text.replace(value, "***")
    return text
