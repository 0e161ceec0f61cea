#!/bin/bash
# The raw peer of `drctl run` in benchmarks/pg_failover.py: the same failover scripted
# directly with psql, nothing more (no lag check, no check that the fence took effect).
#
#   bash benchmarks/peers/pg_failover_raw.sh OLD_PRIMARY_HOST:PORT STANDBY_HOST:PORT
#
# 1. fence the old primary read-only (ALTER SYSTEM + reload), end its client sessions;
# 2. promote the standby, waiting for the promotion (pg_promote(true, 60));
# 3. on the new primary: create the probe table if missing, insert a row, read it back.
# Prints four timestamps (bash's EPOCHREALTIME, no extra process) on one line: before
# the fence, the promote, the probe, and at the end. Exits non-zero if a statement fails, the promotion does not
# finish, or the row is not read back.
set -euo pipefail
old=$1
new=$2
nonce="raw-$$-${EPOCHREALTIME}"

q() {
	local node=$1
	shift
	psql -X -q -v ON_ERROR_STOP=1 -h "${node%:*}" -p "${node##*:}" -U postgres -d postgres -At "$@"
}

t0=$EPOCHREALTIME
q "$old" \
	-c "ALTER SYSTEM SET default_transaction_read_only = on" \
	-c "SELECT pg_reload_conf()" \
	-c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()" \
	>/dev/null

t1=$EPOCHREALTIME
promoted=$(q "$new" -c "SELECT pg_promote(true, 60)")
if [ "$promoted" != t ]; then
	echo "pg_promote returned '$promoted'" >&2
	exit 1
fi

t2=$EPOCHREALTIME
got=$(q "$new" \
	-c "CREATE TABLE IF NOT EXISTS bench_raw_probe (id bigserial PRIMARY KEY, nonce text, at timestamptz NOT NULL DEFAULT now())" \
	-c "INSERT INTO bench_raw_probe (nonce) VALUES ('$nonce')" \
	-c "SELECT nonce FROM bench_raw_probe WHERE nonce = '$nonce'")
if [ "$got" != "$nonce" ]; then
	echo "probe read back '$got', expected '$nonce'" >&2
	exit 1
fi
t3=$EPOCHREALTIME
echo "$t0 $t1 $t2 $t3"
