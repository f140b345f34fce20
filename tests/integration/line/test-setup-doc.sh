#!/usr/bin/env bash
# docs/setup.md, run: every ```sh block of the page, in order, in an empty folder, with the
# programs of this build first in PATH. The PINs the page's commands ask for are typed into
# a pseudo-terminal, as a person would. The run must end with the export verified.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
SRC=${SFID_SOURCE_ROOT:-$(cd "$(dirname "$0")/../../.." && pwd)}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-setup.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

for p in arm-none-eabi-as softhsm2-util openssl; do
	command -v "$p" >/dev/null || fail "$p is missing (scripts/deps installs it)"
done
mkdir -p "$tmp/bin" "$tmp/run"
for p in daemon/sfid/sfid daemon/sfictl/sfictl tools/sfi-pack/sfi-pack tools/sfi-hsm/sfi-hsm \
	tools/sfi-audit/sfi-audit emulator/h5emu; do
	[ -x "$BUILD/$p" ] || fail "$BUILD/$p is not built"
	ln -s "$BUILD/$p" "$tmp/bin/"
done

python3 - "$SRC/docs/setup.md" "$tmp/page.sh" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
blocks = re.findall(r"^```sh\n(.*?)^```$", text, flags=re.S | re.M)
assert len(blocks) >= 8, "docs/setup.md has %d sh blocks" % len(blocks)
with open(sys.argv[2], "w") as f:
    f.write("set -euo pipefail\n")
    # Whatever the page started in the background goes when the run ends, however it ends.
    f.write("trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n")
    for i, b in enumerate(blocks):
        f.write("echo '### block %d'\n%s\n" % (i + 1, b))
PY

# The page runs in bash on a pseudo-terminal; prompts for a PIN get one.
cd "$tmp/run"
set +e
PATH=$tmp/bin:$PATH timeout 300 python3 - "$tmp/page.sh" >"$tmp/out.txt" 2>&1 <<'PY'
import os, pty, re, select, sys, time
pins = {b"SO PIN": b"12345678", b"user PIN": b"87654321"}
pid, fd = pty.fork()
if pid == 0:
    os.execvp("bash", ["bash", sys.argv[1]])
buf = b""
deadline = time.time() + 280
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 1)
    if not r:
        continue
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    buf = (buf + data)[-400:]
    tail = buf.rsplit(b"\n", 1)[-1]
    if tail.rstrip().endswith(b":") and b"PIN" in tail:
        for k, v in pins.items():
            if k.lower() in tail.lower():
                os.write(fd, v + b"\n")
                buf = b""
                break
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
PY
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
	tail -n 40 "$tmp/out.txt" >&2
	[ -f "$tmp/run/sfid.log" ] && tail -n 20 "$tmp/run/sfid.log" >&2
	fail "docs/setup.md did not run through (exit $rc)"
fi
grep -q "### block" "$tmp/out.txt" || fail "no block ran"
grep -q "6 spent, 6 installed" "$tmp/out.txt" || fail "no verified export: $(tail -n 20 "$tmp/out.txt")"
[ "$(grep -c "^### block" "$tmp/out.txt")" -eq "$(grep -c '^```sh$' "$SRC/docs/setup.md")" ] ||
	fail "not every block ran: $(grep "^### block" "$tmp/out.txt" | tail -n 1)"
[ "$(sqlite3 -readonly "$tmp/run/audit.db" "SELECT count(*) FROM attempts WHERE result = 'ok'")" -eq 6 ] ||
	fail "the page's line did not install 6 chips"
grep -q "87654321" "$tmp/out.txt" && fail "a PIN was echoed"
tail -n 25 "$tmp/out.txt"
echo "docs/setup.md runs: image, token, CA, provisioning, sfid.conf, emulator, 6 chips, export verified"
