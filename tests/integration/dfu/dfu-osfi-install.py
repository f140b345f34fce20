#!/usr/bin/python3
# A whole OSFI install over USB DFU, as docs/protocol.md §11 maps it, against h5emu's chip:
# the OSFI alternate found by its name, GET_INFO and GET_CERT answers, PUT_LICENSE,
# PUT_HEADER and every PUT_DATA chunk on the fast path (DNLOAD + GETSTATUS), FINALIZE, the
# chip gone and back at the same port path with a new device number, GET_INFO finalized
# with the image id, the areas read back through DfuSe's flash alternate. Images and
# licenses come from the conformance client (tests/integration/conformance), which shares
# nothing with protocol/osfi. Runs h5emu, then itself as the client inside the testbed.
import importlib.util
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def load_conformance():
    path = os.path.join(HERE, "..", "conformance", "osfi-conformance.py")
    spec = importlib.util.spec_from_file_location("osfi_conformance", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class DfuPort:
    """The OSFI requests of §5 carried as §11 says, on the chip at USB port path 2-1.1."""

    def __init__(self, usb):
        self.usb = usb
        self.resets = False
        self.find()

    def find(self, not_address=None, deadline=15.0):
        t0 = time.monotonic()
        while True:
            devs = [d for d in self.usb.core.find(find_all=True, idVendor=0x0483, idProduct=0xDF11)
                    if d.port_numbers == (1, 1) and d.address != not_address]
            if devs:
                break
            if time.monotonic() - t0 > deadline:
                fail("no device at 2-1.1 within %.0f s" % deadline)
            time.sleep(0.05)
        self.dev = devs[0]
        cfg = self.dev.get_active_configuration()
        osfi = [a for a in cfg
                if self.usb.util.get_string(self.dev, a.iInterface).startswith("@OSFI v1")]
        if len(osfi) != 1:
            fail("no single @OSFI v1 alternate")
        self.alt = osfi[0].bAlternateSetting
        func = bytes(list(cfg)[-1].extra_descriptors)
        self.xfer = func[5] | func[6] << 8
        self.dev.set_interface_altsetting(0, self.alt)
        return time.monotonic()

    def getstatus(self):
        s = bytes(self.dev.ctrl_transfer(0xA1, 3, 0, 0, 6))
        return s[0], s[1] | s[2] << 8 | s[3] << 16, s[4]

    def request(self, subop, p1, p2, want_answer):
        frame = subop.to_bytes(2, "little") + len(p1).to_bytes(2, "little") + p1 + p2
        if len(frame) > self.xfer:
            fail("frame of %d bytes beyond wTransferSize" % len(frame))
        self.dev.ctrl_transfer(0x21, 1, 2, 0, frame)
        st, poll, state = self.getstatus()
        if (st, state) != (0, 4):
            fail("sub-command %#x: first GETSTATUS %d/%d, not dfuDNBUSY" % (subop, st, state))
        time.sleep(poll / 1000.0)
        st, poll, state = self.getstatus()
        if (st, state) == (0, 5) and subop == 0x5305:
            self.resets = True  # FINALIZE OK: no answer to read, the chip resets
            return 0, b""
        if (st, state) == (0, 5):
            if not want_answer:
                return 0, b""
            self.dev.ctrl_transfer(0x21, 6, 0, 0, None)  # DFU ABORT
        elif (st, state) == (11, 10):
            self.dev.ctrl_transfer(0x21, 4, 0, 0, None)  # CLRSTATUS
        else:
            fail("sub-command %#x: result %d/%d" % (subop, st, state))
        ans = bytes(self.dev.ctrl_transfer(0xA1, 2, 2, 0, self.xfer))
        status = int.from_bytes(ans[:2], "little")
        if (status == 0) != (st == 0):
            fail("answer status %d disagrees with GETSTATUS %d" % (status, st))
        return status, ans[2:]

    def sp50(self, subop, data=b""):
        return self.request(subop, data, b"", True)

    def sp51(self, subop, p1, p2):
        return self.request(subop, p1, p2, False)[0]

    def sync(self):
        """After FINALIZE: the chip leaves and comes back with a new device number."""
        if not self.resets:
            return time.monotonic()
        self.resets = False
        old = self.dev.address
        self.usb.util.dispose_resources(self.dev)
        t = self.find(not_address=old)
        if self.dev.address == old:
            fail("the chip came back with the same device number")
        return t

    def read_flash(self, addr, n):
        self.dev.set_interface_altsetting(0, 0)
        self.dev.ctrl_transfer(0x21, 1, 0, 0, bytes([0x21]) + addr.to_bytes(4, "little"))
        self.getstatus()
        self.getstatus()
        self.dev.ctrl_transfer(0x21, 6, 0, 0, None)
        out = b""
        block = 2
        while len(out) < n:
            out += bytes(self.dev.ctrl_transfer(0xA1, 2, block, 0, min(self.xfer, n - len(out))))
            block += 1
        self.dev.ctrl_transfer(0x21, 6, 0, 0, None)
        self.dev.set_interface_altsetting(0, self.alt)
        return out


def client(ca_path):
    import usb.core
    import usb.util

    class U:
        pass
    u = U()
    u.core, u.util = usb.core, usb.util
    sys.argv = [sys.argv[0], "unused"]
    conf = load_conformance()
    from cryptography.hazmat.primitives import serialization
    ca = serialization.load_pem_private_key(open(ca_path, "rb").read(), None)

    class DfuEmu:
        def port(self, k):
            return DfuPort(u)

    class DfuChip(conf.Chip):
        def __init__(self, ca_pub):
            self.port = DfuPort(u)
            super().__init__(DfuEmuWithPort(self.port), 0, ca_pub)

    class DfuEmuWithPort:
        def __init__(self, port):
            self.p = port

        def port(self, k):
            return self.p

    DfuPort.sync_called = False
    chip = DfuChip(ca.public_key())
    key = os.urandom(16)
    a1 = conf.fw(5120, 3)
    a2 = conf.fw(3072, 11)
    img = conf.build_image([conf.area("F", conf.FLASH + 0x20000, a1),
                            conf.area("F", conf.FLASH + 0x40000, a2)], key)
    before = chip.port.dev.address
    i = chip.install(img, key)
    if chip.port.dev.address == before:
        fail("FINALIZE did not re-enumerate the chip")
    if i.session != conf.FINALIZED:
        fail("not finalized")
    if chip.port.read_flash(conf.FLASH + 0x20000, len(a1)) != a1:
        fail("area 1 read back differs")
    if chip.port.read_flash(conf.FLASH + 0x40000, len(a2)) != a2:
        fail("area 2 read back differs")
    # A refused request over DFU: a second FINALIZE is out of sequence.
    st = chip.finalize()
    if st == 0:
        fail("a second FINALIZE was accepted")
    print("OSFI over DFU: install of %d bytes, FINALIZE re-enumerated (device %d -> %d), "
          "areas read back: ok" % (len(img), before, chip.port.dev.address))


def control(path, line):
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    s.sendall(line.encode() + b"\n")
    out = b""
    while not out.endswith(b"ok\n") and b"error" not in out:
        chunk = s.recv(4096)
        if not chunk:
            break
        out += chunk
    return out.decode()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        client(sys.argv[2])
        return
    try:
        import usb.core  # noqa: F401
        import cryptography  # noqa: F401
    except ImportError as e:
        fail("%s: run scripts/deps (python3-usb, python3-cryptography)" % e)
    h5emu = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="dfu-osfi.", dir=os.environ.get("TMPDIR", "/tmp"))
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    ca = ec.generate_private_key(ec.SECP256R1())
    with open(tmp + "/ca.pem", "wb") as f:
        f.write(ca.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()))
    emu = subprocess.Popen([h5emu, "--count", "1", "--dir", tmp + "/emu", "--transport", "dfu",
                            "--ca-key", tmp + "/ca.pem", "--ram-buffer", "8192"],
                           stdout=subprocess.PIPE, stderr=open(tmp + "/emu.log", "w"))
    try:
        r, _, _ = select.select([emu.stdout], [], [], 30)
        line = emu.stdout.readline().decode() if r else ""
        if line != "h5emu: ready, 1 chips\n":
            fail("no ready line: %r %s" % (line, open(tmp + "/emu.log").read()))
        env = dict(os.environ)
        for kv in open(tmp + "/emu/umockdev.env").read().split():
            k, v = kv.split("=", 1)
            env[k] = v
        rc = subprocess.run(["/usr/bin/python3", os.path.abspath(__file__), "--client",
                             tmp + "/ca.pem"], env=env, timeout=120).returncode
        if rc != 0:
            fail("client failed (%d); h5emu log: %s" % (rc, open(tmp + "/emu.log").read()[-2000:]))
        if not re.search(r"state 0xed .* usb 2-1\.1 device [1-9]", control(tmp + "/emu/control", "status")):
            fail("status after the install: %s" % control(tmp + "/emu/control", "status"))
        emu.send_signal(signal.SIGTERM)
        if emu.wait(timeout=30) != 0:
            fail("h5emu exited with %d" % emu.returncode)
    finally:
        if emu.poll() is None:
            emu.kill()
            emu.wait()
        subprocess.run(["rm", "-rf", tmp])


main()
