#!/bin/bash
# h5emu's USB faults against the real dfu-util, one chip each: a stalled DNLOAD, a data
# block ending in dfuERROR (errPROG), the device unplugged in the middle of an upload, a
# GETSTATUS answered 1.5 s late, an UPLOAD never answered, the device re-enumerating in the
# middle of a download. Each ends in a clear dfu-util error within a bound (or, for the slow
# GETSTATUS, a late success), and the chip works again afterwards.
set -euo pipefail

H5EMU=${1:?usage: dfu-faults.sh PATH-TO-H5EMU}
command -v dfu-util >/dev/null || { echo "dfu-util is not installed (scripts/deps); skipping"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dfu-faults.XXXXXX")
. "$(dirname "$0")/../emu-common.sh"

start_emu --count 6 --transport dfu --reenumerate-ms 50 \
	--fault dfu=dnload,chip=0,nth=3,action=stall \
	--fault dfu=dnload,chip=1,block=2,nth=3,action=dfu-error:6 \
	--fault dfu=upload,chip=2,nth=5,action=unplug \
	--fault dfu=getstatus,chip=3,nth=2,action=delay:1500 \
	--fault dfu=upload,chip=4,nth=3,action=silent \
	--fault dfu=dnload,chip=5,nth=3,action=reenumerate

devnum() {
	emu_ctl status | sed -n "s/^slot $1: .* usb 2-1\.$(($1 + 1)) device \([0-9]*\)$/\1/p"
}
head -c 16384 /dev/urandom >"$tmp/image.bin"
dl() { in_testbed dfu-util -p "2-1.$(($1 + 1))" -a 0 -s 0x08000000 -D "$tmp/image.bin"; }
ul() {
	rm -f "$tmp/back.bin"
	in_testbed dfu-util -p "2-1.$(($1 + 1))" -a 0 -s 0x08000000:16384 -U "$tmp/back.bin"
}
timed() {
	local t0 t1
	t0=$(date +%s%N)
	"$@"
	t1=$(date +%s%N)
	elapsed_ms=$(((t1 - t0) / 1000000))
}

# Stall of a DNLOAD: dfu-util reports it; the next run works.
dl 0
[ "$rc" -ne 0 ] || fail "chip 0: a stalled DNLOAD went unnoticed"
dl 0
[ "$rc" -eq 0 ] || fail "chip 0 does not work after the stall: $(tail -n 3 "$tmp/err")"

# dfuERROR at the third data block: dfu-util names the state and status; the next run clears
# it and writes.
dl 1
[ "$rc" -ne 0 ] || fail "chip 1: errPROG at a data block went unnoticed"
grep -q 'status(6)' "$tmp/out" "$tmp/err" || fail "chip 1: no status(6) in dfu-util's output: $(tail -n 5 "$tmp/out" "$tmp/err")"
dl 1
[ "$rc" -eq 0 ] || fail "chip 1 does not work after the dfuERROR: $(tail -n 3 "$tmp/err")"

# Unplug in the middle of an upload: a bounded failure, the device gone until plugged back.
d2=$(devnum 2)
timed ul 2
[ "$rc" -ne 0 ] || fail "chip 2: the upload did not fail when the device vanished"
[ "$elapsed_ms" -lt 20000 ] || fail "chip 2: the failed upload took $elapsed_ms ms"
[ "$(devnum 2)" = 0 ] || fail "chip 2 still enumerated after the unplug fault"
emu_ctl plug 2 >/dev/null
d2b=$(devnum 2)
[ "$d2b" -gt 0 ] && [ "$d2b" != "$d2" ] || fail "chip 2 came back as '$d2b' (was $d2)"
ul 2
[ "$rc" -eq 0 ] || fail "chip 2 does not work after replug: $(tail -n 3 "$tmp/err")"

# A GETSTATUS 1.5 s late: the download still succeeds, that much later.
timed dl 3
[ "$rc" -eq 0 ] || fail "chip 3: the slow GETSTATUS failed the download: $(tail -n 3 "$tmp/err")"
[ "$elapsed_ms" -ge 1500 ] || fail "chip 3: the download took $elapsed_ms ms, the delay was 1500"
ul 3
cmp "$tmp/image.bin" "$tmp/back.bin" || fail "chip 3: read-back differs"

# No answer: dfu-util's own timeout ends the upload with an error.
timed ul 4
[ "$rc" -ne 0 ] || fail "chip 4: an unanswered UPLOAD went unnoticed"
[ "$elapsed_ms" -lt 30000 ] || fail "chip 4: the failed upload took $elapsed_ms ms"
ul 4
[ "$rc" -eq 0 ] || fail "chip 4 does not work after the lost request: $(tail -n 3 "$tmp/err")"

# Re-enumeration in the middle of a download: the device comes back by itself, new number.
d5=$(devnum 5)
dl 5
[ "$rc" -ne 0 ] || fail "chip 5: the download did not fail when the device re-enumerated"
d5b=0
for _ in $(seq 100); do
	d5b=$(devnum 5)
	[ "$d5b" -gt 0 ] && [ "$d5b" != "$d5" ] && break
	sleep 0.05
done
[ "$d5b" -gt 0 ] && [ "$d5b" != "$d5" ] || fail "chip 5 did not come back ('$d5b', was $d5)"
dl 5
[ "$rc" -eq 0 ] || fail "chip 5 does not work after re-enumerating: $(tail -n 3 "$tmp/err")"

# Bad specifications are refused with a sentence.
for spec in 'dfu=bogus,action=stall' 'dfu=getstatus,action=dfu-error:6' \
	'dfu=dnload,action=dfu-error:16' 'dfu=upload,action=delay:0' 'dfu=upload'; do
	if "$H5EMU" --count 1 --dir "$tmp/bad" --transport dfu --fault "$spec" >/dev/null 2>"$tmp/bad.err"; then
		fail "--fault '$spec' accepted"
	fi
	grep -q "^h5emu: --fault '$spec': " "$tmp/bad.err" || fail "--fault '$spec': $(cat "$tmp/bad.err")"
done

kill -TERM "$emu_pid"
rc=0
wait "$emu_pid" || rc=$?
emu_pid=
[ "$rc" -eq 0 ] || fail "h5emu exited with $rc on SIGTERM"
echo "USB faults: stall, dfuERROR, unplug, slow GETSTATUS, no answer, re-enumeration: ok"
