"""Atomic writes: every file goes under a temporary name in its folder, then is renamed into place.

A crash never leaves a half-written file; a full disk or an unwritable folder is one line for the user.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pwmpr.errors import PwmprError
from pwmpr.rundir.layout import TMP_SUFFIX

# OSErrors that mean "this output path cannot take the file": the user's to fix (free space, another folder),
# reported in one line. Any other OSError is a bug and keeps its traceback.
USER_OS_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                  errno.ENAMETOOLONG)

PROC_STATUS = Path("/proc/self/status")  # Linux 4.7+: a "Umask:" line


def umask() -> int:
    """The process umask, read without changing it: from ``/proc/self/status``, else from the mode of a folder
    made for the purpose (setting the umask to read it would let another thread create a file world-writable)."""
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with tempfile.TemporaryDirectory() as tmp:  # owner-only, so the probe is no one else's to see or change
        probe = Path(tmp) / "probe"
        probe.mkdir(mode=0o777)  # the kernel applies the umask to the mode asked for
        return 0o777 & ~probe.stat().st_mode


def write_error(path: Path, exc: OSError) -> PwmprError:
    """The one-line error for an OSError of ``USER_OS_ERRORS`` while writing ``path``."""
    return PwmprError(f"cannot write {path}: {exc.strerror or exc}; nothing half-written was left")


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write ``path`` by calling ``write(temporary path)``, then fsync and rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        if exc.errno in USER_OS_ERRORS or isinstance(exc, (NotADirectoryError, FileExistsError)):
            raise write_error(path, exc) from None
        raise
    try:
        write(tmp)
        # After the write: some writers (safetensors, matplotlib) re-create the file, dropping an earlier chmod.
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes files owner-only; give them the usual permissions
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in USER_OS_ERRORS:
            raise write_error(path, exc) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, write)


def atomic_save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG to ``path`` via a temporary file and a rename."""
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
