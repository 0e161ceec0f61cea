"""``drctl sandbox up|status|down``: a real primary/standby pair on loopback."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path

import typer

sandbox_app = typer.Typer(
    help="A local PostgreSQL primary + streaming standby to fail over.", no_args_is_help=True
)

DIR_HELP = "Sandbox directory (default .drctl/sandbox)."


class StatusFormat(StrEnum):
    text = "text"
    json = "json"


def _sandbox(directory: Path | None, base_port: int | None = None):  # type: ignore[no-untyped-def]
    from drctl.sandbox.pair import DEFAULT_BASE_PORT, DEFAULT_DIR, Sandbox

    return Sandbox.at(directory or DEFAULT_DIR, base_port or DEFAULT_BASE_PORT)


@sandbox_app.command()
def up(
    directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
    base_port: int | None = typer.Option(
        None,
        "--base-port",
        min=1024,
        max=65000,
        help="PostgreSQL port N of both nodes (127.0.0.2 and 127.0.0.3); BIND9 uses N+1 and "
        "sshd N+2, on 127.0.0.1 (default 55432; an existing sandbox keeps its ports).",
    ),
) -> None:
    """Create (or start again) the primary and its streaming standby."""
    box = _sandbox(directory, base_port)
    status = box.up()
    pg = status["postgres"]
    sys.stdout.write(
        f"sandbox up in {status['dir']}\n"
        f"  primary  {pg.get('primary', {}).get('dsn')}\n"
        f"  standby  {pg.get('standby', {}).get('dsn')}\n"
        f"  env      {status['dir']}/sandbox.env   params  {status['dir']}/params.yaml\n"
        f"fail it over with:\n"
        f"  drctl run runbooks/sandbox-pg-failover.yaml --params-file {status['dir']}/params.yaml --yes\n"
    )


@sandbox_app.command()
def status(
    directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
    fmt: StatusFormat = typer.Option(StatusFormat.text, "--format", help="text or json."),
) -> None:
    """Show the servers, their live roles and DSNs."""
    from drctl.errors import UsageError
    from drctl.sandbox.pair import MANIFEST

    box = _sandbox(directory)
    if not (box.root / MANIFEST).exists():
        raise UsageError(f"no sandbox in {box.root}", hint="create one with: drctl sandbox up")
    info = box.status()
    if fmt is StatusFormat.json:
        sys.stdout.write(json.dumps(info, indent=2, sort_keys=True) + "\n")
        return
    sys.stdout.write(f"sandbox {info['dir']}\n")
    for role, node in info["postgres"].items():
        state = "running" if node["running"] else "stopped"
        sys.stdout.write(f"  {role:<8} {node['node']} {state:<8} {node['dsn']}\n")


@sandbox_app.command()
def down(directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP)) -> None:
    """Stop the servers and remove the sandbox directory."""
    box = _sandbox(directory)
    box.down()
    sys.stdout.write(f"sandbox in {box.root} removed\n")


def register(app: typer.Typer) -> None:
    app.add_typer(sandbox_app, name="sandbox")
