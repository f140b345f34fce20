#!/usr/bin/env python3
"""Byte-level conformance of h5emu's h563 profile, spoken directly on its plain PTYs (8N1,
no host library of the project): AN3155 framing, memory rules, identity, persistence,
bootloader entry, pacing accuracy, the control socket and every fault action."""

import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tty

ACK, NACK = 0x79, 0x1F
H5EMU = sys.argv[1]
TMP = tempfile.mkdtemp(prefix="h5emu-conf-")
PROCS = []
CHECKS = 0


def check(cond, what):
    global CHECKS
    CHECKS += 1
    if not cond:
        raise AssertionError(what)


class Emu:
    def __init__(self, name, *args, count=2):
        self.dir = os.path.join(TMP, name)
        self.count = count
        self.p = subprocess.Popen([H5EMU, "--count", str(count), "--dir", self.dir, *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        PROCS.append(self.p)
        r, _, _ = select.select([self.p.stdout], [], [], 10)
        line = self.p.stdout.readline().decode() if r else ""
        check(line == "h5emu: ready, %d chips\n" % count,
              "ready line, got %r (stderr %r)" % (line, self.p.stderr.read1(4096) if not r else b""))

    def port(self, k):
        return Port(os.path.join(self.dir, "chip%d" % k))

    def control(self, line):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(os.path.join(self.dir, "control"))
        s.sendall(line.encode() + b"\n")
        out = b""
        while not (out.endswith(b"ok\n") or b"error:" in out):
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
        s.close()
        return out.decode().splitlines()

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(10)
        check(rc == 0, "h5emu exits 0 on SIGTERM (got %d)" % rc)


class Port:
    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)

    def close(self):
        os.close(self.fd)

    def send(self, data):
        data = bytes(data)
        while data:
            select.select([], [self.fd], [], 5)
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:
                continue
            data = data[n:]

    def recv(self, n, timeout=1.0):
        out = b""
        end = time.monotonic() + timeout
        while len(out) < n:
            left = end - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    chunk = os.read(self.fd, n - len(out))
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
        return out

    def xfer(self, data, n, timeout=1.0):
        self.send(data)
        return self.recv(n, timeout)

    def silent(self, data, wait=0.25):
        return self.xfer(data, 1, wait) == b""

    def cmd(self, op):
        return self.xfer([op, op ^ 0xFF], 1)

    def sync(self):
        check(self.xfer([0x7F], 1) == bytes([ACK]), "sync answered with ACK")


def wait_for(cond, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.02)


def addr(a):
    b = a.to_bytes(4, "big")
    return list(b) + [b[0] ^ b[1] ^ b[2] ^ b[3]]


def xor(bs):
    x = 0
    for b in bs:
        x ^= b
    return x


def read_mem(p, a, n):
    if p.cmd(0x11) != bytes([ACK]):
        return None
    if p.xfer(addr(a), 1) != bytes([ACK]):
        return None
    r = p.xfer([n - 1, (n - 1) ^ 0xFF], n + 1)
    if r[:1] != bytes([ACK]):
        return None
    return r[1:]


def write_mem(p, a, data):
    """Returns the final answer byte (ACK/NACK) or None if refused earlier."""
    if p.cmd(0x31) != bytes([ACK]):
        return None
    if p.xfer(addr(a), 1) != bytes([ACK]):
        return None
    frame = [len(data) - 1] + list(data)
    r = p.xfer(frame + [xor(frame)], 1)
    return r[0] if r else None


def erase(p, codes=None, special=None, bad_cks=False):
    if p.cmd(0x44) != bytes([ACK]):
        return None
    if special is not None:
        frame = list(special.to_bytes(2, "big"))
    else:
        frame = list((len(codes) - 1).to_bytes(2, "big"))
        for c in codes:
            frame += list(c.to_bytes(2, "big"))
    cks = xor(frame) ^ (1 if bad_cks else 0)
    r = p.xfer(frame + [cks], 1, 3)
    return r[0] if r else None


def test_framing(emu):
    p = emu.port(0)
    check(p.silent([0x00, 0xFF]), "no answer before the sync byte")
    p.sync()
    check(p.xfer([0x7F, 0x7F], 1) == bytes([NACK]), "second 0x7F once synced is NACKed")
    r = p.xfer([0x00, 0xFF], 15)
    check(r == bytes([ACK, 11, 0x40, 0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x44, 0x50, 0x51,
                      0x63, 0x73, ACK]), "Get answer %s" % r.hex())
    check(p.xfer([0x01, 0xFE], 5) == bytes([ACK, 0x40, 0, 0, ACK]), "Get Version")
    check(p.xfer([0x02, 0xFD], 5) == bytes([ACK, 1, 0x04, 0x84, ACK]), "Get ID 0x484")
    check(p.xfer([0x00, 0x00], 1) == bytes([NACK]), "bad complement NACKed")
    check(p.cmd(0x43) == bytes([NACK]), "Erase 0x43 (not in the list) NACKed")
    check(p.cmd(0xA1) == bytes([NACK]), "Get Checksum (not on H5) NACKed")
    # Bad address checksum.
    check(p.cmd(0x11) == bytes([ACK]), "Read ACKed")
    a = addr(0x08000000)
    a[4] ^= 0xFF
    check(p.xfer(a, 1) == bytes([NACK]), "bad address checksum NACKed")
    # Bad length complement.
    check(p.cmd(0x11) == bytes([ACK]) and p.xfer(addr(0x08000000), 1) == bytes([ACK]), "read")
    check(p.xfer([0x0F, 0x0F], 1) == bytes([NACK]), "bad N-1 complement NACKed")
    # Unmapped address.
    check(p.cmd(0x11) == bytes([ACK]) and p.xfer(addr(0x30000000), 1) == bytes([NACK]),
          "unmapped read address NACKed")
    # Identity.
    uid0 = read_mem(p, 0x08FFF800, 12)
    size = read_mem(p, 0x08FFF80C, 2)
    check(size == (2048).to_bytes(2, "little"), "flash size register 2048 KiB")
    q = emu.port(1)
    q.sync()
    uid1 = read_mem(q, 0x08FFF800, 12)
    check(uid0 and uid1 and len(uid0) == 12 and uid0 != uid1, "UIDs distinct per chip")
    q.close()
    return p


def test_memory(p):
    data = bytes(range(16))
    check(write_mem(p, 0x08000000, data) == ACK, "16-byte write to erased flash")
    check(read_mem(p, 0x08000000, 16) == data, "read back")
    check(write_mem(p, 0x08000000, bytes(16)) == NACK, "write over programmed flash NACKed")
    check(write_mem(p, 0x08000010, bytes(8)) == NACK, "8-byte flash write (granularity) NACKed")
    check(write_mem(p, 0x08000024, bytes(16)) == NACK, "unaligned flash write NACKed")
    check(write_mem(p, 0x20000000, bytes(6)) == NACK, "N not a multiple of 4 NACKed")
    # Bad data checksum.
    check(p.cmd(0x31) == bytes([ACK]) and p.xfer(addr(0x08000040), 1) == bytes([ACK]), "write")
    frame = [15] + [1] * 16
    check(p.xfer(frame + [xor(frame) ^ 0x55], 1) == bytes([NACK]), "bad data checksum NACKed")
    check(read_mem(p, 0x08000040, 16) == b"\xff" * 16, "nothing written on a bad checksum")
    # SRAM: any multiple of 4, rewritable.
    check(write_mem(p, 0x20000004, b"abcd") == ACK, "SRAM write")
    check(write_mem(p, 0x20000004, b"wxyz") == ACK, "SRAM rewrite")
    check(read_mem(p, 0x20000004, 4) == b"wxyz", "SRAM read back")
    # 256-byte block, the largest.
    blk = os.urandom(256)
    check(write_mem(p, 0x08002000, blk) == ACK, "256-byte write")
    check(read_mem(p, 0x08002000, 256) == blk, "256-byte read")
    # Sector erase, then the sector is writable again; the neighbour stays.
    check(erase(p, codes=[0]) == ACK, "erase sector 0")
    check(read_mem(p, 0x08000000, 16) == b"\xff" * 16, "sector 0 erased")
    check(read_mem(p, 0x08002000, 16) == blk[:16], "sector 1 untouched")
    check(write_mem(p, 0x08000000, data) == ACK, "write after erase")
    check(erase(p, codes=[256]) == NACK, "sector 256 does not exist")
    check(erase(p, codes=[1], bad_cks=True) == NACK, "bad erase checksum NACKed")
    # Banks: sector 128 is the first of bank 2.
    check(write_mem(p, 0x08100000, data) == ACK, "write bank 2")
    check(erase(p, special=0xFFFE) == ACK, "bank 1 erase")
    check(read_mem(p, 0x08002000, 16) == b"\xff" * 16, "bank 1 erased")
    check(read_mem(p, 0x08100000, 16) == data, "bank 2 kept by a bank 1 erase")
    check(erase(p, special=0xFFFD) == ACK, "bank 2 erase")
    check(read_mem(p, 0x08100000, 16) == b"\xff" * 16, "bank 2 erased")
    check(write_mem(p, 0x081FFFF0, data) == ACK, "last flash line")
    check(erase(p, codes=[255]) == ACK and read_mem(p, 0x081FFFF0, 16) == b"\xff" * 16,
          "sector 255 (bank 2) erased by number")
    check(erase(p, special=0xFFFF) == ACK, "mass erase")
    check(read_mem(p, 0x08000000, 16) == b"\xff" * 16, "mass erase clears bank 1")
    # OTP: write-once per 16 bytes.
    check(write_mem(p, 0x08FFF000, data) == ACK, "OTP write")
    check(write_mem(p, 0x08FFF000, data) == NACK, "OTP second write NACKed")
    check(erase(p, codes=[0]) == ACK and read_mem(p, 0x08FFF000, 16) == data,
          "OTP survives erase")
    # Write protection: sector 0 protected, erase and write refused; unprotect resets.
    check(p.cmd(0x63) == bytes([ACK]), "Write Protect ACKed")
    check(p.xfer([0, 0, 0], 1) == bytes([ACK]), "sector 0 protected")
    p.sync()  # the chip reset after the option bytes changed
    check(write_mem(p, 0x08000000, data) == NACK, "write to a protected sector NACKed")
    check(erase(p, codes=[0]) == NACK, "erase of a protected sector NACKed")
    check(erase(p, special=0xFFFF) == NACK, "mass erase refused with WRP set")
    check(p.xfer([0x73, 0x8C], 2) == bytes([ACK, ACK]), "Write Unprotect")
    p.sync()
    check(write_mem(p, 0x08000000, data) == ACK, "write after unprotect")
    # Special 0x50: unknown sub-opcode NACKed at the sub-opcode stage.
    check(p.cmd(0x50) == bytes([ACK]), "Special ACKed")
    check(p.xfer([0xFF, 0xFE, 0x01], 1) == bytes([NACK]), "unknown sub-opcode NACKed")
    # Go: accepted, then the application runs and the bootloader is gone.
    check(p.cmd(0x21) == bytes([ACK]) and p.xfer(addr(0x08000000), 1) == bytes([ACK]), "Go")
    check(p.silent([0x7F]), "silent after Go")


def test_special_framing(emu):
    """GET_INFO (0x5300) on 0x50 when OSFI is built in: data packet, status packet, ACK."""
    p = emu.port(1)  # synced by test_framing
    check(p.cmd(0x50) == bytes([ACK]), "Special ACKed")
    r = p.xfer([0x53, 0x00, 0x53], 1)
    if r == bytes([NACK]):
        p.close()
        return "osfi absent"
    check(r == bytes([ACK]), "GET_INFO sub-opcode ACKed")
    check(p.xfer([0, 0, 0], 1) == bytes([ACK]), "empty data packet ACKed")
    ln = p.recv(2)
    n = int.from_bytes(ln, "big")
    body = p.recv(n)
    tail = p.recv(5)
    check(len(ln) == 2 and 0 < n <= 1024 and len(body) == n, "data packet")
    check(tail[:2] == b"\x00\x02" and tail[4:] == bytes([ACK]), "status packet then ACK")
    check(body[0] == 0xED, "product state Open in GET_INFO")
    # 0x50 data longer than 128 bytes is refused.
    check(p.cmd(0x50) == bytes([ACK]) and p.xfer([0x53, 0x00, 0x53], 1) == bytes([ACK]), "sp")
    check(p.xfer([0x00, 0x81], 1) == bytes([NACK]), "0x50 length 129 NACKed")
    p.close()
    return "osfi present"


def test_persistence():
    state = os.path.join(TMP, "state1")
    e = Emu("persist", "--state-dir", state, count=1)
    p = e.port(0)
    p.sync()
    data = os.urandom(32)
    check(write_mem(p, 0x08004000, data) == ACK, "write before restart")
    check(write_mem(p, 0x08FFF100, data[:16]) == ACK, "OTP before restart")
    uid = read_mem(p, 0x08FFF800, 12)
    p.close()
    e.stop()
    e = Emu("persist2", "--state-dir", state, count=1)
    p = e.port(0)
    p.sync()
    check(read_mem(p, 0x08004000, 32) == data, "flash persists across restart")
    check(read_mem(p, 0x08FFF800, 12) == uid, "UID stable across restart")
    check(write_mem(p, 0x08004000, data) == NACK, "programmed state persists")
    check(write_mem(p, 0x08FFF100, data[:16]) == NACK, "OTP write-once persists")
    p.close()
    e.stop()
    # Another state dir: other UIDs.
    e = Emu("persist3", "--state-dir", os.path.join(TMP, "state2"), count=1)
    p = e.port(0)
    p.sync()
    check(read_mem(p, 0x08FFF800, 12) != uid, "another state dir gives another UID")
    p.close()
    e.stop()


def test_protection():
    state = os.path.join(TMP, "state-closed")
    os.makedirs(os.path.join(state, "chip0"))
    with open(os.path.join(state, "chip0", "chip.conf"), "w") as f:
        f.write("profile=h563\nopt1=0x00f072f8\n")
    e = Emu("closed", "--state-dir", state, count=1)
    p = e.port(0)
    p.sync()
    check(p.xfer([0x02, 0xFD], 5) == bytes([ACK, 1, 0x04, 0x84, ACK]), "Get ID when closed")
    for op in (0x11, 0x31, 0x44, 0x21):
        check(p.cmd(op) == bytes([NACK]), "command 0x%02x NACKed when Closed" % op)
    lines = e.control("status")
    check("state 0x72" in lines[0], "status shows Closed: %r" % lines)
    p.close()
    e.stop()


def test_entry():
    e = Emu("entry", "--require-entry", count=1)
    p = e.port(0)
    check(p.silent([0x7F]), "application silent at start")
    check(e.control("lines 0 1 1")[-1] == "ok", "NRST low, BOOT0 high")
    check(p.silent([0x7F]), "silent while held in reset")
    check(e.control("lines 0 0 1")[-1] == "ok", "NRST released with BOOT0 high")
    p.sync()
    check(p.xfer([0x02, 0xFD], 5) == bytes([ACK, 1, 0x04, 0x84, ACK]), "bootloader answers")
    e.control("lines 0 1 0")
    e.control("lines 0 0 0")
    check(p.silent([0x7F]), "released with BOOT0 low: application, silent")
    p.close()
    e.stop()


def test_pacing():
    """Noise from a loaded machine only ever adds time, so each figure is the best of three
    runs; a model error in either direction would show in all three."""
    T = 11 / 115200
    e = Emu("paced", "--baud", "115200", count=4)
    # Host to chip: 4 KiB that the unsynced bootloader ignores, then the sync byte; the ACK
    # can only come once all of it has crossed the wire. One round trip, so the terminal's
    # own latency hardly counts.
    wire = 4098 * T
    best = None
    for k in range(3):
        p = e.port(k)
        t0 = time.monotonic()
        r = p.xfer(bytes(4096) + b"\x7f", 1, 5)
        dt = time.monotonic() - t0
        p.close()
        check(r == bytes([ACK]), "ACK after the paced stream")
        best = dt if best is None else min(best, dt)
    err = (best - wire) / wire
    print("pacing rx: 4 KiB + sync in %.4f s, wire %.4f s, error %+.2f %%" %
          (best, wire, err * 100))
    check(abs(err) < 0.03, "paced host-to-chip stream within 3 %% (%+.2f %%)" % (err * 100))
    # Chip to host: 16 Read Memory commands of 256 bytes sent back to back (the UART is
    # full duplex, the bootloader takes them in order); the answers then stream out without
    # waiting for the host, one round trip in all. Expected time from a byte-level model.
    p = e.port(3)
    p.sync()
    cmd = []
    for i in range(16):
        cmd += [0x11, 0xEE] + addr(0x08000000 + 256 * i) + [0xFF, 0x00]
    tx_free = 0.0
    for k in range(len(cmd)):
        arrival = (k + 1) * T
        answer = {1: 1, 6: 1, 8: 257}.get(k % 9, 0)
        for _ in range(answer):
            tx_free = max(tx_free, arrival) + T
    wire = tx_free
    best = None
    for _ in range(3):
        t0 = time.monotonic()
        r = p.xfer(cmd, 16 * 259, 5)
        dt = time.monotonic() - t0
        check(len(r) == 16 * 259 and r[:3] == bytes([ACK] * 3) and r[3:259] == b"\xff" * 256,
              "pipelined reads answered in order")
        best = dt if best is None else min(best, dt)
    err = (best - wire) / wire
    print("pacing tx: 16 x 256 B read in %.4f s, wire %.4f s, error %+.2f %%" %
          (best, wire, err * 100))
    check(abs(err) < 0.03, "paced chip-to-host stream within 3 %% (%+.2f %%)" % (err * 100))
    p.close()
    e.stop()


def test_faults():
    faults = [
        "chip=0,cmd=0x02,nth=2,action=nack",
        "chip=1,cmd=0x01,action=drop",
        "chip=2,cmd=0x01,byte=1,action=corrupt",
        "chip=3,cmd=0x01,action=delay:300",
        "chip=4,cmd=0x02,action=garbage",
        "chip=5,cmd=0x00,action=vanish",
        "chip=6,cmd=0x02,repeat,action=nack",
    ]
    args = []
    for f in faults:
        args += ["--fault", f]
    e = Emu("faults", *args, count=7)
    ports = [e.port(k) for k in range(7)]
    for p in ports:
        p.sync()
    gid = bytes([ACK, 1, 0x04, 0x84, ACK])
    gv = bytes([ACK, 0x40, 0, 0, ACK])
    p = ports[0]
    check(p.xfer([0x02, 0xFD], 5) == gid, "nack: first Get ID fine")
    check(p.xfer([0x02, 0xFD], 5) == bytes([NACK]), "nack: second Get ID NACKed")
    check(p.xfer([0x02, 0xFD], 5) == gid, "nack: once, third fine")
    check(ports[1].xfer([0x01, 0xFE], 5, 0.5) == gv[1:], "drop: first answer byte swallowed")
    r = ports[2].xfer([0x01, 0xFE], 5)
    check(len(r) == 5 and r[1] != 0x40 and bin(r[1] ^ 0x40).count("1") == 1 and r[0] == ACK,
          "corrupt: one bit flipped in byte 1 (%s)" % r.hex())
    t0 = time.monotonic()
    r = ports[3].xfer([0x01, 0xFE], 5, 2)
    dt = time.monotonic() - t0
    check(r == gv and 0.29 < dt < 1.5, "delay: answer after 300 ms (%.3f s)" % dt)
    r = ports[4].xfer([0x02, 0xFD], 16)
    check(len(r) == 16 and r[:5] != gid, "garbage: 16 random bytes instead of the answer")
    check(ports[4].xfer([0x02, 0xFD], 5) == gid, "garbage: the next command works")
    old = os.readlink(os.path.join(e.dir, "chip5"))
    ports[5].send([0x00, 0xFF])
    wait_for(lambda: not os.path.lexists(os.path.join(e.dir, "chip5")))
    check(not os.path.lexists(os.path.join(e.dir, "chip5")), "vanish: link removed")
    try:
        got = os.read(ports[5].fd, 16)
        check(got == b"", "vanish: hangup")
    except OSError:
        pass
    check("unplugged" in e.control("status")[5], "vanish: status says unplugged")
    check(e.control("plug 5")[-1] == "ok", "plug after vanish")
    ports[5].close()
    ports[5] = e.port(5)
    ports[5].sync()
    check(ports[5].xfer([0x02, 0xFD], 5) == gid, "replugged adapter works (was %s)" % old)
    for _ in range(3):
        check(ports[6].xfer([0x02, 0xFD], 5) == bytes([NACK]), "repeat: every Get ID NACKed")
    for p in ports:
        p.close()
    e.stop()
    # Strict parsing.
    for bad in ("chip=0,cmd=0x02", "action=explode", "cmd=0x100,action=nack", "nth=0,action=nack",
                "chip=0,chip=1,action=drop", "frobnicate=1,action=drop", "action=delay:x"):
        r = subprocess.run([H5EMU, "--count", "1", "--dir", os.path.join(TMP, "bad"),
                            "--fault", bad], capture_output=True, timeout=10)
        check(r.returncode == 2 and b"--fault" in r.stderr and r.stdout == b"",
              "bad fault spec %r refused (%r)" % (bad, r.stderr))


def test_slots():
    e = Emu("queue", "--chips-per-slot", "2", count=1)
    st = e.control("status")
    check(len(st) == 2 and st[0].startswith("slot 0: chip 0 uid ") and "queue 1/2" in st[0],
          "status %r" % st)
    uid_a = st[0].split()[5]
    p = e.port(0)
    p.sync()
    check(e.control("insert 0")[-1].startswith("error:"), "insert into a full slot refused")
    check(e.control("remove 0")[-1] == "ok", "remove")
    check(p.silent([0x7F]), "empty slot is silent")
    check(e.control("insert 0")[-1] == "ok", "insert next chip")
    st = e.control("status")
    check("chip 1 uid" in st[0] and st[0].split()[5] != uid_a, "next chip has another UID")
    p.sync()
    check(e.control("remove 0")[-1] == "ok", "remove again")
    check("empty" in e.control("insert 0")[-1], "queue exhausted")
    check(e.control("bogus 0")[-1].startswith("error: unknown command"), "unknown command")
    check(e.control("remove 7")[-1].startswith("error:"), "bad slot")
    old = os.readlink(os.path.join(e.dir, "chip0"))
    check(e.control("unplug 0")[-1] == "ok", "unplug")
    check(not os.path.lexists(os.path.join(e.dir, "chip0")), "link gone while unplugged")
    try:
        r = os.read(p.fd, 1)
        check(r == b"", "host sees hangup")
    except OSError:
        pass
    check(e.control("plug 0")[-1] == "ok", "plug")
    check(os.path.lexists(os.path.join(e.dir, "chip0")), "link back")
    p.close()
    print("unplug/plug: %s -> %s" % (old, os.readlink(os.path.join(e.dir, "chip0"))))
    e.stop()


def test_auto_swap():
    state = os.path.join(TMP, "state-swap")
    os.makedirs(os.path.join(state, "chip0"))
    with open(os.path.join(state, "chip0", "chip.conf"), "w") as f:
        f.write("profile=h563\nopt1=0x00f072f8\n")
    e = Emu("swap", "--state-dir", state, "--chips-per-slot", "2", "--auto-swap", "600", "--early-swap",
            count=1)
    check("chip 0 uid" in e.control("status")[0], "finalized chip 0 in the slot")
    wait_for(lambda: "chip 1 uid" in e.control("status")[0])
    st = e.control("status")[0]
    check("chip 1 uid" in st and "state 0xed" in st, "auto-swapped to chip 1: %r" % st)
    e.stop()


def main():
    try:
        e = Emu("main", count=2)
        p = test_framing(e)
        test_memory(p)
        p.close()
        osfi = test_special_framing(e)
        e.stop()
        test_persistence()
        test_protection()
        test_entry()
        test_pacing()
        test_faults()
        test_slots()
        test_auto_swap()
        r = subprocess.run([H5EMU, "--count", "1", "--dir", os.path.join(TMP, "x"), "--profile",
                            "f103"], capture_output=True, timeout=10)
        check(r.returncode == 2 and b"unknown profile" in r.stderr, "unknown profile refused")
        print("conformance: %d checks passed (%s)" % (CHECKS, osfi))
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
            for s in (p.stdout, p.stderr):
                if s:
                    s.close()
        subprocess.run(["rm", "-rf", TMP])


if __name__ == "__main__":
    main()
