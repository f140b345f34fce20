#!/usr/bin/env python3
"""Listens on a NOTIFY_SOCKET like systemd does and prints each datagram's lines with a
timestamp, until STOPPING=1 arrives or the time limit passes."""
import os
import socket
import sys
import time

path, limit = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
print("listening", flush=True)
end = time.monotonic() + limit
while time.monotonic() < end:
    s.settimeout(max(0.01, end - time.monotonic()))
    try:
        data = s.recv(4096)
    except socket.timeout:
        break
    now = time.monotonic()
    for line in data.decode(errors="replace").splitlines():
        print("%.3f %s" % (now, line), flush=True)
        if line == "STOPPING=1":
            sys.exit(0)
sys.exit(1)
