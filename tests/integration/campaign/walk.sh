#!/usr/bin/env bash
# Fault campaign walk: one injection point after the other through one whole chip
# (identify, certificate, license, install, finalize, records), one chip per point, on a
# single running sfid, for one layer:
#   pkcs11  the N-th PKCS#11 call sfid makes for the chip fails (tests/faults/pkcs11-fault:
#           CKR_DEVICE_ERROR, CKR_TOKEN_NOT_PRESENT or CKR_GENERAL_ERROR in turn);
#   sqlite  the N-th write, sync or lock of sfid's database files fails (tests/faults/
#           sqlite-fault, LD_PRELOAD: an I/O error or disk full in turn);
#   emu     h5emu answers the chip's N-th exchange (Get, Get ID, GET_INFO, GET_CERT,
#           PUT_LICENSE, PUT_HEADER, each PUT_DATA, FINALIZE) with a NACK, drops or corrupts
#           a byte of the answer, or sends garbage.
# The number of points of a layer is measured first on a clean chip (calls or operations
# counted, exchanges known from the image size). After each point, faults off: a line halt
# is cleared with `sfictl start`; a chip that failed is replugged (the operator's retry) and
# must then install. Then: no attempt left running; every spent license is installed or
# issued-not-installed and the chip's own license installed, the chip Closed; no license
# spent without a ledger row (token drop = spent licenses, their counters contiguous); the
# export verifies (sfi-audit verify); sfid answers. Chips are checked for the firmware at
# the end.
#
# Usage: walk.sh LAYER [--full | --sample FIRST EVERY] [--skip N,N...] [--max-seconds S]
#   --full            every point (a bench: minutes per layer)
#   --sample F K      points 1..F, then every K-th (default: F=4, K chosen so that about
#                     6 more are walked; with SFID_SANITIZED=1, F=2 and about 3 more)
#   --skip LIST       points not walked: known findings still open (each one named in
#                     docs/security.md, "Fault campaign"); the walk says which it skipped
#   --max-seconds S   stop starting new points after S seconds (default none)
# Prints "campaign LAYER: W of P points walked (...)" at the end.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?set SFID_BUILD_ROOT (meson test sets it)}
LAYER=${1:?usage: walk.sh pkcs11|sqlite|emu [--full | --sample FIRST EVERY]}
shift
# Under sanitizers (CI's second pass, several times slower) the default sample is smaller.
if [ "${SFID_SANITIZED:-}" = 1 ]; then FIRST=2 SAMPLE_MORE=3; else FIRST=4 SAMPLE_MORE=6; fi
EVERY= FULL= MAX_S=0 SKIP=
while [ $# -gt 0 ]; do
	case $1 in
	--full) FULL=1; shift ;;
	--sample) FIRST=$2 EVERY=$3; shift 3 ;;
	--skip) SKIP=,$2,; shift 2 ;;
	--max-seconds) MAX_S=$2; shift 2 ;;
	*) echo "walk.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
case $LAYER in pkcs11 | sqlite | emu) ;; *) echo "walk.sh: unknown layer $LAYER" >&2; exit 2 ;; esac
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-campaign-$LAYER.XXXXXX")
. "$(dirname "$0")/../line/common.sh"
trap line_cleanup EXIT INT TERM
FAULT_DIR=$BUILD/tests/faults
KB=4
CHUNKS=$((KB))  # PUT_DATA carries 1 KiB: the image's firmware part in 1 KiB chunks
t_start=$(date +%s)

# The emulator's points: exchange selectors (with occurrence) x actions.
emu_points() {
	local ex=("cmd=0x00,nth=1" "cmd=0x02,nth=1" "cmd=0x50,subop=0x5300,nth=1"
		"cmd=0x50,subop=0x5301,nth=1" "cmd=0x51,subop=0x5302,nth=1"
		"cmd=0x50,subop=0x5303,nth=1")
	for k in $(seq "$CHUNKS"); do ex+=("cmd=0x51,subop=0x5304,nth=$k"); done
	ex+=("cmd=0x51,subop=0x5304,nth=$((CHUNKS + 1))" "cmd=0x50,subop=0x5305,nth=1"
		"cmd=0x50,subop=0x5300,nth=2" "cmd=0x50,subop=0x5300,nth=3")
	for e in "${ex[@]}"; do
		for a in nack "drop,byte=1" "corrupt,byte=1" garbage; do
			echo "$e,action=${a%%,*}${a#"${a%%,*}"}"
		done
	done
}

# Which points of 1..P to walk.
pick_points() {
	local p=$1 every=$EVERY
	if [ -n "$FULL" ]; then
		seq 1 "$p"
		return
	fi
	[ -n "$every" ] || every=$(((p - FIRST + SAMPLE_MORE - 1) / SAMPLE_MORE))
	[ "$every" -ge 1 ] || every=1
	for n in $(seq 1 "$p"); do
		if [ "$n" -le "$FIRST" ] || [ $(((n - FIRST) % every)) -eq 0 ]; then echo "$n"; fi
	done
}
pick() { # the points to walk, without the skipped ones
	local n
	for n in $(pick_points "$1"); do
		case $SKIP in *",$n,"*) ;; *) echo "$n" ;; esac
	done
}

line_setup_pki 1000 "$KB"
before=$(line_counter)
case $LAYER in
pkcs11)
	[ -f "$FAULT_DIR/libsfid-pkcs11-fault.so" ] || line_fail "no $FAULT_DIR/libsfid-pkcs11-fault.so"
	printf 'module = %s\narm_file = %s/arm\ntrace = %s/trace\n' "$SOFTHSM_MODULE" "$tmp" \
		"$tmp" >"$tmp/fault.conf"
	export SFID_FAULT_PKCS11=$tmp/fault.conf
	;;
sqlite)
	[ -f "$FAULT_DIR/libsfid-sqlite-fault.so" ] || line_fail "no $FAULT_DIR/libsfid-sqlite-fault.so"
	printf 'file = sfid.db\narm_file = %s/arm\ntrace = %s/trace\n' "$tmp" "$tmp" >"$tmp/fault.conf"
	export SFID_FAULT_SQLITE=$tmp/fault.conf
	;;
esac

# Chip 0 is a clean warm-up; on the pkcs11 and sqlite layers chip 1 counts the points;
# then one chip per point walked (the emulator's faults are bound to their chip's number).
emu_faults=()
if [ "$LAYER" = emu ]; then
	mapfile -t specs < <(emu_points)
	P=${#specs[@]}
	i=1
	for n in $(pick "$P"); do
		emu_faults+=("--fault=chip=$i,${specs[n - 1]}")
		i=$((i + 1))
	done
	chips=$((i + 1))
else
	chips=400
fi
# h5emu on a plain PTY (tty: port): unplug and plug (the operator's retry) need no umockdev
# harness in sfid.
rm -rf "$tmp/emu"
mkdir -p "$tmp/emu"
"$H5EMU" --count 1 --dir "$tmp/emu" --state-dir "$tmp/emu-state" --chips-per-slot "$chips" \
	--ca-key "$tmp/pki/ca.pem" --global-key "$tmp/pki/global.key" "${emu_faults[@]}" \
	>"$tmp/emu.ready" 2>"$tmp/emu.log" &
emu_pid=$!
wait_for 10 "h5emu's ready line" test -s "$tmp/emu.ready"
line_write_config 1
sed -i "s|^port = .*|port = tty:$tmp/emu/chip0|" "$tmp/sfid.conf"
if [ "$LAYER" = pkcs11 ]; then
	sed -i "s|^module = .*|module = $FAULT_DIR/libsfid-pkcs11-fault.so|" "$tmp/sfid.conf"
fi
# sfid's own start, with the SQLite injector preloaded.
envs=()
[ "$LAYER" = sqlite ] && envs+=("LD_PRELOAD=${LD_PRELOAD:+$LD_PRELOAD }$FAULT_DIR/libsfid-sqlite-fault.so")
env "${envs[@]}" "$SFID" --config "$tmp/sfid.conf" >>"$tmp/sfid.log" 2>&1 &
sfid_pid=$!
wait_for 20 "sfid's socket" ctl status
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null

settled() { # the chip in the slot has its result (the slot waits for its removal) or the
	    # slot stopped; an attempt sfid could not record leaves no row, so rows are not
	    # what is waited for
	case $(slot_state S0) in
	waiting-for-removal | idle | paused | no-port) return 0 ;;
	esac
	return 1
}
port_back() { ! slot_in S0 no-port; }
arm() { # key = value lines for the fault libraries; a new file restarts their count
	printf '%b' "$1" >"$tmp/arm.new"
	mv "$tmp/arm.new" "$tmp/arm"
}
disarm() { rm -f "$tmp/arm"; }
next_chip() { # takes the chip out (once sfid saw it go) and puts the next one in
	emu_ctl remove 0 >/dev/null
	wait_for 30 "the slot to see the chip go" slot_in S0 waiting-for-chip
	emu_ctl insert 0 >/dev/null
}
emu_chip_state() { # product state byte of the chip in slot 0
	emu_ctl status | sed -n 's/^slot 0: .* state 0x\([0-9a-fA-F]*\) .*/\1/p'
}
emu_chip_uid() { # UID of the chip in slot 0, as sfid writes it
	emu_ctl status | sed -n 's/^slot 0: .* uid \([0-9a-fA-F]*\) .*/\1/p' | tr 'A-F' 'a-f'
}
chip_result() { # the last attempt of the chip in slot 0: "ok", "failed", "running" or ""
	sql "SELECT result FROM attempts WHERE chip_uid = '$(emu_chip_uid)' ORDER BY id DESC LIMIT 1"
}
findings=()
finding() {
	findings+=("point $n ($what): $*")
	echo "FINDING: point $n ($what): $*" >&2
}

# Chip 0: clean.
wait_for 60 "the warm-up chip" settled
[ "$(sql "SELECT result FROM attempts ORDER BY id DESC LIMIT 1")" = ok ] ||
	line_fail "the warm-up chip did not install: $(sql "SELECT step || ': ' || error_text FROM attempts ORDER BY id DESC LIMIT 1")"

# Chip 1: counts the points of the layer.
if [ "$LAYER" != emu ]; then
	: >"$tmp/trace"
	# Counted, never hit: nth past the end.
	arm 'nth = 1000000000\n'
	next_chip
	wait_for 60 "the counting chip" settled
	disarm
	P=$(wc -l <"$tmp/trace")
	[ "$P" -gt 0 ] || line_fail "no $LAYER operation counted for a whole chip"
	[ "$(chip_result)" = ok ] || line_fail "the counting chip did not install"
	cp "$tmp/trace" "$tmp/points"
fi
mapfile -t walk < <(pick "$P")
echo "campaign $LAYER: $P injection points for one chip; walking ${#walk[@]}:" \
	"$(printf '%s ' "${walk[@]}")${SKIP:+(skipped, known findings:${SKIP//,/ })}"

walked=0 recovered=0 halts=0 clean=0
running0=0 open0=0 verdict0=VERIFIED
for n in "${walk[@]}"; do
	if [ "$MAX_S" -gt 0 ] && [ $(($(date +%s) - t_start)) -ge "$MAX_S" ]; then
		echo "campaign $LAYER: time budget of $MAX_S s used, stopping before point $n"
		break
	fi
	case $LAYER in
	pkcs11)
		rvs=(0x30 0xe0 0x5)
		rv=${rvs[n % 3]}
		what="$(sed -n "${n}p" "$tmp/points" | cut -d' ' -f2) -> $rv"
		;;
	sqlite)
		errs=(ioerr full)
		err=${errs[n % 2]}
		what="$(sed -n "${n}p" "$tmp/points" | cut -d' ' -f2) -> $err"
		;;
	emu)
		what=${specs[n - 1]}
		;;
	esac
	case $LAYER in
	pkcs11) arm "nth = $n\nrv = $rv\n" ;;
	sqlite) arm "nth = $n\nerror = $err\n" ;;
	esac
	next_chip
	if ! kill -0 "$sfid_pid" 2>/dev/null; then
		finding "sfid exited"
		line_fail "sfid died at point $n ($what)"
	fi
	wait_for 90 "point $n to settle" settled
	disarm
	walked=$((walked + 1))
	uid=$(emu_chip_uid)
	result=$(chip_result)
	if halted "."; then
		halts=$((halts + 1))
		ctl start >/dev/null 2>&1 || finding "the halt cannot be cleared: $(ctl start 2>&1 | tail -n 1)"
	fi
	if [ "$result" != ok ]; then
		# The operator's retry: the chip's adapter replugged, the same chip again.
		emu_ctl unplug 0 >/dev/null
		wait_for 30 "the slot to lose its port" slot_in S0 no-port
		emu_ctl plug 0 >/dev/null
		wait_for 30 "the slot to open the port again" port_back
		wait_for 90 "the retry of point $n" settled
		if halted "."; then
			finding "the line halted again on the retry"
			ctl start >/dev/null 2>&1 || true
		fi
		recovered=$((recovered + 1))
	else
		clean=$((clean + 1))
	fi
	# The chip: Closed, its last attempt ok, its license installed.
	last=$(sql "SELECT result || ' ' || step || ': ' || coalesce(error_text, '') FROM attempts
		    WHERE chip_uid = '$uid' ORDER BY id DESC LIMIT 1")
	[ "${last%% *}" = ok ] || finding "the chip did not end installed: $last"
	ps=$(emu_chip_state)
	[ "$ps" = 72 ] || finding "the chip's product state is 0x$ps, not Closed"
	lic=$(sql "SELECT group_concat(state) FROM licenses WHERE chip_uid = '$uid' AND state <> 'void'")
	[ "$lic" = installed ] || finding "the chip's licenses: '$lic', expected one installed"
	# The line: nothing running, every spent license settled, ledger = token, counters
	# contiguous, the export verifies. What an earlier point left broken is reported there
	# once: here only what got worse.
	running=$(sql "SELECT count(*) FROM attempts WHERE result = 'running'")
	[ "$running" -le "$running0" ] || finding "$running attempts left running"
	running0=$running
	open=$(sql "SELECT count(*) FROM licenses WHERE counter_after IS NOT NULL AND
		    state NOT IN ('installed', 'issued_not_installed')")
	[ "$open" -le "$open0" ] ||
		finding "$((open - open0)) more spent licenses neither installed nor issued-not-installed" \
			"($(sql "SELECT group_concat(state) FROM licenses WHERE counter_after IS NOT NULL AND
			state NOT IN ('installed', 'issued_not_installed')"))"
	open0=$open
	spent=$(sql "SELECT count(*) FROM licenses WHERE state <> 'void'")
	after=$(line_counter)
	[ $((before - after)) -eq "$spent" ] ||
		finding "the token spent $((before - after)), the ledger holds $spent licenses"
	gaps=$(sql "SELECT count(*) FROM licenses a WHERE state <> 'void' AND counter_after IS NOT NULL
		    AND counter_after > $after AND NOT EXISTS (SELECT 1 FROM licenses b
		    WHERE b.state <> 'void' AND b.counter_before = a.counter_after)")
	[ "$gaps" -eq 0 ] || finding "license counters are not contiguous ($gaps gaps)"
	rm -f "$tmp/audit.jsonl"
	verdict=VERIFIED
	if ctl export --format jsonl --out "$tmp/audit.jsonl" >/dev/null 2>&1; then
		[ -f "$tmp/audit.pem" ] || "$SFIHSM" audit-pubkey --module "$SOFTHSM_MODULE" \
			--token "$TOKEN_LABEL" --pin-file "$tmp/pki/pin" --out "$tmp/audit.pem" >/dev/null
		"$SFIAUDIT" verify "$tmp/audit.jsonl" --pubkey "$tmp/audit.pem" >"$tmp/verify.out" 2>&1 ||
			verdict=$(tail -n 1 "$tmp/verify.out" | sed 's/[0-9][0-9]*/N/g')
	else
		verdict="the export failed"
	fi
	[ "$verdict" = VERIFIED ] || [ "$verdict" = "$verdict0" ] ||
		finding "the export does not verify: $(tail -n 1 "$tmp/verify.out")"
	verdict0=$verdict
	ctl status >/dev/null || finding "sfid does not answer"
	echo "point $n ($what): first attempt ${result:-none (failed before the UID was read, or not recorded)}; then ${last:-no attempt}"
done

# Every chip the emulator holds Closed carries the firmware.
ok_chips=$(sql "SELECT count(DISTINCT chip_uid) FROM attempts WHERE result = 'ok'")
line_stop_pid "$sfid_pid"
sfid_pid=
line_stop_pid "$emu_pid"
emu_pid=
closed=$(check_chips_programmed "$tmp/emu-state")
[ "$closed" -eq "$ok_chips" ] || findings+=("$closed chips Closed with the firmware, $ok_chips installed")
echo "campaign $LAYER: $walked of $P points walked ($clean installed at once, $recovered" \
	"failed and installed on the retry, $halts line halts cleared) in $(($(date +%s) - t_start)) s;" \
	"${#findings[@]} findings"
if [ ${#findings[@]} -gt 0 ]; then
	printf 'FINDING: %s\n' "${findings[@]}" >&2
	line_fail "${#findings[@]} invariants broken"
fi
