#!/usr/bin/env bash
# Thousands of random, well-framed requests of every command, with arguments of every JSON
# type (and some right ones), sent to a live sfid whose slots are installing chips: sfid
# answers every request with a reply carrying its id, never dies, and the line still
# installs afterwards.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-requests.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 200 16
line_start_emu 2 2 --auto-swap 200
line_write_config 2
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" >/dev/null || line_fail "job load"
ctl start >/dev/null || line_fail "start"
wait_for 60 "a first chip installed" sql_is "SELECT count(*) > 0 FROM attempts WHERE result = 'ok'" 1

python3 - "$tmp/sfid.sock" "$tmp/pki/demo.sfi" "${REQUESTS:-3000}" <<'PY' || line_fail "random requests"
import json, random, socket, sys, time

path, image, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(int(time.time()))
seed = rnd.randrange(1 << 30)
rnd.seed(seed)
print("seed", seed)
COMMANDS = ["hello", "status", "watch", "start", "stop", "pause", "history", "stats",
            "ports", "job-load", "job-show", "export", "hsm", "config"]
KEYS = ["slots", "limit", "job", "slot", "chip", "failed", "image", "modules",
        "global_license", "count", "format", "since_ms", "x", ""]

def value(depth=0):
    k = rnd.randrange(12)
    if k == 0: return None
    if k == 1: return rnd.choice([True, False])
    if k == 2: return rnd.choice([0, 1, -1, 7, 2**31, 2**32, 2**63 - 1, -2**63, 2**64 + 5])
    if k == 3: return rnd.choice([0.5, -1e300, 1e300])
    if k == 4: return rnd.choice(["", "S0", "S1", "csv", "jsonl", "\u0000", "S0\u0000x",
                                  "/dev/zero", "/nonexistent", image, "é" * 50, "x" * 300])
    if k == 5: return rnd.choice(["S0", "S1", "nope"])
    if k == 6 and depth < 3: return [value(depth + 1) for _ in range(rnd.randrange(4))]
    if k == 7: return rnd.choice([["S0"], ["S1", "S0"], [], ["S0", "S0"], [None], [["S0"]]])
    if k == 8 and depth < 3: return {rnd.choice(KEYS): value(depth + 1) for _ in range(rnd.randrange(3))}
    return rnd.randrange(-5, 100)

def args():
    k = rnd.randrange(10)
    if k == 0: return None             # no "args"
    if k == 1: return value()          # any JSON value, mostly not an object
    return {rnd.choice(KEYS): value() for _ in range(rnd.randrange(4))}

def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    return s

class Client:
    def __init__(self):
        self.s = conn()
        self.buf = b""
        self.id = 0
    def lines(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise SystemExit("sfid closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

clients = [Client() for _ in range(4)]
sent = answered = 0
while sent < total:
    c = rnd.choice(clients)
    batch = []
    for _ in range(rnd.randrange(1, 20)):
        c.id += rnd.randrange(1, 3)
        msg = {"v": 1, "id": c.id, "cmd": rnd.choice(COMMANDS)}
        a = args()
        if a is not None or rnd.random() < 0.1:
            msg["args"] = a
        batch.append(msg)
    c.s.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in batch))
    sent += len(batch)
    # Commands that run on a worker or the recorder (hsm, export, job-load) answer later:
    # each id is answered once, in any order.
    want = {m["id"]: m for m in batch}
    while want:
        rep = c.lines()
        if "event" in rep:
            continue
        if rep.get("id") not in want or ("ok" not in rep and "error" not in rep):
            raise SystemExit("requests %r: reply %r" % (list(want.values()), rep))
        del want[rep["id"]]
        answered += 1
print("%d requests sent, %d answered" % (sent, answered))
PY
kill -0 "$sfid_pid" 2>/dev/null || line_fail "sfid died"
ctl status >/dev/null || line_fail "sfid does not answer status"
# Chips were aborted by the random stops (a chip failed three times is set aside, so the
# slots may have nothing left to install): sfid is checked to answer, not to install.
ctl history --limit 5 >/dev/null || line_fail "sfid does not answer history"
echo "sfid answered every request"
