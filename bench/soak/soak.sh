#!/usr/bin/env bash
# Soak (not a test): CHIPS chips through sfid on SLOTS unpaced slots of h5emu (umockdev
# adapters, a SoftHSM2 token with counted licenses), about PCT % of them with one random
# link fault (nack, drop, corrupt, garbage or a 2 s delay at a random exchange of the
# install: Get, Get ID, GET_INFO, GET_CERT, PUT_LICENSE, PUT_HEADER, PUT_DATA, FINALIZE).
# When a slot shows its chip's result (installed or failed) the chip is taken out and the
# slot's next chip put in, as an operator would.
#
# Prints sfid's resident memory and open descriptors at start (job loaded, line started),
# every 1000 chips and at the end, and checks at the end, with sfid still running:
#   - every chip got a result, no attempt left running (no orphan attempts);
#   - ledger = token: licenses the ledger records as spent = the token counter's drop, and
#     their counters are contiguous;
#   - every spent license is installed or issued-not-installed;
#   - the export verifies (sfi-audit verify);
#   - chips the emulator holds Closed with the firmware = attempts ok = licenses installed.
#
# Usage: bench/soak/soak.sh [BUILDDIR] [CHIPS] [SLOTS] [PCT] [IMAGE_KB] [SEED]
#   defaults: build 10000 16 2 16 (seed: random, printed)
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
CHIPS=${2:-10000}
SLOTS=${3:-16}
PCT=${4:-2}
KB=${5:-16}
SEED=${6:-$RANDOM}
PER=$(((CHIPS + SLOTS - 1) / SLOTS))
CHIPS=$((PER * SLOTS))
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/sfid-soak.XXXXXX")
. "$(dirname "$0")/../../tests/integration/line/common.sh"
trap line_cleanup EXIT INT TERM

rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/VmHWM/ { print $2 }' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
probe() { echo "$1: sfid RSS $(rss_kb "$sfid_pid") KiB, $(fds "$sfid_pid") open descriptors"; }

echo "reproduce: $0 $BUILD $CHIPS $SLOTS $PCT $KB $SEED"
echo "soak: $CHIPS chips on $SLOTS slots ($PER each), ~$PCT % with a fault, $KB KiB firmware;" \
	"$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
line_setup_pki $((CHIPS + 100)) "$KB"
before=$(line_counter)

# One fault each for about PCT % of the chips (global chip number = slot * PER + position).
mapfile -t faults < <(python3 - "$CHIPS" "$PCT" "$SEED" <<'PY'
import random, sys
chips, pct, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
points = [  # (selector, how many occurrences a chip has)
    ("cmd=0x00", 1), ("cmd=0x02", 1),
    ("cmd=0x50,subop=0x5300", 2), ("cmd=0x50,subop=0x5301", 1),
    ("cmd=0x51,subop=0x5302", 1), ("cmd=0x50,subop=0x5303", 1),
    ("cmd=0x51,subop=0x5304", 16), ("cmd=0x50,subop=0x5305", 1),
]
actions = ["nack", "drop", "corrupt", "garbage", "delay:2000"]
for chip in sorted(rnd.sample(range(chips), round(chips * pct / 100))):
    sel, occ = rnd.choice(points)
    print(f"--fault=chip={chip},{sel},nth={rnd.randint(1, occ)},byte={rnd.randint(0, 2)},"
          f"action={rnd.choice(actions)}")
PY
)
echo "soak: ${#faults[@]} chips with a fault (seed $SEED)"
printf '%s\n' "${faults[@]}" >"$tmp/faults.txt"

line_start_emu "$SLOTS" "$PER" "${faults[@]}"
line_write_config "$SLOTS"
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" >/dev/null
start_rss=$(rss_kb "$sfid_pid")
start_fds=$(fds "$sfid_pid")
probe "start (job loaded, before the line starts)"
t0=$(date +%s)

# The operator: when a slot shows its chip's result, the chip is taken out and the slot's
# next one put in once sfid has seen the slot empty (no --auto-swap: a chip being retried
# after FINALIZE is never pulled).
python3 - "$tmp" "$CHIPS" "$SFICTL" "$sfid_pid" "$SLOTS" <<'PY' | tee "$tmp/driver.out" || line_fail "the soak did not finish"
import json, os, select, socket, subprocess, sys, time
tmp, total, sfictl, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
warm = 4 * int(sys.argv[5])  # every slot has had its ports open and a few chips

def emu(cmd):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(tmp + "/emu/control")
    s.sendall((cmd + "\n").encode())
    out = b""
    while not out.endswith(b"ok\n") and b"error" not in out:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out.decode()

def probe(label):
    rss = [l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0]
    n = len(os.listdir(f"/proc/{pid}/fd"))
    print(f"{label}: sfid RSS {rss} KiB, {n} open descriptors", flush=True)

watch = subprocess.Popen(["stdbuf", "-oL", sfictl, "--socket", tmp + "/sfid.sock", "--json",
                          "watch", "--timeout", "14400"], stdout=subprocess.PIPE)
watch.stdout.readline()  # the status: the watch is on, no result can be missed
subprocess.run([sfictl, "--socket", tmp + "/sfid.sock", "start"], check=True,
               stdout=subprocess.DEVNULL)
results = ok = failed = 0
steps = {}
t0 = time.monotonic()
buf = b""
last = time.monotonic()
pending = {}  # slot name -> number: chip taken out, next one goes in once sfid saw it go

def insert_pending():
    st = json.loads(subprocess.run([sfictl, "--socket", tmp + "/sfid.sock", "--json",
                                    "status"], capture_output=True, check=True).stdout)
    for s in st["slots"]:
        if s["slot"] in pending and s["state"] == "waiting-for-chip":
            emu(f"insert {pending.pop(s['slot'])}")

while results < total:
    if pending:
        insert_pending()
    r, _, _ = select.select([watch.stdout], [], [], 0.2 if pending else 5)
    if not r:
        if time.monotonic() - last > 120:
            print(f"soak: no result for 120 s after {results} chips", flush=True)
            break
        continue
    chunk = os.read(watch.stdout.fileno(), 65536)
    if not chunk:
        print("soak: the watch ended", flush=True)
        break
    buf += chunk
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        m = json.loads(line)
        if m.get("event") != "result":
            continue
        d = m["data"]
        last = time.monotonic()
        results += 1
        if d["result"] == "ok":
            ok += 1
        else:
            failed += 1
            key = d.get("step", "?")
            steps[key] = steps.get(key, 0) + 1
            print(f"  chip {d['chip'] or '-'} on {d['slot']}: failed at {d.get('step')}: "
                  f"{d.get('error')}", flush=True)
        slot = int(d["slot"][1:])
        emu(f"remove {slot}")
        pending[d["slot"]] = slot
        if results == warm or results % 1000 == 0:
            probe(f"after {results} chips ({time.monotonic() - t0:.0f} s)")
watch.terminate()
print(f"soak: {results} results: {ok} ok, {failed} failed {steps}; "
      f"{time.monotonic() - t0:.0f} s", flush=True)
sys.exit(0 if results >= total else 1)
PY
elapsed=$(($(date +%s) - t0))
warm=$(grep -m1 "^after" "$tmp/driver.out" || true)
end_rss=$(rss_kb "$sfid_pid")
end_fds=$(fds "$sfid_pid")
peak=$(hwm_kb "$sfid_pid")
probe "end (all chips done, sfid still running)"
ctl status >/dev/null || line_fail "sfid does not answer after the soak"

running=$(sql "SELECT count(*) FROM attempts WHERE result = 'running'")
ok=$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'")
failed=$(sql "SELECT count(*) FROM attempts WHERE result = 'failed'")
spent=$(sql "SELECT count(*) FROM licenses WHERE counter_after IS NOT NULL")
installed=$(sql "SELECT count(*) FROM licenses WHERE state = 'installed'")
not_inst=$(sql "SELECT count(*) FROM licenses WHERE state = 'issued_not_installed'")
other=$(sql "SELECT group_concat(state || ':' || n) FROM (SELECT state, count(*) n FROM licenses
	WHERE counter_after IS NOT NULL AND state NOT IN ('installed', 'issued_not_installed')
	GROUP BY state)")
span=$(sql "SELECT max(counter_before) - min(counter_after) FROM licenses WHERE counter_after IS NOT NULL")
after=$(line_counter)
echo "attempts: $ok ok, $failed failed, $running running; licenses spent $spent" \
	"($installed installed, $not_inst issued-not-installed${other:+, $other}); token $before -> $after"
bad=0
[ "$running" -eq 0 ] || { echo "FAIL: $running orphan attempts" >&2; bad=1; }
[ $((before - after)) -eq "$spent" ] || { echo "FAIL: ledger $spent spent, token dropped $((before - after))" >&2; bad=1; }
[ "${span:-0}" -eq "$spent" ] || { echo "FAIL: counters not contiguous (span $span for $spent)" >&2; bad=1; }
[ -z "$other" ] || { echo "FAIL: spent licenses neither installed nor issued-not-installed: $other" >&2; bad=1; }

ctl export --format jsonl --out "$tmp/audit.jsonl" 2>/dev/null || line_fail "export failed"
"$SFIHSM" audit-pubkey --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" \
	--pin-file "$tmp/pki/pin" --out "$tmp/audit.pem" >/dev/null
if "$SFIAUDIT" verify "$tmp/audit.jsonl" --pubkey "$tmp/audit.pem" >"$tmp/verify.out" 2>&1; then
	echo "export: $(tail -n 1 "$tmp/verify.out")"
else
	echo "FAIL: sfi-audit verify: $(tail -n 5 "$tmp/verify.out")" >&2
	bad=1
fi

line_stop_pid "$sfid_pid"
sfid_pid=
line_stop_pid "$emu_pid"
emu_pid=
closed=$(check_chips_programmed "$tmp/emu-state")
echo "chips Closed with the firmware: $closed; attempts ok: $ok; licenses installed: $installed"
[ "$closed" -eq "$ok" ] && [ "$ok" -eq "$installed" ] ||
	{ echo "FAIL: finalized chips, ok attempts and installed licenses differ" >&2; bad=1; }
echo "RESULT: $CHIPS chips in $elapsed s; sfid RSS $start_rss -> $end_rss KiB (peak $peak)," \
	"descriptors $start_fds -> $end_fds (idle start -> end); $warm;" \
	"orphan attempts $running; ledger $spent, token $((before - after))"
exit "$bad"
