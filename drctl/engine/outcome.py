"""The one line each journal event is told in: worded here, from its typed facts, only.

The live view, the plain lines, the JSON lines (their ``line``) and ``drctl log`` all
show these words, so a step's outcome reads the same wherever it is seen. The journal
keeps facts (duration, description, verdicts), never words; the one exception is the
``summary`` drctl 0.1.0 wrote with a success, shown as it was for those journals.
"""

from __future__ import annotations

from drctl.engine import events as ev
from drctl.runbook.durations import format_duration
from drctl.state.base import Event


def describe_event(event: Event) -> str | None:
    """The line for a stored event; None for one that is not shown (``step_recorded``)."""
    return line(ev.decode(event), event.token)


def line(fact: ev.JournalEvent, token: int = 0) -> str | None:  # noqa: PLR0915 (one case per event kind)
    """The line for a typed event; ``token``: the fencing token it was journaled under."""
    s = fact.step_id
    match fact:
        # The kinds every run writes first: a case's class is looked up only when it is
        # reached, and the rarer ones are imported on first use (``occasional_events``).
        case ev.RunStarted():
            dry = " [dry run]" if fact.dry_run else ""
            return (
                f"run {fact.run_id} started: {fact.runbook} (plan {fact.plan_hash[:19]}, "
                f"lock {fact.lock_key} token {token}){dry}"
            )
        case ev.StepStarted():
            on = f" on {fact.target}" if fact.target is not None else ""
            does = f": {fact.description}" if fact.description else ""
            return f"{s}: started (attempt {fact.attempt}){on}{does}"
        case ev.StepSucceeded():
            return _succeeded(fact)
        case ev.StepFailed():
            retry = f"; retrying in {fact.retry_in:g}s" if fact.retry_in is not None else ""
            tag = " (ignored: on_failure continue)" if fact.ignored else ""
            attempt = f" (attempt {fact.attempt})" if fact.attempt is not None else ""
            return f"{s}: FAILED{attempt}: {fact.error}{retry}{tag}"
        case ev.StepSkipped():
            return f"{s}: skipped ({fact.reason})"
        case ev.StepChecked():
            if fact.deferred is not None:
                now = f" (now: {fact.error})" if fact.error else ""
                return f"{s}: deferred: {fact.deferred}{now}"
            if fact.ran and fact.ok:
                return f"{s}: ran (read-only): {fact.would} — ok"
            return f"{s}: would {fact.would}" if fact.ok else f"{s}: CHECK FAILED: {fact.error}"
        case ev.StepPreflighted():
            if fact.ok:
                return f"{s}: preflight before any fence: {fact.found}"
            return f"{s}: PREFLIGHT REFUSED before any fence ran: {fact.error}"
        case ev.StepRecorded():
            return None
        case ev.ApprovalNeeded():
            needs = f" ({fact.needs})" if fact.needs else ""
            return f"{s}: waiting for approval: {fact.description}{needs}"
        case ev.ApprovalGranted():
            shown = f": {fact.description}" if fact.description else ""
            return f"{s}: approved ({fact.by}){shown}"
        case ev.ApprovalGiven():
            comment = f": {fact.comment}" if fact.comment else ""
            return f"{s}: approved by {fact.by} on {fact.host} ({fact.how}){comment}"
        case ev.RunInterrupted():
            return "run interrupted"
        case ev.RunFinished():
            return f"run finished: {fact.status} (exit {fact.exit_code}): {fact.message}"
        case ev.RunResumed():
            return f"run resumed by {fact.user}@{fact.host} (token {token})"
        case ev.StepRecovered():
            return f"{s}: recovered by fallback {fact.by}"
        case ev.ApprovalDenied():
            shown = f": {fact.description}" if fact.description else ""
            return f"{s}: approval denied ({fact.by}){shown}"
        case ev.ApprovalRefused():
            return f"{s}: approval by {fact.by} refused: {fact.reason}"
        case ev.UndoStarted():
            return f"{s}: undoing"
        case ev.UndoSucceeded():
            return f"{s}: undone"
        case ev.UndoFailed():
            return f"{s}: UNDO FAILED: {fact.error}"
        case ev.RunAborted():
            return f"run aborted by {fact.by}: {fact.reason}"
        case ev.RunHalted():
            return f"run halted: {fact.reason}"
        case ev.CheckRecorded():
            verdict = "ready" if fact.ready else "NOT READY"
            changed = f"; {len(fact.drift)} changed since the last check" if fact.drift else ""
            return f"check recorded: {verdict} ({len(fact.readings)} readings){changed}"
        case ev.GuardReading():
            failures = f" ({fact.failures} in a row)" if fact.failures else ""
            of = f" (of {fact.for_step})" if fact.for_step else ""
            return f"guard {fact.guard}{of}: {fact.state}{failures}: {fact.reading}"
        case ev.GuardTripped():
            return (
                f"guard {fact.guard}{f' (of {fact.for_step})' if fact.for_step else ''} TRIPPED after {fact.failures} failed readings "
                f"({fact.action}): {fact.reading}"
            )
        case ev.DrillMeasured():
            verdict = "objectives met" if fact.passed else "objectives MISSED"
            missing = "?" if fact.missing is None else fact.missing
            rto = "?" if fact.rto is None else fact.rto
            return f"drill measured: {verdict} (RPO {missing} writes lost, RTO {rto}s)"
        case ev.DrillPaused():
            return (
                f"drill paused: {len(fact.acks.rows)} canary writes acknowledged so far; "
                "drctl drill --resume continues it"
            )
        case ev.LockTakenOver():
            return f"lock {fact.key}: expired lease of {fact.previous} taken over"
        case ev.CooldownOverridden():
            return (
                f"cooldown of {format_duration(fact.cooldown)} overridden by {fact.by} "
                f"(last run {fact.last_run}): {fact.reason}"
            )
        case ev.LockForceReleased():
            return f"lock {fact.key} force-released by {fact.by}: {fact.reason}"
        case ev.Unknown():
            return f"{fact.name} {s or ''}".strip()
    return f"{fact.kind} {s or ''}".strip()


def _succeeded(fact: ev.StepSucceeded) -> str:
    s = fact.step
    if fact.marked_done:
        verdict = f" ({fact.verdict})" if fact.verdict else ""
        if fact.unverified:
            return f"{s}: marked done by the operator UNVERIFIED{verdict}: {fact.reason or ''}"
        return f"{s}: marked done by the operator{verdict}"
    if fact.verified_on_resume:
        return f"{s}: already in effect (verified on resume)"
    if fact.description is not None and fact.duration is not None:
        took = f"{s}: {fact.description} — ok in {format_duration(round(fact.duration, 3))}"
        took += _discarded(fact.outputs)
        # A promote journals which proof of the fence it relied on; the outcome says it.
        proof = fact.outputs.get("fence_proof")
        return f"{took} (fence proof: {proof})" if isinstance(proof, str) else took
    return fact.summary or f"{s}: ok"


def _discarded(outputs: dict[str, object]) -> str:
    """What a rewind discarded (``postgres.rejoin``, ``postgres.follow``), said in its outcome."""
    size = outputs.get("discarded_bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        return ""
    commits = outputs.get("discarded_commits")
    held = f", {commits} committed write transactions" if isinstance(commits, int) else ""
    return (
        f"; discarded {size} bytes of WAL "
        f"({outputs.get('discarded_from')}–{outputs.get('discarded_to')}{held})"
    )
