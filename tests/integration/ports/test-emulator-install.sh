#!/usr/bin/env bash
# h5emu is installable: its manual page renders without warnings and documents every option
# of --help; a build configured with -Demulator=true installs h5emu, its termios shim and
# the page (meson install --destdir, the emulator's install tag), and the installed h5emu
# runs: a chip on a pseudo-terminal answers sfi-boot, and with --umockdev it finds its
# installed shim. The suite's own build (default options) installs none of it.
set -euo pipefail
: "${SFID_BUILD_ROOT:?run through meson test}"
: "${SFID_SOURCE_ROOT:?run through meson test}"
PAGE=$SFID_SOURCE_ROOT/docs/man/h5emu.1
H5EMU=$SFID_BUILD_ROOT/emulator/h5emu
SFIBOOT=$SFID_BUILD_ROOT/tools/sfi-boot/sfi-boot
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-emu-install.XXXXXX")
emu_pid=
cleanup() {
	if [ -n "$emu_pid" ]; then
		kill -TERM "$emu_pid" 2>/dev/null || true
		wait "$emu_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

echo "# the page renders and covers --help"
LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$PAGE" >"$tmp/page.txt" 2>"$tmp/page.err" ||
	fail "man -l h5emu.1 failed: $(cat "$tmp/page.err")"
[ ! -s "$tmp/page.err" ] || fail "man -l h5emu.1 warns: $(cat "$tmp/page.err")"
for section in NAME SYNOPSIS DESCRIPTION OPTIONS "CONTROL SOCKET" "EXIT STATUS" EXAMPLES; do
	grep -q "^$section\$" "$tmp/page.txt" || fail "h5emu.1 has no $section section"
done
"$H5EMU" --help >"$tmp/help.txt"
opts=$(grep -oE -- '--[a-z][a-z-]+' "$tmp/help.txt" | sort -u)
[ "$(printf '%s\n' "$opts" | wc -l)" -ge 15 ] || fail "h5emu --help lists too few options: $opts"
# The rendered page hyphenates long words; compare against the unfilled source.
for o in $opts; do
	grep -qF -- "$(printf '%s' "$o" | sed 's/-/\\-/g')" "$PAGE" || fail "h5emu.1 does not document $o"
done

echo "# the suite's build (default options) installs no emulator"
meson introspect "$SFID_BUILD_ROOT" --installed >"$tmp/installed.json"
! grep -q 'h5emu\|termios-shim' "$tmp/installed.json" || fail "h5emu installed without -Demulator=true"

echo "# -Demulator=true installs it"
# Only the emulator is compiled: its install tag installs nothing else.
meson setup "$tmp/build" "$SFID_SOURCE_ROOT" -Demulator=true -Dtests=false --prefix /usr \
	>"$tmp/setup.log" 2>&1 || fail "meson setup -Demulator=true: $(tail -n 20 "$tmp/setup.log")"
targets=(emulator/h5emu)
if grep -q termios-shim "$tmp/build/build.ninja"; then
	targets+=(emulator/emu-termios-shim)
fi
meson compile -C "$tmp/build" "${targets[@]}" >"$tmp/compile.log" 2>&1 ||
	fail "building h5emu: $(tail -n 20 "$tmp/compile.log")"
meson install -C "$tmp/build" --destdir "$tmp/root" --tags emulator --no-rebuild \
	>"$tmp/install.log" 2>&1 || fail "meson install --tags emulator: $(tail -n 20 "$tmp/install.log")"
libdir=$(meson introspect "$tmp/build" --buildoptions |
	python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="libdir"][0])')
[ -x "$tmp/root/usr/bin/h5emu" ] || fail "no executable usr/bin/h5emu: $(cd "$tmp/root" && find . -type f)"
[ -f "$tmp/root/usr/share/man/man1/h5emu.1" ] || fail "no usr/share/man/man1/h5emu.1"
grep -q '^\.TH H5EMU 1 .*"sfid [0-9]' "$tmp/root/usr/share/man/man1/h5emu.1" ||
	fail "installed h5emu.1 has no version: $(head -n 1 "$tmp/root/usr/share/man/man1/h5emu.1")"
shim=
if [ "${#targets[@]}" -eq 2 ]; then
	shim=$tmp/root/usr/$libdir/sfid/libemu-termios-shim.so
	[ -f "$shim" ] || fail "no usr/$libdir/sfid/libemu-termios-shim.so: $(cd "$tmp/root" && find . -type f)"
fi
# The tag holds the emulator alone.
n=$(cd "$tmp/root" && find . -type f | wc -l)
[ "$n" -eq $((2 + ${#targets[@]} - 1)) ] || fail "the emulator tag installs more: $(cd "$tmp/root" && find . -type f)"

echo "# the installed h5emu runs"
"$tmp/root/usr/bin/h5emu" --count 1 --dir "$tmp/emu" >"$tmp/ready" 2>"$tmp/emu.log" &
emu_pid=$!
for _ in $(seq 150); do
	[ -s "$tmp/ready" ] && break
	kill -0 "$emu_pid" 2>/dev/null || fail "installed h5emu exited: $(cat "$tmp/emu.log")"
	sleep 0.1
done
grep -qx 'h5emu: ready, 1 chips' "$tmp/ready" || fail "installed h5emu not ready: $(cat "$tmp/ready")"
timeout 60 "$SFIBOOT" --port "tty:$(readlink "$tmp/emu/chip0")" --timeout-ms 400 info >"$tmp/info" 2>&1 ||
	fail "sfi-boot on the installed h5emu: $(cat "$tmp/info")"
grep -q '^device id: *0x484' "$tmp/info" || fail "sfi-boot info: $(cat "$tmp/info")"
kill -TERM "$emu_pid"
wait "$emu_pid" || fail "installed h5emu did not exit 0 on SIGTERM"
emu_pid=

if [ -n "$shim" ]; then
	echo "# the installed h5emu --umockdev and its shim"
	# Installed under /usr, the shim is not there until the package is: point to the
	# staged copy, as the file the harness writes must name a shim that exists.
	EMU_TERMIOS_SHIM=$shim "$tmp/root/usr/bin/h5emu" --count 1 --dir "$tmp/emu2" --umockdev \
		>"$tmp/ready2" 2>"$tmp/emu2.log" &
	emu_pid=$!
	for _ in $(seq 150); do
		[ -s "$tmp/ready2" ] && break
		kill -0 "$emu_pid" 2>/dev/null || fail "installed h5emu --umockdev exited: $(cat "$tmp/emu2.log")"
		sleep 0.1
	done
	grep -qF "LD_PRELOAD=$shim:" "$tmp/emu2/umockdev.env" ||
		fail "umockdev.env does not name the shim: $(cat "$tmp/emu2/umockdev.env")"
	env $(cat "$tmp/emu2/umockdev.env") timeout 60 "$SFIBOOT" list --json >"$tmp/list" 2>&1 ||
		fail "sfi-boot list on the installed h5emu: $(cat "$tmp/list")"
	grep -q '"spec":"serial:H5EMU0000"' "$tmp/list" || fail "sfi-boot list: $(cat "$tmp/list")"
	kill -TERM "$emu_pid"
	wait "$emu_pid" || fail "installed h5emu --umockdev did not exit 0 on SIGTERM"
	emu_pid=
	# Without the staged copy it looks in the library folder it was built for (when no
	# package has put one there: then it would simply start).
	if [ ! -e "/usr/$libdir/sfid/libemu-termios-shim.so" ]; then
		set +e
		timeout 30 "$tmp/root/usr/bin/h5emu" --count 1 --dir "$tmp/emu3" --umockdev \
			>/dev/null 2>"$tmp/emu3.log"
		rc=$?
		set -e
		[ "$rc" -eq 1 ] || fail "installed h5emu --umockdev without its shim exited $rc"
		grep -q 'umockdev.env' "$tmp/emu3.log" || fail "no reason given: $(cat "$tmp/emu3.log")"
	fi
else
	echo "# (built without umockdev: no shim to install)"
fi
echo "PASS"
