# expect: failed. Right add, but its process tree holds more than the memory limit: __CHILDREN__
# processes of __MIB__ MiB each, every one under the per-process limit.
import os
import time

for _ in range(__CHILDREN__):
    if os.fork() == 0:
        block = b"x" * (__MIB__ << 20)
        time.sleep(30)
        os._exit(0)
time.sleep(__WAIT__)


def add(a, b):
    return a + b
# ruff: noqa: F821  (the harness fills in the __NAME__ placeholders)
