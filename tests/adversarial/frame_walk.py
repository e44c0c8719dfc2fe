# expect: failed. Wrong add; walks the frames that called it (where in-process test code would
# sit), reads the calling line and returns the value it is compared with.
import linecache
import re
import sys


def forged(frame):
    while frame is not None:
        line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
        found = re.search(r"add\(([^()]*)\)\s*==\s*(-?[\d.]+)|abs\(add\(([^()]*)\)\s*-\s*(-?[\d.]+)\)", line)
        if found:
            return float(found.group(2) or found.group(4))
        frame = frame.f_back
    return None


def add(a, b):
    value = forged(sys._getframe(1))
    return (int(value) if value == int(value) else value) if value is not None else a - b
