"""Finding, aborting and force-unlocking runs, and what starting one needs (engine.runner).

Each function opens nothing itself: the caller passes the state store, so the CLI
decides where runs are kept and tests decide what is real.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets as pysecrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from drctl.compiler.plan import Plan
from drctl.engine import events as ev
from drctl.engine.clock import Clock, SystemClock
from drctl.engine.journal import Journal, Sink
from drctl.engine.lock import lock_keys
from drctl.engine.status import RunStatus
from drctl.errors import LockHeld, ResumeRefused, RunNotFound, UsageError
from drctl.state.base import Event, RunRecord, StateStore


@dataclass(frozen=True)
class Who:
    """Who runs drctl, and where: the user, host, process and directory journaled."""

    user: str
    host: str
    pid: int
    cwd: str


def who() -> Who:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return Who(user, socket.gethostname(), os.getpid(), os.getcwd())


def new_run_id(now: float) -> str:
    # Sortable by start time, unique without coordination.
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + pysecrets.token_hex(3)


SinkFactory = Callable[[Plan], Sequence[Sink]]


class PlanChanged(ResumeRefused):
    """Raised by :func:`resume` when the runbook no longer compiles to the run's plan."""

    def __init__(self, run: RunRecord, new_plan: Plan) -> None:
        super().__init__(
            f"the runbook changed since run {run.id} started "
            f"(plan {run.plan_hash[:19]} → {new_plan.hash[:19]})",
            hint="review the change with --allow-changed-plan, which shows the diff and asks",
        )
        self.run = run
        self.new_plan = new_plan


def find_run(store: StateStore, ref: str | None, *, last: bool = False) -> RunRecord:
    """A run by id or unique id prefix, or the most recent (non-dry) run with ``last``."""
    if last or ref is None:
        runs = [r for r in store.list_runs(limit=100) if not r.dry_run]
        if not runs:
            raise RunNotFound(f"no runs in {store.location}")
        return runs[0]
    found = store.find_runs(ref)
    if not found:
        raise RunNotFound(
            f"no run {ref!r} in {store.location}",
            hint="list runs with: drctl runs; a run kept in another store (a runbook's "
            "settings.state, or DRCTL_STATE) needs --state",
        )
    if len(found) > 1:
        raise UsageError(f"{ref!r} matches {len(found)} runs; give more of the id")
    return found[0]


def _params_as_flags(params: Mapping[str, object]) -> tuple[str, ...]:
    flags = []
    for key, value in sorted(params.items()):
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        flags.append(f"{key}={text}")
    return tuple(flags)


def refuse_if_unfinished(store: StateStore, name: str, lock_key: str) -> None:
    for run in store.list_runs(limit=200, name=name):
        shared = set(lock_keys(run.lock_key)) & set(lock_keys(lock_key))
        if shared and RunStatus(run.status).unfinished and not run.dry_run:
            how = "drctl drill --resume" if paused_drill(store, run.id) else "drctl resume"
            raise LockHeld(
                f"run {run.id} of {name} is unfinished ({run.status}); a new run could act on a "
                "half-failed-over system",
                hint=f"continue it with: {how} {run.id}   or give it up with: "
                f"drctl abort {run.id} --reason '…'",
            )


def paused_drill(store: StateStore, run_id: str) -> ev.DrillPaused | None:
    """The run's last ``drill_paused`` event, if it is a drill that can still be measured whole."""
    record = store.get_run(run_id)
    if record is None or not RunStatus(record.status).unfinished:
        return None
    return last_pause(store.events(run_id))


def last_pause(events: Sequence[Event]) -> ev.DrillPaused | None:
    """The last ``drill_paused`` of an unfinished run's journal, if the drill can go on.

    Not if the drill concluded, nor if the run went on without its canary after the
    pause (``drctl resume --unmeasured``, or a resumed drill that was killed). Finished
    and aborted runs are no paused drills either: ``paused_drill`` checks that.
    """
    found: ev.DrillPaused | None = None
    for event in events:
        if event.kind not in (ev.DRILL_PAUSED, ev.RUN_RESUMED, ev.DRILL_MEASURED):
            continue  # decoding only what decides keeps a long journal quick
        fact = ev.decode(event)
        if isinstance(fact, ev.DrillPaused):
            found = fact
        elif isinstance(fact, ev.RunResumed) or (
            isinstance(fact, ev.DrillMeasured) and not fact.paused
        ):
            found = None
    return found


def abort(run: RunRecord, reason: str, store: StateStore, clock: Clock | None = None) -> None:
    """Give up on an unfinished run (journaled); refused while its process holds the lock."""
    clock = clock or SystemClock()
    info = store.lock_info(lock_keys(run.lock_key)[0])
    if (
        info is not None
        and info.run_id == run.id
        and info.lease_id
        and (info.expires_at or 0) > clock.now()
    ):
        raise LockHeld(
            f"run {run.id} is still active: lock {run.lock_key!r} is held by {info.describe()}"
        )
    me = who()
    store.append(
        run.id,
        Event(
            ev.RUN_ABORTED,
            clock.now(),
            data=ev.RunAborted(by=f"{me.user}@{me.host}", reason=reason).to_json(),
        ),
        None,
    )
    store.set_status(run.id, RunStatus.ABORTED, clock.now())


def unlock(
    key: str, lease_id: str, reason: str, store: StateStore, clock: Clock | None = None
) -> str:
    """Force-release a lock by its holder's lease id; audited in the holder's journal."""
    clock = clock or SystemClock()
    info = store.force_release(key, lease_id)
    me = who()
    if info.run_id is not None and store.get_run(info.run_id) is not None:
        store.append(
            info.run_id,
            Event(
                ev.LOCK_FORCE_RELEASED,
                clock.now(),
                data=ev.LockForceReleased(
                    key=key, lease=lease_id, by=f"{me.user}@{me.host}", reason=reason
                ).to_json(),
            ),
            None,
        )
    return info.describe()


def close_sinks(journal: Journal) -> None:
    for sink in journal.sinks:
        sink.close()
