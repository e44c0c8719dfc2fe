# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""User errors and the shared checks behind their messages.

A `UserError` is a mistake in what the user gave (a flag, a YAML key, a path, a budget): the entry
points (`sm-dream`, the recipe scripts, `sm-dream-eval`) print it as one line

    error: <field>=<value> ... <where it came from> ... <the fix>

on stderr and exit with status 2, without a traceback. `--debug` (or `SM_DREAM_DEBUG=1`) shows the
traceback; any other exception is an internal error and keeps its traceback.

Under `accelerate launch` and `torchrun` (launchers started after sm_dream was installed), the
launcher then exits with status 2 too, without a traceback of its own: the child's `error:` line is
the message (`sm_dream/evaluation/registration.py`). torchrun still logs which rank failed.
"""

import os
import sys
from contextlib import contextmanager
from difflib import get_close_matches
from typing import Iterable, List, Optional

DEBUG_FLAG = "--debug"
DEBUG_ENV = "SM_DREAM_DEBUG"
EXIT_USER_ERROR = 2  # argparse's status for a bad command line
USER_ERROR_FILE = "SM_DREAM_USER_ERROR_FILE"  # see sm_dream/evaluation/registration.py


class UserError(ValueError):
    """A mistake in the user's arguments, recipe, paths or data (a `ValueError`, so callers that catch
    `ValueError` keep working)."""


def did_you_mean(name: str, valid: Iterable[str], prefix: str = "") -> str:
    """' (did you mean 'x'?)' for the closest of `valid` to `name` (`prefix` added to both, e.g. '--'),
    or '' when nothing is close (difflib's ratio >= 0.6)."""
    close = get_close_matches(str(name), sorted(valid), n=1)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""


def positive_int(name: str, value, allow_none: bool = False, whole_floats: bool = False,
                 hint: str = "") -> Optional[int]:
    """`value` as an int >= 1, else `UserError` naming `name`. A bool is never a count (True is an int in
    Python); `whole_floats` accepts 3.0 (lm-eval parses `k=3.0` to a float); None only with `allow_none`."""
    if value is None and allow_none:
        return None
    import numbers

    integral = isinstance(value, numbers.Integral) or (
        whole_floats and isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or value < 1:
        raise UserError(f"{name}={value!r} must be a positive integer{hint}.")
    return int(value)


def debug_requested(argv: Optional[List[str]] = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes", "on")


def strip_debug(argv: List[str]) -> List[str]:
    """`argv` without `--debug` (the argument parsers behind the entry points do not know it)."""
    return [a for a in argv if a != DEBUG_FLAG]


def is_main_process() -> bool:
    """Rank 0 of a launched run (accelerate / torchrun set RANK), or a single process."""
    return os.environ.get("RANK", "0") == "0"


def report_user_error(err: BaseException, prog: str = "") -> None:
    """The one line a user sees (every rank fails the same way; only rank 0 prints)."""
    if is_main_process():
        text = str(err).strip() or type(err).__name__
        print(f"{prog + ': ' if prog else ''}error: {text}", file=sys.stderr, flush=True)
    marker = os.environ.get(USER_ERROR_FILE)
    if marker:  # set by a launcher (accelerate launch, torchrun): it then exits 2 without a traceback
        try:
            open(marker, "a").close()
        except OSError:
            pass


@contextmanager
def user_errors(prog: str = "", debug: Optional[bool] = None):
    """Turn a `UserError` raised inside into its one line on stderr and exit status 2 (the traceback
    with --debug / SM_DREAM_DEBUG=1). Other exceptions pass through unchanged."""
    try:
        yield
    except UserError as err:
        if debug_requested() if debug is None else debug:
            raise
        report_user_error(err, prog)
        raise SystemExit(EXIT_USER_ERROR) from None


@contextmanager
def as_user_error():
    """Inside, a `ValueError` is the user's (argument and recipe checks that run before anything
    loads): re-raised as `UserError` with the same message."""
    try:
        yield
    except UserError:
        raise
    except ValueError as err:
        raise UserError(str(err)) from err


def looks_like_local_path(name: str) -> bool:
    """A name meant as a folder on disk rather than a Hub id: starts with ./ ../ / ~, or has a path
    separator other than the one '/' of 'org/name'."""
    text = str(name)
    return (text.startswith((".", "/", "~")) or text.count("/") > 1
            or (os.sep != "/" and os.sep in text))


def check_local_model_path(field: str, name) -> None:
    """`UserError` for a name that looks like a local path (see above) and does not exist, distinct
    from a malformed Hub id."""
    if name is None or not looks_like_local_path(name):
        return
    if not os.path.exists(os.path.expanduser(str(name))):
        raise UserError(f"{field}={str(name)!r}: model path {name} does not exist (no such folder); "
                        "give an existing folder or a Hub id like 'org/name'.")
