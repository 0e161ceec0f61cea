"""route53.upsert and route53.delete against moto's Route 53 server, and through the CLI.

The end-to-end path (read, change, GetChange, read back, undo; the CLI's run, dry run,
refusal, kill -9 and resume, rollback; the example runbook) runs against moto's server.
moto answers ``INSYNC`` at once — for every change, even an unknown change id — and gives
every change the same id, so the PENDING → INSYNC polling, its deadlines and the error
branches are tested with botocore's ``Stubber`` on a real client, and the calls drctl
sent are counted from moto's request recording. moto's IAM simulation cannot check
Route 53's GET requests, so refusals come from ``DenyingProxy`` answering as AWS does.
"""

from __future__ import annotations

import datetime
import json
import re
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from drctl.errors import StepError, Unreachable
from drctl.providers.aws.hosted_zone import HostedZone
from drctl.providers.aws.session import AccessDenied, Aws, NotFound, translate
from drctl.providers.dns.route53 import (
    CHANGE_ID,
    PREVIOUS,
    Delete,
    DeleteInputs,
    Upsert,
    UpsertInputs,
)
from drctl.steps.base import StepInputs
from drctl.testing import FakeContext
from tests.conftest import RUNBOOKS
from tests.integration.moto_server import (  # noqa: F401
    DUMMY_SECRET,
    DenyingProxy,
    MotoServer,
    aws_env_fixture,
    moto_fixture,
    moto_server_fixture,
)
from tests.integration.pg_sandbox import RealContext, drctl, explain, journal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

OLD = {"Name": "db.example.", "Type": "CNAME", "TTL": 60, "ResourceRecords": [{"Value": "old.example."}]}  # fmt: skip
EAST = {
    "Name": "app.example.", "Type": "CNAME", "SetIdentifier": "east", "Weight": 100, "TTL": 60,
    "ResourceRecords": [{"Value": "east-lb.example."}],
}  # fmt: skip
WEST = {**EAST, "SetIdentifier": "west", "Weight": 0, "ResourceRecords": [{"Value": "west-lb.example."}]}  # fmt: skip


def _client(moto: MotoServer) -> Any:
    return boto3.client("route53", endpoint_url=moto.endpoint, region_name="us-east-1")


def _zone(moto: MotoServer, *records: dict[str, Any]) -> str:
    """A fresh example. zone holding ``records``; returns its id (as drctl's target takes it)."""
    client = _client(moto)
    zone_id = str(
        client.create_hosted_zone(Name="example.", CallerReference="t")["HostedZone"]["Id"]
    )
    for rrs in records:
        _put(moto, zone_id, rrs)
    moto.forget_requests()
    return zone_id.rsplit("/", 1)[-1]


def _put(moto: MotoServer, zone_id: str, rrs: dict[str, Any]) -> None:
    batch = {"Changes": [{"Action": "UPSERT", "ResourceRecordSet": rrs}]}
    _client(moto).change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch=batch)


def _sets(moto: MotoServer, zone_id: str) -> list[dict[str, Any]]:
    """The zone's record sets as Route 53 lists them, without the apex NS and SOA."""
    listed = _client(moto).list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return [r for r in listed if r["Type"] not in ("NS", "SOA")]


def _target(moto: MotoServer, zone_id: str, endpoint: str | None = None) -> dict[str, Any]:
    return {"type": "route53", "hosted_zone_id": zone_id, "region": "us-east-1",
            "endpoint_url": endpoint or moto.endpoint}  # fmt: skip


def _ctx(inputs: StepInputs, target: dict[str, Any], **kw: Any) -> RealContext:
    return RealContext(inputs, target=target, timeout=30.0, **kw)


def _repoint(**extra: Any) -> UpsertInputs:
    return UpsertInputs.model_validate(
        {"name": "db.example", "type": "CNAME", "values": "new.example.", "ttl": 30, **extra}
    )


# -- route53.upsert ------------------------------------------------------------------------


def test_upsert_check_apply_verify_undo_restores_the_old_record(moto: MotoServer) -> None:
    """check shows old → new, apply journals the old record set then changes it, verify reads it back, undo restores it."""
    zone_id = _zone(moto, OLD)
    target = _target(moto, zone_id)
    ctx = _ctx(_repoint(), target)

    assert Upsert().check(ctx) == "db.example. CNAME old.example. → new.example. (TTL 60 → 30)"
    assert moto.count("ChangeResourceRecordSets") == 0
    Upsert().apply(ctx)
    assert ctx.recorded[PREVIOUS] == OLD
    assert ctx.recorded[CHANGE_ID] == ctx.outputs["change_id"]
    assert _sets(moto, zone_id) == [
        {**OLD, "TTL": 30, "ResourceRecords": [{"Value": "new.example."}]}
    ]
    assert ctx.outputs["previous_values"] == ["old.example."] and ctx.outputs["previous_ttl"] == 60
    assert "resolvers may serve the old answer for up to 60s" in ctx.lines[-1]
    assert Upsert().verify(ctx) is True
    assert moto.count("ChangeResourceRecordSets") == 1

    Upsert().undo(ctx)
    assert _sets(moto, zone_id) == [OLD]
    assert Upsert().verify(ctx) is False
    assert "(TTL 30 → 60): restored" in ctx.lines[-1]
    Upsert().undo(ctx)  # a second undo finds it restored and sends nothing
    assert "nothing to undo" in ctx.lines[-1]
    assert moto.count("ChangeResourceRecordSets") == 2


def test_upsert_creates_a_record_set_and_undo_deletes_it(moto: MotoServer) -> None:
    """A record set that did not exist is created with the default TTL; its undo deletes it."""
    zone_id = _zone(moto)
    ctx = _ctx(UpsertInputs(name="db.example.", type="A", values=["10.0.0.2", "10.0.0.1"]),
               _target(moto, zone_id))  # fmt: skip
    assert Upsert().check(ctx) == "db.example. A (none) → 10.0.0.2, 10.0.0.1 (TTL 300)"
    Upsert().apply(ctx)
    assert ctx.recorded[PREVIOUS] is None
    created = _sets(moto, zone_id)
    assert [(r["Name"], r["TTL"]) for r in created] == [("db.example.", 300)]
    assert Upsert().verify(ctx) is True
    Upsert().undo(ctx)
    assert _sets(moto, zone_id) == []


def test_nothing_is_sent_when_the_record_set_is_already_as_asked(moto: MotoServer) -> None:
    """An upsert that finds its record set in place sends no change, records nothing, and undoes nothing."""
    zone_id = _zone(moto, OLD)
    ctx = _ctx(UpsertInputs(name="db.example.", type="CNAME", values=["OLD.example"]),
               _target(moto, zone_id))  # fmt: skip
    assert Upsert().check(ctx) == "db.example. CNAME old.example. (TTL 60): already in place"
    Upsert().apply(ctx)
    assert ctx.recorded == {}
    assert "nothing sent" in ctx.lines[-1]
    assert Upsert().verify(ctx) is True
    Upsert().undo(ctx)
    assert moto.count("ChangeResourceRecordSets") == 0
    assert _sets(moto, zone_id) == [OLD]


def test_weighted_record_drains_and_undo_restores_it_exactly(moto: MotoServer) -> None:
    """A weight-only upsert keeps the values, leaves the other weighted record alone, and undo restores every field."""
    zone_id = _zone(moto, EAST, WEST)
    before = _sets(moto, zone_id)
    ctx = _ctx(UpsertInputs(name="app.example.", type="CNAME", set_identifier="east", weight=0),
               _target(moto, zone_id))  # fmt: skip
    assert Upsert().check(ctx) == (
        "app.example. CNAME [east] east-lb.example. (TTL 60, weight 100 → 0)"
    )
    Upsert().apply(ctx)
    after = {r["SetIdentifier"]: r for r in _sets(moto, zone_id)}
    assert after["east"] == {**EAST, "Weight": 0}
    assert after["west"] == WEST
    assert Upsert().verify(ctx) is True
    Upsert().undo(ctx)
    assert _sets(moto, zone_id) == before


def test_failover_alias_record_is_replaced_and_restored_exactly(moto: MotoServer) -> None:
    """A PRIMARY failover alias record pointed elsewhere comes back with its alias, health evaluation and role."""
    primary = {
        "Name": "www.example.", "Type": "A", "SetIdentifier": "primary", "Failover": "PRIMARY",
        "AliasTarget": {"HostedZoneId": "Z35SXDOTRQ7X7K", "DNSName": "east-lb.elb.example.",
                        "EvaluateTargetHealth": True},
    }  # fmt: skip
    zone_id = _zone(moto, primary)
    inputs = UpsertInputs.model_validate({
        "name": "www.example.", "type": "A", "set_identifier": "primary",
        "alias": {"hosted_zone_id": "Z1H1FL5HABSF5", "dns_name": "west-lb.elb.example."},
    })  # fmt: skip
    ctx = _ctx(inputs, _target(moto, zone_id))
    assert "alias east-lb.elb.example. (Z35SXDOTRQ7X7K, evaluate health) → alias west-lb" in (
        Upsert().check(ctx) or ""
    )
    Upsert().apply(ctx)
    (now,) = _sets(moto, zone_id)
    assert now["Failover"] == "PRIMARY"
    assert now["AliasTarget"]["DNSName"].rstrip(".") == "west-lb.elb.example"
    assert now["AliasTarget"]["EvaluateTargetHealth"] is False
    assert Upsert().verify(ctx) is True
    Upsert().undo(ctx)
    assert _sets(moto, zone_id) == [primary]


def test_check_fails_on_a_missing_zone_a_foreign_name_or_a_cname_clash(moto: MotoServer) -> None:
    """check refuses a zone that does not exist, a name outside the zone, a CNAME beside other types, and nothing to create."""
    zone_id = _zone(moto, {"Name": "www.example.", "Type": "A", "TTL": 60,
                           "ResourceRecords": [{"Value": "10.0.0.1"}]})  # fmt: skip
    target = _target(moto, zone_id)
    with pytest.raises(StepError, match="hosted zone ZNOSUCHZONE does not exist"):
        Upsert().check(_ctx(_repoint(), _target(moto, "ZNOSUCHZONE")))
    with pytest.raises(StepError, match=r"db\.other\. is not in hosted zone example\."):
        Upsert().check(_ctx(_repoint(name="db.other."), target))
    with pytest.raises(StepError, match=r"www\.example\. has A record sets: a CNAME cannot share"):
        Upsert().check(_ctx(_repoint(name="www.example."), target))
    with pytest.raises(StepError, match="does not exist, and the step gives no values"):
        Upsert().check(
            _ctx(UpsertInputs(name="new.example.", set_identifier="a", weight=1), target)
        )
    assert moto.count("ChangeResourceRecordSets") == 0


def test_undo_refuses_a_record_set_changed_since(moto: MotoServer) -> None:
    """undo does not overwrite a record set someone changed after the step, and says what it was."""
    zone_id = _zone(moto, OLD)
    ctx = _ctx(_repoint(), _target(moto, zone_id))
    Upsert().apply(ctx)
    _put(moto, zone_id, {**OLD, "ResourceRecords": [{"Value": "someone-else.example."}]})
    moto.forget_requests()
    with pytest.raises(StepError, match=r"changed since; not undone \(it was old\.example\."):
        Upsert().undo(ctx)
    assert _sets(moto, zone_id)[0]["ResourceRecords"] == [{"Value": "someone-else.example."}]


# -- route53.delete ------------------------------------------------------------------------


def test_delete_check_apply_verify_undo(moto: MotoServer) -> None:
    """delete shows what goes, removes exactly that record set, verifies it gone, and undo recreates it."""
    zone_id = _zone(moto, EAST, WEST)
    ctx = _ctx(DeleteInputs(name="app.example.", type="CNAME", set_identifier="west"),
               _target(moto, zone_id))  # fmt: skip
    assert (
        Delete().check(ctx)
        == "app.example. CNAME [west] west-lb.example. (TTL 60, weight 0) → (none)"
    )
    Delete().apply(ctx)
    assert ctx.recorded[PREVIOUS] == WEST
    assert _sets(moto, zone_id) == [EAST]
    assert Delete().verify(ctx) is True
    Delete().undo(ctx)
    assert sorted(_sets(moto, zone_id), key=lambda r: r["SetIdentifier"]) == [EAST, WEST]
    assert Delete().verify(ctx) is False

    gone = _ctx(DeleteInputs(name="nothing.example.", type="A"), _target(moto, zone_id))
    assert Delete().check(gone) == "nothing.example. A (none): already in place"
    Delete().apply(gone)
    Delete().undo(gone)
    assert gone.recorded == {}
    assert moto.count("ChangeResourceRecordSets") == 2


# -- the INSYNC wait and the error branches, with botocore's Stubber -------------------------


class _Stubbed(Upsert):
    """route53.upsert on a stubbed client (moto never answers PENDING)."""

    def __init__(self, client: Any) -> None:
        self.stubbed = client

    def zone(self, ctx: Any) -> HostedZone:
        return HostedZone(Aws(self.stubbed, "route53"), "/hostedzone/Z1")


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    """A real route53 client with a Stubber attached (no network)."""
    client = boto3.client("route53", region_name="us-east-1", aws_access_key_id="AKIDSTUB",
                          aws_secret_access_key="stub-secret")  # fmt: skip
    with Stubber(client) as stub:
        yield client, stub


def _change_info(status: str) -> dict[str, Any]:
    return {"ChangeInfo": {"Id": "/change/C1", "Status": status,
                           "SubmittedAt": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)}}  # fmt: skip


def _listing(*records: dict[str, Any]) -> dict[str, Any]:
    return {"ResourceRecordSets": list(records), "IsTruncated": False, "MaxItems": "300"}


def test_apply_polls_pending_until_insync(stubbed: tuple[Any, Stubber]) -> None:
    """apply sends one UPSERT and polls GetChange every poll_interval while PENDING, until INSYNC."""
    client, stub = stubbed
    stub.add_response("list_resource_record_sets", _listing(OLD),
                      {"HostedZoneId": "Z1", "StartRecordName": "db.example.", "MaxItems": "300"})  # fmt: skip
    stub.add_response("change_resource_record_sets", _change_info("PENDING"))
    for status in ("PENDING", "PENDING", "INSYNC"):
        stub.add_response("get_change", _change_info(status), {"Id": "C1"})
    ctx = FakeContext(_repoint(poll_interval=2), target={})
    _Stubbed(client).apply(ctx)
    stub.assert_no_pending_responses()
    assert ctx.slept == [2.0, 2.0]
    assert ctx.recorded == {PREVIOUS: OLD, CHANGE_ID: "C1"}


def test_insync_wait_gives_up_at_its_deadline(stubbed: tuple[Any, Stubber]) -> None:
    """A change still PENDING at insync_timeout (or the step's deadline) fails the step, saying it was sent."""
    client, stub = stubbed
    for _ in range(3):
        stub.add_response("get_change", _change_info("PENDING"))
    zone = HostedZone(Aws(client, "route53"), "Z1")
    ctx = FakeContext(_repoint(), target={})
    with pytest.raises(StepError, match=r"C1 is still PENDING after 4s \(limit 5s\); it was sent"):
        zone.wait_insync(ctx, "C1", timeout=5.0, interval=2.0)
    assert ctx.slept == [2.0, 2.0]
    stub.assert_no_pending_responses()

    for _ in range(2):
        stub.add_response("get_change", _change_info("PENDING"))
    short_step = FakeContext(_repoint(), target={}, timeout=3.0)
    with pytest.raises(StepError, match=r"limit 3s"):
        zone.wait_insync(short_step, "C1", timeout=300.0, interval=2.0)
    stub.assert_no_pending_responses()


def test_verify_waits_for_the_recorded_change(stubbed: tuple[Any, Stubber]) -> None:
    """verify (as on resume) reads the record set back, then waits for the recorded change to be INSYNC."""
    client, stub = stubbed
    new = {**OLD, "TTL": 30, "ResourceRecords": [{"Value": "new.example."}]}
    stub.add_response("list_resource_record_sets", _listing(new))
    stub.add_response("get_change", _change_info("PENDING"))
    stub.add_response("get_change", _change_info("INSYNC"))
    ctx = FakeContext(_repoint(poll_interval=1), target={}, recorded={CHANGE_ID: "C1"})
    assert _Stubbed(client).verify(ctx) is True
    assert ctx.slept == [1.0]
    stub.add_response("list_resource_record_sets", _listing(OLD))
    assert _Stubbed(client).verify(ctx) is False
    stub.assert_no_pending_responses()


def test_aws_errors_become_clear_step_errors(stubbed: tuple[Any, Stubber], aws_env: str) -> None:
    """AccessDenied, a missing change, a refused batch and an unreachable endpoint each fail with what and why."""
    client, stub = stubbed
    denied = "User: arn:aws:iam::123456789012:user/ops is not authorized to perform: route53:ChangeResourceRecordSets"
    stub.add_response("list_resource_record_sets", _listing(OLD))
    stub.add_client_error("change_resource_record_sets", "AccessDenied", denied, 403)
    ctx = FakeContext(_repoint(), target={})
    with pytest.raises(AccessDenied) as refused:
        _Stubbed(client).apply(ctx)
    assert refused.value.message == (
        f"route53 ChangeResourceRecordSets: AccessDenied: {denied} — the credentials from the "
        "default credential chain are not allowed route53:ChangeResourceRecordSets; grant it, "
        "or run with credentials that have it"
    )
    assert ctx.recorded == {PREVIOUS: OLD}  # journaled before the change; no change id

    zone = HostedZone(Aws(client, "route53"), "Z1")
    stub.add_client_error("get_change", "NoSuchChange", "Could not find resource with ID: C9", 404)
    with pytest.raises(NotFound, match="route53 GetChange: NoSuchChange: Could not find"):
        zone.wait_insync(ctx, "C9", 10.0, 1.0)
    stub.add_client_error("change_resource_record_sets", "InvalidChangeBatch", "RRSet exists", 400)
    with pytest.raises(
        StepError, match="ChangeResourceRecordSets: InvalidChangeBatch: RRSet exists"
    ):
        zone.change(ctx, "CREATE", OLD)
    stub.assert_no_pending_responses()

    leaked = ClientError({"Error": {"Code": "SignatureDoesNotMatch",
                                    "Message": f"signed with {aws_env}"}}, "GetHostedZone")  # fmt: skip
    assert aws_env not in translate(leaked, "route53", "GetHostedZone").message

    nobody = _target_nobody()
    with pytest.raises(Unreachable, match="route53 GetHostedZone: no answer"):
        Upsert().check(FakeContext(_repoint(), target=nobody, timeout=10.0))


def _target_nobody() -> dict[str, Any]:
    """A route53 target whose endpoint is a loopback port nobody listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"type": "route53", "hosted_zone_id": "Z1", "endpoint_url": f"http://127.0.0.1:{port}"}


# -- through the CLI -----------------------------------------------------------------------


def _runbook(tmp_path: Path, zone_id: str, endpoint: str, extra: str = "") -> str:
    path = tmp_path / "repoint.yaml"
    path.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: repoint-db}\n"
        f'targets:\n  zone: {{type: route53, hosted_zone_id: {zone_id}, endpoint_url: "{endpoint}"}}\n'
        "settings: {step_timeout: 30s}\n"
        "steps:\n"
        "  - id: repoint\n    type: route53.upsert\n    target: zone\n"
        "    with: {name: db.example., type: CNAME, values: new.example., ttl: 30, poll_interval: 0.2s}\n"
        + extra
    )
    return str(path)


def _events(state: Path, step: str | None = None) -> list[dict[str, Any]]:
    return [e for e in journal(state) if step is None or e["step"] == step]


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert DUMMY_SECRET not in text


def test_run_journals_the_old_record_before_changing_it(moto: MotoServer, tmp_path: Path) -> None:
    """`drctl run` repoints the record; the journal holds the old record set before the change and no secret."""
    zone_id = _zone(moto, OLD)
    state = tmp_path / "state.db"
    done = drctl("run", _runbook(tmp_path, zone_id, moto.endpoint), "--state", str(state))
    assert done.returncode == 0, explain(done)
    assert "db.example. CNAME old.example. → new.example. (TTL 60 → 30)" in done.stdout
    assert _sets(moto, zone_id)[0]["ResourceRecords"] == [{"Value": "new.example."}]
    events = _events(state, "repoint")
    kinds = [(e["kind"], (e["data"] or {}).get("key")) for e in events]
    assert kinds == [("step_started", None), ("step_recorded", PREVIOUS),
                     ("step_recorded", CHANGE_ID), ("step_succeeded", None)]  # fmt: skip
    assert events[1]["data"]["value"] == OLD
    assert moto.count("ChangeResourceRecordSets") == 1
    _assert_no_secret(done.stdout, done.stderr, json.dumps(journal(state)))


def test_dry_run_shows_current_to_new_and_changes_nothing(moto: MotoServer, tmp_path: Path) -> None:
    """`drctl run --dry-run` shows the record's current → new values, sends no change and records nothing."""
    zone_id = _zone(moto, OLD)
    state = tmp_path / "state.db"
    dry = drctl(
        "run", _runbook(tmp_path, zone_id, moto.endpoint), "--dry-run", "--state", str(state)
    )
    assert dry.returncode == 0, explain(dry)
    assert "db.example. CNAME old.example. → new.example. (TTL 60 → 30)" in dry.stdout
    assert "nothing was changed" in dry.stdout + dry.stderr
    assert _sets(moto, zone_id) == [OLD]
    assert moto.count("ChangeResourceRecordSets") == 0
    kinds = {e["kind"] for e in _events(state)}
    assert "step_checked" in kinds and not kinds & {"step_started", "step_recorded"}


def test_access_denied_fails_clearly_with_nothing_half_done(
    moto: MotoServer, tmp_path: Path
) -> None:
    """A refused change exits 1 naming the permission; the record is untouched and the journal says exactly that."""
    zone_id = _zone(moto, OLD)
    proxy = DenyingProxy(moto.endpoint, "route53", [r"^POST /2013-04-01/hostedzone/[^/]+/rrset"],
                         "route53:ChangeResourceRecordSets")  # fmt: skip
    try:
        state = tmp_path / "state.db"
        run = drctl("run", _runbook(tmp_path, zone_id, proxy.endpoint), "--state", str(state))
        assert run.returncode == 1, explain(run)
        out = run.stdout + run.stderr
        assert (
            "route53 ChangeResourceRecordSets: AccessDenied: User: arn:aws:iam::123456789012:user/drctl-test"
            in out
        )
        assert "not allowed route53:ChangeResourceRecordSets" in out
        assert "Traceback" not in out
        assert proxy.refused == [f"POST /2013-04-01/hostedzone/{zone_id}/rrset/"]
        assert _sets(moto, zone_id) == [OLD]
        events = _events(state, "repoint")
        assert [(e["kind"], (e["data"] or {}).get("key")) for e in events] == [
            ("step_started", None), ("step_recorded", PREVIOUS), ("step_failed", None),
        ]  # fmt: skip
        assert "AccessDenied" in events[-1]["data"]["error"]

        # A check that may not even read the zone fails the dry run the same way.
        proxy.deny.append(re.compile(r"^GET "))
        dry = drctl("run", _runbook(tmp_path, zone_id, proxy.endpoint), "--dry-run",
                    "--state", str(tmp_path / "dry.db"))  # fmt: skip
        assert dry.returncode == 1, explain(dry)
        assert "route53 GetHostedZone: AccessDenied" in dry.stdout + dry.stderr
        _assert_no_secret(out, dry.stdout, dry.stderr, json.dumps(journal(state)))
    finally:
        proxy.close()
    assert moto.count("ChangeResourceRecordSets") == 0


def test_kill_9_after_the_change_then_resume_verifies_without_resending(
    moto: MotoServer, tmp_path: Path
) -> None:
    """Killed between the change and its outcome, resume proves the change with verify and does not send it again."""
    zone_id = _zone(moto, OLD)
    state = tmp_path / "state.db"
    runbook = _runbook(tmp_path, zone_id, moto.endpoint)
    killed = drctl(
        "run", runbook, "--state", str(state), env={"DRCTL_FAULT": "after-apply:repoint"}
    )
    assert killed.returncode == -signal.SIGKILL, explain(killed)
    before = _events(state, "repoint")
    assert [e["kind"] for e in before] == ["step_started", "step_recorded", "step_recorded"]
    assert moto.count("ChangeResourceRecordSets") == 1

    resumed = drctl("resume", "--last", "--state", str(state))
    assert resumed.returncode == 0, explain(resumed)
    assert "verified on resume" in resumed.stdout
    done = [e for e in _events(state, "repoint") if e["kind"] == "step_succeeded"]
    assert len(done) == 1 and done[0]["data"]["verified_on_resume"] is True
    assert moto.count("ChangeResourceRecordSets") == 1
    assert _sets(moto, zone_id)[0]["ResourceRecords"] == [{"Value": "new.example."}]


def test_rollback_restores_the_record_from_the_journal(moto: MotoServer, tmp_path: Path) -> None:
    """A later failing step with on_failure: rollback makes the engine undo the upsert from what it journaled."""
    zone_id = _zone(moto, OLD)
    state = tmp_path / "state.db"
    failing = ("  - id: fail\n    type: shell\n    with: {command: 'false', mutates: false}\n"
               "    on_failure: rollback\n")  # fmt: skip
    run = drctl("run", _runbook(tmp_path, zone_id, moto.endpoint, failing), "--state", str(state))
    assert run.returncode == 1, explain(run)
    kinds = [(e["kind"], e["step"]) for e in _events(state)]
    assert ("step_succeeded", "repoint") in kinds and ("undo_succeeded", "repoint") in kinds
    assert _sets(moto, zone_id) == [OLD]
    assert moto.count("ChangeResourceRecordSets") == 2


# -- the example runbook ---------------------------------------------------------------------


@pytest.fixture
def health_url() -> Iterator[str]:
    """A loopback HTTP server answering 200, standing in for the standby region's health check."""

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()


def test_example_runbook_fails_over_against_moto(
    moto: MotoServer, tmp_path: Path, health_url: str
) -> None:
    """runbooks/route53-regional-failover.yaml moves the Aurora writer and flips the weights, and a dry run first changes nothing."""
    east = {**EAST, "Name": "app.example.com.", "SetIdentifier": "us-east-1",
            "ResourceRecords": [{"Value": "primary-lb.us-east-1.elb.amazonaws.com."}]}  # fmt: skip
    west = {**east, "SetIdentifier": "us-west-2", "Weight": 0,
            "ResourceRecords": [{"Value": "standby-lb.us-west-2.elb.amazonaws.com."}]}  # fmt: skip
    client = _client(moto)
    zone_id = client.create_hosted_zone(Name="example.com.", CallerReference="rb")["HostedZone"][
        "Id"
    ]
    for rrs in (east, west):
        _put(moto, zone_id, rrs)
    rds = boto3.client("rds", endpoint_url=moto.endpoint, region_name="us-east-1")
    rds.create_db_cluster(DBClusterIdentifier="payments", Engine="aurora-postgresql",
                          MasterUsername="app", MasterUserPassword="not-a-real-password")  # fmt: skip
    for name in ("payments-1", "payments-2"):
        rds.create_db_instance(DBInstanceIdentifier=name, DBClusterIdentifier="payments",
                               Engine="aurora-postgresql", DBInstanceClass="db.r6g.large")  # fmt: skip
    moto.forget_requests()
    params = ["-p", f"zone_id={zone_id.rsplit('/', 1)[-1]}", "-p", f"standby_health_url={health_url}",
              "-p", f"aws_endpoint={moto.endpoint}", "-p", "move_db_writer=true"]  # fmt: skip
    runbook = str(RUNBOOKS / "route53-regional-failover.yaml")

    dry = drctl("run", runbook, *params, "--dry-run", "--state", str(tmp_path / "dry.db"))
    assert dry.returncode == 0, explain(dry)
    assert "would fail Aurora cluster payments over: writer payments-1 → payments-2" in dry.stdout
    assert (
        "app.example.com. CNAME [us-west-2] standby-lb.us-west-2.elb.amazonaws.com. (TTL 60, weight 0 → 100)"
        in dry.stdout
    )
    assert moto.count("ChangeResourceRecordSets") == 0 and moto.count("FailoverDBCluster") == 0

    run = drctl("run", runbook, *params, "--yes", "--state", str(tmp_path / "state.db"))
    assert run.returncode == 0, explain(run)
    weights = {r["SetIdentifier"]: r["Weight"] for r in _sets(moto, zone_id)}
    assert weights == {"us-east-1": 0, "us-west-2": 100}
    members = rds.describe_db_clusters(DBClusterIdentifier="payments")["DBClusters"][0][
        "DBClusterMembers"
    ]
    assert [m["DBInstanceIdentifier"] for m in members if m["IsClusterWriter"]] == ["payments-2"]
    assert moto.count("ChangeResourceRecordSets") == 2 and moto.count("FailoverDBCluster") == 1
