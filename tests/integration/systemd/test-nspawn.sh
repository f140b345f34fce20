#!/usr/bin/env bash
# The installed units under systemd as PID 1: systemd-nspawn boots this machine's /usr
# (volatile root) with the install tree bound in, and nspawn-scenario.sh runs as a unit:
# sysusers.d and tmpfiles.d, socket activation, an operator and a supervisor, the PIN as a
# credential, the watchdog, journal fields, `systemctl restart sfid` keeping the socket,
# and a wrong PIN that does not loop. Skips (77) only if the container cannot start.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-nspawn.XXXXXX")
. "$here/../line/common.sh"
trap line_cleanup EXIT INT TERM
skip() { echo "SKIP: $*" >&2; exit 77; }

command -v systemd-nspawn >/dev/null || line_fail "systemd-nspawn is missing (scripts/deps installs systemd-container)"
[ "$(id -u)" -eq 0 ] || skip "systemd-nspawn needs root"

prefix=$(meson introspect "$BUILD" --buildoptions |
	python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"][0])')
root=$tmp/root
meson install -C "$BUILD" --destdir "$root" --no-rebuild --quiet >"$tmp/install.log" 2>&1 ||
	line_fail "meson install: $(cat "$tmp/install.log")"
top=$root$prefix

# A token with 7 licenses that the sfid user may use (the service reads and writes it).
line_setup_pki 7 16
printf 'directories.tokendir = /tokens/store\nobjectstore.backend = file\nlog.level = ERROR\n' \
	>"$tmp/tokens-softhsm2.conf"
mkdir -p "$tmp/tok"
mv "$tmp/tokens" "$tmp/tok/store"
mv "$tmp/tokens-softhsm2.conf" "$tmp/tok/softhsm2.conf"
chmod -R a+rwX "$tmp/tok"
mkdir -p "$top/etc/sfid"
cat >"$top/etc/sfid/sfid.conf" <<CONF
[station]
name = nspawn-line
[slot A]
port = serial:NOT-PLUGGED
reopen_ms = 500
[hsm]
module = $SOFTHSM_MODULE
token = $TOKEN_LABEL
pin_credential = hsm-pin
[database]
path = /var/lib/sfid/audit.db
[control]
socket = /run/sfid/sfid.sock
operator_group = sfid-operators
supervisor_group = sfid-supervisors
CONF
cp "$tmp/pki/pin" "$top/etc/sfid/hsm.pin"
chmod 600 "$top/etc/sfid/hsm.pin"
mkdir -p "$tmp/dropin" "$tmp/results"
cp "$tmp/pki/demo.sfi" "$tmp/results/demo.sfi"
chmod 644 "$tmp/results/demo.sfi"
cat >"$tmp/dropin/test.conf" <<'CONF'
[Service]
Environment=SOFTHSM2_CONF=/tokens/softhsm2.conf
ReadWritePaths=/tokens
WatchdogSec=2s
RestartSec=1s
CONF
# LeakSanitizer cannot work inside the service's sandbox (no ptrace of itself): a
# sanitized sfid keeps the address and undefined-behaviour checks there.
if [ -n "${SFID_SANITIZED:-}" ]; then
	printf 'Environment=ASAN_OPTIONS=detect_leaks=0:abort_on_error=1\n' >>"$tmp/dropin/test.conf"
fi
cat >"$tmp/nspawn-test.service" <<CONF
[Unit]
Description=sfid scenario
After=sysinit.target sockets.target systemd-sysusers.service systemd-tmpfiles-setup.service
[Service]
Type=oneshot
Environment=PATH=$prefix/bin:$prefix/sbin:/usr/sbin:/usr/bin:/sbin:/bin
ExecStart=/bin/sh /scenario.sh
CONF

unit=$top/lib/systemd/system
set +e
timeout 180 systemd-nspawn -D / --volatile=yes --register=no --keep-unit --quiet \
	--bind="$root$prefix:$prefix" \
	--bind-ro="$unit/sfid.service:/etc/systemd/system/sfid.service" \
	--bind-ro="$unit/sfid.socket:/etc/systemd/system/sfid.socket" \
	--bind-ro="$tmp/dropin:/etc/systemd/system/sfid.service.d" \
	--bind-ro="$top/lib/sysusers.d/sfid.conf:/etc/sysusers.d/sfid.conf" \
	--bind-ro="$top/lib/tmpfiles.d/sfid.conf:/etc/tmpfiles.d/sfid.conf" \
	--bind-ro="$tmp/nspawn-test.service:/etc/systemd/system/nspawn-test.service" \
	--bind-ro="$here/nspawn-scenario.sh:/scenario.sh" \
	--bind="$tmp/tok:/tokens" \
	--bind="$tmp/results:/results" \
	-b systemd.firstboot=off systemd.wants=nspawn-test.service >"$tmp/boot.log" 2>&1
rc=$?
set -e
if [ ! -e "$tmp/results/started" ]; then
	tail -n 20 "$tmp/boot.log" >&2
	skip "the container did not start (systemd-nspawn exit $rc); see its output above"
fi
[ -e "$tmp/results/result" ] || line_fail "the scenario did not finish (nspawn exit $rc): $(tail -n 30 "$tmp/results/log")"
if ! grep -q PASS "$tmp/results/result"; then
	cat "$tmp/results/journal" >&2 2>/dev/null || true
	tail -n 40 "$tmp/results/log" >&2
	line_fail "$(cat "$tmp/results/result")"
fi
echo "units under systemd: sysusers, tmpfiles, socket activation, both roles, credential PIN," \
	"watchdog, journal fields, restart keeps the socket, wrong PIN not retried"
