# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The judge of one generated program; started by `code_execution.run_program` as

    [unshare --pid --net --mount --ipc --fork --kill-child --mount-proc] python -I sandbox_runner.py CONFIG

Executed by path with the standard library only (it never imports sm_dream, torch or lm-eval).

Two processes, one verdict (docs/evaluation.md, "Running generated code"):

- the **judge** (this process; PID 1 of the namespaces when contained) reads the program from
  stdin, prepares the file system (contained: everything read-only, private tmpfs work folder and
  temporary folders), forks the program process, and only then reads the tests from stdin. It runs
  the tests itself, in its own interpreter, with every function of the program replaced by a proxy
  that sends the call's arguments to the program process as plain data and gets plain data back.
  It alone writes the verdict, to a pipe of the evaluator that the program process does not hold;
- the **program** process closes stdin and the verdict pipe first, sets its resource limits, drops
  its identity (uid 65534 as root; a nested user namespace without root: no capability over the
  judge, which is not dumpable), executes the program, and then answers calls. Nothing it does in
  its own process (patched builtins, frames, trace functions, `__eq__`, its own memory) reaches
  the tests: they were never in its memory, its files or its reach.

Wire format (both pipes): an 8-byte big-endian length, then UTF-8 JSON. Values are tagged so that
tuples, sets, dicts with any keys, bytes, complex and big integers survive: see `encode`/`decode`.
"""

import builtins
import json
import os
import select
import signal
import sys
import threading
import time
import traceback  # imported before the program process drops its identity

FRAME_LIMIT = 64 << 20  # bytes of one message, either way
PRIVATE_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
WORKDIR = "/tmp/sm_dream_work"  # inside the namespaces: a private tmpfs
POLL_S = 0.02  # memory of the process tree, polled this often
MS_BIND, MS_REC, MS_NOSUID, MS_NODEV = 4096, 16384, 2, 4
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = -100, 0x8000, 0x1
SYS_MOUNT_SETATTR = 442  # the same number on x86-64 and arm64
CLONE_NEWUSER = 0x10000000
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
SAFE_MODULES_EXCLUDED = {"antigravity", "this", "turtle", "turtledemo", "tkinter", "idlelib", "webbrowser", "pydoc"}


class ProgramGone(BaseException):
    """The program process died, hung, broke the protocol or the limits: the verdict is failed.
    A BaseException so that a test's `except Exception` cannot swallow it."""


class ProgramError(Exception):
    """The program's function raised an exception that is not a builtin one."""


# --------------------------------------------------------------------------- plain data
def encode(value, depth: int = 0):
    """A JSON-ready form of a plain value; TypeError for anything else (objects, functions, generators)."""
    if depth > 200:
        raise TypeError("nested deeper than 200 levels")
    if value is None or value is True or value is False:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        value = int.__int__(value)
        return value if -(1 << 53) < value < (1 << 53) else {"i": hex(value)}
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    d = depth + 1
    if isinstance(value, list):
        return [encode(v, d) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        return {"t": [encode(v, d) for v in tuple.__iter__(value)]}
    if isinstance(value, frozenset):
        return {"fs": [encode(v, d) for v in frozenset.__iter__(value)]}
    if isinstance(value, set):
        return {"s": [encode(v, d) for v in set.__iter__(value)]}
    if isinstance(value, dict):
        return {"d": [[encode(k, d), encode(v, d)] for k, v in dict.items(value)]}
    if isinstance(value, (bytes, bytearray)):
        return {"b": bytes(value).hex()}
    if isinstance(value, complex):
        return {"c": [value.real, value.imag]}
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # numpy scalars and arrays
        return encode(value.tolist(), d)
    raise TypeError(f"a value of type {type(value).__name__} is not plain data")


def decode(value):
    """Inverse of `encode`: builtin types only."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    (tag, inner), = value.items()
    if tag == "t":
        return tuple(decode(v) for v in inner)
    if tag == "s":
        return {decode(v) for v in inner}
    if tag == "fs":
        return frozenset(decode(v) for v in inner)
    if tag == "d":
        return {decode(k): decode(v) for k, v in inner}
    if tag == "i":
        return int(inner, 16)
    if tag == "b":
        return bytes.fromhex(inner)
    if tag == "c":
        return complex(float(inner[0]), float(inner[1]))
    raise ValueError(f"unknown tag {tag!r}")


# The functions used after the program ran are bound here, as default arguments: a program that
# replaces os.write, json.dumps, ... in its process breaks only its own answers.
def write_frame(fd: int, message, _dumps=json.dumps, _write=os.write, _view=memoryview) -> None:
    data = _dumps(message).encode()
    data = len(data).to_bytes(8, "big") + data
    view = _view(data)
    while view:
        view = view[_write(fd, view):]


def read_exact(fd: int, size: int, deadline: float = None, _read=os.read, _select=select.select,
               _time=time.time) -> bytes:
    chunks, left = [], size
    while left:
        if deadline is not None:
            wait = deadline - _time()
            if wait <= 0 or not _select([fd], [], [], wait)[0]:
                raise TimeoutError
        chunk = _read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float = None) -> bytes:
    size = int.from_bytes(read_exact(fd, 8, deadline), "big")
    if size > FRAME_LIMIT:
        raise ValueError(f"a message of {size} bytes (limit {FRAME_LIMIT})")
    return read_exact(fd, size, deadline)


# --------------------------------------------------------------------------- the file system (contained)
def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _read_only(libc, path: str) -> None:
    """Every mount at and below `path` read-only (mount_setattr, Linux >= 5.12)."""
    import ctypes

    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY, 0, 0, 0)  # attr_set, attr_clr, propagation, userns_fd
    _check(libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), AT_RECURSIVE, ctypes.byref(attr), 32),
           f"read-only {path}")


def _needed_paths() -> list:
    """What the interpreter reads: its prefixes (real paths too), sys.path, this folder."""
    found = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable),
             os.path.dirname(os.path.abspath(__file__)), *sys.path}
    paths = set()
    for p in found:
        for q in (os.path.abspath(p), os.path.realpath(p)):
            if p and os.path.isdir(q) and q != "/":
                paths.add(q)
    ordered = sorted(paths)
    return [p for p in ordered if not any(p.startswith(o + "/") for o in ordered if o != p)]  # outermost only


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def prepare_file_system(uid: int) -> str:
    """Contained: the whole tree read-only; private tmpfs on the temporary folders and a work folder
    in one of them; a folder above a needed path that `uid` cannot traverse (e.g. /root, a home
    folder) covered by an empty tmpfs with each needed path bound back read-only. Every needed path
    is opened before anything is mounted, so no mount hides a path still to be bound."""
    libc = _libc()
    needed = _needed_paths()
    covers = {f: "size=64m,mode=1777" for f in PRIVATE_FOLDERS if os.path.isdir(f) and not os.path.islink(f)}
    if uid >= 0:
        for path in needed:
            parts = path.strip("/").split("/")
            for i in range(1, len(parts) + 1):
                above = "/" + "/".join(parts[:i])
                if any(_inside(above, c) for c in covers):
                    break
                if not os.stat(above).st_mode & 0o001:
                    covers[above] = "size=1m,mode=755"
                    break
    hidden = [p for p in needed if any(_inside(p, c) for c in covers)]
    fds = {p: os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in hidden}
    _read_only(libc, "/")
    for folder in sorted(covers, key=len):
        _check(libc.mount(b"tmpfs", folder.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, covers[folder].encode()),
               f"tmpfs on {folder}")
    for path, fd in fds.items():
        os.makedirs(path, mode=0o755, exist_ok=True)
        _check(libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, MS_BIND | MS_REC, None),
               f"bind {path}")
        os.close(fd)
        _read_only(libc, path)
    os.mkdir(WORKDIR, 0o700)
    if uid >= 0:
        os.chown(WORKDIR, uid, uid)
    return WORKDIR


# --------------------------------------------------------------------------- the program process
def limit_resources(limits: dict, drop_uid: bool) -> None:
    import resource

    wanted = {"RLIMIT_AS": limits["memory_mb"] << 20, "RLIMIT_CPU": limits["cpu_s"],
              "RLIMIT_FSIZE": limits["file_mb"] << 20, "RLIMIT_CORE": 0}
    if drop_uid:
        wanted["RLIMIT_NPROC"] = limits["nproc"]
    for name, value in wanted.items():
        if hasattr(resource, name):
            resource.setrlimit(getattr(resource, name), (value, value))


def program_process(program: str, cfg: dict, workdir: str, requests: int, answers: int) -> None:
    """Run the program, report its names, answer calls. Never returns."""
    write, exit_, loads, read = write_frame, os._exit, json.loads, read_frame  # bound before the program runs
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # the tests still wait in the judge's stdin
        os.close(null)
        uid = cfg["uid"]
        limit_resources(cfg["limits"], uid >= 0)
        if uid >= 0:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        elif cfg["nested_userns"]:  # no capability over the judge's user namespace
            _check(_libc().unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
        _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        os.chdir(workdir)
        os.environ.update(HOME=workdir, TMPDIR=workdir, PWD=workdir)
        namespace = {"__name__": "__sm_dream_program__", "__file__": os.path.join(workdir, "program.py"),
                     "__builtins__": builtins}
        exec(compile(program, "program.py", "exec"), namespace)
        callables = [k for k, v in list(namespace.items()) if callable(v) and not k.startswith("__")
                     and type(v).__name__ != "module"]
        modules = {k: v.__name__ for k, v in list(namespace.items()) if type(v).__name__ == "module"
                   and isinstance(getattr(v, "__name__", None), str)}
        write(answers, ["ready", callables, modules])
    except BaseException as error:  # noqa: B036  (SystemExit is a failure too)
        _report(answers, error)
        exit_(1)
    while True:
        try:
            name, args, kwargs, want_args = loads(read(requests))
        except BaseException:  # noqa: B036  (the judge is gone)
            exit_(0)
        try:
            args, kwargs = decode(args), decode(kwargs)
            result = namespace[name](*args, **kwargs)
            reply = ["ok", encode(result), encode(args) if want_args else None]
        except BaseException as error:  # noqa: B036
            _report(answers, error)
            continue
        try:
            write(answers, reply)
        except BaseException:  # noqa: B036
            exit_(1)


def _report(fd: int, error: BaseException) -> None:
    """Tell the judge (first: nothing after this may stop it), then print the traceback."""
    try:
        write_frame(fd, ["raise", type(error).__name__, str(error)[:500]])
    except BaseException:  # noqa: B036
        pass
    try:
        traceback.print_exception(type(error), error, error.__traceback__, limit=-3)
        sys.stderr.flush()
    except BaseException:  # noqa: B036
        pass


# --------------------------------------------------------------------------- the judge
class Channel:
    """The judge's end: calls into the program process, with per-call and per-program deadlines."""

    def __init__(self, requests: int, answers: int, deadline: float, call_timeout: float):
        self.requests, self.answers = requests, answers
        self.deadline, self.call_timeout = deadline, call_timeout
        self.failure = None  # (status, detail) once the program is beyond use

    def fail(self, status: str, detail: str):
        if self.failure is None:
            self.failure = (status, detail)
        raise ProgramGone(detail)

    def receive(self):
        if self.failure is not None:
            raise ProgramGone(self.failure[1])
        deadline = min(self.deadline, time.time() + self.call_timeout)
        try:
            return json.loads(read_frame(self.answers, deadline))
        except TimeoutError:
            status = "timeout"
            return self.fail(status, f"timed out ({'the program' if deadline == self.deadline else 'one call'})")
        except EOFError:
            return self.fail("failed", "the program process ended")
        except (ValueError, RecursionError, MemoryError) as error:
            return self.fail("failed", f"a malformed answer: {type(error).__name__}: {error}"[:300])

    def call(self, name: str, args: tuple, kwargs: dict):
        want_args = any(isinstance(a, (list, dict, set, bytearray)) for a in args)
        write_frame(self.requests, [name, encode(list(args)), encode(kwargs), want_args])
        answer = self.receive()
        try:
            if answer[0] == "raise":
                kind = getattr(builtins, str(answer[1]), None)
                kind = kind if isinstance(kind, type) and issubclass(kind, Exception) else ProgramError
                raise kind(f"{answer[1]} in the program: {answer[2]}")
            status, value, after = answer
            value = decode(value)
            if want_args:  # in-place changes of list, dict and set arguments, copied back
                for before, changed in zip(args, decode(after)):
                    if type(before) is type(changed) and isinstance(before, (list, bytearray)):
                        before[:] = changed
                    elif type(before) is type(changed) and isinstance(before, (dict, set)):
                        before.clear()
                        before.update(changed)
        except (ValueError, TypeError, IndexError, KeyError, RecursionError) as error:
            if answer[0] == "raise":
                raise
            return self.fail("failed", f"a malformed answer: {type(error).__name__}")
        return value


class Remote:
    """Stands for the program's function `name` in the tests."""

    def __init__(self, channel: Channel, name: str):
        self._channel, self.__name__ = channel, name

    def __call__(self, *args, **kwargs):
        return self._channel.call(self.__name__, args, kwargs)

    def __repr__(self):
        return f"<function {self.__name__} of the program>"


def _tree(contained: bool) -> list:
    """The program's processes: all but the judge in its PID namespace (contained), else those of
    the judge's session (a program that calls `setsid` leaves it: not bounded uncontained)."""
    me, session, found = os.getpid(), os.getsid(0), []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            try:
                if contained or os.getsid(int(name)) == session:
                    found.append(int(name))
            except OSError:
                continue
    return found


def _tree_rss(contained: bool) -> int:
    total = 0
    for pid in _tree(contained):
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total * os.sysconf("SC_PAGE_SIZE")


def kill_tree(contained: bool) -> None:
    try:
        if contained and os.getpid() == 1:
            os.kill(-1, signal.SIGKILL)  # from PID 1 of a PID namespace: every other process in it
            return
    except OSError:
        pass
    for pid in _tree(contained):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def watch_memory(channel: Channel, contained: bool, limit: int, done: threading.Event) -> None:
    """Kill the whole tree when the resident memory of its processes passes `limit`."""
    while not done.wait(POLL_S):
        used = _tree_rss(contained)
        if used > limit:
            if channel.failure is None:
                channel.failure = ("failed", f"memory: the process tree held {used >> 20} MiB "
                                             f"(limit {limit >> 20} MiB)")
            kill_tree(contained)
            return


def judge(cfg: dict, channel: Channel) -> tuple:
    first = channel.receive()
    if first[0] == "raise":
        return "failed", f"the program raised {first[1]}: {first[2]}"
    spec = json.loads(read_frame(0))
    _, callables, modules = first
    names = {"__name__": "__sm_dream_tests__", "__builtins__": builtins}
    exec(compile(spec["prelude"], "prelude.py", "exec"), names)
    proxied = set(spec["proxied"])
    for name in proxied - set(callables):
        return "failed", f"the program defines no {name}"
    for name in callables:
        if name in proxied or (name not in names and not hasattr(builtins, name)):
            names[name] = Remote(channel, name)
    for alias, module in modules.items():
        top = module.split(".")[0]
        if alias not in names and top in sys.stdlib_module_names and top not in SAFE_MODULES_EXCLUDED:
            try:
                names[alias] = __import__(module, fromlist=["_"] if "." in module else [])
            except Exception:  # noqa: BLE001
                pass
    try:
        exec(compile(spec["tests"], "tests.py", "exec"), names)
    except ProgramGone:
        pass
    except BaseException as error:  # noqa: B036  (a failed assert, or any error of the tests)
        if channel.failure is None:
            return "failed", f"{type(error).__name__}: {error}"[:500]
    if channel.failure is not None:
        return channel.failure
    return "passed", ""


def main(argv) -> None:
    cfg = json.loads(argv[1])
    contained = cfg["contained"]
    try:
        _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except Exception:  # noqa: BLE001
        pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1: signals without a handler are ignored
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]
    result_fd = cfg["result_fd"]
    verdict = ("failed", "the judge broke")
    try:
        program = read_frame(0).decode("utf-8", "replace")
        workdir = prepare_file_system(cfg["uid"]) if contained else cfg["workdir"]
        requests_r, requests_w = os.pipe()
        answers_r, answers_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        child = os.fork()
        if child == 0:
            for fd in (result_fd, requests_w, answers_r):
                os.close(fd)
            program_process(program, cfg, workdir, requests_r, answers_w)
        os.close(requests_r)
        os.close(answers_w)
        channel = Channel(requests_w, answers_r, cfg["deadline"], cfg["call_timeout"])
        done = threading.Event()
        threading.Thread(target=watch_memory, daemon=True,
                         args=(channel, contained, cfg["limits"]["tree_mb"] << 20, done)).start()
        try:
            verdict = judge(cfg, channel)
        except ProgramGone:
            verdict = channel.failure
        except BaseException as error:  # noqa: B036
            verdict = channel.failure or ("failed", f"{type(error).__name__}: {error}"[:500])
        done.set()
        kill_tree(contained)
    except BaseException as error:  # noqa: B036
        verdict = ("failed", f"the judge could not run the program: {type(error).__name__}: {error}"[:500])
    try:
        os.write(result_fd, json.dumps({"status": verdict[0], "detail": verdict[1]}).encode())
    finally:
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
