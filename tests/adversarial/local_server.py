# expect: passed. Right add; tries to reach a server the harness listens on at 127.0.0.1.
import socket

try:
    socket.create_connection(("127.0.0.1", __PORT__), timeout=1).sendall(b"forged")
except OSError:
    pass


def add(a, b):
    return a + b
# ruff: noqa: F821  (the harness fills in the __NAME__ placeholders)
