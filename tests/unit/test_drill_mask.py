"""Connection strings as drills show and journal them: every secret masked, nothing else."""

from __future__ import annotations

import pytest

from drctl.drill.canary import mask_dsn

LEAKY = [
    ("host=db user=app password=Hunter2-x", "Hunter2-x"),
    ("host=db password = 'it\\'s a secret' user=app", "a secret"),
    ("host=db sslpassword=KeyPass-9", "KeyPass-9"),
    ("host=db password='unterminated Q-77", "Q-77"),
    ("postgresql://app:Hunter2-x@db:5432/postgres", "Hunter2-x"),
    ("postgresql://:OnlyPass-1@db/postgres", "OnlyPass-1"),
    ("postgresql://app:p@ss@word-3@db/postgres", "word-3"),
    ("postgresql://app:pa/ss-4@db/postgres", "ss-4"),
    ("postgresql://app@db/postgres?password=Query-5&sslmode=require", "Query-5"),
    ("mongodb://app:Mongo-6@db1,db2/?replicaSet=rs0", "Mongo-6"),
    ("mongodb+srv://app:Srv-7@cluster.example.com/db?retryWrites=true", "Srv-7"),
    ("mongodb://db1/?tls=true&tlsCertificateKeyFilePassword=KFP-SECRET-1", "KFP-SECRET-1"),
    (
        "mongodb://AKIAX:Key%2F8@db/?authMechanism=MONGODB-AWS"
        "&authMechanismProperties=AWS_SESSION_TOKEN:SESSION-SECRET-2",
        "SESSION-SECRET-2",
    ),
]


@pytest.mark.parametrize(("dsn", "secret"), LEAKY)
def test_secrets_are_masked(dsn: str, secret: str) -> None:
    """Passwords in key=value strings (quoted, escaped), URI user info and secret options never show."""
    shown = mask_dsn(dsn)
    assert secret not in shown, shown
    assert "***" in shown


@pytest.mark.parametrize(
    "dsn",
    [
        "host=db.example.test port=5432 dbname=postgres user=postgres",
        "postgresql://db:5432/app?application_name=a@b",
        "mongodb://db1:27017,db2:27017/?replicaSet=rs0&serverSelectionTimeoutMS=1000",
    ],
)
def test_strings_without_secrets_are_unchanged(dsn: str) -> None:
    """Nothing to hide, nothing changed (a changed string would make resume ask for it again)."""
    assert mask_dsn(dsn) == dsn


def test_error_lines_lose_the_secrets_they_quote() -> None:
    """A client error quoting a password (as written, unquoted or percent-decoded) is scrubbed."""
    from drctl.drill.canary import CanarySpec, make_canary

    pg = make_canary(CanarySpec("postgres", "host=db password='it\\'s a secret'"), "d")
    assert pg.scrub('syntax error near "it\'s a secret"') == 'syntax error near "***"'
    mongo = make_canary(CanarySpec("mongo", "mongodb://app:Key%2F8@db/"), "d")
    assert mongo.scrub("auth failed for Key/8 (Key%2F8)") == "auth failed for *** (***)"
