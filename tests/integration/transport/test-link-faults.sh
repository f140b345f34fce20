#!/usr/bin/env bash
# Every fault h5emu injects (drop, corrupt, NACK, a delay beyond the step timeout) at each of
# the first answer bytes of every command of an install (Get, Get ID, GET_INFO, GET_CERT,
# PUT_LICENSE, PUT_HEADER, PUT_DATA, FINALIZE, the GET_INFO after the reset), one chip per
# injection point: the same install driven the way sfi-boot does (blocking) and the way
# sfid's slots do (libevent, every chip at once) ends the same way, chip by chip; every
# install that succeeds left the image installed; a lost or garbled answer to a command the
# retry policy may repeat never fails the chip; a NACK is retried only for Get and Get ID,
# which a bootloader never refuses (a stale byte). Four chips run at a time; a point whose
# outcome depends on that load (the resync waits 20 ms per 0x7F) is run again alone, on a
# fresh chip, and must then agree. LINK_FAULTS_FULL=1 walks bytes 0..7 instead of 0..4.
set -euo pipefail
: "${SFID_BUILD_ROOT:?run through meson test}"
: "${LINK_FAULTS:?run through meson test}"
h5emu=$SFID_BUILD_ROOT/emulator/h5emu
pack=$SFID_BUILD_ROOT/tools/sfi-pack/sfi-pack
tmp=$(mktemp -d "${TMPDIR:-/tmp}/link-faults.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
cd "$tmp"

STEP_MS=300		# the link's step timeout; a delay fault holds the answer 3 times that
openssl ecparam -name prime256v1 -genkey -noout -out ca.pem 2>/dev/null
head -c 32 /dev/urandom >global.bin
chmod 600 global.bin
head -c 6000 /dev/urandom >fw.bin
printf 'PRODUCT_STATE, Closed\n' >ob.csv
"$pack" create --out img.sfi --firmware fw.bin@0x08000000 --options ob.csv --generate-key k.bin \
	--version 1 --ram-buffer 2048 >/dev/null
"$pack" license --global --global-key global.bin --key k.bin --image img.sfi --out img.lic >/dev/null

# cmd[,subop][,nth]: the commands of an install, in order.
commands=(
	"cmd=0x00" "cmd=0x02"
	"cmd=0x50,subop=0x5300,nth=1" "cmd=0x50,subop=0x5301"
	"cmd=0x51,subop=0x5302" "cmd=0x50,subop=0x5303"
	"cmd=0x51,subop=0x5304,nth=1" "cmd=0x51,subop=0x5304,nth=3"
	"cmd=0x50,subop=0x5305" "cmd=0x50,subop=0x5300,nth=3"
)
actions=(drop corrupt nack "delay:$((3 * STEP_MS))")
last_byte=2
[ "${LINK_FAULTS_FULL:-0}" = 1 ] && last_byte=7
cases=()
for c in "${commands[@]}"; do
	for b in $(seq 0 $last_byte); do
		for a in "${actions[@]}"; do
			cases+=("$c,byte=$b,action=$a")
		done
	done
done
n=${#cases[@]}
emus=0

# start_emu POINT...: a fresh h5emu with chip K carrying the fault of the Kth point given;
# sets $dir.
start_emu() {
	local args=() k=0 p
	dir=$tmp/emu$emus
	emus=$((emus + 1))
	for p in "$@"; do
		args+=(--fault "chip=$k,${cases[$p]}")
		k=$((k + 1))
	done
	timeout 600 "$h5emu" --count "$#" --dir "$dir" --ca-key ca.pem --global-key global.bin \
		--ram-buffer 2048 "${args[@]}" >"$dir.ready" 2>"$dir.log" &
	pids+=($!)
	for _ in $(seq 300); do
		grep -q ready "$dir.ready" 2>/dev/null && return 0
		sleep 0.1
	done
	fail "h5emu did not start: $(cat "$dir.log")"
}

# run MODE PARALLEL OUT POINT...: each point on its own chip of a fresh h5emu; the blocking
# driver one chip per process (sfi-boot), the event loop PARALLEL chips per loop (sfid);
# PARALLEL at a time. OUT gets "<point>|<result>|installed=<0|1>" lines, sorted.
run() {
	local mode=$1 par=$2 out=$3 all=("${@:4}") i
	: >"$out.all"
	# h5emu runs at most 256 chips: 200 points per emulator.
	for ((i = 0; i < ${#all[@]}; i += 200)); do
		run_batch "$mode" "$par" "$out" "${all[@]:i:200}"
		cat "$out" >>"$out.all"
	done
	sort -t '|' -k1,1n "$out.all" >"$out"
	[ "$(wc -l <"$out")" -eq ${#all[@]} ] || fail "$mode: $(wc -l <"$out") results for ${#all[@]} points"
}

run_batch() {
	local mode=$1 par=$2 out=$3 k
	shift 3
	start_emu "$@"
	local points=("$@")
	if [ "$mode" = blocking ]; then
		for k in "${!points[@]}"; do echo "${points[$k]} tty:$dir/chip$k"; done |
			xargs -P "$par" -n 2 sh -c \
				'"$0" blocking img.sfi img.lic '"$STEP_MS"' "$2" | sed "s/^0|/$1|/"' \
				"$LINK_FAULTS" >"$out.raw" || fail "the blocking driver hung or failed"
	else
		# Two chips on each loop, two loops at a time.
		for ((k = 0; k < ${#points[@]}; k += 2)); do
			echo "${points[$k]} tty:$dir/chip$k ${points[$((k + 1))]:--} tty:$dir/chip$((k + 1))"
		done | xargs -P "$par" -n 4 sh -c '
			lf=$0 p0=$1 port0=$2 p1=$3 port1=$4
			if [ "$p1" = - ]; then
				"$lf" loop img.sfi img.lic '"$STEP_MS"' "$port0" | sed "s/^0|/$p0|/"
			else
				"$lf" loop img.sfi img.lic '"$STEP_MS"' "$port0" "$port1" |
					sed "s/^0|/$p0|/; s/^1|/$p1|/"
			fi' "$LINK_FAULTS" >"$out.raw" || fail "the event-loop driver hung or failed"
	fi
	sort -t '|' -k1,1n "$out.raw" >"$out"
	[ "$(wc -l <"$out")" -eq "$#" ] || fail "$mode: $(wc -l <"$out") results for $# points"
}

# check POINT RESULT INSTALLED: prints why the outcome breaks the policy, or nothing.
check() {
	local spec=${cases[$1]}
	case $2 in
	ok) [ "$3" = installed=1 ] || echo "ok but the image is not installed" ;;
	*)
		# A lost or garbled answer of a command that may be repeated is retried, and
		# the install goes through; a NACK of the command byte is the chip's word.
		case $spec in
		*action=nack*) ;;
		cmd=0x00,*|cmd=0x02,*|*subop=0x5300*|*subop=0x5301*|*subop=0x5304*)
			echo "a repeatable command failed the chip" ;;
		esac
		;;
	esac
	case $spec,$2 in
	# Get and Get ID are never refused (AN3155): their NACK is a stale byte, retried.
	cmd=0x00,*byte=0,action=nack,ok | cmd=0x02,*byte=0,action=nack,ok) ;;
	cmd=0x00,*byte=0,action=nack,* | cmd=0x02,*byte=0,action=nack,*)
		echo "a NACK of Get or Get ID was not retried" ;;
	*byte=0,action=nack,ok) echo "a NACK was retried" ;;
	esac
}

all=($(seq 0 $((n - 1))))
t0=$(date +%s)
echo "# $n injection points, blocking driver (sfi-boot's), 4 chips at a time"
run blocking 4 blocking.out "${all[@]}"
t1=$(date +%s)
echo "# the same, event-loop driver (sfid's), 2 chips on a loop, 2 loops at a time"
run loop 2 loop.out "${all[@]}"
t2=$(date +%s)
echo "# blocking $((t1 - t0)) s, event loop $((t2 - t1)) s"

again=()
paste -d '|' blocking.out loop.out | while IFS='|' read -r k ra ia _ rb ib; do
	if [ "$ra $ia" != "$rb $ib" ] || [ -n "$(check "$k" "$ra" "$ia")" ]; then
		echo "$k"
	fi
done >again.txt
mapfile -t again <again.txt
cp blocking.out final.out
if [ ${#again[@]} -gt 0 ]; then
	echo "# ${#again[@]} points again, one chip at a time"
	run blocking 1 blocking2.out "${again[@]}"
	run loop 1 loop2.out "${again[@]}"
	paste -d '|' blocking2.out loop2.out | while IFS='|' read -r k ra ia _ rb ib; do
		[ "$ra $ia" = "$rb $ib" ] ||
			fail "point $k (${cases[$k]}): blocking '$ra $ia', event loop '$rb $ib'"
	done
	# The second run's outcome stands for these points.
	awk -F'|' 'NR == FNR { b[$1] = $0; next } { print ($1 in b) ? b[$1] : $0 }' \
		blocking2.out blocking.out >final.out
fi
if [ -n "${LINK_FAULTS_KEEP:-}" ]; then
	mkdir -p "$LINK_FAULTS_KEEP"
	cp ./*.out again.txt "$LINK_FAULTS_KEEP"/
	printf '%s\n' "${cases[@]}" >"$LINK_FAULTS_KEEP/cases"
fi

ok=0 failed=0
while IFS='|' read -r k result installed; do
	why=$(check "$k" "$result" "$installed")
	[ -z "$why" ] || fail "point $k (${cases[$k]}): $why: $result"
	if [ "$result" = ok ]; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
	echo "$k ${cases[$k]} $result $installed"
done <final.out >summary.txt
ok=$(grep -c ' ok installed=1$' summary.txt || true)
echo "# $n points: $ok installed, $((n - ok)) failed cleanly (${#again[@]} run again alone); both drivers agree on every one"
# The points that fail the chip, for the record.
grep -v ' ok installed=1$' summary.txt | sed 's/^/  /' || true
