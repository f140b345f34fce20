#!/usr/bin/env bash
# Control socket and configuration: a bad configuration is refused naming file, line and
# key; a user in neither group is refused by sfid (SO_PEERCRED) with exit 4, a supervisor
# outside the operator group is served, a socket that cannot be opened is exit 4 and a
# missing daemon exit 3; an operator may watch but not load jobs; malformed, oversized,
# out-of-order, wrong-version and unknown messages get error replies; the client limit
# holds; the daemon stays up throughout. sfictl's history and stats filters reach sfid, and
# bad filter values are usage errors.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-control.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 5 16
line_write_config 1
printf '[control]\nmax_message = 4096\nmax_clients = 4\n' >>"$tmp/sfid.conf"

# --- configuration errors
cp "$tmp/sfid.conf" "$tmp/bad.conf"
printf '[slot X]\nport = /dev/ttyUSB9\nbaud = fast\n' >>"$tmp/bad.conf"
line=$(grep -n '^baud = fast' "$tmp/bad.conf" | cut -d: -f1)
set +e
"$SFID" --config "$tmp/bad.conf" --check 2>"$tmp/check.err"
rc=$?
set -e
[ "$rc" -eq 1 ] || line_fail "sfid --check on a bad file exited $rc"
grep -q "^$tmp/bad.conf:$line: key 'baud' in \[slot X\]" "$tmp/check.err" ||
	line_fail "bad config message: $(cat "$tmp/check.err")"
[ "$(wc -l <"$tmp/check.err")" -eq 1 ] || line_fail "more than one line for one error"
"$SFID" --config "$tmp/sfid.conf" --check >/dev/null || line_fail "good config refused"

# --- a wrong PIN: sfid exits with status 78 (RestartPreventExitStatus= in sfid.service)
# after one login attempt, never with a status systemd would restart
printf '11112222\n' >"$tmp/pki/wrong.pin"
chmod 600 "$tmp/pki/wrong.pin"
sed "s|^pin_file = .*|pin_file = $tmp/pki/wrong.pin|" "$tmp/sfid.conf" >"$tmp/wrongpin.conf"
set +e
timeout 60 "$SFID" --config "$tmp/wrongpin.conf" >"$tmp/wrongpin.log" 2>&1
rc=$?
set -e
[ "$rc" -eq 78 ] || line_fail "sfid with a wrong PIN exited $rc: $(cat "$tmp/wrongpin.log")"
grep -q "cannot log in to HSM token" "$tmp/wrongpin.log" ||
	line_fail "no sentence about the PIN: $(cat "$tmp/wrongpin.log")"
! grep -q 11112222 "$tmp/wrongpin.log" || line_fail "the PIN was logged"
# The token now reports "PIN count low": even with the right PIN, sfid does not log in (a
# restarted sfid with a still wrong PIN would spend the next try) and says why.
set +e
timeout 60 "$SFID" --config "$tmp/sfid.conf" >"$tmp/atrisk.log" 2>&1
rc=$?
set -e
[ "$rc" -eq 78 ] && grep -q "reports few PIN tries left" "$tmp/atrisk.log" ||
	line_fail "sfid with the PIN count low: exit $rc, $(cat "$tmp/atrisk.log")"
# A login by hand with the right PIN clears the flag.
"$SFIHSM" info --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" --pin-file "$tmp/pki/pin" \
	>/dev/null || line_fail "a login with the right PIN failed"

line_start_sfid

# --- authorization
who_ctl() { # who_ctl GID ARGS...: sfictl as nobody with one group
	local gid=$1
	shift
	set +e
	setpriv --reuid=65534 --regid="$gid" --clear-groups \
		timeout 20 "$SFICTL" --socket "$tmp/sfid.sock" "$@" >"$tmp/who.out" 2>"$tmp/who.err"
	rc=$?
	set -e
}
nogroup=$(getent group nogroup | cut -d: -f3)
users=$(getent group users | cut -d: -f3)
# The socket is open to every local user: sfid decides the role from SO_PEERCRED, so an
# operator and a supervisor who share no group both reach it.
[ "$(stat -c %a "$tmp/sfid.sock")" = 666 ] || line_fail "socket mode $(stat -c %a "$tmp/sfid.sock")"
who_ctl "$nogroup" status
[ "$rc" -eq 4 ] && grep -q "neither group users nor root" "$tmp/who.err" ||
	line_fail "nobody not refused by sfid: exit $rc, $(cat "$tmp/who.err")"
# A supervisor only (not in the operator group) is served, supervisor commands included.
who_ctl 0 status
[ "$rc" -eq 0 ] || line_fail "supervisor-only status: exit $rc, $(cat "$tmp/who.err")"
who_ctl 0 hsm
[ "$rc" -eq 0 ] && grep -q "licenses left" "$tmp/who.out" ||
	line_fail "supervisor-only hsm: exit $rc, $(cat "$tmp/who.err")"
# A socket the user may not open at all is a permission problem (4), not "unreachable" (3).
chmod 600 "$tmp/sfid.sock"
who_ctl "$users" status
[ "$rc" -eq 4 ] && grep -q "no permission" "$tmp/who.err" ||
	line_fail "socket without permission: exit $rc, $(cat "$tmp/who.err")"
chmod 666 "$tmp/sfid.sock"
who_ctl "$users" --socket "$tmp/nowhere.sock" status
[ "$rc" -eq 3 ] && grep -q "cannot reach sfid" "$tmp/who.err" ||
	line_fail "no daemon: exit $rc, $(cat "$tmp/who.err")"
who_ctl "$users" status
[ "$rc" -eq 0 ] || line_fail "operator status: exit $rc, $(cat "$tmp/who.err")"
who_ctl "$users" job load "$tmp/pki/demo.sfi"
[ "$rc" -eq 4 ] && grep -q "needs the supervisor role" "$tmp/who.err" ||
	line_fail "operator job load: exit $rc, $(cat "$tmp/who.err")"
who_ctl "$users" export --format csv --out -
[ "$rc" -eq 4 ] || line_fail "operator export: exit $rc"

# --- bad messages on one connection, then a good one; then the client limit
python3 - "$tmp/sfid.sock" <<'PY' || line_fail "control protocol checks failed"
import json, socket, sys

def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sys.argv[1])
    return s, s.makefile("rb")

s, f = conn()
def ask(raw, want):
    s.sendall(raw)
    rep = json.loads(f.readline())
    got = rep.get("error", {}).get("code", "ok")
    if got != want:
        print("sent %r: got %r, want %r" % (raw[:60], rep, want))
        sys.exit(1)
    return rep

ask(b"this is not json\n", "malformed")
ask(b'{"v":1,"id":1,"cmd":"status","pad":"' + b"x" * 5000 + b'"}\n', "too-large")
ask(b'{"v":2,"id":2,"cmd":"status"}\n', "version")
ask(b'{"v":1,"id":3,"cmd":"self-destruct"}\n', "unknown-command")
ask(b'{"v":1,"id":4,"cmd":"status"}\n', "ok")
ask(b'{"v":1,"id":4,"cmd":"status"}\n', "out-of-order")
ask(b'{"v":1,"id":5,"cmd":"start","args":{"slots":["nope"]}}\n', "not-found")
ask(b'{"v":1,"id":6,"cmd":"job-load","args":{"image":"/nonexistent.sfi"}}\n', "not-found")
ask(b'{"v":1,"id":7,"cmd":"start"}\n', "bad-state")
rep = ask(b'{"v":1,"id":8,"cmd":"hello"}\n', "ok")
assert rep["id"] == 8 and rep["ok"]["role"] == "supervisor", rep

# 4 clients now, then the 4 only supervisors (this test runs as root) may add.
extra = [conn() for _ in range(3 + 4)]
s5, f5 = conn()
rep = json.loads(f5.readline())
if rep.get("error", {}).get("code") != "busy":
    print("fifth client: %r" % rep)
    sys.exit(1)
PY
ctl status >/dev/null || line_fail "sfid does not answer after the bad messages"
kill -0 "$sfid_pid" || line_fail "sfid died"

# --- sfictl history and stats: filters sfid accepts (an upper-case UID is sent in lower
# case, as the database keeps it), bad values refused before sfid is asked
ctl history --limit 5 --job 1 --slot S0 --chip 0123456789ABCDEF01234567 --failed \
	>"$tmp/hist.out" 2>&1 || line_fail "history with every filter: $(cat "$tmp/hist.out")"
grep -q "no attempts recorded" "$tmp/hist.out" || line_fail "history: $(cat "$tmp/hist.out")"
ctl --json history --failed | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["attempts"] != [])' ||
	line_fail "history --json is not the raw reply"
ctl stats --job 0 >"$tmp/stats.out" || line_fail "stats --job 0"
grep -q "^every job: installed 0, failed 0" "$tmp/stats.out" && grep -q "^S0 " "$tmp/stats.out" ||
	line_fail "stats: $(cat "$tmp/stats.out")"
for bad in "history --limit 0" "history --chip 12ab" "history --job x" "stats --job -1" \
	"stats --failed" "history S0"; do
	set +e
	# shellcheck disable=SC2086 # the words of $bad are the arguments
	"$SFICTL" --socket "$tmp/nowhere.sock" $bad >/dev/null 2>"$tmp/bad.err"
	rc=$?
	set -e
	[ "$rc" -eq 2 ] || line_fail "sfictl $bad: exit $rc (expected 2), $(cat "$tmp/bad.err")"
done
# --json: a schema version, and one name for the licenses left (as sfi-hsm info says it).
ctl --json status | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["schema"] == 1, d' ||
	line_fail "status --json has no schema version"
ctl --json hsm | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["schema"] == 1 and d["licenses_left"] == 5 and "counter" not in d, d' ||
	line_fail "hsm --json: $(ctl --json hsm)"
"$SFIHSM" info --json --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" --pin-file "$tmp/pki/pin" |
	python3 -c 'import json,sys; assert "licenses_left" in json.load(sys.stdin)' ||
	line_fail "sfi-hsm info --json does not say licenses_left"
echo "configuration, authorization and protocol errors handled; sfid still up"
