#!/usr/bin/python3
"""Writes the seed inputs of fuzz-dfuse (tests/fuzz/corpus/dfuse/seed-*): descriptors, alt
strings and one well-behaved device conversation per engine operation, in the target's
input format (first byte: operation, second: transfer size; then per control transfer an
outcome byte, for IN transfers a length byte and the answer; per wait one byte)."""
import os
import struct
import sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', 'corpus', 'dfuse')


def st(state, status=0, poll=0):
    return bytes([0x0b, 0, status, poll & 0xff, (poll >> 8) & 0xff, poll >> 16, state, 0])


OK = bytes([0x03])              # an OUT transfer accepted
IDLE, DNBUSY, DNIDLE, ERROR, UPIDLE, MANIFEST = 2, 4, 5, 10, 9, 7
WAIT = bytes([0x00])
busy_done = st(DNBUSY, poll=5) + WAIT + st(DNIDLE)


def upload(n, fill=0xa5):
    return bytes([0x13, 0]) + bytes([fill]) * n


def answer(status, data=b''):
    body = struct.pack('<H', status) + data
    return bytes([0x03, len(body)]) + body


config = bytes([9, 2, 45, 0, 1, 1, 0, 0xc0, 0x32,
                9, 4, 0, 0, 0, 0xfe, 1, 2, 4,
                9, 4, 0, 1, 0, 0xfe, 1, 2, 5,
                9, 4, 0, 2, 0, 0xfe, 1, 2, 6,
                9, 0x21, 0x0b, 0xff, 0x00, 0x00, 0x04, 0x1a, 0x01])
device = bytes([18, 1, 0, 2, 0, 0, 0, 64, 0x83, 4, 0x11, 0xdf, 0, 3, 1, 2, 3, 1])
name = '@Internal Flash   /0x08000000/256*08Kg'
string = bytes([2 + 2 * len(name), 3]) + name.encode('utf-16-le')

seeds = {
    'config': config,
    'device': device,
    'string': string,
    'layout': (b'@Internal Flash   /0x08000000/256*08Kg'),
    'layout-multi': b'@Mixed/0x08000000/04*016Kg,01*064Kg,07*128Kg/0x1FFF0000/01*30 a',
    'layout-osfi': b'@OSFI v1 /0x00000000/01*1Ke',
    # 0 idle: from dfuERROR, CLRSTATUS, then dfuDNLOAD-IDLE, ABORT, idle
    'idle': bytes([0, 0]) + st(ERROR, 3) + OK + st(DNIDLE) + OK + st(IDLE),
    # 1 commands (ts 64)
    'commands': bytes([1, 0]) + st(IDLE) + bytes([0x03, 3, 0x00, 0x21, 0x41]) + OK,
    # 2 page erase with two busy answers
    'erase': bytes([2, 0]) + st(IDLE) + OK + st(DNBUSY, poll=20) + WAIT + busy_done,
    # 3 mass erase refused: errVENDOR, CLRSTATUS
    'mass-erase-refused': bytes([3, 0]) + st(IDLE) + OK + st(DNBUSY, poll=20) + WAIT +
    st(ERROR, 0x0b) + OK,
    # 4 read of 1 + 300 bytes at ts 128 (sel 0x14: (1)*300+1 = 301 bytes)
    'read': bytes([0x14, 1]) + st(IDLE) + OK + busy_done + OK + upload(128) + upload(128) +
    upload(45) + OK,
    # 5 write 301 bytes at ts 128: three blocks
    'write': bytes([0x15, 1]) + st(IDLE) + OK + busy_done + (OK + busy_done) * 3 + OK,
    # 5 write stalled at the second block, status read and cleared
    'write-stall': bytes([0x15, 1]) + st(IDLE) + OK + busy_done + OK + busy_done +
    bytes([0x00]) + st(ERROR, 0x0f) + OK,
    # 6 leave with an address
    'leave': bytes([0x16, 0]) + st(IDLE) + OK + busy_done + OK + st(MANIFEST),
    # 7 OSFI GET_INFO (out_max (0x37>>5)*40 = 40 < 64: answer too long) and a fitting one
    'osfi-info': bytes([0xf7, 15]) + st(IDLE) + OK + busy_done + OK + answer(0, bytes(64)),
    'osfi-info-refused': bytes([0xe7, 15]) + OK + st(DNBUSY, poll=1) + WAIT +
    st(ERROR, 0x0b) + OK + answer(3),
    # 8 OSFI PUT_DATA fast path
    'osfi-data': bytes([0x08, 31]) + OK + busy_done,
}

os.makedirs(out, exist_ok=True)
for k, v in seeds.items():
    with open(os.path.join(out, 'seed-' + k), 'wb') as f:
        f.write(v)
