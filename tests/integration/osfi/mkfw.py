#!/usr/bin/env python3
"""Test helper: writes a firmware binary as Intel HEX or as an ELF32 file with one PT_LOAD
segment at the given physical address. mkfw.py hex|elf IN OUT ADDR"""
import struct
import sys

kind, src, dst, addr = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4], 0)
data = open(src, 'rb').read()

if kind == 'hex':
    def rec(t, a, payload):
        b = bytes([len(payload), a >> 8, a & 0xFF, t]) + payload
        return ':' + (b + bytes([(-sum(b)) & 0xFF])).hex().upper() + '\n'
    out, upper = [], None
    for off in range(0, len(data), 32):
        a = addr + off
        if a >> 16 != upper:
            upper = a >> 16
            out.append(rec(4, 0, struct.pack('>H', upper)))
        out.append(rec(0, a & 0xFFFF, data[off:off + 32]))
    out.append(rec(5, 0, struct.pack('>I', addr)))
    out.append(rec(1, 0, b''))
    open(dst, 'w').write(''.join(out))
else:
    ehdr = struct.pack('<4sBBBB8sHHIIIIIHHHHHH', b'\x7fELF', 1, 1, 1, 0, bytes(8), 2, 40, 1,
                       addr, 52, 0, 0x5000000, 52, 32, 1, 40, 0, 0)
    phdr = struct.pack('<IIIIIIII', 1, 84, addr, addr, len(data), len(data) + 64, 5, 4)
    open(dst, 'wb').write(ehdr + phdr + data)
