# A PostgreSQL 15 cluster of a test's own, in a temporary directory: initdb as an
# unprivileged user (nobody when the test runs as root), Unix socket only (no TCP
# listener), password authentication. Source it after setting $dir; it defines
#   pg_init, pg_start, pg_stop, pg_kill, pg_psql (as the admin), pg_conninfo ROLE
# and PG_SOCK, PG_ADMIN_PW (the admin's password file).
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

pg_skip_if_missing() {
	if [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/postgres" ]; then
		echo "SKIP: PostgreSQL 15 server binaries not found in $PG_BIN (scripts/deps installs postgresql-15)"
		exit 77
	fi
	command -v psql >/dev/null || { echo "SKIP: psql not installed"; exit 77; }
}

# Runs a command as the cluster's owner.
pg_as_owner() {
	if [ "$(id -u)" = 0 ]; then
		setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
	else
		"$@"
	fi
}

pg_init() {
	PG_DATA=$dir/pg/data
	PG_SOCK=$dir/pg/sock
	PG_ADMIN_PW=$dir/pg/admin.pw
	mkdir -p "$dir/pg" "$PG_SOCK"
	chmod 755 "$dir"
	( umask 077; echo "admin-$RANDOM$RANDOM" > "$PG_ADMIN_PW" )
	cp "$PG_ADMIN_PW" "$dir/pg/owner.pw"
	if [ "$(id -u)" = 0 ]; then
		chown -R nobody:nogroup "$dir/pg"
		chown root:root "$PG_ADMIN_PW"
	fi
	pg_as_owner "$PG_BIN/initdb" -D "$PG_DATA" -U admin --pwfile="$dir/pg/owner.pw" \
		-E UTF8 --locale=C --auth-local=scram-sha-256 --auth-host=reject -N \
		>"$dir/pg/initdb.log" 2>&1 || { cat "$dir/pg/initdb.log" >&2; return 1; }
	rm -f "$dir/pg/owner.pw"
	cat >> "$PG_DATA/postgresql.conf" <<-CONF
	listen_addresses = ''
	unix_socket_directories = '$PG_SOCK'
	fsync = on
	max_connections = 40
	shared_buffers = 16MB
	log_min_messages = warning
	CONF
	# psql reads the admin's password from a file, never from the environment.
	( umask 077; printf '*:*:*:admin:%s\n' "$(cat "$PG_ADMIN_PW")" > "$dir/pg/pgpass" )
}

pg_start() {
	pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$dir/pg/server.log" -w -t 60 start \
		>/dev/null || { tail -20 "$dir/pg/server.log" >&2; return 1; }
}

pg_stop() {
	[ -n "${PG_DATA:-}" ] || return 0
	pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

# Kills the postmaster and its backends at once (a crash, not a shutdown).
pg_kill() {
	local pid kids
	pid=$(head -1 "$PG_DATA/postmaster.pid" 2>/dev/null) || return 0
	kids=$(ps -o pid= --ppid "$pid" 2>/dev/null || true)
	kill -KILL "$pid" $kids 2>/dev/null || true
	for _ in $(seq 1 200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
}

pg_psql() {
	PGPASSFILE=$dir/pg/pgpass psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -U admin -d postgres "$@"
}

pg_conninfo() {
	echo "host=$PG_SOCK dbname=postgres user=$1"
}
