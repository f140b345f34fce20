# Shared set-up of the whole-line scenarios (sourced by the tests, the demo and the bench):
# a SoftHSM2 token in a temp dir, a chip CA, a packed demo image, the token provisioned for
# it, h5emu with umockdev adapters, and sfid with a generated configuration.
# Needs: BUILD (build dir) and tmp (a private temp dir) set by the caller.
SOFTHSM_MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
H5EMU=${H5EMU:-$BUILD/emulator/h5emu}
SFID=$BUILD/daemon/sfid/sfid
SFICTL=$BUILD/daemon/sfictl/sfictl
SFIPACK=$BUILD/tools/sfi-pack/sfi-pack
SFIHSM=$BUILD/tools/sfi-hsm/sfi-hsm
SFIAUDIT=$BUILD/tools/sfi-audit/sfi-audit
TOKEN_LABEL=sfid-line
EMU_SERIAL_PREFIX=H5EMU
emu_pid=
sfid_pid=

line_fail() {
	line_skip_without_xspecial
	echo "FAIL: $*" >&2
	for f in "$tmp/sfid.log" "$tmp/emu.log"; do
		if [ -f "$f" ]; then
			echo "--- $(basename "$f") (tail)" >&2
			tail -n 30 "$f" >&2
		fi
	done
	exit 1
}

# Stops a process we started: TERM, up to 10 s, then KILL.
line_stop_pid() {
	local pid=$1
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

line_cleanup() {
	local rc=$?
	line_stop_pid "$sfid_pid"
	sfid_pid=
	line_stop_pid "$emu_pid"
	emu_pid=
	# A sanitizer build reports into sfid's log: such a report fails the run.
	if [ -f "$tmp/sfid.log" ] && grep -q "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:" "$tmp/sfid.log"; then
		echo "FAIL: sanitizer report in the sfid log:" >&2
		grep -A 30 "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:" \
			"$tmp/sfid.log" | head -n 60 >&2
		rc=1
	fi
	# sfid never asks a DfuSe device again before the bwPollTimeout it was given has passed
	# (h5emu names every request that does).
	if [ -f "$tmp/emu.log" ] && grep -q "before the bwPollTimeout" "$tmp/emu.log"; then
		echo "FAIL: sfid did not wait bwPollTimeout:" >&2
		grep -m 5 "before the bwPollTimeout" "$tmp/emu.log" >&2
		rc=1
	fi
	if [ -n "${SFID_KEEP_TMP:-}" ]; then
		echo "kept $tmp" >&2
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}

# line_setup_pki COUNT [IMAGE_KB]: token with COUNT licenses for a demo image (which leaves
# the chip in product state LINE_IMAGE_STATE, Closed by default).
line_setup_pki() {
	local count=$1 kb=${2:-64}
	mkdir -p "$tmp/tokens" "$tmp/pki"
	chmod 755 "$tmp"
	export SOFTHSM2_CONF=$tmp/softhsm2.conf
	printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
		"$tmp/tokens" >"$SOFTHSM2_CONF"
	softhsm2-util --init-token --free --label "$TOKEN_LABEL" --so-pin 12345678 --pin 87654321 \
		>/dev/null || line_fail "cannot create a SoftHSM2 token"
	printf '87654321\n' >"$tmp/pki/pin"
	chmod 600 "$tmp/pki/pin"
	openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/pki/ca.pem" 2>/dev/null
	openssl ec -in "$tmp/pki/ca.pem" -pubout -out "$tmp/pki/ca-pub.pem" 2>/dev/null
	head -c 16 /dev/urandom >"$tmp/pki/image.key"
	head -c 32 /dev/urandom >"$tmp/pki/global.key"
	chmod 600 "$tmp/pki/image.key" "$tmp/pki/global.key"
	# A leading zero byte: random data must not look like Intel HEX or ELF to sfi-pack.
	{ printf '\000'; head -c $((kb * 1024 - 1)) /dev/urandom; } >"$tmp/pki/firmware.bin"
	printf 'PRODUCT_STATE, %s\n' "${LINE_IMAGE_STATE:-Closed}" >"$tmp/pki/options.csv"
	"$SFIPACK" create --out "$tmp/pki/demo.sfi" --firmware "$tmp/pki/firmware.bin@0x08000000" \
		--options "$tmp/pki/options.csv" --key "$tmp/pki/image.key" >/dev/null \
		|| line_fail "sfi-pack create failed"
	"$SFIHSM" provision --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" \
		--pin-file "$tmp/pki/pin" --image-key "$tmp/pki/image.key" --image "$tmp/pki/demo.sfi" \
		--max-count "$count" --ca-pub "$tmp/pki/ca-pub.pem" --global-key "$tmp/pki/global.key" \
		>/dev/null || line_fail "sfi-hsm provision failed"
}

# line_counter: licenses left on the token.
line_counter() {
	"$SFIHSM" info --json --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" \
		--pin-file "$tmp/pki/pin" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("counter", d.get("licenses_left")))'
}

# line_start_emu SLOTS CHIPS_PER_SLOT [h5emu options...]
line_start_emu() {
	local slots=$1 chips=$2
	shift 2
	rm -rf "$tmp/emu"
	mkdir -p "$tmp/emu"
	"$H5EMU" --count "$slots" --dir "$tmp/emu" --state-dir "${EMU_STATE:-$tmp/emu-state}" --umockdev \
		--chips-per-slot "$chips" --ca-key "$tmp/pki/ca.pem" \
		--global-key "$tmp/pki/global.key" "$@" >"$tmp/emu.ready" 2>"$tmp/emu.log" &
	emu_pid=$!
	for _ in $(seq 100); do
		[ -s "$tmp/emu.ready" ] && [ -f "$tmp/emu/umockdev.env" ] && return 0
		kill -0 "$emu_pid" 2>/dev/null || line_fail "h5emu exited: $(cat "$tmp/emu.log")"
		sleep 0.1
	done
	line_fail "h5emu printed no ready line in 10 s"
}

# line_write_config SLOTS [extra slot lines]: slots bound by adapter serial number.
line_write_config() {
	local slots=$1 extra=${2:-}
	{
		printf '[station]\nname = test-line\n'
		printf '[hsm]\nmodule = %s\ntoken = %s\npin_file = %s\n' "$SOFTHSM_MODULE" \
			"$TOKEN_LABEL" "$tmp/pki/pin"
		printf '[database]\npath = %s\n' "$tmp/sfid.db"
		printf '[control]\nsocket = %s\noperator_group = users\nsupervisor_group = root\n' \
			"$tmp/sfid.sock"
		printf '[limits]\nshutdown_timeout_ms = 5000\n'
		for i in $(seq 0 $((slots - 1))); do
			printf '[slot S%d]\nport = serial:%s%04d\npoll_ms = 100\nreopen_ms = 200\n%b' \
				"$i" "$EMU_SERIAL_PREFIX" "$i" "$extra"
		done
	} >"$tmp/sfid.conf"
}

# line_env: the umockdev environment lines, one per array element, in $envs.
line_env() {
	envs=()
	[ -f "$tmp/emu/umockdev.env" ] || return 0
	while IFS= read -r line; do
		[ -n "$line" ] && envs+=("$line")
	done <"$tmp/emu/umockdev.env"
}

# line_start_sfid [sfid options...]: waits until the control socket answers.
line_start_sfid() {
	line_env
	env "${envs[@]}" "$SFID" --config "$tmp/sfid.conf" "$@" >>"$tmp/sfid.log" 2>&1 &
	sfid_pid=$!
	for _ in $(seq 100); do
		if [ -S "$tmp/sfid.sock" ] && "$SFICTL" --socket "$tmp/sfid.sock" status >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$sfid_pid" 2>/dev/null || line_fail "sfid exited at start-up"
		sleep 0.1
	done
	line_fail "sfid did not answer on its socket in 10 s"
}

# line_kill_sfid: sfid crashes (SIGKILL), reaped.
line_kill_sfid() {
	kill -KILL "$sfid_pid"
	wait "$sfid_pid" 2>/dev/null || true
	sfid_pid=
}

# line_no_unrecorded: sfid's reconciliation at start-up found no spend its ledger does not
# explain.
line_no_unrecorded() {
	if grep -q "unrecorded" "$tmp/sfid.log"; then
		line_fail "reconciliation found unrecorded spends"
	fi
}

# ctl ARGS...: sfictl against the test daemon, bounded.
ctl() {
	timeout 120 "$SFICTL" --socket "$tmp/sfid.sock" "$@"
}

# sql QUERY: one value from the database (read-only).
sql() {
	sqlite3 -readonly "$tmp/sfid.db" "$1"
}

. "$(dirname "${BASH_SOURCE[0]}")/../emu-ctl.sh"

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s until it succeeds.
wait_for() {
	local secs=$1 what=$2
	shift 2
	for _ in $(seq $((secs * 5))); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	line_fail "timed out after $secs s waiting for $what"
}

# line_export_verify: the trail exported as JSON lines ($tmp/audit.jsonl) verifies offline
# with sfi-audit against the line token's audit key ($tmp/audit.pem); its report is in
# $tmp/verify.out.
line_export_verify() {
	ctl export --format jsonl --out "$tmp/audit.jsonl" >/dev/null 2>&1 || line_fail "export"
	"$SFIHSM" audit-pubkey --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" \
		--pin-file "$tmp/pki/pin" --out "$tmp/audit.pem" >/dev/null
	"$SFIAUDIT" verify "$tmp/audit.jsonl" --pubkey "$tmp/audit.pem" >"$tmp/verify.out" ||
		line_fail "sfi-audit verify: $(cat "$tmp/verify.out")"
}

# line_swap_until DONE_SQL N PER_SLOT_SQL CHIPS SECONDS: the fixture's operator. While
# DONE_SQL counts fewer than N, a slot whose chips done (PER_SLOT_SQL: rows SLOT|COUNT, slot
# names S0, S1, ...) reach the chips swapped into it gets the next chip (h5emu remove and
# insert), up to CHIPS chips a slot; fails after SECONDS. Sets swaps and done_n.
line_swap_until() {
	local done_sql=$1 n=$2 per_slot=$3 chips=$4 secs=$5 s k deadline
	local -A swapped=()
	swaps=0
	deadline=$((SECONDS + secs))
	while [ "$SECONDS" -lt "$deadline" ]; do
		done_n=$(sql "$done_sql")
		[ "$done_n" -ge "$n" ] && return 0
		while IFS='|' read -r s k; do
			s=${s#S}
			[ "${swapped[$s]:-0}" -lt $((chips - 1)) ] && [ "$k" -gt "${swapped[$s]:-0}" ] ||
				continue
			emu_ctl remove "$s" | grep -q '^ok' || line_fail "h5emu: remove $s refused"
			emu_ctl insert "$s" | grep -q '^ok' || line_fail "h5emu: insert $s refused"
			swapped[$s]=$((${swapped[$s]:-0} + 1))
			swaps=$((swaps + 1))
		done < <(sql "$per_slot")
		sleep 0.2
	done
	line_fail "$done_n of $n chips done in $secs s; slots: $(ctl status 2>&1 | tr '\n' ' ')"
}

# slot_state NAME: the slot's state from sfictl status --json.
slot_state() {
	ctl --json status | python3 -c 'import json,sys
d=json.load(sys.stdin)
print([s["state"] for s in d["slots"] if s["slot"]==sys.argv[1]][0])' "$1"
}

# slot_in NAME STATE: true when the slot is in STATE.
slot_in() {
	[ "$(slot_state "$1")" = "$2" ]
}

# The OSFI install needs the emulator to serve Extended Special (0x51). An h5emu that NACKs
# it cannot run a line: that is a regression of the emulator and fails with that reason.
line_skip_without_xspecial() {
	if [ -f "$tmp/sfid.log" ] &&
	   grep -q "Extended Special: the chip refused the request (NACK) at the command step" \
		"$tmp/sfid.log"; then
		echo "FAIL: h5emu NACKed Extended Special (0x51), which OSFI's PUT_LICENSE and" \
			"PUT_DATA need; the line cannot install" >&2
		exit 1
	fi
}

# check_chip_programmed STATE_DIR: every chip in STATE_DIR/chipK holds the demo firmware at
# the start of flash and product state Closed; prints how many chips were checked.
check_chips_programmed() {
	local dir=$1 n=0 size
	size=$(stat -c %s "$tmp/pki/firmware.bin")
	for c in "$dir"/chip*; do
		[ -f "$c/chip.conf" ] || continue
		grep -q '^opt1=0x0000ed\|^opt1=0x[0-9a-f]\{4\}ed' "$c/chip.conf" && continue
		grep -q '^opt1=0x[0-9a-f]\{4\}72' "$c/chip.conf" ||
			line_fail "$c: product state is not Closed: $(grep opt1 "$c/chip.conf")"
		cmp -s -n "$size" "$tmp/pki/firmware.bin" "$c/memory.bin" ||
			line_fail "$c: flash does not hold the firmware"
		n=$((n + 1))
	done
	echo "$n"
}

# sql_is QUERY VALUE: true when the query's result equals VALUE (for wait_for).
sql_is() {
	[ "$(sql "$1")" = "$2" ]
}

# sql_is_db FILE QUERY VALUE: sql_is on another database file.
sql_is_db() {
	[ "$(sqlite3 -readonly "$1" "$2")" = "$3" ]
}

# sql_at_least_db FILE QUERY N: the query's number is N or more.
sql_at_least_db() {
	[ "$(sqlite3 -readonly "$1" "$2")" -ge "$3" ]
}

# halted REGEX: the line is halted with a reason matching the extended regex.
halted() {
	ctl --json status | grep -E "\"halted\": *\"[^\"]*($1)" >/dev/null
}
