#!/bin/sh
# Runs inside the booted container (test-nspawn.sh): the installed units under systemd as
# PID 1. Writes PASS or the first failure to /results/result, then powers off.
exec >/results/log 2>&1
set -x
fail() {
	echo "FAIL: $*" >/results/result
	journalctl -b --no-pager -u sfid.service -u sfid.socket >/results/journal 2>&1
	systemctl poweroff --no-block
	exit 1
}
as() { # as USER COMMAND...: a command as USER with that user's groups
	u=$1
	shift
	setpriv --reuid="$u" --regid="$(id -g "$u")" --init-groups "$@"
}
ctl() { timeout 30 sfictl "$@"; }
echo started >/results/started

# sysusers.d and tmpfiles.d were applied at boot.
id sfid || fail "no user sfid after boot (sysusers.d)"
getent group sfid-operators && getent group sfid-supervisors || fail "no role groups (sysusers.d)"
[ -d /run/sfid ] || fail "no /run/sfid (tmpfiles.d)"
useradd -M -G sfid-operators alice && useradd -M -G sfid-supervisors bob || fail "useradd"

# Socket activation: the socket listens, the service starts on the first client.
systemctl start sfid.socket || fail "sfid.socket does not start"
[ -S /run/sfid/sfid.sock ] || fail "no socket"
systemctl stop sfid.service
st=$(systemctl is-active sfid.service)
[ "$st" = inactive ] || fail "sfid still $st after a stop"
[ -S /run/sfid/sfid.sock ] || fail "no socket while sfid is stopped"
as alice sfictl status >/results/status.txt || fail "operator status: $(cat /results/status.txt)"
[ "$(systemctl is-active sfid.service)" = active ] || fail "sfid not active after a client"
grep -q "station nspawn-line" /results/status.txt || fail "status: $(cat /results/status.txt)"
# Both roles, each with its commands.
as bob sfictl hsm >/results/hsm.txt || fail "supervisor hsm: $(cat /results/hsm.txt)"
grep -q "licenses left 7" /results/hsm.txt || fail "hsm: $(cat /results/hsm.txt)"
as bob sfictl config >/dev/null || fail "supervisor config"
as alice sfictl hsm 2>/results/denied.txt
[ $? -eq 4 ] || fail "operator hsm not refused with 4: $(cat /results/denied.txt)"
as alice sfictl stats >/dev/null || fail "operator stats"

# A supervisor loads a job (sfictl passes the image's descriptor), an operator starts the
# slot (its adapter is not plugged in: the slot says so and keeps trying).
as bob sfictl job load /results/demo.sfi --count 5 >/results/job.txt 2>&1 || fail "job load: $(cat /results/job.txt)"
as alice sfictl job load /results/demo.sfi >/dev/null 2>&1
[ $? -eq 4 ] || fail "an operator loaded a job"
as alice sfictl start A >/results/start.txt 2>&1 || fail "operator start: $(cat /results/start.txt)"
sleep 1

# The PIN came as a credential, never from a file sfid reads by itself.
journalctl -b -u sfid.service --no-pager | grep "licenses left" >/dev/null || fail "no HSM line in the journal"

# The watchdog is fed: WatchdogSec=2s in the test drop-in, and sfid stays up 5 s.
pid=$(systemctl show -p MainPID --value sfid.service)
sleep 5
[ "$(systemctl show -p MainPID --value sfid.service)" = "$pid" ] || fail "sfid restarted (watchdog?)"
[ "$(systemctl show -p NRestarts --value sfid.service)" = 0 ] || fail "sfid was restarted"
[ -n "$(systemctl show -p WatchdogTimestampMonotonic --value sfid.service | grep -v '^0$')" ] ||
	fail "no watchdog ping seen by systemd"

# Journal lines carry the priority and the slot and chip fields.
journalctl -b -u sfid.service -o json --no-pager >/results/journal.json
grep -q '"SFID_SLOT":"A"' /results/journal.json || fail "no SFID_SLOT field in the journal"
grep -q '"PRIORITY":"4"' /results/journal.json || fail "no priority in the journal"
! grep -q '"MESSAGE":"<[0-9]>' /results/journal.json || fail "a <N> prefix reached the journal"

# systemctl restart keeps the socket (no RuntimeDirectory= removing /run/sfid).
ino=$(stat -c %i /run/sfid/sfid.sock)
systemctl restart sfid.service || fail "restart"
[ -S /run/sfid/sfid.sock ] || fail "the socket is gone after systemctl restart sfid"
[ "$(stat -c %i /run/sfid/sfid.sock)" = "$ino" ] || fail "the socket was replaced"
as alice sfictl status >/dev/null || fail "operator after a restart"
systemctl stop sfid.service
[ -S /run/sfid/sfid.sock ] || fail "the socket is gone after systemctl stop sfid"
as alice sfictl status >/dev/null || fail "no activation after a stop"

# A wrong PIN: sfid exits 78 once and is not restarted into it again.
systemctl stop sfid.service
cp /usr/local/etc/sfid/hsm.pin /results/good.pin
printf '11112222\n' >/usr/local/etc/sfid/hsm.pin
systemctl start sfid.service
sleep 5
[ "$(systemctl show -p ExecMainStatus --value sfid.service)" = 78 ] ||
	fail "wrong PIN: exit status $(systemctl show -p ExecMainStatus --value sfid.service)"
[ "$(systemctl show -p NRestarts --value sfid.service)" = 0 ] || fail "sfid restarted into a wrong PIN"
[ "$(systemctl is-active sfid.service)" != active ] || fail "sfid active with a wrong PIN"
n=$(journalctl -b -u sfid.service --no-pager | grep -c "cannot log in to HSM token")
[ "$n" -eq 1 ] || fail "$n logins with the wrong PIN"
cp /results/good.pin /usr/local/etc/sfid/hsm.pin

echo PASS >/results/result
systemctl poweroff --no-block
