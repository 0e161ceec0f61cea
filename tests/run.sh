#!/bin/sh
# Installs what the tests need and runs every check CI runs. README command 2.
# Idempotent: re-running reuses .venv. Exits non-zero on the first failing check.
set -eu
cd "$(dirname "$0")/.."

# Servers the integration tests start themselves: PostgreSQL (initdb, pg_ctl, pg_rewind)
# for the sandbox, BIND9 for RFC 2136, OpenSSH's sshd for the SSH provider, etcd for the
# quorum state store (a three-member cluster on loopback). The machine's
# own PostgreSQL on 127.0.0.1:5432 holds the shared-store tests.
missing=""
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing="$missing postgresql"
[ -x /usr/sbin/named ] || missing="$missing bind9"
command -v dig >/dev/null 2>&1 || missing="$missing bind9-dnsutils"
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v etcd >/dev/null 2>&1 || missing="$missing etcd-server"
# Firewall rules on loopback ports the tests own (a partition, a store that stops answering).
command -v iptables >/dev/null 2>&1 || missing="$missing iptables"
command -v nft >/dev/null 2>&1 || missing="$missing nftables"
if [ -n "$missing" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update && apt-get install -y $missing
    else
        echo "missing system packages:$missing (install them, or run as root)" >&2
        exit 1
    fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

echo "== ruff"
.venv/bin/ruff format --check drctl tests benchmarks
.venv/bin/ruff check drctl tests benchmarks
echo "== mypy"
.venv/bin/mypy
echo "== import contracts"
.venv/bin/lint-imports
echo "== pytest"
# pytest exits 5 when it collects no tests; that must fail the run, not pass it.
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests" >&2
    exit 1
fi
exit "$status"
