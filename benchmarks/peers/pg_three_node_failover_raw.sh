#!/bin/bash
# The raw peer of `drctl run` in benchmarks/pg_three_node_failover.py: the three-node
# sandbox failover scripted directly with psql, nsupdate and dig, nothing more (no
# check that a step took effect beyond what the next one needs, no journal).
#
#   bash benchmarks/peers/pg_three_node_failover_raw.sh PORT DNS_PORT TSIG_SECRET_FILE \
#       OLD_HOST OLD_DATA OLD_SOCKET_DIR  NAME1:HOST1  NAME2:HOST2
#
# 1. choose: the standby that received the most WAL (pg_last_wal_receive_lsn);
# 2. hard fence of the old primary: pg_hba.conf lets only local and replication
#    sessions in, reload, end client sessions, read its final WAL position;
# 3. wait until the chosen standby has replayed up to it, then pg_promote(true, 60);
# 4. the other standby follows: ALTER SYSTEM primary_conninfo + reload, wait until it
#    streams from the new primary;
# 5. repoint db.sandbox.drctl.test with a TSIG-signed nsupdate, wait until dig sees it;
# 6. write and read back a row through the name (its address from the DNS server).
# Prints the chosen standby's name. Exits non-zero if anything fails or a wait runs out.
set -euo pipefail
port=$1 dns_port=$2 tsig_file=$3 old_host=$4 old_data=$5 old_sock=$6
cand1=$7 cand2=$8
zone=sandbox.drctl.test.
name=db.$zone
nonce="raw-$$-${EPOCHREALTIME}"

q() { # q HOST SQL...: one psql session, unaligned, stop on error
	local host=$1
	shift
	psql -X -q -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U postgres -d postgres -At "$@"
}

until_true() { # until_true WHAT HOST SQL: poll a boolean query every 20 ms, at most 1,500 times
	local what=$1 host=$2 sql=$3 i
	for ((i = 0; i < 1500; i++)); do
		[ "$(q "$host" -c "$sql" 2>/dev/null || true)" = t ] && return 0
		sleep 0.02
	done
	echo "gave up waiting for $what" >&2
	exit 1
}

# 1. choose
received() { q "${1#*:}" -c "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint"; }
r1=$(received "$cand1")
r2=$(received "$cand2")
if ((r1 >= r2)); then chosen=$cand1 other=$cand2; else chosen=$cand2 other=$cand1; fi
new_host=${chosen#*:}

# 2. hard fence
hba=$old_data/pg_hba.conf
cp -p "$hba" "$hba.raw-fence"
printf 'local all all trust\nhost replication all 127.0.0.0/8 trust\n' >"$hba"
end=$(q "$old_sock" \
	-c "SELECT pg_reload_conf()" \
	-c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()" \
	-c "SELECT pg_current_wal_lsn()" | tail -n 1)

# 3. handoff, then promote
until_true "$new_host to replay $end" "$new_host" "SELECT pg_last_wal_replay_lsn() >= '$end'"
[ "$(q "$new_host" -c "SELECT pg_promote(true, 60)")" = t ] || {
	echo "pg_promote did not finish" >&2
	exit 1
}

# 4. the other standby follows
other_host=${other#*:}
q "$other_host" \
	-c "ALTER SYSTEM SET primary_conninfo = 'host=$new_host port=$port user=postgres application_name=${other%%:*}'" \
	-c "SELECT pg_reload_conf()" >/dev/null
until_true "${other%%:*} to stream from $new_host" "$other_host" \
	"SELECT EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming' AND sender_host = '$new_host')"

# 5. DNS
nsupdate -y "hmac-sha256:drctl-sandbox:$(cat "$tsig_file")" <<EOF
server 127.0.0.1 $dns_port
zone $zone
update delete $name A
update add $name 5 A $new_host
send
EOF
for ((i = 0; i < 1500; i++)); do
	address=$(dig +short +time=1 +tries=1 @127.0.0.1 -p "$dns_port" "$name" A)
	[ "$address" = "$new_host" ] && break
	sleep 0.02
done
[ "$address" = "$new_host" ] || {
	echo "$name does not resolve to $new_host" >&2
	exit 1
}

# 6. a write through the name
got=$(q "$address" \
	-c "CREATE TABLE IF NOT EXISTS bench_raw_probe (id bigserial PRIMARY KEY, nonce text)" \
	-c "INSERT INTO bench_raw_probe (nonce) VALUES ('$nonce')" \
	-c "SELECT nonce FROM bench_raw_probe WHERE nonce = '$nonce'")
[ "$got" = "$nonce" ] || {
	echo "probe read back '$got', expected '$nonce'" >&2
	exit 1
}
echo "${chosen%%:*}"
