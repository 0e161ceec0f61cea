"""RTO and RPO from the canary's acknowledgements and the run's journal; pure functions.

- RPO: acknowledged writes missing on the new primary — how many, and the time span
  between the first and the last of them (a lost acknowledged write is lost data, so
  an objective of ``rpo: 0`` fails on any missing write).
- RTO: the longest window with no successful write while the canary ran, and the time
  from the first mutating step's start to the first write acknowledged by the new
  primary's address. The RTO checked against the objective is the larger of the two.
- Discarded WAL: what rewinds of the run (``postgres.rejoin``, ``postgres.follow``)
  threw away, from their journaled ranges. A range holding committed writes is data
  lost too, even if the canary's rows all survived: with ``rpo: 0`` it fails the RPO.

A drill that stopped (at a gate, say) and was resumed ran its canary in several
windows. A pause that came after a mutating step had started is downtime — the old
primary may be fenced while a person decides — so the gap across it, from the last
write before to the first write after, counts like any other; a pause before anything
changed is not measured (nothing had happened to the database). The time to the new
primary spans the pauses.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from drctl.drill.canary import Ack


@dataclass(frozen=True)
class Measurement:
    """What a drill measured."""

    acknowledged: int
    missing: int
    missing_first_seq: int | None
    missing_span: float | None
    longest_gap: float
    gap_from: float | None
    gap_to: float | None
    first_mutation_at: float | None
    first_new_primary_ack_at: float | None
    time_to_new_primary: float | None
    new_primary_address: str
    canary_errors: int
    #: WAL the run's rewinds discarded that held committed writes, and how many of them.
    discarded_bytes: int = 0
    discarded_commits: int = 0

    @property
    def rto(self) -> float:
        return max(self.longest_gap, self.time_to_new_primary or 0.0)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rto": self.rto}


@dataclass(frozen=True)
class Verdict:
    """The measurement against the runbook's objectives (None: no objective set)."""

    rto_objective: float | None
    rpo_objective: float | None
    rto_met: bool | None
    rpo_met: bool | None
    #: The RTO allowed against earlier drills (``--max-rto-regression``): the baseline
    #: is the median RTO of the last ``rto_baseline_drills`` completed drills of the
    #: runbook; ``rto_regression_met`` is None when no limit was asked for or no
    #: earlier drill completed.
    rto_regression_allowed: float | None = None
    rto_baseline: float | None = None
    rto_baseline_drills: int = 0
    rto_regression_met: bool | None = None

    @property
    def passed(self) -> bool:
        return (
            self.rto_met is not False
            and self.rpo_met is not False
            and self.rto_regression_met is not False
        )


@dataclass(frozen=True)
class RegressionLimit:
    """``--max-rto-regression``: how much slower than the recent drills a drill may be.

    ``allowed`` is a fraction (0.2 for 20 %) of the median RTO of the last ``window``
    completed drills of the same runbook.
    """

    allowed: float
    window: int = 10

    def judge(self, verdict: Verdict, rto: float, earlier: Sequence[float]) -> Verdict:
        """``verdict`` with this limit applied to ``rto`` against ``earlier`` RTOs, newest first."""
        recent = list(earlier[: self.window])
        if not recent:
            return replace(verdict, rto_regression_allowed=self.allowed)
        baseline = statistics.median(recent)
        return replace(
            verdict,
            rto_regression_allowed=self.allowed,
            rto_baseline=baseline,
            rto_baseline_drills=len(recent),
            rto_regression_met=rto <= baseline * (1 + self.allowed),
        )


def measure(
    acks: Sequence[Ack],
    present: set[int],
    *,
    windows: Sequence[tuple[float, float]],
    first_mutation_at: float | None,
    new_primary_address: str,
    canary_errors: int = 0,
    discarded: tuple[int, int] = (0, 0),
) -> Measurement:
    """RTO/RPO from acknowledgements, the seqs found on the new primary, and the run's timing.

    ``windows`` are the (start, stop) wall times the canary wrote in, in order;
    ``discarded``: the bytes and committed writes the run's rewinds discarded.
    """
    missing = [a for a in acks if a.seq not in present]
    span = (missing[-1].at - missing[0].at) if missing else None
    longest, gap_from, gap_to = 0.0, None, None
    for start, stop in _outage_windows(windows, first_mutation_at):
        times = [start, *(a.at for a in acks if start <= a.at <= stop), stop]
        for before, after in itertools.pairwise(times):
            if after - before > longest:
                longest, gap_from, gap_to = after - before, before, after
    first_new: float | None = None
    if first_mutation_at is not None and new_primary_address:
        for a in acks:
            if a.at >= first_mutation_at and a.address == new_primary_address:
                first_new = a.at
                break
    return Measurement(
        acknowledged=len(acks),
        missing=len(missing),
        missing_first_seq=missing[0].seq if missing else None,
        missing_span=span,
        longest_gap=longest,
        gap_from=gap_from,
        gap_to=gap_to,
        first_mutation_at=first_mutation_at,
        first_new_primary_ack_at=first_new,
        time_to_new_primary=(
            None
            if first_new is None or first_mutation_at is None
            else first_new - first_mutation_at
        ),
        new_primary_address=new_primary_address,
        canary_errors=canary_errors,
        discarded_bytes=discarded[0],
        discarded_commits=discarded[1],
    )


def _outage_windows(
    windows: Sequence[tuple[float, float]], first_mutation_at: float | None
) -> list[tuple[float, float]]:
    """The windows gaps are measured in: one joined across each pause that followed a mutation."""
    joined: list[tuple[float, float]] = []
    for start, stop in windows:
        if joined and first_mutation_at is not None and first_mutation_at <= joined[-1][1]:
            joined[-1] = (joined[-1][0], stop)
        else:
            joined.append((start, stop))
    return joined


def judge(m: Measurement, objectives: dict[str, float | None]) -> Verdict:
    """Whether ``m`` meets the runbook's ``objectives`` (``{rto: seconds, rpo: seconds}``)."""
    rto, rpo = objectives.get("rto"), objectives.get("rpo")
    rpo_met: bool | None = None
    if rpo is not None:
        rpo_met = m.missing == 0 or (rpo > 0 and (m.missing_span or 0.0) <= rpo)
        if rpo == 0 and m.discarded_commits:
            rpo_met = False
    return Verdict(
        rto_objective=rto,
        rpo_objective=rpo,
        rto_met=None if rto is None else m.rto <= rto,
        rpo_met=rpo_met,
    )
