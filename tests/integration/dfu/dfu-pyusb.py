#!/usr/bin/python3
# python3-usb (libusb backend) against h5emu's chips as USB DfuSe devices: the descriptors
# (device, configuration, alternate settings, the DFU functional descriptor inside the
# configuration), DfuSe's Get commands, and the OSFI alternate as docs/protocol.md §11 maps
# it: GET_INFO's request, busy status, result and answer; a malformed frame stalled with
# errSTALLEDPKT; a refused sub-command ending in errVENDOR with its status in the answer;
# the timing model (bwPollTimeout of an erase and a write, the chip busy meanwhile, one
# control transfer per microframe); the option bytes alternate and --auto-swap over USB.
# Runs h5emu, then itself as the client inside the umockdev testbed.
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


# --- client side (runs under libumockdev-preload) ---

def client(expect_uid):
    import usb.core
    import usb.util

    devs = list(usb.core.find(find_all=True, idVendor=0x0483, idProduct=0xDF11))
    if len(devs) != 1:
        fail("expected one 0483:df11 device, found %d" % len(devs))
    d = devs[0]
    if d.bcdDevice != 0x0300 or d.bcdUSB != 0x0200 or d.bMaxPacketSize0 != 64:
        fail("device descriptor: bcdDevice %#x bcdUSB %#x ep0 %d" %
             (d.bcdDevice, d.bcdUSB, d.bMaxPacketSize0))
    if d.manufacturer != "STMicroelectronics" or d.product != "DFU in FS Mode":
        fail("strings: %r %r" % (d.manufacturer, d.product))
    if not re.fullmatch(r"[0-9A-F]{12}", d.serial_number or ""):
        fail("serial %r" % d.serial_number)
    if d.port_numbers != (1, 1):
        fail("port path %r, expected 2-1.1" % (d.port_numbers,))
    cfg = d.get_active_configuration()
    alts = list(cfg)
    names = [usb.util.get_string(d, a.iInterface) for a in alts]
    want = ["@Internal Flash   /0x08000000/256*08Kg", "@Option Bytes   /0x40022000/01*048 e",
            "@OTP Memory   /0x08FFF000/01*2Ke", "@OSFI v1 /0x00000000/01*1Ke"]
    if names != want:
        fail("alternate settings %r" % names)
    for a in alts:
        if (a.bInterfaceNumber, a.bInterfaceClass, a.bInterfaceSubClass,
                a.bInterfaceProtocol, a.bNumEndpoints) != (0, 0xFE, 1, 2, 0):
            fail("interface descriptor of alt %d" % a.bAlternateSetting)
    func = bytes(alts[-1].extra_descriptors)
    if func != bytes([9, 0x21, 0x0B, 0xFF, 0x00, 0x00, 0x08, 0x1A, 0x01]):
        fail("DFU functional descriptor %s" % func.hex())
    xfer = func[5] | func[6] << 8

    def getstatus():
        s = bytes(d.ctrl_transfer(0xA1, 3, 0, 0, 6))
        return s[0], s[1] | s[2] << 8 | s[3] << 16, s[4]

    def dnload(block, data):
        return d.ctrl_transfer(0x21, 1, block, 0, data)

    def upload(block, n):
        return bytes(d.ctrl_transfer(0xA1, 2, block, 0, n))

    def wait_result():
        st, poll, state = getstatus()
        if state != 4 or st != 0:
            fail("first GETSTATUS after a request: status %d state %d" % (st, state))
        time.sleep(poll / 1000.0)
        return getstatus()

    d.set_interface_altsetting(0, 0)
    if getstatus() != (0, 0, 2):
        fail("not dfuIDLE at start: %r" % (getstatus(),))
    if upload(0, xfer) != bytes([0x00, 0x21, 0x41]):
        fail("Get commands")

    # The timing model (h5emu --flash-timing 50,3,20): bwPollTimeout is the operation's
    # time in whole ms, and the chip answers nothing before it is over.
    addr = (0x08000000 + 5 * 8192).to_bytes(4, "little")
    dnload(0, bytes([0x21]) + addr)
    st, poll, state = getstatus()
    if (st, poll, state) != (0, 0, 4) or getstatus() != (0, 0, 5):
        fail("Set Address Pointer: %r" % ((st, poll, state),))
    dnload(0, bytes([0x41]) + addr)
    st, poll, state = getstatus()
    if (st, poll, state) != (0, 3, 4):
        fail("sector erase: status %d poll %d state %d, expected poll 3" % (st, poll, state))
    time.sleep(poll / 1000.0)
    if getstatus() != (0, 0, 5):
        fail("erase result")
    block = os.urandom(xfer)
    dnload(2, block)
    # The write runs once the busy GETSTATUS is answered: nothing completes before that
    # answer plus 2048 bytes = 128 quad-words of 50 us = 6.4 ms (a lower bound whatever the
    # load: t0 is taken before the busy GETSTATUS is even sent).
    t0 = time.monotonic()
    st, poll, state = getstatus()
    if (st, poll, state) != (0, 7, 4):
        fail("write: status %d poll %d state %d, expected poll 7" % (st, poll, state))
    if getstatus() != (0, 0, 5):
        fail("write result")
    busy = time.monotonic() - t0
    if busy < 0.006:
        fail("the chip answered %.1f ms into a 6.4 ms write" % (busy * 1000))
    d.ctrl_transfer(0x21, 6, 0, 0, None)
    if upload(2, xfer) != block:
        fail("the block read back differs")
    d.ctrl_transfer(0x21, 6, 0, 0, None)
    # One control transfer per 125 us microframe at most (EHCI's asynchronous schedule).
    t0 = time.monotonic()
    for _ in range(20):
        getstatus()
    if time.monotonic() - t0 < 0.00249:
        fail("20 GETSTATUS in %.2f ms: faster than one per microframe" %
             ((time.monotonic() - t0) * 1000))

    osfi = [a for a, n in zip(alts, names) if n.startswith("@OSFI v1")]
    d.set_interface_altsetting(0, osfi[0].bAlternateSetting)

    # GET_INFO: request, busy, result, answer.
    dnload(2, bytes([0x00, 0x53, 0x00, 0x00]))
    st, _, state = wait_result()
    if (st, state) != (0, 5):
        fail("GET_INFO result: status %d state %d" % (st, state))
    d.ctrl_transfer(0x21, 6, 0, 0, None)  # DFU ABORT to dfuIDLE
    ans = upload(2, xfer)
    if len(ans) != 2 + 64 or ans[:2] != b"\0\0":
        fail("GET_INFO answer %s" % ans.hex())
    # GET_INFO: product state Open, version 1, device id 0x484, UID at 20 (§5.3).
    info = ans[2:]
    if info[0] != 0xED or info[1] != 1 or info[16:18] != bytes([0x84, 0x04]):
        fail("GET_INFO fields %s" % info.hex())
    if info[20:32].hex() != expect_uid:
        fail("GET_INFO UID %s, chip %s" % (info[20:32].hex(), expect_uid))
    if upload(2, xfer) != ans:
        fail("the answer changed on a second UPLOAD")

    # Malformed frames are stalled: wrong block, unknown sub-opcode, n1 beyond the frame.
    for block, frame in ((3, bytes([0x00, 0x53, 0x00, 0x00])),
                         (2, bytes([0x10, 0x53, 0x00, 0x00])),
                         (2, bytes([0x00, 0x53, 0x05, 0x00, 0x01]))):
        try:
            dnload(block, frame)
            fail("malformed frame %s on block %d not stalled" % (frame.hex(), block))
        except usb.core.USBError as e:
            if e.errno != 32:
                fail("malformed frame: %r, not a pipe error" % e)
        st, _, state = getstatus()
        if (st, state) != (15, 10):
            fail("after a stall: status %d state %d" % (st, state))
        d.ctrl_transfer(0x21, 4, 0, 0, None)  # CLRSTATUS
        if getstatus()[2] != 2:
            fail("CLRSTATUS did not return to dfuIDLE")

    # A refusal: PUT_DATA with no session runs, fails, ends in dfuERROR + errVENDOR.
    dnload(2, bytes([0x04, 0x53, 0x04, 0x00, 64, 0, 0, 0]) + bytes(16))
    st, _, state = wait_result()
    if (st, state) != (11, 10):
        fail("refused PUT_DATA: status %d state %d" % (st, state))
    d.ctrl_transfer(0x21, 4, 0, 0, None)
    ans = upload(2, xfer)
    if len(ans) != 2 or ans == b"\0\0":
        fail("refusal's answer %s" % ans.hex())
    # The option bytes alternate: OPTSR (register 1, LE32 at 0x40022000) moved to
    # Provisioning; the chip has left Open, so after --auto-swap's idle time the next queued
    # chip takes the slot: the device goes and another (another serial) comes.
    d.set_interface_altsetting(0, 1)
    d.ctrl_transfer(0x21, 1, 0, 0, bytes([0x21]) + (0x40022000).to_bytes(4, "little"))
    getstatus()
    getstatus()
    d.ctrl_transfer(0x21, 6, 0, 0, None)
    opt = upload(2, 48)
    optsr = int.from_bytes(opt[:4], "little")
    if len(opt) != 48 or (optsr >> 8) & 0xFF != 0xED:
        fail("option bytes %s" % opt.hex())
    d.ctrl_transfer(0x21, 6, 0, 0, None)
    dnload(2, ((optsr & ~0xFF00) | 0x17 << 8).to_bytes(4, "little"))
    st, _, state = getstatus()
    if (st, getstatus()[2]) != (0, 5):
        fail("OPTSR write refused")
    serial, address = d.serial_number, d.address
    usb.util.dispose_resources(d)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 15:
        nd = usb.core.find(idVendor=0x0483, idProduct=0xDF11)
        if nd is not None and nd.address != address:
            break
        time.sleep(0.05)
    else:
        fail("no chip swapped in within 15 s")
    if nd.serial_number == serial:
        fail("the swapped-in chip has the same serial")

    # Protection refusals are dfuERROR + errVENDOR. WRP1R (register 7) cleared bit 0
    # protects sectors 0-3 of bank 1: erasing sector 1 is refused, sector 8 is not.
    d = nd
    d.set_interface_altsetting(0, 1)

    def option_write(reg, value):
        d.ctrl_transfer(0x21, 1, 0, 0, bytes([0x21]) +
                        (0x40022000 + 4 * (reg - 1)).to_bytes(4, "little"))
        getstatus()
        getstatus()
        dnload(2, value.to_bytes(4, "little"))
        getstatus()
        return getstatus()

    def erase(address):
        d.set_interface_altsetting(0, 0)
        dnload(0, bytes([0x41]) + address.to_bytes(4, "little"))
        st, poll, state = getstatus()
        time.sleep(poll / 1000.0)
        return getstatus()

    if option_write(7, 0xFFFFFFFE) != (0, 0, 5):
        fail("WRP1R write refused")
    if erase(0x08000000 + 8192) != (11, 0, 10):
        fail("erase of a write-protected sector not refused with errVENDOR")
    d.ctrl_transfer(0x21, 4, 0, 0, None)
    if erase(0x08000000 + 8 * 8192) != (0, 0, 5):
        fail("erase of an unprotected sector refused")
    # Closed: every memory alternate refuses (the UPLOAD stalls, errVENDOR); OSFI answers.
    d.ctrl_transfer(0x21, 6, 0, 0, None)
    d.set_interface_altsetting(0, 1)
    if option_write(1, (optsr & ~0xFF00) | 0x72 << 8) != (0, 0, 5):
        fail("OPTSR to Closed refused")
    d.set_interface_altsetting(0, 0)
    try:
        upload(2, xfer)
        fail("a Closed chip's flash was read")
    except usb.core.USBError as e:
        if e.errno != 32:
            fail("UPLOAD on a Closed chip: %r, not a stall" % e)
    if getstatus() != (11, 0, 10):
        fail("a refused UPLOAD does not read errVENDOR")
    d.ctrl_transfer(0x21, 4, 0, 0, None)
    d.set_interface_altsetting(0, 3)
    dnload(2, bytes([0x00, 0x53, 0x00, 0x00]))
    getstatus()
    if getstatus()[2] != 5:
        fail("GET_INFO on a Closed chip")
    d.ctrl_transfer(0x21, 6, 0, 0, None)
    if upload(2, xfer)[2] != 0x72:
        fail("GET_INFO does not report Closed")
    usb.util.dispose_resources(d)
    print("pyusb: descriptors, Get commands, timing, OSFI GET_INFO, stalls, refusal, "
          "option bytes, auto-swap, protection: ok")


# --- harness side ---

def control(path, line):
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
    s.close()
    return out.decode()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        client(sys.argv[2])
        return
    h5emu = sys.argv[1]
    try:
        import usb.core  # noqa: F401
    except ImportError:
        print("python3-usb is not installed (scripts/deps); skipping")
        sys.exit(SKIP)
    tmp = tempfile.mkdtemp(prefix="dfu-pyusb.", dir=os.environ.get("TMPDIR", "/tmp"))
    emu = subprocess.Popen([h5emu, "--count", "1", "--dir", tmp + "/emu", "--transport", "dfu",
                            "--flash-timing", "50,3,20", "--chips-per-slot", "2",
                            "--auto-swap", "300"],
                           stdout=subprocess.PIPE, stderr=open(tmp + "/emu.log", "w"))
    try:
        r, _, _ = select.select([emu.stdout], [], [], 20)
        line = emu.stdout.readline().decode() if r else ""
        if line != "h5emu: ready, 1 chips\n":
            fail("no ready line: %r %s" % (line, open(tmp + "/emu.log").read()))
        m = re.search(r"uid ([0-9a-f]{24})", control(tmp + "/emu/control", "status"))
        if not m:
            fail("no uid in status")
        env = dict(os.environ)
        for kv in open(tmp + "/emu/umockdev.env").read().split():
            k, v = kv.split("=", 1)
            env[k] = v
        rc = subprocess.run(["/usr/bin/python3", os.path.abspath(__file__), "--client",
                             m.group(1)], env=env, timeout=60).returncode
        if rc != 0:
            fail("client failed (%d); h5emu log: %s" % (rc, open(tmp + "/emu.log").read()[-2000:]))
        emu.send_signal(signal.SIGTERM)
        if emu.wait(timeout=20) != 0:
            fail("h5emu exited with %d" % emu.returncode)
    finally:
        if emu.poll() is None:
            emu.kill()
            emu.wait()
        subprocess.run(["rm", "-rf", tmp])


main()
