"""The WAL file name part that a standby's timeline is read from (see promote._replayed_timeline)."""

from __future__ import annotations

import pytest

from drctl.providers.postgres.promote import _segment_name

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("position", "segment_bytes", "name"),
    [
        (0x1752A60, 16 * MiB, "0000000000000001"),
        (0xFFFFFFFF, 16 * MiB, "00000000000000FF"),
        (0x1_01000000, 16 * MiB, "0000000100000001"),
        (0x1_01000000, 64 * MiB, "0000000100000000"),
        (0x2_FFFFFFFF, 1 * MiB, "0000000200000FFF"),
    ],
)
def test_segment_name_matches_postgres_file_naming(
    position: int, segment_bytes: int, name: str
) -> None:
    """Log and segment number as PostgreSQL names WAL files (XLogFileName), for several segment sizes."""
    assert _segment_name(position, segment_bytes) == name
