# expect: passed. Right add; tries to write files outside its work folder (the harness's targets
# and the fixed list below), to change the modes of folders outside, and to plant a module or a
# .pth file the judge could import.
import os
import sys

TARGETS = __TARGETS__ + [os.path.join(sys.prefix, "pwned.pth"), os.path.join(os.path.dirname(os.__file__), "pwned.py"),
                         "/root/pwned", "/home/pwned", "/etc/pwned", "/pwned"]
for target in TARGETS:
    try:
        with open(target, "w") as f:
            f.write("x")
    except OSError:
        pass
for folder in __FOLDERS__:
    try:
        os.chmod(folder, 0o777)
    except OSError:
        pass


def add(a, b):
    return a + b
# ruff: noqa: F821  (the harness fills in the __NAME__ placeholders)
