"""The hard fence's pg_hba.conf: what it keeps of an original file, and what it rejects."""

from __future__ import annotations

from drctl.providers.postgres.hba import MARK, fenced, parse

ORIGINAL = """\
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     peer
local   app             app_user                                md5
host    all             all             10.0.0.0/8              scram-sha-256
hostssl replication,app repl            10.1.0.0/16             scram-sha-256  # standbys
host    replication     all             127.0.0.1/32            trust
include_dir conf.d
"""


def test_fenced_keeps_replication_and_the_superusers_socket_only() -> None:
    """Replication lines (narrowed to replication) and local lines narrowed to the superuser are kept, then all else rejected."""
    rules = [line.fields for line in parse(fenced(ORIGINAL, "postgres", "/etc/pg_hba.conf"))]
    assert rules == [
        ("local", "all", "postgres", "peer"),
        ("hostssl", "replication", "repl", "10.1.0.0/16", "scram-sha-256"),
        ("host", "replication", "all", "127.0.0.1/32", "trust"),
        ("local", "all", "all", "reject"),
        ("host", "all", "all", "all", "reject"),
    ]


def test_fenced_file_is_marked_and_names_the_original() -> None:
    """The first line marks a fenced file (so a retry never saves it as the original) and says where the original is."""
    text = fenced(ORIGINAL, "drctl", "/etc/pg_hba.conf")
    assert text.startswith(MARK)
    assert "/etc/pg_hba.conf.drctl-fence" in text
    # A local line for other users only is not kept for drctl's role.
    assert ("local", "app", "drctl", "md5") not in [line.fields for line in parse(text)]


def test_only_an_explicit_reject_line_counts_as_a_fence() -> None:
    """A server with no pg_hba.conf entry for drctl is not taken for a fenced one; a reject line is."""
    from drctl.errors import Unreachable
    from drctl.providers.postgres.session import refused_by_hba

    def failed(text: str) -> Unreachable:
        exc = Unreachable("cannot reach the old primary")
        exc.__cause__ = OSError(f'FATAL:  {text} for host "127.0.0.1", user "app", database "db"')
        return exc

    assert refused_by_hba(failed("pg_hba.conf rejects connection"))
    assert not refused_by_hba(failed("no pg_hba.conf entry"))
