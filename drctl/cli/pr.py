"""``drctl review BASE_REF [PATHS]``: validate, plan and diff every runbook a change touches.

What counts as changed: the files that differ between the merge base of BASE_REF and
HEAD, and the working tree (committed, staged and unstaged changes, plus untracked
files not ignored) — what a pull request from this checkout would show, including
edits not yet committed. In CI the working tree is HEAD, so it is exactly the PR.
The base version of a file is read with ``git show MERGE_BASE:path``; nothing is
fetched, nothing touches the network, and git runs with a timeout.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import replace
from typing import TYPE_CHECKING

import typer

from drctl.cli.review import PARAM_HELP, PARAMS_FILE_HELP
from drctl.errors import UsageError

if TYPE_CHECKING:
    from drctl.compiler.params import ParamInput
    from drctl.render.review import ChangeKind, RunbookChange, Version

    Change = tuple[ChangeKind, str | None, str | None]

GIT_TIMEOUT = 30.0
_YAML = (".yaml", ".yml")
_API_VERSION = re.compile(rb"^apiVersion:\s*[\"']?drctl/v1[\"']?\s*(#.*)?$", re.MULTILINE)


def review(
    base: str = typer.Argument(..., metavar="BASE_REF", help="The git ref the change is against."),
    paths: list[str] | None = typer.Argument(
        None,
        metavar="PATHS",
        help="Only these files or directories (default: YAML under runbooks/ or declaring apiVersion: drctl/v1).",
    ),
    param: list[str] | None = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    params_file: str | None = typer.Option(None, "--params-file", help=PARAMS_FILE_HELP),
    list_only: bool = typer.Option(
        False, "--list", help="Only print the changed runbooks that still exist, one per line."
    ),
) -> None:
    """Validate, plan and diff every runbook changed against BASE_REF; one markdown document.

    Exit 0 when every changed runbook compiles, 2 when one does not (or git fails).
    Required params with no value get stand-ins, so a review never fails for want of one.
    """
    import tempfile

    from drctl.cli.output import write
    from drctl.render import review as render

    top = _git("rev-parse", "--show-toplevel", what="find the repository").decode().strip()
    if _git_ok("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}") is None:
        raise UsageError(
            f"{base!r} is not a commit in this repository",
            hint="check the spelling, or fetch it first (actions/checkout with fetch-depth: 0)",
        )
    merge_base = _git("merge-base", base, "HEAD", what=f"find the merge base of {base} and HEAD")
    mb = merge_base.decode().strip()
    found = _changed(mb, top, paths or [])
    if list_only:
        write("".join(os.path.relpath(os.path.join(top, new)) + "\n" for _, _, new in found if new))
        return

    flags = tuple(param or ())
    changes: list[RunbookChange] = []
    declared: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="drctl-review-") as tmp:
        for n, (kind, old_path, new_path) in enumerate(found):
            old = new = None
            if old_path is not None and new_path is not None:  # a deleted one is only listed
                copy = os.path.join(tmp, str(n), os.path.basename(old_path))
                os.makedirs(os.path.dirname(copy))
                with open(copy, "wb") as fh:
                    fh.write(_git("show", f"{mb}:{old_path}", what=f"read {old_path} at {base}"))
                old = _version(copy, f"{base}:{old_path}", flags, params_file, declared)
            if new_path is not None:
                new = _version(os.path.join(top, new_path), new_path, flags, params_file, declared)
            path = new_path or old_path or ""
            changes.append(render.RunbookChange(path, kind, old, new, old_path))
    unknown = sorted({f.partition("=")[0].strip() for f in flags} - declared)
    if changes and unknown:
        raise UsageError(
            "no changed runbook declares " + ", ".join(repr(u) for u in unknown),
            hint="-p values go to each changed runbook that declares the parameter",
        )
    write(render.as_markdown(base, mb, changes))
    if any(c.invalid for c in changes):
        raise typer.Exit(2)


def _changed(merge_base: str, top: str, paths: list[str]) -> list[Change]:
    """(kind, path at the base, path now) for every changed runbook, sorted by path."""
    from drctl.render.review import ChangeKind

    spec = ["--", *paths] if paths else []
    raw = _git(
        "diff", "--name-status", "-z", "-M", "--no-ext-diff", merge_base, *spec,
        what=f"list the files changed since {merge_base[:12]}",
    )  # fmt: skip
    fields = raw.decode("utf-8", "surrogateescape").split("\0")
    out: list[Change] = []
    i = 0
    while i < len(fields) and fields[i]:
        status = fields[i][0]
        if status in "RC":
            old, new = fields[i + 1], fields[i + 2]
            i += 3
        else:
            old = new = fields[i + 1]
            i += 2
        if status in {"A", "C"}:
            out.append((ChangeKind.added, None, new))
        elif status == "D":
            out.append((ChangeKind.deleted, old, None))
        elif status == "R":
            out.append((ChangeKind.renamed, old, new))
        elif status in "MT":
            out.append((ChangeKind.modified, old, new))
    untracked = _git(
        "ls-files", "--others", "--exclude-standard", "--full-name", "-z", *spec,
        what="list untracked files",
    )  # fmt: skip
    for name in untracked.decode("utf-8", "surrogateescape").split("\0"):
        if name:
            out.append((ChangeKind.added, None, name))
    return sorted(
        (c for c in out if _is_runbook(c, merge_base, top, explicit=bool(paths))),
        key=lambda c: c[2] or c[1] or "",
    )


def _is_runbook(change: Change, merge_base: str, top: str, *, explicit: bool) -> bool:
    """YAML files only; without PATHS, those under runbooks/ or declaring apiVersion drctl/v1."""
    _, old, new = change
    name = new or old or ""
    if not name.endswith(_YAML):
        return False
    if explicit or "runbooks" in name.split("/")[:-1]:
        return True
    if new is not None:
        try:
            with open(os.path.join(top, new), "rb") as fh:
                head = fh.read(1 << 16)
        except OSError:
            return False
    else:
        head = _git("show", f"{merge_base}:{old}", what=f"read {old}")[: 1 << 16]
    return _API_VERSION.search(head) is not None


def _version(
    path: str, label: str, flags: tuple[str, ...], params_file: str | None, declared: set[str]
) -> Version:
    """Compile one version of a runbook (stand-ins for missing required params), shown as
    ``label`` wherever its path would appear."""
    from drctl.compiler.compile import compile_runbook
    from drctl.errors import RunbookInvalid
    from drctl.render.review import Version

    given, stand_ins = _params_for(path, flags, params_file, declared)
    try:
        plan = compile_runbook(path, given, placeholders=True)
    except RunbookInvalid as exc:
        diags = tuple(replace(d, source=label) if d.source == path else d for d in exc.diagnostics)
        return Version(label, None, diags, stand_ins)
    return Version(label, replace(plan, source=label), (), stand_ins)


def _params_for(
    path: str, flags: tuple[str, ...], params_file: str | None, declared: set[str]
) -> tuple[ParamInput, tuple[str, ...]]:
    """The -p flags this runbook declares, and the required params that will get stand-ins."""
    from drctl.compiler.params import ParamInput, bind_params
    from drctl.errors import RunbookInvalid
    from drctl.runbook.loader import load_runbook

    try:
        loaded = load_runbook(path)
    except RunbookInvalid:
        return ParamInput(flags, params_file), ()
    if loaded.header is None:
        return ParamInput(flags, params_file), ()
    specs = loaded.header.params
    declared.update(specs)
    mine = ParamInput(tuple(f for f in flags if f.partition("=")[0].strip() in specs), params_file)
    _, stand_ins, _ = bind_params(specs, mine, path, loaded.document.map, placeholders=True)
    return mine, tuple(sorted(stand_ins))


def _run_git(args: tuple[str, ...]) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", *args],
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise UsageError("git is not installed (or not on PATH)") from exc
    except subprocess.TimeoutExpired as exc:
        raise UsageError(f"git {args[0]} took longer than {GIT_TIMEOUT:g}s") from exc


def _git(*args: str, what: str) -> bytes:
    """git's stdout; a failure is a UsageError saying what drctl was trying to do."""
    result = _run_git(args)
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UsageError(
            f"git could not {what}" + (f": {detail[0]}" if detail else ""),
            hint="run drctl review inside a git checkout with the base ref fetched",
        )
    return result.stdout


def _git_ok(*args: str) -> bytes | None:
    result = _run_git(args)
    return result.stdout if result.returncode == 0 else None


def register(app: typer.Typer) -> None:
    app.command()(review)
