"""Runs, their status and their journals, as text or JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from drctl.engine.events import StepRecorded, StepStarted, decode
from drctl.engine.outcome import line
from drctl.engine.replay import RunState
from drctl.engine.status import RunStatus, StepStatus
from drctl.render.values import flatten, inline
from drctl.state.base import Event, LockInfo, RunRecord
from drctl.visible import visible


def _t(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts)) if ts else "-"


def runs_table(runs: Sequence[RunRecord]) -> str:
    if not runs:
        return "no runs\n"
    lines = [f"{'RUN':<23} {'STATUS':<17} {'STARTED':<21} {'BY':<20} RUNBOOK"]
    for r in runs:
        status = r.status + (" (dry)" if r.dry_run else "")
        lines.append(
            f"{r.id:<23} {status:<17} {_t(r.started_at):<21} {r.user + '@' + r.host:<20.20} {r.name}"
        )
    return visible("\n".join(lines) + "\n")


def runs_json(runs: Sequence[RunRecord]) -> str:
    rows = [
        {"id": r.id, "status": r.status, "name": r.name, "runbook": r.runbook, "started_at": r.started_at,
         "finished_at": r.finished_at, "user": r.user, "host": r.host, "dry_run": r.dry_run, "plan_hash": r.plan_hash}
        for r in runs
    ]  # fmt: skip
    return json.dumps(rows, indent=2, sort_keys=True) + "\n"


def status_text(
    run: RunRecord, state: RunState, order: Sequence[str], lock: LockInfo | None
) -> str:
    out = [
        f"run {run.id}: {run.status}{' (dry run)' if run.dry_run else ''}",
        f"  runbook  {run.runbook} ({run.name})",
        f"  plan     {run.plan_hash}",
        f"  started  {_t(run.started_at)} by {run.user}@{run.host} (pid {run.pid}), drctl {run.version}",
    ]
    if run.finished_at:
        out.append(f"  finished {_t(run.finished_at)}")
    if lock is not None and lock.lease_id is not None:
        holder = "this run" if lock.run_id == run.id else f"run {lock.run_id}"
        out.append(
            f"  lock     {lock.key} held by {holder} (lease {lock.lease_id}, token {lock.token}, expires {_t(lock.expires_at)})"
        )
    out.append("")
    live = _live(run, lock)
    for sid in order:
        s = state.steps.get(sid)
        status = _step_status(s.status if s else StepStatus.PENDING, live)
        detail = ""
        if (
            s is not None
            and s.error
            and status in (StepStatus.FAILED, StepStatus.RETRYING, StepStatus.IGNORED)
        ):
            detail = f"  {s.error}"
        attempts = f" ×{s.attempts}" if s is not None and s.attempts > 1 else ""
        out.append(f"  {status:<10} {sid}{attempts}{detail}")
    return visible("\n".join(out) + "\n")


def _live(run: RunRecord, lock: LockInfo | None) -> bool:
    """The run is going on now: its record says running and its lease is held and fresh."""
    return (
        run.status == RunStatus.RUNNING
        and lock is not None
        and lock.run_id == run.id
        and lock.lease_id is not None
        and (lock.expires_at or 0.0) > time.time()
    )


def _step_status(status: StepStatus, live: bool) -> StepStatus:
    """A step started with no outcome is running only while its run is; else interrupted."""
    return StepStatus.INTERRUPTED if status is StepStatus.RUNNING and not live else status


def status_json(
    run: RunRecord, state: RunState, order: Sequence[str], lock: LockInfo | None
) -> str:
    live = _live(run, lock)
    data = {
        "id": run.id, "status": run.status, "name": run.name, "runbook": run.runbook,
        "plan_hash": run.plan_hash, "dry_run": run.dry_run, "started_at": run.started_at,
        "finished_at": run.finished_at, "user": run.user, "host": run.host,
        "lock": None if lock is None else {"key": lock.key, "lease_id": lock.lease_id, "run_id": lock.run_id, "token": lock.token, "expires_at": lock.expires_at},
        "steps": [
            {"id": sid, "status": _step_status(state.steps[sid].status if sid in state.steps else StepStatus.PENDING, live),
             "attempts": state.steps[sid].attempts if sid in state.steps else 0,
             "error": state.steps[sid].error if sid in state.steps else None,
             "outputs": state.steps[sid].outputs if sid in state.steps else {}}
            for sid in order
        ],
    }  # fmt: skip
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def log_text(events: Sequence[Event]) -> str:
    lines = []
    for e in events:
        fact = decode(e)
        text = line(fact, e.token)
        if isinstance(fact, StepRecorded):
            text = f"{fact.step}: recorded {fact.key}"
        lines.append(f"{e.seq:>5} {_t(e.ts)} [{e.token}] {text}")
        if isinstance(fact, StepStarted) and fact.inputs:
            # What the attempt was really given, rendered (secrets masked when journaled).
            lines.extend(f"{'':8}with.{k}: {inline(v)}" for k, v in flatten(fact.inputs).items())
    return visible("\n".join(lines) + ("\n" if lines else ""))


def log_json(events: Sequence[Event]) -> str:
    return "".join(
        json.dumps({**e.to_json(), "line": line(decode(e), e.token)}, sort_keys=True, default=str)
        + "\n"
        for e in events
    )
