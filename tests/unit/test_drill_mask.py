"""Connection strings as drills show and journal them: every secret masked, nothing else."""

from __future__ import annotations

import pytest

from drctl.drill.conninfo import mask_dsn, secret_values

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
    # A "://" inside a key=value string does not make it a URI.
    ("host=h application_name=http://app password=Sekr3t-a", "Sekr3t-a"),
    ("password=ab://cd-b host=h", "cd-b"),
    # A password holding "/" and "?" unencoded, where nothing parses it first.
    ("mongodb+srv://app:Se/cr?et-c@cluster.example.com/db", "et-c"),
    # Query values run to the next "&": "#" and ";" are part of them; keys are decoded.
    ("postgresql://u@h/db?password=ab#cd-d", "cd-d"),
    ("postgresql://u@h/db?password=ab;cd-e", "cd-e"),
    ("postgresql://u@h/db?pass%77ord=Sekr3t-f", "Sekr3t-f"),
    ("mongodb://db1/?a=1;tlsCertificateKeyFilePassword=x1y2-g&b=2", "x1y2-g"),
    ("postgresql://[::1]:5432,h2:5433/db?user=u&password=pw9-h", "pw9-h"),
    # libpq applies backslash escapes in bare values too.
    ("host=h password=ab\\ cd-i", "cd-i"),
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
        "mongodb://h1/?authMechanism=GSSAPI&authMechanismProperties=SERVICE_NAME:mongodb",
        "postgresql://h:5432/d@b",
        "host=h password='' user=x",
        "host=h passfile=/tmp/pgpass",
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


@pytest.mark.parametrize(
    ("dsn", "read_as"),
    [
        ("host=h password=ab\\ cd", "ab cd"),
        ("host=h password=a\\bc", "abc"),
        ("host=h password='abc\\''", "abc'"),
        ("mongodb://app:Key%2F8@db/", "Key/8"),
        ("mongodb://h1/?tlsCertificateKeyFilePassword=a+b", "a b"),
    ],
)
def test_secret_values_include_what_the_client_reads(dsn: str, read_as: str) -> None:
    """An error line quotes a password as the client read it: that form is scrubbed too."""
    assert read_as in secret_values(dsn)


def test_libpq_reads_the_values_that_are_masked() -> None:
    """What libpq parses as the password is among the values masked (its own parser decides)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    checked = 0
    for dsn, _secret in LEAKY:
        if dsn.startswith(("host=", "password=", "postgresql://")):
            try:
                password = conninfo_to_dict(dsn).get("password")
            except psycopg.ProgrammingError:  # libpq refuses it: the canary's check() does too
                continue
            checked += 1
            if password:
                assert password in secret_values(dsn) or any(
                    password in v for v in secret_values(dsn)
                ), dsn
    assert checked >= 10
