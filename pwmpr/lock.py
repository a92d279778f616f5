"""One writer per folder: an advisory ``fcntl.flock`` lock file that holds the writer's pid.

Run folders lock ``RUN/.pwmpr.lock``, an export's ``--out`` ``.OUT.lock`` beside it; a second writer gets
``error: ... is locked by pid N``. A lock left by a dead process is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from pwmpr.errors import PwmprError

RUN_LOCK = ".pwmpr.lock"


def holder_pid(path: Path) -> int | None:
    """The pid written in lock file ``path`` (None when unreadable)."""
    try:
        return int(Path(path).read_text().strip() or "x")
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """An exclusive lock on ``path`` (a lock file); ``what`` names the locked thing in the error."""

    def __init__(self, path: Path | str, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock or raise PwmprError naming the holder's pid."""
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise PwmprError(f"cannot lock {self.what}: {self.path}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                pid = holder_pid(self.path)
                who = f"pid {pid}" if pid is not None else "another process"
                raise PwmprError(f"{self.what} is locked by {who}, which is writing it ({self.path}); wait for it "
                                 "to finish or stop it first") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file between our open and our lock: try again
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
            return self
        raise PwmprError(f"cannot lock {self.what}: {self.path} keeps changing")

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_run_dir(run_dir: Path | str) -> FolderLock:
    """The (taken) lock of run folder ``run_dir``; the folder must exist."""
    return FolderLock(Path(run_dir) / RUN_LOCK, f"run folder {run_dir}").acquire()


def lock_run_dir_for_reading(run_dir: Path | str) -> FolderLock | None:
    """The lock of a run folder that is only read (export): taken where it can be, so that no grow, resume or
    --force writes the folder meanwhile; None for a folder this process cannot write (a read-only copy)."""
    path = Path(run_dir) / RUN_LOCK
    if not os.access(Path(run_dir), os.W_OK):
        return None
    try:
        return FolderLock(path, f"run folder {run_dir}").acquire()
    except PwmprError:
        if path.exists():  # held by a live writer (which may not have written its pid yet)
            raise
        return None


def lock_beside(out: Path | str, what: str) -> FolderLock:
    """The (taken) lock ``.NAME.lock`` beside folder ``out`` (its parent must exist)."""
    out = Path(out)
    return FolderLock(out.parent / f".{out.name}.lock", f"{what} {out}").acquire()
