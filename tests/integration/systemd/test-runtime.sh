#!/usr/bin/env bash
# sfid under systemd's protocols without systemd: started by systemd-socket-activate and
# driven by sfictl through the inherited socket; and with a NOTIFY_SOCKET, where READY=1,
# STATUS= lines, WATCHDOG=1 at the configured interval and STOPPING=1 must arrive.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
act_pid=
listen_pid=
. "$here/../line/common.sh"
line_skip_without_xspecial() { :; }
cleanup() {
	line_stop_pid "$act_pid"
	line_stop_pid "$listen_pid"
	line_cleanup
}
trap cleanup EXIT
fail() { line_fail "$*"; }

line_setup_pki 4
# One slot whose adapter is not plugged in: sfid starts and keeps trying to open it.
line_write_config 0
printf '[slot A]\nport = serial:NOT-PLUGGED\nreopen_ms = 200\n' >>"$tmp/sfid.conf"

# 1. Socket activation: the socket exists before sfid; the first client starts it.
systemd-socket-activate -l "$tmp/act.sock" -E SOFTHSM2_CONF \
	"$SFID" --config "$tmp/sfid.conf" >>"$tmp/sfid.log" 2>&1 &
act_pid=$!
for _ in $(seq 100); do
	[ -S "$tmp/act.sock" ] && break
	sleep 0.05
done
[ -S "$tmp/act.sock" ] || fail "systemd-socket-activate did not listen"
out=
for _ in $(seq 50); do
	if out=$(timeout 20 "$SFICTL" --socket "$tmp/act.sock" status 2>&1); then
		break
	fi
	sleep 0.2
done
echo "$out" | grep "test-line" >/dev/null || fail "sfictl status through the inherited socket: $out"
json=$(timeout 20 "$SFICTL" --socket "$tmp/act.sock" --json status) || fail "sfictl --json status failed"
echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert len(d["slots"]) == 1' \
	|| fail "status JSON does not list the slot: $json"
[ ! -e "$tmp/sfid.sock" ] || fail "sfid bound its configured socket instead of using the inherited one"
kill -TERM "$act_pid"
wait "$act_pid" || fail "socket-activated sfid did not exit cleanly on SIGTERM"
act_pid=

# 2. Notify protocol with a watchdog of 400 ms: pets are expected about every 200 ms.
python3 "$here/notify-listen.py" "$tmp/notify.sock" 30 >"$tmp/notify.log" &
listen_pid=$!
for _ in $(seq 100); do
	grep -q listening "$tmp/notify.log" 2>/dev/null && break
	sleep 0.05
done
NOTIFY_SOCKET=$tmp/notify.sock WATCHDOG_USEC=400000 "$SFID" --config "$tmp/sfid.conf" \
	>>"$tmp/sfid.log" 2>&1 &
sfid_pid=$!
for _ in $(seq 200); do
	grep -q ' READY=1$' "$tmp/notify.log" && break
	kill -0 "$sfid_pid" 2>/dev/null || fail "sfid exited before READY=1"
	sleep 0.05
done
grep -q ' READY=1$' "$tmp/notify.log" || fail "no READY=1 within 10 s"
sleep 2
kill -TERM "$sfid_pid"
wait "$sfid_pid" || fail "sfid did not exit cleanly on SIGTERM"
sfid_pid=
wait "$listen_pid" || fail "no STOPPING=1 after SIGTERM: $(cat "$tmp/notify.log")"
listen_pid=

grep -q ' STATUS=' "$tmp/notify.log" || fail "no STATUS= line"
python3 - "$tmp/notify.log" <<'PY' || fail "watchdog pets: $(grep -c WATCHDOG=1 "$tmp/notify.log")"
import sys
lines = [l.split(" ", 1) for l in open(sys.argv[1]) if l[0].isdigit()]
ready = next(float(t) for t, m in lines if m.strip() == "READY=1")
pets = [float(t) for t, m in lines if m.strip() == "WATCHDOG=1" and float(t) >= ready]
stop = next(float(t) for t, m in lines if m.strip() == "STOPPING=1")
assert len(pets) >= 6, "only %d pets in %.1f s" % (len(pets), stop - ready)
gaps = [b - a for a, b in zip(pets, pets[1:])]
assert max(gaps) < 0.4, "a gap of %.3f s exceeds the 0.4 s watchdog" % max(gaps)
print("watchdog: %d pets, largest gap %.3f s" % (len(pets), max(gaps)))
PY
echo "socket activation and notify protocol: ok"
