"""The CLI's error boundary: a PwmprError becomes one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import typer

from pwmpr.errors import PwmprError

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
        except KeyboardInterrupt:
            print("interrupted: no half-written file was left (a run folder keeps its last checkpoint: continue it "
                  "with --resume)", file=sys.stderr)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]
