#!/usr/bin/env python3
"""OSFI v1 conformance of h5emu against docs/protocol.md §10, with a client written from that
text alone: its own AN3155 framing on h5emu's plain PTYs, its own images and licenses (Python
`cryptography`), nothing of protocol/osfi. One case per status code of §6 and per precedence
rule of §10.2, the record rules of §10.3, what survives a reset and a power cycle (§10.4), the
framing and NACKs of §5.2 and the timing bounds of §10.5.

Usage: osfi-conformance.py H5EMU"""

import hashlib
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import shutil
import time
import tty

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap
except ImportError as e:  # scripts/deps installs python3-cryptography
    print("FAIL: python3-cryptography is missing (%s): run scripts/deps" % e, file=sys.stderr)
    sys.exit(1)

ACK, NACK = 0x79, 0x1F
H5EMU = sys.argv[1]
TMP = tempfile.mkdtemp(prefix="osfi-conf-")
DEV = 0x484
FLASH, OTP, SRAM = 0x08000000, 0x08FFF000, 0x20000000
RAM = 1024  # --ram-buffer
OPEN, CLOSED, PROVISIONING = 0xED, 0x72, 0x17

# Sub-opcodes and statuses (docs/protocol.md §5, §6).
GET_INFO, GET_CERT, PUT_LICENSE, PUT_HEADER, PUT_DATA, FINALIZE, ABORT = range(0x5300, 0x5307)
STATUS = ["OK", "BAD_STATE", "NOT_ERASED", "SEQUENCE", "BAD_LENGTH", "LICENSE_MALFORMED",
          "LICENSE_WRONG_CHIP", "LICENSE_WRONG_DEVICE", "LICENSE_INVALID", "NO_LICENSE",
          "HEADER_MALFORMED", "HEADER_AUTH", "IMAGE_WRONG_DEVICE", "IMAGE_MISMATCH", "ROLLBACK",
          "DESCRIPTOR_MALFORMED", "AREA_TOO_LARGE", "AREA_AUTH", "BAD_ADDRESS", "FLASH_ERROR",
          "MODULE_LICENSE_MISSING", "INCOMPLETE", "BAD_OPTION", "INTERNAL"]
ST = {name: code for code, name in enumerate(STATUS)}
IDLE, LICENSED, STREAMING, COMPLETE, FINALIZED, FAILED = range(6)

CHECKS = 0
SEEN = set()        # statuses a case produced
RULES = set()       # precedence rules checked
PROCS = []


def check(cond, what):
    global CHECKS
    CHECKS += 1
    if not cond:
        raise AssertionError(what)


def expect(got, name, what):
    SEEN.add(got)
    check(got == ST[name], "%s: expected %s, got %s" % (what, name,
                                                          STATUS[got] if got < len(STATUS) else hex(got)))


def rule(name, got, want, what):
    RULES.add(name)
    expect(got, want, "precedence %s: %s" % (name, what))


# ---------------------------------------------------------------- the emulator and its wire

class Emu:
    def __init__(self, name, count, *args, state=None):
        self.dir = os.path.join(TMP, name)
        self.state = state or os.path.join(TMP, name + "-state")
        self.count = count
        self.args = args
        self.start()

    def start(self):
        self.p = subprocess.Popen([H5EMU, "--count", str(self.count), "--dir", self.dir,
                                   "--state-dir", self.state, *self.args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        PROCS.append(self.p)
        r, _, _ = select.select([self.p.stdout], [], [], 30)
        line = self.p.stdout.readline().decode() if r else ""
        check(line == "h5emu: ready, %d chips\n" % self.count,
              "h5emu ready line, got %r" % line)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(30)
        check(rc == 0, "h5emu exits 0 on SIGTERM (got %d: %s)" % (rc, self.p.stderr.read()))

    def port(self, k):
        return Port(os.path.join(self.dir, "chip%d" % k))


class Nack(Exception):
    pass


class Port:
    """AN3155 framing (docs/protocol.md §5.2) over a raw PTY."""

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
        """n bytes, each within `timeout` of the previous (§10.5); fewer on a timeout."""
        out = b""
        while len(out) < n:
            r, _, _ = select.select([self.fd], [], [], timeout)
            if not r:
                break
            try:
                out += os.read(self.fd, n - len(out))
            except BlockingIOError:
                continue
        return out

    def ack(self, what, timeout=1.0):
        b = self.recv(1, timeout)
        if b == bytes([NACK]):
            raise Nack(what)
        check(b == bytes([ACK]), "%s: expected ACK, got %r" % (what, b))

    def drain(self):
        while self.recv(4096, 0.05):
            pass

    def sync(self, deadline=15.0):
        """0x7F until the chip answers (§10.5: within 15 s, one try every 20 ms or more)."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            self.send([0x7F])
            b = self.recv(1, 0.05)
            if b in (bytes([ACK]), bytes([NACK])):
                self.drain()
                return time.monotonic()
        raise AssertionError("no answer to 0x7F within %.0f s" % deadline)

    @staticmethod
    def packet(data):
        data = bytes(data)
        x = (len(data) >> 8) ^ (len(data) & 0xFF)
        for b in data:
            x ^= b
        return struct.pack(">H", len(data)) + data + bytes([x])

    def start(self, cmd, subop):
        self.send([cmd, cmd ^ 0xFF])
        self.ack("command 0x%02x" % cmd)
        self.send([subop >> 8, subop & 0xFF, (subop >> 8) ^ (subop & 0xFF)])
        self.ack("sub-opcode 0x%04x" % subop)

    def answer_status(self, what):
        t0 = time.monotonic()
        self.ack(what + " (after the sub-command ran)", timeout=15.0)
        return time.monotonic() - t0

    def status_packet(self, what):
        st = self.recv(4)
        check(len(st) == 4 and st[:2] == b"\x00\x02", "%s: status packet %r" % (what, st))
        self.ack(what + " final ACK")
        return struct.unpack(">H", st[2:])[0]

    def sp50(self, subop, data=b""):
        what = "0x50 0x%04x" % subop
        self.start(0x50, subop)
        self.send(self.packet(data))
        self.answer_status(what)
        ln = self.recv(2)
        check(len(ln) == 2, what + ": data packet length")
        n = struct.unpack(">H", ln)[0]
        check(n <= 1024, what + ": data packet ≤ 1024")
        body = self.recv(n)
        check(len(body) == n, what + ": data packet body")
        st = self.status_packet(what)
        check(st == 0 or n == 0, what + ": a refusal carries no data")
        return st, body

    def sp51(self, subop, p1, p2):
        what = "0x51 0x%04x" % subop
        self.start(0x51, subop)
        self.send(self.packet(p1))
        self.ack(what + " packet 1")
        self.send(self.packet(p2))
        self.answer_status(what)
        return self.status_packet(what)

    # AN3155 memory commands, to prepare chip state the way a line would.
    def write_memory(self, addr, data):
        self.send([0x31, 0xCE])
        self.ack("Write Memory")
        a = struct.pack(">I", addr)
        self.send(a + bytes([a[0] ^ a[1] ^ a[2] ^ a[3]]))
        self.ack("Write Memory address")
        x = len(data) - 1
        for b in data:
            x ^= b
        self.send(bytes([len(data) - 1]) + bytes(data) + bytes([x]))
        self.ack("Write Memory data")

    def read_memory(self, addr, n):
        self.send([0x11, 0xEE])
        self.ack("Read Memory")
        a = struct.pack(">I", addr)
        self.send(a + bytes([a[0] ^ a[1] ^ a[2] ^ a[3]]))
        self.ack("Read Memory address")
        self.send([n - 1, (n - 1) ^ 0xFF])
        self.ack("Read Memory count")
        return self.recv(n)

    def write_protect(self, sectors):
        self.send([0x63, 0x9C])
        self.ack("Write Protect")
        x = len(sectors) - 1
        for s in sectors:
            x ^= s
        self.send(bytes([len(sectors) - 1]) + bytes(sectors) + bytes([x]))
        self.ack("Write Protect sectors")
        self.sync()  # the chip resets after changing WRP

    def write_unprotect(self):
        self.send([0x73, 0x8C])
        self.ack("Write Unprotect")
        self.ack("Write Unprotect done")
        self.sync()


# ---------------------------------------------------------------- OSFI structures (§2–§4)

def le16(v):
    return struct.pack("<H", v)


def le32(v):
    return struct.pack("<I", v)


class Info:
    def __init__(self, b):
        check(len(b) == 64, "GET_INFO answers 64 bytes (got %d)" % len(b))
        check(b[3] == 0 and b[18:20] == b"\0\0", "GET_INFO reserved bytes zero")
        self.ps, self.version, self.session = b[0], b[1], b[2]
        self.ram, self.last, self.areas, self.stream, self.device = struct.unpack(
            "<IHHIH", b[4:18])
        self.uid = b[20:32]
        self.installed = b[32:64]


def image_id(img):
    return hashlib.sha256(img[:64]).digest()


def iv(nonce, i):
    n = (struct.unpack("<I", nonce[8:12])[0] + i) & 0xFFFFFFFF
    return nonce[:8] + le32(n)


def area(t, addr=0, data=b"", module=0, **kw):
    a = dict(type=t, addr=addr, data=data, module=module, version=0, index=None, total=None,
             size=None, reserved=0, key=None)
    a.update(kw)
    return a


def build_image(areas, key, device=DEV, version=1, flags=0, nonce=None, total_len=None,
                tamper_tag=False):
    """An image as §4 defines it; the area fields may be overridden to make it wrong while
    keeping it authenticated."""
    nonce = nonce or os.urandom(12)
    total = total_len if total_len is not None else 64 + sum(48 + len(a["data"]) for a in areas)
    hdr = b"OSFI" + struct.pack("<HHHHIII", 1, 64, device, len(areas), total, version,
                                flags) + nonce + bytes(12)
    tag = AESGCM(key).encrypt(iv(nonce, 0), b"", hdr)
    if tamper_tag:
        tag = bytes([tag[0] ^ 1]) + tag[1:]
    hdr += tag
    out = hdr
    for i, a in enumerate(areas, 1):
        d = struct.pack("<BBHHHIII", ord(a["type"]), a["reserved"], a["version"],
                        a["index"] if a["index"] is not None else i,
                        a["total"] if a["total"] is not None else len(areas),
                        a["size"] if a["size"] is not None else len(a["data"]),
                        a["addr"], a["module"]) + bytes(12)
        ct = AESGCM(a["key"] or key).encrypt(iv(nonce, i), a["data"], hdr + d)
        out += d + ct[-16:] + ct[:-16]
    return out


def module_firmware_id(module):
    return hashlib.sha256(b"OSFI-MOD-1" + le32(module)).digest()


HSM = ec.generate_private_key(ec.SECP256R1())
HSM_PUB = HSM.public_key().public_bytes(serialization.Encoding.X962,
                                        serialization.PublicFormat.UncompressedPoint)
G = os.urandom(32)


def make_license(chip, target, ident, key, kind=1, device=DEV, uid=None, record_target=None,
                 magic=b"OSL1", hsm_pub=None, tamper_wrap=False, counter=1, reserved=bytes(7)):
    """A license record (§3) and its key derivation (§3.1)."""
    uid = chip.uid if uid is None else uid
    rt = target if record_target is None else record_target
    nonce = os.urandom(16)
    if kind == 2:
        uid, pub, counter, z = bytes(12), bytes(65), 0, G
    else:
        pub = HSM_PUB if hsm_pub is None else hsm_pub
        z = HSM.exchange(ec.ECDH(), chip.pub)
    h = hashlib.sha256(b"OSFI-KEK-1" + bytes([kind]) + le16(device) + le32(rt) + uid + ident +
                       nonce).digest()
    enc = Cipher(algorithms.AES(z), modes.ECB()).encryptor()
    kek = enc.update(h) + enc.finalize()
    wrapped = aes_key_wrap(kek, key)
    if tamper_wrap:
        wrapped = bytes([wrapped[0] ^ 1]) + wrapped[1:]
    rec = (magic + bytes([1, kind]) + le16(device) + le32(rt) + uid + ident + nonce + pub +
           le32(counter) + wrapped + reserved)
    assert len(rec) == 172
    return rec


# ---------------------------------------------------------------- a chip as a host sees it

class Chip:
    def __init__(self, emu, k, ca_pub=None):
        self.emu, self.k = emu, k
        self.port = emu.port(k)
        self.port.sync()
        info = self.info()
        self.uid = info.uid
        self.pub = None
        if ca_pub:
            st, cert = self.port.sp50(GET_CERT)
            expect(st, "OK", "GET_CERT")
            check(len(cert) == 149 and cert[:4] == b"OSC1" and cert[4] == 1 and cert[5] == 0,
                  "certificate header")
            check(struct.unpack("<H", cert[6:8])[0] == DEV, "certificate device")
            check(cert[8:20] == self.uid, "certificate UID = GET_INFO UID")
            r, s = int.from_bytes(cert[85:117], "big"), int.from_bytes(cert[117:149], "big")
            ca_pub.verify(encode_dss_signature(r, s), cert[:85], ec.ECDSA(hashes.SHA256()))
            self.pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), cert[20:85])

    def reopen(self):
        self.port.close()
        self.port = self.emu.port(self.k)
        self.port.sync()

    def info(self):
        st, body = self.port.sp50(GET_INFO)
        expect(st, "OK", "GET_INFO")
        return Info(body)

    def license(self, target, lic, p1=None):
        return self.port.sp51(PUT_LICENSE, le32(target) if p1 is None else p1, lic)

    def header(self, img, n=64):
        return self.port.sp50(PUT_HEADER, img[:n])[0]

    def data(self, off, chunk):
        return self.port.sp51(PUT_DATA, le32(off), chunk)

    def stream(self, img, start=64, chunk=1024, stop=None):
        stop = len(img) if stop is None else stop
        for off in range(start, stop, chunk):
            st = self.data(off, img[off:min(off + chunk, stop)])
            if st:
                return st, off
        return 0, stop

    def finalize(self, data=b""):
        return self.port.sp50(FINALIZE, data)[0]

    def abort(self, data=b""):
        return self.port.sp50(ABORT, data)[0]

    def begin(self, img, key):
        """PUT_LICENSE (chip license for this image) and PUT_HEADER, both OK."""
        expect(self.license(0, make_license(self, 0, image_id(img), key)), "OK", "PUT_LICENSE")
        expect(self.header(img), "OK", "PUT_HEADER")

    def install(self, img, key, licenses=()):
        expect(self.license(0, make_license(self, 0, image_id(img), key)), "OK", "PUT_LICENSE")
        for target, lic in licenses:
            expect(self.license(target, lic), "OK", "module PUT_LICENSE")
        expect(self.header(img), "OK", "PUT_HEADER")
        st, off = self.stream(img)
        expect(st, "OK", "PUT_DATA at %d" % off)
        t0 = time.monotonic()
        expect(self.finalize(), "OK", "FINALIZE")
        t1 = self.port.sync()
        check(t1 - t0 <= 15.0, "back after the reset within 15 s (§10.5)")
        i = self.info()
        check(i.session == FINALIZED and i.last == 0 and i.installed == image_id(img),
              "finalized, OK, installed id after FINALIZE")
        return i

    def failed_with(self, name, what):
        i = self.info()
        check(i.session == FAILED, "%s: session failed (state %d)" % (what, i.session))
        check(i.last == ST[name], "%s: last status %s (got %d)" % (what, name, i.last))
        check(i.ps == OPEN, "%s: chip still Open" % what)
        return i

    def unchanged(self, before, what):
        i = self.info()
        check((i.session, i.last, i.areas, i.stream, i.installed) ==
              (before.session, before.last, before.areas, before.stream, before.installed),
              "%s: the record is unchanged" % what)


def fw(n, seed):
    return bytes((seed + 7 * i) & 0xFF for i in range(n))


# ---------------------------------------------------------------- the cases

def framing(c):
    """§5.2: NACKs, and what a NACK leaves behind."""
    p = c.port
    p.send([0x50, 0xAF])
    p.ack("0x50")
    p.send([0x53, 0x07, 0x53 ^ 0x07])
    check(p.recv(1) == bytes([NACK]), "unknown sub-opcode 0x5307 NACKed at the sub-opcode")
    p.send([0x50, 0xAF])
    p.ack("0x50")
    p.send([0x53, 0x00, 0x00])
    check(p.recv(1) == bytes([NACK]), "bad sub-opcode checksum NACKed")
    p.start(0x50, GET_INFO)
    p.send(b"\x00\x81")
    check(p.recv(1) == bytes([NACK]), "0x50 data of 129 bytes NACKed after the length")
    p.drain()
    p.sync()
    p.start(0x50, GET_INFO)
    p.send(b"\x00\x01\x00\x00")
    check(p.recv(1) == bytes([NACK]), "0x50 data with a bad checksum NACKed")
    p.start(0x50, PUT_DATA)
    p.send(p.packet(b""))
    check(p.recv(1) == bytes([NACK]), "PUT_DATA on 0x50 NACKed after its data")
    p.start(0x51, GET_INFO)
    p.send(p.packet(b""))
    p.ack("0x51 packet 1")
    p.send(p.packet(b""))
    check(p.recv(1) == bytes([NACK]), "GET_INFO on 0x51 NACKed after its data")
    p.start(0x51, PUT_DATA)
    p.send(p.packet(le32(64)))
    p.ack("0x51 packet 1")
    p.send(b"\x04\x01")
    check(p.recv(1) == bytes([NACK]), "0x51 packet 2 of 1025 bytes NACKed after the length")
    p.drain()
    p.sync()
    p.start(0x51, PUT_DATA)
    p.send(p.packet(b"\0" * 129)[:2])
    check(p.recv(1) == bytes([NACK]), "0x51 packet 1 of 129 bytes NACKed after the length")
    p.drain()
    p.sync()
    i = c.info()
    check(i.session == IDLE and i.last == 0, "NACKed commands ran nothing")


def license_cases(c, key):
    img = build_image([area("F", FLASH + 0x10000, fw(64, 1))], key)
    ident = image_id(img)
    idle = c.info()
    good = make_license(c, 0, ident, key)

    # Outside a session: refusals change nothing (§10.3).
    expect(c.license(7, make_license(c, 7, module_firmware_id(7), key)), "SEQUENCE",
           "module license without a session")
    rule("PUT_LICENSE length before sequence", c.license(7, good[:171]), "BAD_LENGTH",
         "module license, no session, 171 bytes")
    rule("PUT_LICENSE sequence before malformed",
         c.license(7, b"XSL1" + make_license(c, 7, module_firmware_id(7), key)[4:]),
         "SEQUENCE", "malformed module license, no session")
    c.unchanged(idle, "refusals without a session")
    expect(c.license(0, good, p1=b"\0\0\0"), "BAD_LENGTH", "PUT_LICENSE p1 of 3 bytes")
    c.unchanged(idle, "PUT_LICENSE with a 3-byte p1")

    # Each refusal of a license for the image ends in failed with its status.
    def refused(lic, name, what, p1=None):
        expect(c.license(0, lic, p1), name, what)
        c.failed_with(name, what)

    refused(good[:171], "BAD_LENGTH", "license of 171 bytes")
    refused(b"XSL1" + good[4:], "LICENSE_MALFORMED", "bad magic")
    refused(good[:4] + b"\x02" + good[5:], "LICENSE_MALFORMED", "version 2")
    refused(good[:5] + b"\x03" + good[6:], "LICENSE_MALFORMED", "kind 3")
    refused(good[:171] + b"\x01", "LICENSE_MALFORMED", "reserved byte set")
    refused(make_license(c, 0, ident, key, record_target=5), "LICENSE_MALFORMED",
            "record target 5, p1 0")
    refused(make_license(c, 0, ident, key, kind=2)[:12] + b"\x01" +
            make_license(c, 0, ident, key, kind=2)[13:], "LICENSE_MALFORMED",
            "global license with a UID")
    bad_point = b"\x04" + b"\x01" * 64
    refused(make_license(c, 0, ident, key, hsm_pub=bad_point), "LICENSE_MALFORMED",
            "HSM key not on P-256")
    refused(make_license(c, 0, ident, key, device=0x485), "LICENSE_WRONG_DEVICE",
            "license for device 0x485")
    refused(make_license(c, 0, ident, key, uid=bytes(12)), "LICENSE_WRONG_CHIP",
            "license for another UID")
    refused(make_license(c, 0, ident, key, tamper_wrap=True), "LICENSE_INVALID",
            "wrapped key tampered")
    refused(make_license(c, 0, hashlib.sha256(b"other").digest(), key)[:24] + ident +
            make_license(c, 0, hashlib.sha256(b"other").digest(), key)[56:],
            "LICENSE_INVALID", "id changed after wrapping")

    # Precedence (§10.2 PUT_LICENSE).
    rule("PUT_LICENSE malformed before wrong device",
         c.license(0, b"XSL1" + make_license(c, 0, ident, key, device=0x485)[4:]),
         "LICENSE_MALFORMED", "bad magic, device 0x485")
    rule("PUT_LICENSE malformed (HSM point) before wrong chip",
         c.license(0, make_license(c, 0, ident, key, hsm_pub=bad_point, uid=bytes(12))),
         "LICENSE_MALFORMED", "bad HSM point, other UID")
    rule("PUT_LICENSE wrong device before wrong chip",
         c.license(0, make_license(c, 0, ident, key, device=0x485, uid=bytes(12))),
         "LICENSE_WRONG_DEVICE", "device 0x485, other UID")
    rule("PUT_LICENSE wrong chip before invalid",
         c.license(0, make_license(c, 0, ident, key, uid=bytes(12), tamper_wrap=True)),
         "LICENSE_WRONG_CHIP", "other UID, tampered wrap")

    # Module licenses inside a session.
    expect(c.license(0, good), "OK", "image license")
    i = c.info()
    check(i.session == LICENSED and i.last == 0 and i.areas == 0 and i.stream == 0, "licensed")
    expect(c.license(7, make_license(c, 7, ident, key)), "LICENSE_INVALID",
           "module license naming the image id")
    c.failed_with("LICENSE_INVALID", "module license with a wrong id")
    expect(c.license(0, good), "OK", "image license again")
    expect(c.license(7, make_license(c, 7, module_firmware_id(7), key)), "OK", "module 7")
    # The same module again replaces its key; h5emu holds 64 modules a session (§10.2 8).
    expect(c.license(7, make_license(c, 7, module_firmware_id(7), key)), "OK", "module 7 again")
    for m in range(100, 163):
        expect(c.license(m, make_license(c, m, module_firmware_id(m), key, kind=2)), "OK",
               "global license for module %d" % m)
    expect(c.license(163, make_license(c, 163, module_firmware_id(163), key, kind=2)),
           "INTERNAL", "a 65th module license")
    c.failed_with("INTERNAL", "module licenses beyond the chip's room")
    expect(c.license(0, good), "OK", "image license after INTERNAL")
    expect(c.abort(), "OK", "ABORT")
    c.failed_with("OK", "ABORT during a session")
    i = c.info()
    expect(c.abort(), "OK", "ABORT outside a session")
    c.unchanged(i, "ABORT outside a session")
    expect(c.abort(b"x"), "BAD_LENGTH", "ABORT with data")
    c.unchanged(i, "ABORT with data")


def header_cases(c, key):
    img = build_image([area("F", FLASH + 0x10000, fw(64, 1))], key, version=3)
    ident = image_id(img)
    idle = c.info()
    expect(c.header(img), "NO_LICENSE", "PUT_HEADER without a session")
    c.unchanged(idle, "PUT_HEADER without a session")
    rule("PUT_HEADER length before session", c.header(img, 63), "BAD_LENGTH",
         "63 bytes, no session")

    def refused(hdr, name, what, lic_for=None):
        expect(c.license(0, make_license(c, 0, image_id(lic_for or hdr), key)), "OK",
               "license before " + what)
        expect(c.header(hdr), name, what)
        c.failed_with(name, what)

    def hpatch(off, b, base=img):
        return base[:off] + b + base[off + len(b):64]

    refused(img[:63], "BAD_LENGTH", "header of 63 bytes", lic_for=img)
    for off, b, what in ((0, b"XSFI", "magic"), (4, le16(2), "format 2"),
                         (6, le16(48), "header length 48"), (10, le16(0), "0 areas"),
                         (10, le16(4097), "4097 areas"), (12, le32(64 + 47), "total too short"),
                         (20, le32(1), "flags 1"), (40, b"\x01", "reserved byte")):
        refused(hpatch(off, b), "HEADER_MALFORMED", what)
    refused(img, "IMAGE_MISMATCH", "license for another image",
            lic_for=build_image([area("F", FLASH, fw(16, 2))], key))
    other_dev = build_image([area("F", FLASH, fw(16, 2))], key, device=0x485)
    refused(other_dev, "IMAGE_WRONG_DEVICE", "image for device 0x485")
    tampered = build_image([area("F", FLASH, fw(16, 2))], key, tamper_tag=True)
    refused(tampered, "HEADER_AUTH", "header tag tampered")
    refused(build_image([area("F", FLASH, fw(16, 2))], os.urandom(16)), "HEADER_AUTH",
            "header under another key")

    # Precedence (§10.2 PUT_HEADER).
    expect(c.license(0, make_license(c, 0, ident, key)), "OK", "license")
    rule("PUT_HEADER malformed before mismatch", c.header(hpatch(20, le32(1))),
         "HEADER_MALFORMED", "flags 1 (its id no longer the license's)")
    expect(c.license(0, make_license(c, 0, ident, key)), "OK", "license")
    rule("PUT_HEADER mismatch before wrong device", c.header(other_dev), "IMAGE_MISMATCH",
         "other image for device 0x485")
    bad_dev_tag = build_image([area("F", FLASH, fw(16, 2))], key, device=0x485,
                              tamper_tag=True)
    expect(c.license(0, make_license(c, 0, image_id(bad_dev_tag), key)), "OK", "license")
    rule("PUT_HEADER wrong device before auth", c.header(bad_dev_tag), "IMAGE_WRONG_DEVICE",
         "device 0x485 and a bad tag")
    expect(c.license(0, make_license(c, 0, ident, key)), "OK", "license")
    expect(c.header(img), "OK", "header")
    rule("PUT_HEADER session before content", c.header(img[:1] + b"X" + img[2:64]), "SEQUENCE",
         "a second (and malformed) header")
    c.failed_with("SEQUENCE", "second header")
    return img


def rollback_cases(c, key):
    """An image that leaves the chip Open: its version is kept; a lower one is refused."""
    v5 = build_image([area("F", FLASH + 0x20000, fw(32, 3))], key, version=5)
    c.install(v5, key)
    check(c.info().ps == OPEN, "no 'C' area: still Open")
    v3 = build_image([area("F", FLASH + 0x30000, fw(32, 4))], key, version=3)
    expect(c.license(0, make_license(c, 0, image_id(v3), key)), "OK", "license v3")
    expect(c.header(v3), "ROLLBACK", "version 3 after 5")
    i = c.failed_with("ROLLBACK", "rollback")
    check(i.installed == image_id(v5), "a refused session keeps the installed image id")
    tampered = build_image([area("F", FLASH + 0x30000, fw(32, 4))], key, version=3,
                           tamper_tag=True)
    expect(c.license(0, make_license(c, 0, image_id(tampered), key)), "OK", "license")
    rule("PUT_HEADER auth before rollback", c.header(tampered), "HEADER_AUTH",
         "bad tag, version 3")
    v5b = build_image([area("F", FLASH + 0x30000, fw(32, 4))], key, version=5)
    c.install(v5b, key)


def data_cases(c, key):
    img = build_image([area("F", FLASH + 0x40000, fw(512, 5)),
                       area("F", FLASH + 0x40200, fw(1024, 6))], key)
    ident = image_id(img)
    idle = c.info()
    expect(c.data(64, img[64:128]), "SEQUENCE", "PUT_DATA without a session")
    c.unchanged(idle, "PUT_DATA without a session")
    rule("PUT_DATA length before session", c.data(64, b""), "BAD_LENGTH", "empty chunk, no session")
    expect(c.port.sp51(PUT_DATA, b"\x40\0\0", img[64:80]), "BAD_LENGTH", "p1 of 3 bytes")
    expect(c.finalize(), "SEQUENCE", "FINALIZE without a session")
    rule("FINALIZE length before session", c.finalize(b"x"), "BAD_LENGTH", "FINALIZE with data")
    c.unchanged(idle, "PUT_DATA and FINALIZE without a session")

    # Offsets are file offsets; a chunk re-sent identically is answered OK and not applied.
    c.begin(img, key)
    expect(c.data(0, img[0:100]), "SEQUENCE", "stream offset 0 instead of file offset 64")
    c.failed_with("SEQUENCE", "offset 0")
    c.begin(img, key)
    expect(c.finalize(), "INCOMPLETE", "FINALIZE after the header only")
    c.failed_with("INCOMPLETE", "FINALIZE too early")
    c.begin(img, key)
    expect(c.data(64, img[64:64 + 1000]), "OK", "first chunk at 64")
    expect(c.data(64, img[64:64 + 1000]), "OK", "the same chunk again")
    i = c.info()
    check(i.session == STREAMING and i.stream == 1000 and i.areas == 1,
          "streaming, 1000 bytes, one area (re-send not counted)")
    rule("PUT_DATA re-send before sequence", c.data(64, img[64:64 + 1000]), "OK",
         "identical re-send")
    rule("PUT_DATA sequence before past-end", c.data(2000, b"\xff" * 1024), "SEQUENCE",
         "wrong offset, reaching past the end")
    i = c.failed_with("SEQUENCE", "wrong offset")
    check(i.stream == 1000 and i.areas == 1, "stream bytes and areas of the last OK chunk")
    c.begin(img, key)
    expect(c.data(64, img[64:64 + 500]), "OK", "500 bytes")
    expect(c.data(64, img[64:64 + 499] + b"\0"), "SEQUENCE", "chunk at the same offset, other bytes")
    c.begin(img, key)
    expect(c.data(64, img[64:1064]), "OK", "1000 bytes")
    expect(c.data(1064, img[1064:] + b"\xff" * 16), "BAD_LENGTH", "the rest plus 16 bytes")
    i = c.failed_with("BAD_LENGTH", "data past the end")
    check(i.stream == 1000 and i.areas == 1, "nothing counted of a refused chunk")
    small = build_image([area("F", FLASH + 0x50000, fw(64, 1)),
                         area("F", FLASH + 0x50040, fw(64, 2))], key)
    bad2 = small[176:177] + b"\x01" + small[178:]      # descriptor 2, byte 1 set
    c.begin(small, key)
    expect(c.data(64, small[64:176]), "OK", "area 1")
    expect(c.data(176, bad2), "DESCRIPTOR_MALFORMED", "control: descriptor 2 with byte 1 set")
    c.begin(small, key)
    expect(c.data(64, small[64:176]), "OK", "area 1")
    rule("PUT_DATA past-end before stream checks", c.data(176, bad2 + b"\xff" * 16),
         "BAD_LENGTH", "a bad descriptor in a chunk reaching past the end")
    c.begin(img, key)
    expect(c.stream(img)[0], "OK", "whole image")
    check(c.info().session == COMPLETE, "complete")
    expect(c.data(len(img) - 16, img[-16:]), "SEQUENCE", "a chunk after the last")
    c.failed_with("SEQUENCE", "data when complete")


def area_cases(c, key, port_for_memory):
    """Every descriptor and area status, each leaving the chip Open and clean."""
    base = FLASH + 0x60000
    good = area("F", base, fw(64, 7))

    def run(areas, name, what, mkey=None, modules=(), expect_prefix=True):
        img = build_image(areas, key)
        expect(c.license(0, make_license(c, 0, image_id(img), key)), "OK", "license " + what)
        for m in modules:
            expect(c.license(m, make_license(c, m, module_firmware_id(m), mkey)), "OK",
                   "module license " + what)
        expect(c.header(img), "OK", "header " + what)
        st, off = c.stream(img, chunk=1000)
        expect(st, name, what)
        i = c.failed_with(name, what)
        check(port_for_memory.read_memory(base, 16) == b"\xff" * 16,
              "%s: the first area is erased again" % what)
        return i

    run([good, area("F", base + 64, fw(64, 8), reserved=1)], "DESCRIPTOR_MALFORMED",
        "descriptor byte 1 set")
    run([good, area("F", base + 64, fw(64, 8), index=3)], "DESCRIPTOR_MALFORMED", "index 3 of 2")
    run([good, area("F", base + 64, fw(64, 8), total=3)], "DESCRIPTOR_MALFORMED", "total 3")
    run([good, area("X", base + 64, fw(64, 8))], "DESCRIPTOR_MALFORMED", "type X")
    run([good, area("F", base + 64, fw(24, 8))], "DESCRIPTOR_MALFORMED", "size 24")
    run([good, area("F", base + 64, fw(64, 8), module=3)], "DESCRIPTOR_MALFORMED",
        "module id on an F area")
    run([good, area("C", 0, struct.pack("<HHI", 1, 0, 0xED00)), area("F", base + 64, fw(64, 8))],
        "DESCRIPTOR_MALFORMED", "C not last")
    run([good, area("P", 0, b"", size=16)], "DESCRIPTOR_MALFORMED", "P with a size")
    run([good, area("F", base + 64, fw(64, 8), size=80)], "DESCRIPTOR_MALFORMED",
        "size beyond the total length")
    rule("descriptor malformed before too large",
         run([good, area("F", base + 64, fw(RAM + 16, 8), index=5)], "DESCRIPTOR_MALFORMED",
             "index 5, size > RAM").last, "DESCRIPTOR_MALFORMED", "")
    run([good, area("F", base + 64, fw(RAM + 16, 8))], "AREA_TOO_LARGE", "area > RAM buffer")
    mkey = os.urandom(16)
    rule("too large before module license missing",
         run([good, area("M", base + 64, fw(RAM + 16, 8), module=9, key=mkey)],
             "AREA_TOO_LARGE", "M > RAM without its license").last, "AREA_TOO_LARGE", "")
    run([good, area("M", base + 64, fw(64, 8), module=9, key=mkey)], "MODULE_LICENSE_MISSING",
        "M area without its license")

    # AREA_AUTH: an area encrypted under another key.
    run([good, area("F", base + 64, fw(64, 8), key=os.urandom(16))], "AREA_AUTH",
        "area under another key")
    rule("area auth before bad address",
         run([good, area("F", SRAM, fw(64, 8), key=os.urandom(16))], "AREA_AUTH",
             "bad key and SRAM").last, "AREA_AUTH", "")
    rule("bad address before not erased",
         run([good, area("F", SRAM, fw(64, 8))], "BAD_ADDRESS", "F in SRAM").last,
         "BAD_ADDRESS", "")
    run([good, area("F", base + 72, fw(64, 8))], "BAD_ADDRESS", "F at a misaligned address")
    run([good, area("F", 0x081FFFF0, fw(32, 8))], "BAD_ADDRESS", "F past the end of flash")
    run([good, area("K", 0x08FFF800, fw(16, 8))], "BAD_ADDRESS", "K in the UID area")
    run([good, area("F", OTP, fw(16, 8))], "BAD_ADDRESS", "F in OTP")
    run([good, area("F", base + 32, fw(64, 8))], "NOT_ERASED", "overlapping areas")
    run([good, area("K", OTP + 0x100, fw(16, 8)), area("K", OTP + 0x100, fw(16, 9))],
        "NOT_ERASED", "two K areas for the same OTP line")

    # 'C' records.
    def cfg(*recs):
        return b"".join(struct.pack("<HHI", *r) for r in recs)

    run([good, area("C", 0, cfg((13, 0, 1), (1, 0, 0xED00)))], "BAD_OPTION", "register 13")
    run([good, area("C", 0, cfg((1, 1, 0xED00)))], "BAD_OPTION", "reserved half-word")
    run([good, area("C", 0, cfg((7, 0, 1), (7, 0, 2), (1, 0, 0xED00)))], "BAD_OPTION",
        "register twice")
    run([good, area("C", 0, cfg((7, 0, 0xFFFFFFFF)))], "BAD_OPTION", "no OPTSR_PRG")
    run([good, area("C", 0, cfg((1, 0, 0x9A00)))], "BAD_OPTION", "product state 0x9A")

    # Stream order: the first failure in the chunk wins.
    rule("stream order", run([good, area("F", base + 64, fw(64, 8), key=os.urandom(16)),
                              area("F", base + 128, fw(64, 9), index=7)],
                             "AREA_AUTH", "bad area then a bad descriptor, one chunk").last,
         "AREA_AUTH", "")


def memory_cases(c, key):
    """NOT_ERASED and FLASH_ERROR with memory the line prepared; the neighbours of a failed
    session's areas are left alone."""
    p = c.port
    base = FLASH + 0x80000
    p.write_memory(base + 0x200, b"\x5a" * 16)   # same 8 KiB sector, outside the image
    p.write_memory(base + 0x100, b"\x6b" * 16)   # where the image's second area goes
    img = build_image([area("F", base, fw(128, 1)), area("F", base + 0x100, fw(16, 2))], key)
    c.begin(img, key)
    expect(c.stream(img)[0], "NOT_ERASED", "area over programmed flash")
    c.failed_with("NOT_ERASED", "not erased")
    check(p.read_memory(base, 16) == b"\xff" * 16, "the session's first area erased again")
    check(p.read_memory(base + 0x200, 16) == b"\x5a" * 16 and
          p.read_memory(base + 0x100, 16) == b"\x6b" * 16,
          "the line's bytes in the same sector survive the failed session")

    # Write protection: sector 0x90000 / 8 KiB = 72 (its group of 4).
    prot = FLASH + 0x90000
    p.write_protect([72])
    img = build_image([area("F", base + 0x1000, fw(64, 3)), area("F", prot, fw(64, 4))], key)
    c.begin(img, key)
    expect(c.stream(img)[0], "FLASH_ERROR", "area in a write-protected sector")
    c.failed_with("FLASH_ERROR", "WRP")
    check(p.read_memory(base + 0x1000, 16) == b"\xff" * 16, "erased again after FLASH_ERROR")
    p.write_unprotect()
    p.write_memory(prot, b"\x22" * 16)
    p.write_protect([72])
    img = build_image([area("F", prot, fw(64, 4))], key)
    c.begin(img, key)
    rule("not erased before flash error", c.stream(img)[0], "NOT_ERASED",
         "programmed and write-protected")
    p.write_unprotect()

    # FLASH_ERROR at FINALIZE: the OTP line of a held 'K' area written meanwhile.
    img = build_image([area("K", OTP + 0x200, fw(16, 5))], key)
    c.begin(img, key)
    expect(c.stream(img)[0], "OK", "K for OTP (held)")
    check(p.read_memory(OTP + 0x200, 16) == b"\xff" * 16, "OTP untouched before FINALIZE")
    p.write_memory(OTP + 0x200, b"\x33" * 16)
    expect(c.finalize(), "FLASH_ERROR", "FINALIZE writing a used OTP line")
    c.failed_with("FLASH_ERROR", "FINALIZE")


def module_case(c, key):
    mkey = os.urandom(16)
    img = build_image([area("F", FLASH + 0xA0000, fw(64, 1)),
                       area("M", FLASH + 0xA0100, fw(64, 2), module=11, key=mkey)], key,
                      version=5)
    glob = make_license(c, 11, module_firmware_id(11), mkey, kind=2)
    i = c.install(img, key, licenses=[(11, glob)])
    check(c.port.read_memory(FLASH + 0xA0100, 16) == fw(64, 2)[:16], "module area programmed")
    check(i.areas == 2 and i.stream == len(img) - 64, "areas and stream bytes of a finalized session")


def closed_and_power(emu, c, key, ca_pub):
    """A full install ending Closed; BAD_STATE leaves the record; a power cycle keeps it."""
    cfg = struct.pack("<HHI", 1, 0, 0x00F000F8 | CLOSED << 8)
    img = build_image([area("F", FLASH, fw(RAM, 1)), area("F", FLASH + RAM, fw(512, 2)),
                       area("K", OTP + 0x300, fw(32, 3)), area("C", 0, cfg)], key)
    lic = make_license(c, 0, image_id(img), key)
    i = c.install(img, key)
    check(i.ps == CLOSED, "Closed after FINALIZE")
    expect(c.license(0, lic), "BAD_STATE", "PUT_LICENSE on a Closed chip")
    rule("BAD_STATE before length", c.license(0, lic[:100]), "BAD_STATE", "Closed, 100 bytes")
    rule("BAD_STATE before sequence", c.license(7, lic), "BAD_STATE", "Closed, module target")
    c.unchanged(i, "BAD_STATE")
    expect(c.header(img), "NO_LICENSE", "PUT_HEADER on a Closed chip")
    expect(c.finalize(), "SEQUENCE", "FINALIZE of a finalized session")
    c.unchanged(i, "refusals after FINALIZE")
    return img, i


def wire_vector():
    """§9.5: the whole-install vector, replayed byte for byte against a chip set up with the
    vector's key, UID, certificate and RAM buffer."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "install-wire.txt")
    inputs, steps = {}, []
    with open(path) as f:
        for line in f:
            if line.startswith("# ") and len(line.split()) == 3:
                inputs[line.split()[1]] = line.split()[2]
            elif line.startswith("H: "):
                steps.append([bytes.fromhex(line[3:].strip()), None])
            elif line.startswith("C: "):
                steps[-1][1] = bytes.fromhex(line[3:].strip())
    check(len(steps) > 20 and all(c is not None for _, c in steps), "the vector file parses")
    state = os.path.join(TMP, "vector-state")
    chipdir = os.path.join(state, "chip0")
    os.makedirs(chipdir, mode=0o700)

    def write(path, data, mode=0o600):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.write(fd, data)
        os.close(fd)

    def pem(scalar):
        k = ec.derive_private_key(int(scalar, 16), ec.SECP256R1())
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    write(os.path.join(chipdir, "chip.key"), pem(inputs["chip-key"]))
    write(os.path.join(chipdir, "chip.cert"), bytes.fromhex(inputs["certificate"]))
    write(os.path.join(chipdir, "chip.conf"), ("profile=h563\nuid=%s\n" %
                                               inputs["chip-uid"]).encode())
    ca_path = os.path.join(TMP, "vector-ca.pem")
    write(ca_path, pem(inputs["ca-key"]))
    emu = Emu("vector", 1, "--ca-key", ca_path, "--ram-buffer", inputs["ram-buffer"],
              state=state)
    p = emu.port(0)
    for n, (host, chip) in enumerate(steps):
        p.send(host)
        got = p.recv(len(chip), 15.0)
        check(got == chip, "§9.5 step %d: sent %s, expected %s, got %s"
              % (n, host.hex(), chip.hex(), got.hex()))
    p.close()
    emu.stop()
    print("osfi-conformance: the §9.5 install vector replays byte for byte (%d exchanges)"
          % len(steps))


def main():
    ca = ec.generate_private_key(ec.SECP256R1())
    ca_path = os.path.join(TMP, "ca.pem")
    with open(ca_path, "wb") as f:
        f.write(ca.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()))
    g_path = os.path.join(TMP, "global.key")
    with open(g_path, "wb") as f:
        f.write(G)
    key = os.urandom(16)
    args = ("--ca-key", ca_path, "--global-key", g_path, "--ram-buffer", str(RAM))
    emu = Emu("main", 4, *args)
    chips = [Chip(emu, k, ca.public_key()) for k in range(4)]
    i = chips[0].info()
    check(i.ps == OPEN and i.version == 1 and i.session == IDLE and i.last == 0 and
          i.ram == RAM and i.device == DEV and i.installed == bytes(32), "a new chip's GET_INFO")
    expect(chips[0].port.sp50(GET_INFO, b"x")[0], "BAD_LENGTH", "GET_INFO with data")
    expect(chips[0].port.sp50(GET_CERT, b"x")[0], "BAD_LENGTH", "GET_CERT with data")

    framing(chips[0])
    license_cases(chips[0], key)
    header_cases(chips[0], key)
    data_cases(chips[0], key)
    area_cases(chips[1], key, chips[1].port)
    memory_cases(chips[1], key)
    rollback_cases(chips[2], key)
    module_case(chips[2], key)
    img, closed = closed_and_power(emu, chips[3], key, ca.public_key())

    # A session in progress on chip 0 when the power goes; chip 1 failed; chip 3 finalized.
    part = build_image([area("F", FLASH + 0xC0000, fw(512, 9)),
                        area("F", FLASH + 0xC0000 + 512, fw(512, 10))], key)
    chips[0].begin(part, key)
    expect(chips[0].data(64, part[64:64 + 48 + 512]), "OK", "first area")
    check(chips[0].port.read_memory(FLASH + 0xC0000, 16) == fw(512, 9)[:16],
          "the first area is programmed")
    before = [ch.info() for ch in chips]
    check(before[0].session == STREAMING and before[0].areas == 1, "chip 0 streaming")
    for ch in chips:
        ch.port.close()
    emu.stop()
    emu.start()
    for k, ch in enumerate(chips):
        ch.port = emu.port(k)
        ch.port.sync()
    after = [ch.info() for ch in chips]
    check(after[0].session == FAILED and after[0].last == 0 and after[0].areas == 1,
          "power lost during a session: failed, status OK, progress as it was")
    check(chips[0].port.read_memory(FLASH + 0xC0000, 16) == b"\xff" * 16,
          "what the interrupted session programmed is erased")
    for k in (1, 2, 3):
        check((after[k].session, after[k].last, after[k].installed, after[k].ps) ==
              (before[k].session, before[k].last, before[k].installed, before[k].ps),
              "chip %d: the record survives a power cycle" % k)
    check(after[3].session == FINALIZED and after[3].installed == image_id(img) and
          after[3].ps == CLOSED, "the Closed chip still reports its finalized image")
    emu.stop()

    # INTERNAL: a chip without a certificate (no CA given).
    bare = Emu("bare", 1)
    p = bare.port(0)
    p.sync()
    rule("GET_CERT length before internal", p.sp50(GET_CERT, b"x")[0], "BAD_LENGTH",
         "no certificate, with data")
    st, body = p.sp50(GET_CERT)
    expect(st, "INTERNAL", "GET_CERT on a chip without certificate")
    check(body == b"", "no data with INTERNAL")
    p.close()
    bare.stop()

    wire_vector()

    missing = [STATUS[s] for s in range(len(STATUS)) if s not in SEEN]
    check(not missing, "every status of §6 produced (missing: %s)" % ", ".join(missing))
    print("osfi-conformance: %d checks, %d statuses, %d precedence rules"
          % (CHECKS, len(SEEN), len(RULES)))


if __name__ == "__main__":
    rc = 1
    try:
        main()
        rc = 0
    except AssertionError as e:
        print("FAIL: %s (after %d checks)" % (e, CHECKS), file=sys.stderr)
    except Nack as e:
        print("FAIL: unexpected NACK at %s (after %d checks)" % (e, CHECKS), file=sys.stderr)
    finally:
        for pr in PROCS:
            if pr.poll() is None:
                pr.kill()
                pr.wait()
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(rc)
