"""Test-only fault injection: die with SIGKILL at a chosen point.

``DRCTL_FAULT=event:N`` kills the process right after the N-th journal event this
process wrote is durable; ``DRCTL_FAULT=after-apply:STEP`` kills it after STEP's
apply returned and before anything about it is journaled; ``started:STEP`` right
after STEP's ``step_started`` is written (durable for a mutating step; a read-only
step's may still be queued), in the middle of the step, before its check;
``record:STEP:KEY`` right after STEP recorded KEY (mid-apply, e.g. once a promote
has signalled the promotion). The crash tests use these to kill a real drctl at
every boundary; without the variable they cost one lookup.
"""

from __future__ import annotations

import os
import signal
import threading

_SPEC = os.environ.get("DRCTL_FAULT", "")
_KILL_AT = int(_SPEC.removeprefix("event:")) if _SPEC.startswith("event:") else 0
_written = [0]
_lock = threading.Lock()


def after_event() -> None:
    if not _KILL_AT:
        return
    with _lock:
        _written[0] += 1
        if _written[0] == _KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)


def after_apply(step_id: str) -> None:
    if f"after-apply:{step_id}" == _SPEC:
        os.kill(os.getpid(), signal.SIGKILL)


def after_started(step_id: str) -> None:
    if f"started:{step_id}" == _SPEC:
        os.kill(os.getpid(), signal.SIGKILL)


def after_record(step_id: str, key: str) -> None:
    if f"record:{step_id}:{key}" == _SPEC:
        os.kill(os.getpid(), signal.SIGKILL)
