"""``drctl sandbox up|status|down``: a real primary and streaming standbys on loopback."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from drctl.cli.formats import format_option

if TYPE_CHECKING:
    from drctl.sandbox.pair import Sandbox
    from drctl.sandbox.patroni import PatroniSandbox

sandbox_app = typer.Typer(
    help="A local PostgreSQL primary + streaming standbys to fail over.", no_args_is_help=True
)

DIR_HELP = "Sandbox directory (default .drctl/sandbox)."


class StatusFormat(StrEnum):
    text = "text"
    json = "json"


def _sandbox(
    directory: Path | None, base_port: int | None = None, standbys: int | None = None
) -> Sandbox:
    from drctl.sandbox.pair import DEFAULT_BASE_PORT, DEFAULT_DIR, Sandbox

    return Sandbox.at(directory or DEFAULT_DIR, base_port or DEFAULT_BASE_PORT, standbys)


def _patroni(box: Sandbox) -> PatroniSandbox:
    """The sandbox's Patroni cluster (made by ``up --patroni``), beside its plain nodes."""
    from drctl.sandbox.patroni import PatroniSandbox

    first = box.nodes[0]
    return PatroniSandbox(box.root / "patroni", first.port, str(first.bin_dir), first.user)


@sandbox_app.command()
def up(
    directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
    base_port: int | None = typer.Option(
        None,
        "--base-port",
        min=1024,
        max=65000,
        help="PostgreSQL port N of every node (127.0.0.2, 127.0.0.3, …); BIND9 uses N+1 and "
        "sshd N+2, on 127.0.0.1 (default 55432; an existing sandbox keeps its ports).",
    ),
    standbys: int | None = typer.Option(
        None,
        "--standbys",
        help="How many streaming standbys beside the primary, on 127.0.0.3 onwards "
        "(default 2; an existing sandbox keeps its number).",
    ),
    patroni: bool = typer.Option(
        False,
        "--patroni",
        help="Also a Patroni cluster: three PostgreSQL nodes under Patroni over etcd, on "
        "127.0.0.1 from port N+10 (an existing one is started again whatever this says).",
    ),
) -> None:
    """Create (or start again) the primary and its streaming standbys."""
    box = _sandbox(directory, base_port, standbys)
    status = box.up()
    cluster = _patroni(box)
    if patroni or cluster.exists():
        cluster.up()
    root = status.root
    lines = [f"sandbox up in {root}"]
    lines += [f"  {n.role:<8} {n.name:<6} {n.dsn}" for n in status.nodes]
    if status.primary is None or status.standby is None:
        lines.append(
            "  no single primary with a standby: params.yaml left as it was "
            "(see drctl sandbox status)"
        )
    lines += [
        f"  env      {root}/sandbox.env   params  {root}/params.yaml   topology  {root}/topology.yaml",
        "fail it over with:",
        # The three-node runbook reads every node from the topology file; the two-node
        # one the live primary and first standby from the params file.
        f"  drctl run runbooks/sandbox-pg-failover.yaml --params-file {root}/topology.yaml --yes"
        if len(status.nodes) == 3
        else f"  drctl run runbooks/sandbox-pg-pair-failover.yaml --params-file {root}/params.yaml --yes",
    ]
    if cluster.exists():
        for m in cluster.status_json()["members"]:
            lines.insert(-3, f"  patroni  {m['name']:<6} {m['role']} {m['state']} {m['api_url']}")
        lines += [
            "switch the Patroni cluster over with:",
            f"  drctl run runbooks/patroni-switchover.yaml --params-file {cluster.root}/switchover.yaml --yes",
        ]
    sys.stdout.write("\n".join(lines) + "\n")


@sandbox_app.command()
def status(
    directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
    fmt: str = format_option("text", "text", "json"),
) -> None:
    """Show every server, its live role, what it streams from, and its DSN."""
    from drctl.errors import UsageError
    from drctl.sandbox.pair import MANIFEST
    from drctl.sandbox.status import NodeRole

    box = _sandbox(directory)
    if not (box.root / MANIFEST).exists():
        raise UsageError(f"no sandbox in {box.root}", hint="create one with: drctl sandbox up")
    info = box.status()
    cluster = _patroni(box)
    if StatusFormat(fmt) is StatusFormat.json:
        data = info.to_json()
        if cluster.exists():
            data["patroni"] = cluster.status_json()
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return
    sys.stdout.write(f"sandbox {info.root}\n")
    for node in info.nodes:
        state = "running" if node.running else "stopped"
        streams = ""
        if node.role is NodeRole.standby:
            streams = f"from {node.upstream or '?'}" if node.streaming else "not streaming"
        sys.stdout.write(f"  {node.name:<6} {node.role:<8} {state:<8} {streams:<14} {node.dsn}\n")
    if cluster.exists():
        patroni = cluster.status_json()
        sys.stdout.write(f"patroni{' (paused)' if patroni['paused'] else ''}\n")
        for m in patroni["members"]:
            lag = "" if m["lag"] is None else f"lag {m['lag']}"
            sys.stdout.write(
                f"  {m['name']:<6} {m['role']:<8} {m['state']:<9} TL {m['timeline']} {lag:<10} {m['api_url']}\n"
            )


@sandbox_app.command()
def down(directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP)) -> None:
    """Stop the servers and remove the sandbox directory."""
    box = _sandbox(directory)
    _patroni(box).down()
    box.down()
    sys.stdout.write(f"sandbox in {box.root} removed\n")


def register(app: typer.Typer) -> None:
    app.add_typer(sandbox_app, name="sandbox")
