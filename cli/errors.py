"""The CLI's error boundary: a PwmprError becomes one line on stderr and exit code 2, never a traceback.

So does an OSError that says the output path cannot take the files (no space, read-only, forbidden: see
``pwmpr.rundir.USER_OS_ERRORS``); every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import typer

from pwmpr.errors import PwmprError
from pwmpr.rundir import USER_OS_ERRORS

F = TypeVar("F", bound=Callable)


def boundary(fn: F) -> F:
    """Wrap a command body: user mistakes exit 2 with ``error: <message>``; bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PwmprError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise typer.Exit(code=2) from None
        except OSError as exc:  # a full disk, a read-only or forbidden output path: the user's to fix
            if exc.errno not in USER_OS_ERRORS:
                raise
            where = f" {exc.filename}" if exc.filename else ""
            print(f"error: cannot write{where}: {exc.strerror or exc}", file=sys.stderr, flush=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            print("interrupted: no half-written file was left (a run folder keeps its last checkpoint: continue it "
                  "with --resume)", file=sys.stderr)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]
