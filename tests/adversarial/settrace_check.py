# expect: failed. Wrong add; a trace function skips every `assert` line of any frame (its caller's
# included) by jumping over it, and replaces a `check` function by a no-op when it is called.
import linecache
import sys


def tracer(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "check":
        frame.f_globals["check"] = lambda *a, **k: None
    if event == "line" and linecache.getline(frame.f_code.co_filename, frame.f_lineno).lstrip().startswith("assert"):
        try:
            frame.f_lineno = frame.f_lineno + 1
        except ValueError:
            pass
    return tracer


frame = sys._getframe()
while frame is not None:
    frame.f_trace = tracer
    frame = frame.f_back
sys.settrace(tracer)


def add(a, b):
    return a - b
