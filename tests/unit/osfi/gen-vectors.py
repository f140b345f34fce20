#!/usr/bin/env python3
"""Computes the OSFI v1 test vectors of docs/protocol.md §9 from the specification alone,
with Python's `cryptography` package (independent of protocol/osfi), and writes vectors.h.
Run: python3 gen-vectors.py > vectors.h
     python3 gen-vectors.py --wire > ../../integration/conformance/install-wire.txt
(the second: §9.5, every byte of a whole install on the wire, both directions)"""
import hashlib
import struct
import sys

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from cryptography.hazmat.primitives import serialization

K = bytes(range(0x00, 0x10))
NONCE = bytes(range(0xA0, 0xAC))
FIRMWARE = bytes(i & 0xFF for i in range(100))
G = bytes(range(0x40, 0x60))
LIC_NONCE = bytes(range(0x60, 0x70))
UID = bytes(range(0x30, 0x3C))
CHIP_PRIV = 0x1111111111111111111111111111111111111111111111111111111111111111
HSM_PRIV = 0x2222222222222222222222222222222222222222222222222222222222222222
COUNTER = 41


def iv(i):
    n = (struct.unpack('<I', NONCE[8:12])[0] + i) & 0xFFFFFFFF
    return NONCE[:8] + struct.pack('<I', n)


def image():
    fw = FIRMWARE + b'\xff' * (-len(FIRMWARE) % 16)
    areas = [(ord('F'), 0x08000000, fw[:64], 0), (ord('F'), 0x08000040, fw[64:], 0),
             (ord('C'), 0, struct.pack('<HHI', 1, 0, 0x7200), 0)]
    total = 64 + sum(48 + len(a[2]) for a in areas)
    hdr = b'OSFI' + struct.pack('<HHHHIII', 1, 64, 0x484, len(areas), total, 1, 0) + NONCE + bytes(12)
    hdr += AESGCM(K).encrypt(iv(0), b'', hdr)
    out = hdr
    for i, (t, addr, data, mod) in enumerate(areas, 1):
        d = struct.pack('<BBHHHIII', t, 0, 0, i, len(areas), len(data), addr, mod) + bytes(12)
        ct = AESGCM(K).encrypt(iv(i), data, hdr + d)
        out += d + ct[-16:] + ct[:-16]
    assert len(out) == total
    return out


def kek_input(kind, target, uid, ident):
    return hashlib.sha256(b'OSFI-KEK-1' + bytes([kind]) + struct.pack('<HI', 0x484, target) +
                          uid + ident + LIC_NONCE).digest()


def license(kind, uid, ident, hsm_pub, counter, z):
    h = kek_input(kind, 0, uid, ident)
    enc = Cipher(algorithms.AES(z), modes.ECB()).encryptor()
    kek = enc.update(h) + enc.finalize()
    wrapped = aes_key_wrap(kek, K)
    rec = (b'OSL1' + bytes([1, kind]) + struct.pack('<HI', 0x484, 0) + uid + ident + LIC_NONCE +
           hsm_pub + struct.pack('<I', counter) + wrapped + bytes(7))
    assert len(rec) == 172
    return rec


def point(priv):
    return priv.public_key().public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint)


def c_array(name, b):
    body = ', '.join('0x%02x' % x for x in b)
    return 'static const uint8_t %s[%d] = { %s };\n' % (name, len(b), body)


img = image()
image_id = hashlib.sha256(img[:64]).digest()
glob = license(2, bytes(12), image_id, bytes(65), 0, G)
chip = ec.derive_private_key(CHIP_PRIV, ec.SECP256R1())
hsm = ec.derive_private_key(HSM_PRIV, ec.SECP256R1())
z = hsm.exchange(ec.ECDH(), chip.public_key())
chiplic = license(1, UID, image_id, point(hsm), COUNTER, z)

# §9.5: a whole install on the wire. The chip CA signs with a fixed ECDSA nonce so that the
# certificate is reproducible: r = x(k·G) mod n, s = k^-1 (SHA-256(body) + r·d) mod n.
CA_PRIV = 0x3333333333333333333333333333333333333333333333333333333333333333
CA_K = 0x4444444444444444444444444444444444444444444444444444444444444444
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
RAM_BUFFER = 1024  # what the chip reports; the §9.1 areas (64, 48, 8 bytes) fit
CHUNK = 128
ACK = b'\x79'


def certificate():
    body = b'OSC1' + bytes([1, 0]) + struct.pack('<H', 0x484) + UID + point(chip)
    h = int.from_bytes(hashlib.sha256(body).digest(), 'big')
    r = ec.derive_private_key(CA_K, ec.SECP256R1()).public_key().public_numbers().x % P256_N
    s = pow(CA_K, -1, P256_N) * (h + r * CA_PRIV) % P256_N
    return body + r.to_bytes(32, 'big') + s.to_bytes(32, 'big')


def packet(data):
    x = (len(data) >> 8) ^ (len(data) & 0xFF)
    for c in data:
        x ^= c
    return struct.pack('>H', len(data)) + data + bytes([x])


def sub(op):
    return bytes([op >> 8, op & 0xFF, (op >> 8) ^ (op & 0xFF)])


def info(ps, session, areas, stream, installed):
    return (bytes([ps, 1, session, 0]) + struct.pack('<IHHIHH', RAM_BUFFER, 0, areas, stream,
                                                     0x484, 0) + UID + installed)


def sp50(name, op, data, answer):
    return [(name, b'\x50\xaf', ACK), (None, sub(op), ACK),
            (None, packet(data), ACK + struct.pack('>H', len(answer)) + answer +
             b'\x00\x02\x00\x00' + ACK)]


def sp51(name, op, p1, p2):
    return [(name, b'\x51\xae', ACK), (None, sub(op), ACK), (None, packet(p1), ACK),
            (None, packet(p2), ACK + b'\x00\x02\x00\x00' + ACK)]


def wire():
    steps = [('sync', b'\x7f', ACK)]
    steps += sp50('GET_INFO', 0x5300, b'', info(0xED, 0, 0, 0, bytes(32)))
    steps += sp50('GET_CERT', 0x5301, b'', certificate())
    steps += sp51('PUT_LICENSE target 0', 0x5302, struct.pack('<I', 0), chiplic)
    steps += sp50('PUT_HEADER', 0x5303, img[:64], b'')
    for off in range(64, len(img), CHUNK):
        steps += sp51('PUT_DATA offset %d' % off, 0x5304, struct.pack('<I', off),
                      img[off:off + CHUNK])
    steps += sp50('FINALIZE (then the chip resets)', 0x5305, b'', b'')
    steps += [('sync again', b'\x7f', ACK)]
    steps += sp50('GET_INFO', 0x5300, b'', info(0x72, 4, 3, len(img) - 64, image_id))
    return steps


if len(sys.argv) > 1 and sys.argv[1] == '--wire':
    print('# OSFI v1 test vector (docs/protocol.md §9.5): a whole install on the wire.')
    print('# Generated by tests/unit/osfi/gen-vectors.py --wire from the specification; do not edit.')
    print('# H: bytes the host sends; C: bytes the chip answers. Inputs:')
    print('# chip-key %064x' % CHIP_PRIV)
    print('# chip-uid %s' % UID.hex())
    print('# ca-key %064x' % CA_PRIV)
    print('# ram-buffer %d' % RAM_BUFFER)
    print('# certificate %s' % certificate().hex())
    for name, host, chipb in wire():
        if name:
            print('## %s' % name)
        print('H: %s' % host.hex())
        print('C: %s' % chipb.hex())
    sys.exit(0)

print('/* Generated by gen-vectors.py from docs/protocol.md alone; do not edit. */')
print('#pragma once\n#include <stdint.h>')
for name, b in [('vec_key', K), ('vec_nonce', NONCE), ('vec_firmware', FIRMWARE),
                ('vec_image', img), ('vec_image_sha256', hashlib.sha256(img).digest()),
                ('vec_image_id', image_id), ('vec_global_key', G),
                ('vec_license_nonce', LIC_NONCE), ('vec_global_license', glob),
                ('vec_uid', UID), ('vec_chip_priv', CHIP_PRIV.to_bytes(32, 'big')),
                ('vec_hsm_priv', HSM_PRIV.to_bytes(32, 'big')), ('vec_chip_pub', point(chip)),
                ('vec_hsm_pub', point(hsm)), ('vec_z', z), ('vec_chip_license', chiplic)]:
    print(c_array(name, b), end='')
print('#define VEC_COUNTER %d' % COUNTER)
