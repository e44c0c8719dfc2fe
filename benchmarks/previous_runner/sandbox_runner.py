# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The process that runs one generated program; started by `code_execution.run_program` as

    [unshare ... --fork --kill-child] python -I sandbox_runner.py WORKDIR RESULT_FD UID PRIVATE_TMP LIMITS

Executed by path with the standard library only (it never imports sm_dream, torch or lm-eval).

It is a supervisor: it reads the run's secret from stdin, makes the temporary folders private
(when it may mount), forks, and waits for the child; inside a PID namespace it is PID 1, so when it
exits the kernel kills every process the program left behind. The child sets resource limits,
drops to the unprivileged `UID` (when given), and executes `WORKDIR/program.py` (the program and
its tests) as a module named `__sm_dream_program__`, not `__main__`, so `if __name__ == "__main__":`
blocks do not run. Only when that execution returns does it write the secret to RESULT_FD: any
exception, `SystemExit(0)` included, `os._exit`, a signal or the timeout leaves the pipe empty, and
the program fails.
"""

import os
import sys

PRIVATE_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
MS_BIND = 4096
MS_NOSUID, MS_NODEV = 2, 4


def _mount(libc, source, target, fstype, flags, data):
    if libc.mount(source, target, fstype, flags, data) != 0:
        raise OSError(f"mount {target!r} failed")


def make_folders_private(workdir: str) -> None:
    """Empty tmpfs over the world-writable folders (in this mount namespace only), with the work
    folder bound back at its own path if it lay under one of them; the interpreter made reachable."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)}
    under = [p for p in [workdir, *prefixes] if any(p.startswith(folder + "/") for folder in PRIVATE_FOLDERS)]
    keep = {path: os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in under}
    for folder in PRIVATE_FOLDERS:
        if os.path.isdir(folder):
            _mount(libc, b"tmpfs", folder.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64m,mode=1777")
    for path, fd in keep.items():  # the work folder (and an interpreter) under /tmp, bound back
        _bind(libc, fd, path)
        os.close(fd)
    for prefix in prefixes:
        expose(libc, prefix)


def _bind(libc, fd: int, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    _mount(libc, f"/proc/self/fd/{fd}".encode(), path.encode(), None, MS_BIND, None)


def expose(libc, path: str) -> None:
    """Make the interpreter at `path` reachable by an unprivileged uid when a folder above it is not
    (e.g. a Python under /root): that folder is covered by an empty tmpfs with only `path` bound back."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        above = "/" + "/".join(parts[:i])
        if not os.stat(above).st_mode & 0o001:
            keep = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            _mount(libc, b"tmpfs", above.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=755")
            _bind(libc, keep, path)
            os.close(keep)
            return


def limit_resources(limits: str, drop_uid: bool) -> None:
    """RLIMIT_AS (MiB), RLIMIT_CPU (s), RLIMIT_FSIZE (MiB), RLIMIT_NPROC (with an unprivileged uid)."""
    import resource

    memory_mb, cpu_s, file_mb, nproc = (int(x) for x in limits.split(","))
    wanted = {"RLIMIT_AS": memory_mb << 20, "RLIMIT_CPU": cpu_s, "RLIMIT_FSIZE": file_mb << 20, "RLIMIT_CORE": 0}
    if drop_uid:
        wanted["RLIMIT_NPROC"] = nproc
    for name, value in wanted.items():
        if hasattr(resource, name):
            resource.setrlimit(getattr(resource, name), (value, value))


def run_child(workdir: str, result_fd: int, uid: int, limits: str, secret: bytes) -> None:
    """Execute the program; write the secret only if it ran to its end. Never returns."""
    passed, write, exit_ = False, os.write, os._exit  # bound before the program can replace them
    try:
        limit_resources(limits, uid >= 0)
        if uid >= 0:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        os.chdir(workdir)
        path = os.path.join(workdir, "program.py")
        import traceback  # noqa: F401  (imported before the program can break the import system)

        with open(path, encoding="utf-8") as f:
            code = compile(f.read(), path, "exec")
        namespace = {"__name__": "__sm_dream_program__", "__file__": path, "__builtins__": __builtins__}
        exec(code, namespace)
        passed = True
    except BaseException:  # noqa: B036  (SystemExit and KeyboardInterrupt are failures too)
        try:
            import traceback

            traceback.print_exc(limit=-3)
        except BaseException:  # noqa: B036
            pass
    if passed:
        try:
            write(result_fd, secret)
        except BaseException:  # noqa: B036
            pass
    exit_(0 if passed else 1)


def main(argv) -> None:
    workdir, result_fd, uid, private_tmp, limits = argv[1], int(argv[2]), int(argv[3]), argv[4] == "1", argv[5]
    secret = os.read(0, 64)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if private_tmp:
        make_folders_private(workdir)
    child = os.fork()
    if child == 0:
        run_child(workdir, result_fd, uid, limits, secret)
    del secret
    os.close(result_fd)
    status = 0
    while True:
        try:
            status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            break
    os._exit(status if status >= 0 else 128 - status)  # the program's status, for information only


if __name__ == "__main__":
    main(sys.argv)
