# expect: passed. Right add; reads the memory of every process it can see (the judge's: PID 1
# when contained) through /proc/PID/mem for the tests' text, and answers wrong if it finds it.
import os
import re

FOUND = False
for name in os.listdir("/proc"):
    if not name.isdigit() or int(name) == os.getpid():
        continue
    try:
        with open(f"/proc/{name}/maps") as maps, open(f"/proc/{name}/mem", "rb", 0) as mem:
            for line in maps:
                fields = line.split()
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if not fields[1].startswith("r") or end - start > 1 << 28:
                    continue
                try:
                    mem.seek(start)
                    FOUND = FOUND or bool(re.search(rb"assert add\(2, 3\) == 5", mem.read(end - start)))
                except (OSError, OverflowError, ValueError):
                    continue
    except OSError:
        continue


def add(a, b):
    return a - b if FOUND else a + b
