# expect: passed. Right add; leaves up to 300 sleeping processes behind, in new sessions, each
# named by the harness's marker: none may outlive the run.
import os

for _ in range(300):
    try:
        if os.fork() == 0:
            os.setsid()
            os.execvp("sleep", ["sleep", "__MARKER__"])
    except OSError:
        break


def add(a, b):
    return a + b
# ruff: noqa: F821  (the harness fills in the __NAME__ placeholders)
