# expect: passed. Right add; signals PID 1 (the judge when contained) with every catchable and
# uncatchable signal it can name, then answers.
import os
import signal

for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGQUIT, signal.SIGSTOP,
            signal.SIGKILL):
    try:
        os.kill(1, sig)
    except OSError:
        pass


def add(a, b):
    return a + b
