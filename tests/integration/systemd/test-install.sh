#!/usr/bin/env bash
# `meson install --destdir` produces the documented tree; the units pass systemd-analyze
# verify; sfid.service's offline security exposure is 1.0 or lower; every man page renders
# with `man -l` without warnings; the sample configuration is complete.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

root=$tmp/root
meson install -C "$BUILD" --destdir "$root" --no-rebuild --quiet >"$tmp/install.log" 2>&1 \
	|| { cat "$tmp/install.log" >&2; fail "meson install failed"; }
prefix=$(meson introspect "$BUILD" --buildoptions \
	| python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"][0])')
top=$root$prefix

expected=(
	bin/sfictl bin/sfi-boot bin/sfi-pack bin/sfi-hsm bin/sfi-audit sbin/sfid
	lib/systemd/system/sfid.service lib/systemd/system/sfid.socket
	lib/sysusers.d/sfid.conf lib/tmpfiles.d/sfid.conf lib/udev/rules.d/70-sfid.rules
	etc/sfid/sfid.conf share/bash-completion/completions/sfictl
	share/man/man8/sfid.8 share/man/man5/sfid.conf.5 share/man/man1/sfictl.1
	share/man/man1/sfi-boot.1 share/man/man1/sfi-pack.1 share/man/man1/sfi-hsm.1
	share/man/man1/sfi-audit.1
)
for f in "${expected[@]}"; do
	[ -e "$top/$f" ] || fail "meson install did not produce $f"
done
for f in bin/sfictl bin/sfi-boot bin/sfi-pack bin/sfi-hsm bin/sfi-audit sbin/sfid; do
	[ -x "$top/$f" ] || fail "$f is not executable"
done
# Nothing from the tests (emulator, harness) is installed.
if [ -n "$(find "$root" -name 'h5emu*' -o -name '*termios-shim*')" ]; then
	fail "test programs were installed"
fi

# Man pages: each renders, with no warnings from groff or man.
for page in "$top"/share/man/man*/*; do
	out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null) \
		|| fail "man -l $page failed"
	[ -z "$out" ] || fail "man -l $page warned: $out"
	LC_ALL=C.UTF-8 man -l "$page" 2>/dev/null | grep NAME >/dev/null || fail "$page has no NAME section"
done

# Units: ExecStart must point at an existing binary for verify; use the installed one.
mkdir "$tmp/units"
sed "s|$prefix/sbin/sfid|$top/sbin/sfid|" "$top/lib/systemd/system/sfid.service" \
	>"$tmp/units/sfid.service"
cp "$top/lib/systemd/system/sfid.socket" "$tmp/units/"
grep -q "^ExecStart=$top/sbin/sfid --config" "$tmp/units/sfid.service" \
	|| fail "ExecStart does not name the installed sfid"
(cd "$tmp/units" && MANPATH=$top/share/man systemd-analyze verify sfid.service sfid.socket) \
	>"$tmp/verify.log" 2>&1 || { cat "$tmp/verify.log" >&2; fail "systemd-analyze verify failed"; }
[ ! -s "$tmp/verify.log" ] || { cat "$tmp/verify.log" >&2; fail "systemd-analyze verify reported something"; }

exposure=$(systemd-analyze security --offline=true --no-pager "$tmp/units/sfid.service" 2>&1 \
	| sed -n 's/.*Overall exposure level for sfid.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "no exposure level from systemd-analyze security"
python3 -c "import sys; sys.exit(0 if float('$exposure') <= 1.0 else 1)" \
	|| fail "sfid.service exposure $exposure is above 1.0"
echo "sfid.service exposure: $exposure"

# The socket survives service restarts: no RuntimeDirectory= (systemd would remove
# /run/sfid with the socket in it); tmpfiles.d creates the folder. Both roles reach it.
! grep -q '^RuntimeDirectory=' "$tmp/units/sfid.service" || fail "sfid.service has RuntimeDirectory="
grep -q '^d /run/sfid ' "$top/lib/tmpfiles.d/sfid.conf" || fail "tmpfiles.d does not create /run/sfid"
grep -q '^SocketMode=0666' "$tmp/units/sfid.socket" || fail "the socket is not open to both roles"
grep -q '^Requires=sfid.socket' "$tmp/units/sfid.service" || fail "sfid.service does not require its socket"
# A wrong PIN is not tried again by Restart=on-failure.
grep -q '^RestartPreventExitStatus=78' "$tmp/units/sfid.service" || fail "no RestartPreventExitStatus=78"

# The PIN reaches sfid only as a credential; the unit says so.
grep -q '^LoadCredential=hsm-pin:' "$tmp/units/sfid.service" || fail "no LoadCredential for the PIN"
grep -q '^pin_credential = hsm-pin' "$top/etc/sfid/sfid.conf" || fail "sample config does not use the credential"

# The sample configuration is complete: with groups that exist here it passes --check;
# as shipped, the only complaint is the groups sysusers.d creates.
sed -e 's/^operator_group = .*/operator_group = root/' -e 's/^supervisor_group = .*/supervisor_group = root/' \
	"$top/etc/sfid/sfid.conf" >"$tmp/sfid.conf"
"$top/sbin/sfid" --check --config "$tmp/sfid.conf" || fail "sample configuration fails --check"
if out=$("$top/sbin/sfid" --check --config "$top/etc/sfid/sfid.conf" 2>&1); then
	getent group sfid-operators >/dev/null || fail "sample config accepted without its groups"
else
	echo "$out" | grep "group 'sfid-operators' does not exist" >/dev/null \
		|| fail "unexpected complaint about the sample config: $out"
fi
echo "install tree, units, man pages: ok"
