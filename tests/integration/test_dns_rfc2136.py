"""rfc2136.update, rfc2136.delete and dns.resolve against a real authoritative BIND9.

Step types are called directly with a real-clock context (RealContext); the whole
path — dry run, a wrong key, kill -9 between the update and its verification, the
secret kept out of every output — goes through the real CLI. One named serves the
module (tests/integration/bind9.py); each test works on owner names of its own, and
reads the zone with its own unsigned queries, never through the code under test.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from drctl.errors import StepError, StepTimeout, Unreachable
from drctl.providers.dns.resolve import Resolve, ResolveInputs
from drctl.providers.dns.rfc2136 import Delete, DeleteInputs, Update, UpdateInputs
from drctl.providers.dns.wire import KeyRefused, RRset, Server, replace
from drctl.runbook.targets import Rfc2136Target
from drctl.steps.base import Role, StepInputs
from tests.integration.bind9 import Bind9, bind9, free_port, new_secret  # noqa: F401
from tests.integration.pg_sandbox import RealContext, drctl, explain, journal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SECRET_ENV = "DRCTL_TEST_TSIG_SECRET"


def _ctx(inputs: StepInputs, named: Bind9, *, timeout: float = 20.0, **target: Any) -> RealContext:
    """A real-clock context whose target is ``named``, with ``target`` fields overridden."""
    return RealContext(inputs, target=named.target(**target), timeout=timeout)


def _runbook(tmp_path: Path, server: Bind9, steps: str) -> str:
    """A runbook with one rfc2136 target ``zone`` on ``server`` (secret by reference) and ``steps``."""
    path = tmp_path / "dns.yaml"
    path.write_text(
        f"""\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: dns-test}}
targets:
  zone:
    type: rfc2136
    server: {server.host}
    port: {server.port}
    zone: {server.zone}
    tsig_key_name: {server.key_name}
    tsig_secret: "${{env:{SECRET_ENV}}}"
settings: {{step_timeout: 20s}}
steps:
{steps}"""
    )
    return str(path)


# -- rfc2136.update ----------------------------------------------------------------------


def test_update_check_apply_verify_undo(bind9: Bind9) -> None:  # noqa: F811
    """check shows old → new without sending anything; apply replaces the RRset once; verify holds; undo restores it."""
    bind9.set_rrset("app", "A", 30, ["127.0.0.2"])
    serial = bind9.serial()
    ctx = _ctx(UpdateInputs(name="app", type="A", values=["127.0.0.3"], ttl=30), bind9)

    assert Update().check(ctx) == "set app.example. A 127.0.0.2 → 127.0.0.3 (TTL 30)"
    assert bind9.query("app") == (30, ["127.0.0.2"])
    assert bind9.serial() == serial, "check changed the zone"
    assert Update().verify(ctx) is False

    Update().apply(ctx)
    assert bind9.query("app") == (30, ["127.0.0.3"])
    assert bind9.serial() == serial + 1
    assert ctx.recorded == {"previous": {"ttl": 30, "values": ["127.0.0.2"]}}
    assert ctx.outputs == {
        "name": "app.example.", "type": "A", "values": ["127.0.0.3"], "ttl": 30,
        "previous_values": ["127.0.0.2"], "previous_ttl": 30,
    }  # fmt: skip
    assert "resolvers may serve the old answer for up to 30s" in ctx.lines[-1]
    assert Update().verify(ctx) is True

    Update().undo(ctx)
    assert bind9.query("app") == (30, ["127.0.0.2"])
    assert Update().verify(ctx) is False
    Update().undo(ctx)  # a second undo finds the old RRset in place and sends nothing
    assert bind9.serial() == serial + 2
    assert "nothing to undo" in ctx.lines[-1]


def test_update_creates_and_undo_deletes_a_new_rrset(bind9: Bind9) -> None:  # noqa: F811
    """A new RRset gets the default TTL 300 and several values; undo deletes it again."""
    bind9.set_rrset("fresh", "A", 0, [])
    ctx = _ctx(UpdateInputs(name="fresh.example.", values=["127.0.0.8", "127.0.0.7"]), bind9)
    assert Update().check(ctx) == "set fresh.example. A (none) → 127.0.0.7, 127.0.0.8 (TTL 300)"
    Update().apply(ctx)
    assert bind9.query("fresh") == (300, ["127.0.0.7", "127.0.0.8"])
    assert ctx.recorded == {"previous": None}
    assert Update().verify(ctx) is True
    Update().undo(ctx)
    assert bind9.query("fresh") == (0, [])


def test_update_keeps_the_old_ttl_and_sends_nothing_when_in_place(bind9: Bind9) -> None:  # noqa: F811
    """Without a ttl the old TTL is kept; a second apply finds the RRset in place and sends no update."""
    bind9.set_rrset("same", "A", 120, ["127.0.0.4"])
    ctx = _ctx(UpdateInputs(name="same", values="127.0.0.5"), bind9)
    Update().apply(ctx)
    assert bind9.query("same") == (120, ["127.0.0.5"])
    serial = bind9.serial()
    again = _ctx(UpdateInputs(name="same", values=["127.0.0.5"]), bind9)
    assert Update().check(again) == "leave same.example. A 127.0.0.5 (TTL 120): already in place"
    Update().apply(again)
    assert bind9.serial() == serial
    assert "nothing sent" in again.lines[-1]
    # A TTL-only change is shown as such, and verify holds the TTL to what was asked.
    ttl = _ctx(UpdateInputs(name="same", values=["127.0.0.5"], ttl=60), bind9)
    assert Update().verify(ttl) is False
    assert Update().check(ttl) == "set same.example. A 127.0.0.5 (TTL 120 → 60)"


@pytest.mark.parametrize(
    ("rdtype", "values", "stored"),
    [
        ("AAAA", ["2001:db8:0:0::1"], ["2001:db8::1"]),
        ("CNAME", ["standby"], ["standby.example."]),
        ("TXT", ["hello world"], ['"hello world"']),
        ("MX", ["10 ns1"], ["10 ns1.example."]),
    ],
)
def test_update_handles_record_types(
    bind9: Bind9,  # noqa: F811
    rdtype: str,
    values: list[str],
    stored: list[str],
) -> None:
    """AAAA, CNAME (relative target), TXT (unquoted text) and MX values are stored and verified in canonical form."""
    owner = f"t-{rdtype.lower()}"
    ctx = _ctx(UpdateInputs(name=owner, type=rdtype.lower(), values=values, ttl=60), bind9)
    Update().apply(ctx)
    assert bind9.query(owner, rdtype) == (60, stored)
    assert Update().verify(ctx) is True
    Update().undo(ctx)
    assert bind9.query(owner, rdtype) == (0, [])


def test_update_names_relative_absolute_and_outside_the_zone(bind9: Bind9) -> None:  # noqa: F811
    """`n`, `n.example` and `n.example.` are the same owner; a name outside the zone and a bad value fail before sending."""
    bind9.set_rrset("n", "A", 30, ["127.0.0.2"])
    for name in ("n", "n.example", "n.example."):
        ctx = _ctx(UpdateInputs(name=name, values=["127.0.0.2"], ttl=30), bind9)
        assert Update().check(ctx) == "leave n.example. A 127.0.0.2 (TTL 30): already in place"
    serial = bind9.serial()
    with pytest.raises(StepError, match=r"db\.other\. is not in zone example\."):
        Update().apply(_ctx(UpdateInputs(name="db.other.", values=["127.0.0.2"]), bind9))
    with pytest.raises(StepError, match=r"invalid A value '300\.1\.1\.1'"):
        Update().check(_ctx(UpdateInputs(name="n", values=["300.1.1.1"]), bind9))
    assert bind9.serial() == serial


def test_update_refuses_to_overwrite_a_concurrent_change(bind9: Bind9) -> None:  # noqa: F811
    """The update's prerequisite is the RRset as read, so a change made meanwhile is refused, not overwritten."""
    bind9.set_rrset("race", "A", 30, ["127.0.0.2"])
    ctx = _ctx(UpdateInputs(name="race", values=["127.0.0.3"], ttl=30), bind9)
    server = Server.of_target(Rfc2136Target(**bind9.target()))
    with pytest.raises(StepError, match="changed since it was read"):
        replace(
            ctx, server, bind9.zone, "race.example.", "A",
            expect=RRset(30, ("127.0.0.9",)), new=RRset(30, ("127.0.0.3",)),
        )  # fmt: skip
    assert bind9.query("race") == (30, ["127.0.0.2"])

    # undo puts back only what this step set: a later change by someone else stays.
    Update().apply(ctx)
    bind9.set_rrset("race", "A", 30, ["127.0.0.66"])
    with pytest.raises(StepError, match=r"is now 127\.0\.0\.66 \(TTL 30\), not what this step set"):
        Update().undo(ctx)
    assert bind9.query("race") == (30, ["127.0.0.66"])


# -- rfc2136.delete ----------------------------------------------------------------------


def test_delete_check_apply_verify_undo(bind9: Bind9) -> None:  # noqa: F811
    """check shows what would go; apply deletes the RRset; verify holds; undo recreates it; an absent RRset sends nothing."""
    bind9.set_rrset("gone", "A", 45, ["127.0.0.2", "127.0.0.3"])
    serial = bind9.serial()
    ctx = _ctx(DeleteInputs(name="gone"), bind9)
    assert Delete().check(ctx) == "delete gone.example. A 127.0.0.2, 127.0.0.3 (TTL 45)"
    assert Delete().verify(ctx) is False
    assert bind9.serial() == serial

    Delete().apply(ctx)
    assert bind9.query("gone") == (0, [])
    assert ctx.recorded == {"previous": {"ttl": 45, "values": ["127.0.0.2", "127.0.0.3"]}}
    assert Delete().verify(ctx) is True
    assert Delete().check(ctx) == "leave gone.example. A: it does not exist"

    again = _ctx(DeleteInputs(name="gone"), bind9)
    Delete().apply(again)
    assert "nothing sent" in again.lines[-1]
    assert bind9.serial() == serial + 1

    Delete().undo(ctx)
    assert bind9.query("gone") == (45, ["127.0.0.2", "127.0.0.3"])
    assert Delete().verify(ctx) is False


# -- failures: key, zone, server --------------------------------------------------------


def test_check_fails_on_a_refused_key_or_an_unserved_zone(bind9: Bind9) -> None:  # noqa: F811
    """A wrong secret (BADSIG), an unknown key (BADKEY), no key, a bad algorithm or secret, and an unserved zone each fail check clearly."""
    inputs = UpdateInputs(name="db", values=["127.0.0.9"], ttl=30)
    before = bind9.query("db")
    wrong = new_secret()
    with pytest.raises(
        KeyRefused, match=r"refused the signature of TSIG key 'drctl-test' \(BADSIG\)"
    ):
        Update().check(_ctx(inputs, bind9, tsig_secret=wrong))
    with pytest.raises(KeyRefused, match=r"does not know TSIG key 'intruder' \(BADKEY\)"):
        Update().check(_ctx(inputs, bind9, tsig_key_name="intruder"))
    with pytest.raises(
        StepError, match=r"refused the update \(REFUSED\): the key may not update zone"
    ):
        Update().check(_ctx(inputs, bind9, tsig_key_name=None, tsig_secret=None))
    with pytest.raises(StepError, match=r"does not serve zone other\. \(REFUSED\)"):
        Update().check(_ctx(UpdateInputs(name="db", values=["127.0.0.9"]), bind9, zone="other."))
    with pytest.raises(StepError, match="algorithm 'hmac-md77' is not supported"):
        Update().check(_ctx(inputs, bind9, tsig_algorithm="hmac-md77"))
    with pytest.raises(StepError, match="secret is not valid base64") as bad:
        Update().check(_ctx(inputs, bind9, tsig_secret="not base64!"))
    assert "not base64!" not in str(bad.value)
    # apply with the wrong key changes nothing either.
    with pytest.raises(KeyRefused):
        Update().apply(_ctx(inputs, bind9, tsig_secret=wrong))
    assert bind9.query("db") == before


def test_unreachable_server_fails_within_the_timeout(bind9: Bind9) -> None:  # noqa: F811
    """A port nobody listens on fails at once; a server that never answers fails within the step's timeout."""
    inputs = UpdateInputs(name="db", values=["127.0.0.9"])
    closed = free_port()
    t0 = time.monotonic()
    with pytest.raises(
        Unreachable, match=rf"cannot reach 127\.0\.0\.1:{closed}: Connection refused"
    ):
        Update().check(_ctx(inputs, bind9, timeout=60.0, port=closed))
    # At once: far below both the step's 60 s and an exchange's 5 s cap, on any machine.
    assert time.monotonic() - t0 < 4.0

    # The kernel accepts the connection; nobody ever reads the request or answers it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        for step, step_inputs in ((Update(), inputs), (Delete(), DeleteInputs(name="db"))):
            t0 = time.monotonic()
            with pytest.raises(Unreachable, match=rf"no answer from 127\.0\.0\.1:{port}") as e:
                step.apply(_ctx(step_inputs, bind9, timeout=1.0, port=port))
            took = time.monotonic() - t0
            # The wait was the step's remaining time (at most its 1 s), not an exchange's
            # 5 s cap; the message says the timeout used, whatever the machine's speed.
            waited = re.search(r"within ([\d.]+)s", str(e.value))
            assert waited and 0.2 <= float(waited.group(1)) <= 1.0, str(e.value)
            assert float(waited.group(1)) - 0.05 <= took < 4.5, took


# -- dns.resolve -------------------------------------------------------------------------


def test_resolve_check_and_verify_via_each_kind_of_resolver(bind9: Bind9) -> None:  # noqa: F811
    """Asked by address, by target name or through the step's target, verify says whether the answer is the expected one now."""
    bind9.set_rrset("res", "A", 30, ["127.0.0.2"])
    targets = {"zone": bind9.target()}
    address = {"ip": bind9.host, "port": bind9.port}
    cases: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
        ({"name": "res.example.", "resolver": address}, None),
        ({"name": "res.example", "resolver": f"{bind9.host}:{bind9.port}"}, None),
        ({"name": "res", "resolver": "zone"}, None),
        ({"name": "res"}, bind9.target()),
    ]
    for given, target in cases:
        right = ResolveInputs.model_validate({**given, "expect": "127.0.0.2"})
        wrong = ResolveInputs.model_validate({**given, "expect": ["127.0.0.3"]})
        ctx = RealContext(right, target=target, targets=targets, timeout=10.0)
        assert Resolve().verify(ctx) is True, given
        assert Resolve().verify(RealContext(wrong, target=target, targets=targets)) is False
        assert re.fullmatch(
            r"resolve res\.example\. A: now 127\.0\.0\.2 \(TTL 30\) via 127\.0\.0\.1:\d+, as expected",
            Resolve().check(ctx) or "",
        ), Resolve().check(ctx)
    # `expect: []` holds for a name that does not exist.
    absent = ResolveInputs(name="nothing-here", expect=[], resolver="zone")
    assert Resolve().verify(RealContext(absent, targets=targets)) is True
    assert Resolve.roles == frozenset({Role.VERIFY})


def test_resolve_waits_until_an_update_shows(bind9: Bind9) -> None:  # noqa: F811
    """dns.resolve keeps polling while the old answer is served and succeeds once an update lands."""
    bind9.set_rrset("later", "A", 30, ["127.0.0.2"])
    inputs = ResolveInputs(
        name="later", expect=["127.0.0.3"], resolver="zone", interval=0.1, deadline=10
    )
    ctx = RealContext(inputs, targets={"zone": bind9.target()}, timeout=15.0)
    timer = threading.Timer(0.6, lambda: bind9.set_rrset("later", "A", 30, ["127.0.0.3"]))
    timer.start()
    try:
        Resolve().apply(ctx)
    finally:
        timer.join(timeout=5)
    assert ctx.outputs["values"] == ["127.0.0.3"]
    # It polled while the old answer was served (the line below), then saw the update,
    # which came 0.6 s in; how many polls fit in that is the machine's speed.
    assert ctx.outputs["polls"] >= 2
    assert 0.5 < ctx.outputs["waited"] < inputs.deadline
    assert any(
        "127.0.0.2 (TTL 30)" in line and "waiting for 127.0.0.3" in line for line in ctx.lines
    )


def test_resolve_times_out_reporting_the_ttl_to_wait(bind9: Bind9) -> None:  # noqa: F811
    """At the deadline dns.resolve fails saying what the name still resolves to and the TTL still to wait."""
    bind9.set_rrset("stale", "A", 120, ["127.0.0.2"])
    inputs = ResolveInputs(
        name="stale", expect="127.0.0.3", resolver="zone", interval=0.2, deadline=0.7
    )
    ctx = RealContext(inputs, targets={"zone": bind9.target()}, timeout=60.0)
    t0 = time.monotonic()
    with pytest.raises(StepTimeout) as failed:
        Resolve().apply(ctx)
    # At its 0.7 s deadline, not the step's 60 s; generous for a loaded machine.
    assert time.monotonic() - t0 < 10.0
    message = str(failed.value)
    polls = re.search(
        r"stale\.example\. A still resolves to 127\.0\.0\.2, not 127\.0\.0\.3, after (\d+) poll\(s\)",
        message,
    )
    # 0.7 s at one poll per 0.2 s: at most 4 polls, fewer when each is slow.
    assert polls and 1 <= int(polls.group(1)) <= 4, message
    assert "may be served for 120s more (TTL still to wait)" in message
    assert ctx.outputs["ttl_remaining"] == 120


def test_resolve_against_a_silent_resolver_times_out(bind9: Bind9) -> None:  # noqa: F811
    """A resolver that never answers makes dns.resolve fail at its deadline with the reason."""
    inputs = ResolveInputs(
        name="db.example.", expect="127.0.0.3", resolver={"ip": "127.0.0.1", "port": free_port()},
        interval=0.2, deadline=1.0,
    )  # fmt: skip
    t0 = time.monotonic()
    with pytest.raises(
        StepTimeout, match=r"no answer after \d+ poll\(s\).*no answer from 127\.0\.0\.1"
    ):
        Resolve().apply(RealContext(inputs, timeout=60.0))
    # At its 1 s deadline (a poll's wait is cut to what is left), not the step's 60 s.
    assert time.monotonic() - t0 < 10.0


# -- through the CLI -----------------------------------------------------------------------


UPDATE_AND_WAIT = """\
  - id: repoint
    type: rfc2136.update
    target: zone
    with: {name: cli, type: A, values: [127.0.0.3], ttl: 30}
  - id: wait-dns
    type: wait
    with:
      until: {type: dns.resolve, target: zone, with: {name: cli, expect: 127.0.0.3}}
      interval: 0.2
      deadline: 5
"""


def _secret_nowhere(secret: str, state: Path, *outputs: str) -> None:
    """The secret is in no CLI output, no journal event and no byte of the state store."""
    for text in outputs:
        assert secret not in text
    assert secret not in json.dumps(journal(state))
    for path in state.parent.glob(state.name + "*"):
        assert secret.encode() not in path.read_bytes(), path


def test_cli_dry_run_then_run_with_a_wait_until_resolve(bind9: Bind9, tmp_path: Path) -> None:  # noqa: F811
    """A dry run shows old → new and changes nothing; the real run updates once and waits on dns.resolve; the secret shows nowhere."""
    bind9.set_rrset("cli", "A", 30, ["127.0.0.2"])
    serial = bind9.serial()
    state = tmp_path / "state.db"
    runbook = _runbook(tmp_path, bind9, UPDATE_AND_WAIT)
    env = {SECRET_ENV: bind9.secret}

    dry = drctl("run", runbook, "--dry-run", "--state", str(state), env=env)
    assert dry.returncode == 0, explain(dry)
    assert "repoint: would set cli.example. A 127.0.0.2 → 127.0.0.3 (TTL 30)" in dry.stdout
    assert bind9.query("cli") == (30, ["127.0.0.2"])
    assert bind9.serial() == serial

    run = drctl("run", runbook, "--state", str(state), env=env)
    assert run.returncode == 0, explain(run)
    assert bind9.query("cli") == (30, ["127.0.0.3"])
    assert bind9.serial() == serial + 1
    events = journal(state)
    recorded = [e["data"] for e in events if e["kind"] == "step_recorded"]
    assert recorded == [{"key": "previous", "value": {"ttl": 30, "values": ["127.0.0.2"]}}]
    done = {e["step"]: e["data"] for e in events if e["kind"] == "step_succeeded"}
    assert set(done) == {"repoint", "wait-dns"}
    _secret_nowhere(bind9.secret, state, dry.stdout, dry.stderr, run.stdout, run.stderr)


def test_cli_wrong_key_fails_with_exit_1_and_changes_nothing(bind9: Bind9, tmp_path: Path) -> None:  # noqa: F811
    """With a wrong TSIG secret the run exits 1 with a clear error, the record is unchanged, and neither secret shows."""
    bind9.set_rrset("cli", "A", 30, ["127.0.0.2"])
    serial = bind9.serial()
    state = tmp_path / "state.db"
    wrong = new_secret()
    run = drctl(
        "run", _runbook(tmp_path, bind9, UPDATE_AND_WAIT), "--state", str(state),
        env={SECRET_ENV: wrong},
    )  # fmt: skip
    assert run.returncode == 1, explain(run)
    assert "refused the signature of TSIG key 'drctl-test' (BADSIG)" in run.stdout + run.stderr
    assert bind9.query("cli") == (30, ["127.0.0.2"])
    assert bind9.serial() == serial
    failed = [e for e in journal(state) if e["kind"] == "step_failed"]
    assert [e["step"] for e in failed] == ["repoint"]
    assert "BADSIG" in failed[0]["data"]["error"]
    _secret_nowhere(wrong, state, run.stdout, run.stderr)
    _secret_nowhere(bind9.secret, state, run.stdout, run.stderr)


def test_cli_kill_after_the_update_then_resume_verifies_without_resending(
    bind9: Bind9,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Killed with SIGKILL between the update and its verification, resume verifies the step instead of sending it again."""
    bind9.set_rrset("crash", "A", 30, ["127.0.0.2"])
    serial = bind9.serial()
    sent_before = bind9.updates_logged("crash")
    state = tmp_path / "state.db"
    runbook = _runbook(tmp_path, bind9, UPDATE_AND_WAIT.replace("name: cli", "name: crash"))
    env = {SECRET_ENV: bind9.secret}

    killed = drctl(
        "run", runbook, "--state", str(state), env={**env, "DRCTL_FAULT": "after-apply:repoint"}
    )
    assert killed.returncode == -signal.SIGKILL, explain(killed)
    assert bind9.query("crash") == (30, ["127.0.0.3"])
    kinds = [(e["kind"], e["step"]) for e in journal(state)]
    assert ("step_recorded", "repoint") in kinds
    assert ("step_succeeded", "repoint") not in kinds

    resumed = drctl("resume", "--last", "--state", str(state), env=env)
    assert resumed.returncode == 0, explain(resumed)
    events = journal(state)
    repoint = [e for e in events if e["step"] == "repoint" and e["kind"] == "step_succeeded"]
    assert len(repoint) == 1
    assert repoint[0]["data"].get("verified_on_resume") is True
    assert "verified on resume" in resumed.stdout
    assert [e["step"] for e in events if e["kind"] == "step_started"].count("repoint") == 1
    assert bind9.serial() == serial + 1, "the update was sent more than once"
    assert bind9.updates_logged("crash") == sent_before + 1
    _secret_nowhere(bind9.secret, state, killed.stdout, resumed.stdout, resumed.stderr)
