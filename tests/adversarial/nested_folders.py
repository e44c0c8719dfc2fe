# expect: passed. Right add; makes 1,200 nested folders (and a path longer than PATH_MAX) in its
# work folder, for a recursive clean-up.
import os

here = os.open(".", os.O_RDONLY)
for _ in range(1200):
    os.mkdir("d" * 200, dir_fd=here)
    inner = os.open("d" * 200, os.O_RDONLY, dir_fd=here)
    os.close(here)
    here = inner


def add(a, b):
    return a + b
