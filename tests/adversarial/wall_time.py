# expect: timeout. Spins; ignores SIGTERM and SIGALRM.
import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGALRM, signal.SIG_IGN)
while True:
    pass
