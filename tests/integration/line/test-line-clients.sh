#!/usr/bin/env bash
# The control socket cannot be locked up: operators' connections fill max_clients but
# supervisors (root) still get in, in their own room; an idle client is closed, a watcher
# is not; a line left unfinished is closed however slowly its bytes trickle in; a client
# that never reads its replies is dropped when its close deadline passes, its descriptor
# and buffers freed.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-clients.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

if [ "$(id -u)" -ne 0 ]; then
	echo "SKIP: connecting as an operator (another uid) needs root" >&2
	exit 77
fi
line_setup_pki 5 16
line_write_config 1
printf '[control]\nmax_clients = 4\nidle_timeout_ms = 1500\nline_timeout_ms = 1000\nclose_timeout_ms = 1000\n' \
	>>"$tmp/sfid.conf"
line_start_sfid

python3 - "$tmp/sfid.sock" "$sfid_pid" "$(getent group users | cut -d: -f3)" <<'PY' ||
import json, os, socket, sys, time

path, pid, users = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)

def root_conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    return s

def op_conn():
    """A connection opened by nobody in group users (an operator); sfid reads the peer's
    credentials at connect, so it stays the operator's when handed to us."""
    a, b = socket.socketpair()
    child = os.fork()
    if child == 0:
        try:
            os.setgroups([])
            os.setgid(users)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            socket.send_fds(a, [b"c"], [s.fileno()])
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    _, fds, _, _ = socket.recv_fds(b, 1, 1)
    s = socket.socket(fileno=fds[0])
    s.settimeout(20)
    return s

def ask(s, i, cmd):
    s.sendall(json.dumps({"v": 1, "id": i, "cmd": cmd}).encode() + b"\n")
    f = s.makefile("rb")
    return json.loads(f.readline())

def closed_within(s, secs):
    """Reads until EOF; returns the seconds it took (fails after secs) and the last line."""
    t0, buf = time.monotonic(), b""
    s.settimeout(secs)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return time.monotonic() - t0, buf
            buf += chunk
    except socket.timeout:
        fail("connection still open after %.1f s: %r" % (secs, buf[-200:]))

def fds():
    return len(os.listdir("/proc/%d/fd" % pid))

base = fds()
# --- room: 4 operators fill max_clients; a fifth operator is refused; root gets in
ops = [op_conn() for _ in range(4)]
rep = ask(ops[0], 1, "hello")
if rep.get("ok", {}).get("role") != "operator":
    fail("not an operator: %r" % rep)
extra = op_conn()
took, last = closed_within(extra, 10)
if b'"busy"' not in last:
    fail("fifth operator: %r" % last)
roots = [root_conn() for _ in range(4)]
for i, r in enumerate(roots):
    rep = ask(r, 1, "watch" if i == 0 else "status")
    if "ok" not in rep:
        fail("supervisor %d beside 4 operators: %r" % (i, rep))
took, last = closed_within(root_conn(), 10)
if b'"busy"' not in last:
    fail("a supervisor beyond the supervisors' room: %r" % last)
print("4 operators, 4 supervisors in their room; the next of each refused")

# --- idle: every one of them is closed (1.5 s), a watcher is not
w = roots.pop(0)
for s in ops + roots:
    took, last = closed_within(s, 15)
    if b"no request for" not in last:
        fail("idle client closed without saying why: %r" % last)
time.sleep(2)
w.sendall(b'{"v":1,"id":2,"cmd":"status"}\n')
w.settimeout(10)
buf = b""
while b'"id":2,"ok"' not in buf:
    chunk = w.recv(65536)
    if not chunk:
        fail("the watcher was closed")
    buf += chunk
w.close()
print("idle clients closed; the watcher kept")

# --- a line trickling in, one byte every 200 ms, is closed after 1 s
s = root_conn()
s.sendall(b'{"v":1,')
t0 = time.monotonic()
s.settimeout(0.2)
buf = b""
while True:
    if time.monotonic() - t0 > 10:
        fail("unfinished line still open after 10 s")
    try:
        s.sendall(b" ")
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    except socket.timeout:
        continue
    except (BrokenPipeError, ConnectionResetError):
        break
if b"not finished" not in buf:
    fail("unfinished line closed without saying why: %r" % buf)
print("an unfinished line closed after %.1f s" % (time.monotonic() - t0))

# --- a client that asks and never reads is dropped at its close deadline
t0 = time.monotonic()
while fds() != base:
    if time.monotonic() - t0 > 10:
        fail("sfid holds %d descriptors, %d before the clients" % (fds(), base))
    time.sleep(0.1)
s = root_conn()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
req = b"".join(b'{"v":1,"id":%d,"cmd":"config"}\n' % i for i in range(1, 12001))
s.settimeout(60)
s.sendall(req)
t0 = time.monotonic()
while fds() != base:
    if time.monotonic() - t0 > 20:
        fail("a client that does not read is still held after 20 s (%d descriptors, %d "
             "before)" % (fds(), base))
    time.sleep(0.1)
print("a client that did not read was dropped %.1f s after its last request" %
      (time.monotonic() - t0))
s.close()
PY
	line_fail "control clients"
grep -q "did not read what was sent to it within 1000 ms" "$tmp/sfid.log" ||
	line_fail "no log line for the dropped client"
ctl status >/dev/null || line_fail "sfid does not answer"
echo "control clients bounded"
