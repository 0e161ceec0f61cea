"""The journal's event kinds. A run's story is the sequence of these, in order."""

from __future__ import annotations

RUN_STARTED = "run_started"
RUN_RESUMED = "run_resumed"
RUN_INTERRUPTED = "run_interrupted"
RUN_FINISHED = "run_finished"
RUN_ABORTED = "run_aborted"
LOCK_TAKEN_OVER = "lock_taken_over"
LOCK_FORCE_RELEASED = "lock_force_released"
APPROVAL_NEEDED = "approval_needed"
APPROVAL_GRANTED = "approval_granted"
APPROVAL_DENIED = "approval_denied"
STEP_CHECKED = "step_checked"  # dry run: what the step would do, or why it cannot
STEP_STARTED = "step_started"  # written before check/apply: the write-ahead intent
STEP_RECORDED = "step_recorded"  # a value apply keeps for verify/undo, durable before the change
STEP_SUCCEEDED = "step_succeeded"
STEP_FAILED = "step_failed"
STEP_SKIPPED = "step_skipped"
STEP_RECOVERED = "step_recovered"  # failed, and its fallback step succeeded
UNDO_STARTED = "undo_started"
UNDO_SUCCEEDED = "undo_succeeded"
UNDO_FAILED = "undo_failed"
DRILL_MEASURED = "drill_measured"  # a drill's RTO/RPO and verdict, appended after the run
DRILL_PAUSED = "drill_paused"  # a drill's run stopped unfinished: its canary's acks, to resume
