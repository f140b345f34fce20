# Sourced: a line to h5emu's control socket at $tmp/emu/control.

# emu_ctl COMMAND...: one line to h5emu's control socket; prints its answer.
emu_ctl() {
	python3 - "$tmp/emu/control" "$*" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall((sys.argv[2] + "\n").encode())
out = b""
while not out.endswith(b"ok\n") and b"error" not in out:
    chunk = s.recv(4096)
    if not chunk:
        break
    out += chunk
sys.stdout.write(out.decode())
PY
}
