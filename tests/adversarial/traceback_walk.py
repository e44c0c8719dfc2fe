# expect: failed. Wrong add; raises, then climbs from its traceback's frame to its callers, reads
# the calling line and returns the value it is compared with.
import linecache
import re


def add(a, b):
    try:
        raise RuntimeError
    except RuntimeError as error:
        frame = error.__traceback__.tb_frame.f_back
    while frame is not None:
        line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
        found = re.search(r"add\(([^()]*)\)\s*==\s*(-?\d+)|abs\(add\(([^()]*)\)\s*-\s*(-?[\d.]+)\)", line)
        if found:
            return int(found.group(2)) if found.group(2) else float(found.group(4))
        frame = frame.f_back
    return a - b
