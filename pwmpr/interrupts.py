"""Holding a Ctrl-C back while code that must not be interrupted runs."""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def deferred_interrupt():
    """Hold a Ctrl-C (SIGINT) back until the block ends, then raise KeyboardInterrupt.

    For code a KeyboardInterrupt must not land inside (matplotlib's renderer turns one into "Invalid bounding
    box" errors); the block takes well under a second. Outside the main thread it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
