# expect: passed. Right add; first tries to kill, stop or interrupt its parent, PID 1, its process
# group and every process it can see.
import os
import signal

for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM, signal.SIGINT):
    for target in (os.getppid(), 1):
        try:
            os.kill(target, sig)
        except OSError:
            pass
for name in os.listdir("/proc"):
    if name.isdigit() and int(name) != os.getpid():
        try:
            os.kill(int(name), signal.SIGKILL)
        except OSError:
            pass


def add(a, b):
    return a + b
