# expect: failed. Right add, but its process tree holds more than the memory limit: __CHILDREN__
# processes of __MIB__ MiB each, every one under the per-process limit; it answers only once all
# of them hold their memory.
import os
import time

done_r, done_w = os.pipe()
for _ in range(__CHILDREN__):
    if os.fork() == 0:
        block = b"x" * (__MIB__ << 20)
        os.write(done_w, b"1")
        time.sleep(60)
        os._exit(0)
os.close(done_w)
held = 0
while held < __CHILDREN__:
    got = os.read(done_r, 64)
    if not got:
        break
    held += len(got)


def add(a, b):
    return a + b
# ruff: noqa: F821  (the harness fills in the __NAME__ placeholders)
