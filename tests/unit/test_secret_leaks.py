"""The four ways a secret leaked, each reproduced through a real ``drctl run`` and every sink.

A secret cut by the 200-character error line, a secret quoted with escaped backslashes,
half a password quoted by libpq's DSN parse error, and a two-line ``${file:…}`` secret
printed line by line: none of their pieces may reach the terminal, the JSON events,
the journal as ``drctl log`` reads it, or the bytes of the SQLite store and its WAL.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drctl.engine.redact import Redactor

RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {name: leaks}
targets:
  db: {type: postgres, dsn: "${env:LEAK_DSN}"}
steps:
  - id: cut
    type: shell
    with: {command: "printf '%0190d%s\\\\n' 0 \\"$S\\"; exit 1", env: {S: "${env:LEAK_CUT}"}, mutates: false}
    on_failure: continue
  - id: quoted
    type: shell
    with: {command: "python3 -c 'import sys; print(repr(sys.argv[1]))' \\"$S\\"; exit 1", env: {S: "${env:LEAK_BACK}"}, mutates: false}
    on_failure: continue
  - id: lines
    type: shell
    with: {command: "printf '%s\\\\n' \\"$S\\"; exit 1", env: {S: "${file:two.txt}"}, mutates: false}
    on_failure: continue
  - id: libpq
    type: postgres.write_probe
    target: db
    on_failure: continue
"""

SECRETS = {
    "LEAK_CUT": "Zq8pLm4Rt2Wx",
    "LEAK_BACK": "s3cr3t\\back",
    "LEAK_DSN": "host=127.0.0.1 port=1 password=firsthalf secondhalf dbname=x",
}
TWO_LINES = "first-line-secret\nsecond-line-secret\n"
#: Every piece that must never appear: the cut start, the escaped form, each half of
#: the password, each line of the file secret.
PIECES = [
    "Zq8pLm4R",
    "s3cr3t",
    "firsthalf",
    "secondhalf",
    "first-line-secret",
    "second-line-secret",
]


def _drctl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DRCTL_DEBUG"} | SECRETS
    return subprocess.run(
        [sys.executable, "-m", "drctl", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def leaky_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """One run of the runbook with text and JSON output, and everything it left behind."""
    work = tmp_path_factory.mktemp("leaks")
    (work / "rb.yaml").write_text(RUNBOOK, encoding="utf-8")
    (work / "two.txt").write_text(TWO_LINES, encoding="utf-8")
    state = str(work / "state.db")
    shown = []
    for output in ("text", "json"):
        proc = _drctl("run", "rb.yaml", "--yes", "--state", state, "--output", output, cwd=work)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "FAILED" in proc.stdout or '"step_failed"' in proc.stdout, proc.stdout
        shown.append(proc.stdout + proc.stderr)
    import re

    run_id = re.findall(r"\d{8}-\d{6}-[0-9a-f]{6}", shown[-1])[0]
    log = _drctl("log", run_id, "--state", state, "--output", "json", cwd=work)
    assert log.returncode == 0, log.stdout + log.stderr
    shown.append(log.stdout + log.stderr)
    return work, shown


@pytest.mark.parametrize("sink", ["terminal", "json events", "journal (drctl log)"])
def test_no_piece_of_a_secret_reaches_a_shown_sink(
    leaky_run: tuple[Path, list[str]], sink: str
) -> None:
    """Cut, backslash-quoted, DSN-half and multi-line secrets are masked on the terminal, in JSON and in the log."""
    _, shown = leaky_run
    text = shown[["terminal", "json events", "journal (drctl log)"].index(sink)]
    leaked = [p for p in PIECES if p in text]
    assert not leaked, (leaked, text[-3000:])
    assert "***" in text


def test_no_piece_of_a_secret_is_in_the_sqlite_files(leaky_run: tuple[Path, list[str]]) -> None:
    """The state database, its WAL and shared memory hold no piece of any of the four secrets."""
    work, _ = leaky_run
    files = [p for p in work.iterdir() if p.name.startswith("state.db")]
    assert files
    for path in files:
        data = path.read_bytes()
        leaked = [p for p in PIECES if p.encode() in data]
        assert not leaked, (path.name, leaked)


def _quoted_forms(secret: str) -> list[tuple[str, str]]:
    """A secret as it may reach a sink, and the part of that which must not survive."""
    raw = secret.encode()
    basic = base64.b64encode(b"user:" + raw).decode()
    plain = [
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        quote(secret, safe=""),
        base64.b64encode(raw).decode(),
        raw.hex(),
        *(line for line in secret.splitlines() if len(line) >= 4),
    ]
    # Inside a Basic header the characters from the 8th to the 4th last encode only the secret.
    return [(f, f) for f in plain] + [(basic, basic[8 : len(basic) - 4])]


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    secret=st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=8, max_size=24
    ),
    pick=st.integers(0, 100),
    cut=st.integers(4, 40),
)
def test_a_secret_in_any_quoted_cut_or_split_form_is_masked(
    secret: str, pick: int, cut: int
) -> None:
    """repr, JSON, URL, base64 (also inside a longer one), hex and each line are masked, cut or whole."""
    redactor = Redactor()
    redactor.add(secret)
    forms = _quoted_forms(secret)
    shown, hidden = forms[pick % len(forms)]
    masked = redactor.text(f"error: {shown} (exit 1)")
    assert hidden not in masked, (shown, masked)
    if shown is hidden:  # a text cut inside the secret keeps none of its first characters
        piece = shown[:cut]
        cut_text = redactor.text(f"error: {piece}")
        assert not cut_text.endswith(piece[-4:]), (piece, cut_text)
