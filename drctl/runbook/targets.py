"""Target types: the systems a step acts on, and which of their fields are secret.

A target is configuration only. The provider that talks to it reads these fields at
execution time; the compiler validates them and exposes the non-secret ones to
templates as ``targets.<name>.<field>``.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class TargetModel(BaseModel):
    """Base of target models; ``secret_fields`` are never shown to templates.

    At run time a step gets its target as this model with secret references resolved
    (``ctx.target.dsn``). ``target["dsn"]`` and ``target.get("dsn")`` still work for
    step types written against 0.1.0, when targets were mappings, with a
    DeprecationWarning.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    secret_fields: ClassVar[frozenset[str]] = frozenset()

    type: str

    def __getitem__(self, field: str) -> Any:
        _mapping_access()
        if field not in type(self).model_fields:
            raise KeyError(field)
        return getattr(self, field)

    def get(self, field: str, default: Any = None) -> Any:
        _mapping_access()
        value = getattr(self, field, None) if field in type(self).model_fields else None
        return default if value is None else value


def _mapping_access() -> None:
    warnings.warn(
        "a target is a model now: read its fields as attributes (target.dsn)",
        DeprecationWarning,
        stacklevel=3,
    )


class PostgresTarget(TargetModel):
    """A PostgreSQL server: ``dsn`` (usually a secret reference), and how to reach its host."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"dsn"})
    dsn: str
    host: str | None = None
    #: For steps that control the server itself (fence stop, rejoin): where it lives.
    data_dir: str | None = None
    ssh: str | None = None
    bin_dir: str | None = None
    os_user: str | None = None
    #: Per-node server options (port, listen address) for pg_ctl start; kept out of the
    #: data directory because pg_rewind copies the configuration from the source.
    start_options: str | None = None
    log_file: str | None = None
    #: Resolve the DSN's host through this DNS server (``host:port``) instead of the
    #: system resolver: a private zone, or a drill that must see the name it repoints.
    dns_server: str | None = None
    #: The name of the ``patroni`` target whose cluster runs this server: then the
    #: fence, promote, rejoin and follow steps refuse unless that cluster is paused.
    managed_by: str | None = None


class MongoTarget(TargetModel):
    """A MongoDB replica set or member, by connection URI."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"uri"})
    uri: str
    host: str | None = None


class SshTarget(TargetModel):
    """A host reached over SSH with strict host-key checking."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"password", "key_passphrase"})
    host: str
    port: int = Field(default=22, ge=1, le=65535)
    user: str
    key_file: str | None = None
    key_passphrase: str | None = None
    password: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    agent: bool = False
    connect_timeout: float = 10.0


class Route53Target(TargetModel):
    """A Route 53 hosted zone."""

    hosted_zone_id: str
    region: str = "us-east-1"
    endpoint_url: str | None = None
    profile: str | None = None


class Rfc2136Target(TargetModel):
    """An authoritative DNS server accepting TSIG-signed dynamic updates."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"tsig_secret"})
    server: str
    port: int = Field(default=53, ge=1, le=65535)
    zone: str
    tsig_key_name: str | None = None
    tsig_algorithm: str = "hmac-sha256"
    tsig_secret: str | None = None


class AwsTarget(TargetModel):
    """An AWS account and region (RDS, Aurora)."""

    region: str
    profile: str | None = None
    endpoint_url: str | None = None


class HttpTarget(TargetModel):
    """An HTTP service: a base URL and headers (values may be secret references)."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"headers"})
    base_url: str
    headers: dict[str, str] = Field(default_factory=dict)
    verify_tls: bool = True


class PatroniTarget(TargetModel):
    """A Patroni cluster, reached through its members' REST APIs.

    ``members`` lists REST API base URLs (``http://db1:8008``); the cluster's own view
    (``GET /cluster``) adds any member not listed. Patroni's write endpoints take basic
    auth (``username``, ``password`` — a secret reference); over HTTPS the server's
    certificate is checked against ``ca_file`` (or the system's CAs) unless
    ``verify_tls: false``, and ``cert_file``/``key_file`` give a client certificate.
    """

    secret_fields: ClassVar[frozenset[str]] = frozenset({"password"})
    members: list[str] = Field(min_length=1)
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify_tls: bool = True
    #: Seconds one REST API request may take.
    request_timeout: float = Field(default=5.0, gt=0, le=60)

    @field_validator("members")
    @classmethod
    def _urls(cls, members: list[str]) -> list[str]:
        for url in members:
            scheme, sep, rest = url.partition("://")
            if not sep or scheme not in ("http", "https") or not rest.split("/")[0]:
                raise ValueError(
                    f"{url!r} is not a REST API URL: write http://host:port or https://host:port"
                )
        return members

    @model_validator(mode="after")
    def _pairs(self) -> PatroniTarget:
        if (self.password is None) != (self.username is None):
            raise ValueError("username and password go together (basic auth)")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the client certificate)")
        return self


class LocalTarget(TargetModel):
    """The machine drctl runs on."""


TARGET_TYPES: dict[str, type[TargetModel]] = {
    "postgres": PostgresTarget,
    "mongo": MongoTarget,
    "ssh": SshTarget,
    "route53": Route53Target,
    "rfc2136": Rfc2136Target,
    "aws": AwsTarget,
    "http": HttpTarget,
    "local": LocalTarget,
    "patroni": PatroniTarget,
}
