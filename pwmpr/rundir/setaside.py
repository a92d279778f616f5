"""``--force``: the old run's files are set aside, not deleted, until the new run writes its first checkpoint."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pwmpr.errors import PwmprError
from pwmpr.rundir.layout import CHECKPOINTS, CONFIG, SET_ASIDE, checkpoints, is_run_dir


def set_aside(run_dir: Path) -> Path | None:
    """--force: move the old run's files (all but the lock) into ``RUN/.replaced-PID/``; None if there were none.

    Nothing is deleted here: :func:`drop_set_aside` deletes them once the new run has written its first
    checkpoint, :func:`restore_set_aside` puts them back if it fails before that.
    """
    from pwmpr.lock import RUN_LOCK

    run_dir = Path(run_dir)
    entries = [p for p in run_dir.iterdir() if p.name != RUN_LOCK and not p.name.startswith(SET_ASIDE)]
    if not entries:
        return None
    if not is_run_dir(run_dir):
        raise PwmprError(f"--force replaces a pwmpr run folder, and {run_dir} is not one (it has no {CONFIG} and no "
                         f"{CHECKPOINTS}/): pick another --out")
    aside = run_dir / f"{SET_ASIDE}{os.getpid()}"
    aside.mkdir()
    # checkpoints/ first: a --force killed part-way then leaves no checkpoint behind, so recover_set_aside
    # restores the old files instead of taking them for a finished replacement.
    for p in sorted(entries, key=lambda p: p.name != CHECKPOINTS):
        os.replace(p, aside / p.name)
    return aside


def restore_set_aside(run_dir: Path, aside: Path) -> None:
    """Put the files :func:`set_aside` moved back in place of whatever the new run wrote."""
    from pwmpr.lock import RUN_LOCK

    run_dir = Path(run_dir)
    for p in run_dir.iterdir():
        if p.name != RUN_LOCK and p != aside and not p.name.startswith(SET_ASIDE):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for p in aside.iterdir():
        os.replace(p, run_dir / p.name)
    aside.rmdir()


def drop_set_aside(aside: Path | None) -> None:
    """Delete the old run's files set aside by :func:`set_aside`."""
    if aside is not None and aside.exists():
        shutil.rmtree(aside)


def recover_set_aside(run_dir: Path) -> list[str]:
    """Under the lock: finish what a --force killed by SIGKILL left. The old files come back when the new run
    wrote no checkpoint; otherwise they are deleted. Returns notes for the user."""
    run_dir = Path(run_dir)
    notes = []
    for aside in sorted(run_dir.glob(f"{SET_ASIDE}*")):
        if not aside.is_dir():
            continue
        if checkpoints(run_dir):
            shutil.rmtree(aside)
            notes.append(f"removed {aside.name}: the files of a run replaced by --force")
        else:
            restore_set_aside(run_dir, aside)
            notes.append(f"restored the files a --force replacement (killed before its first checkpoint) had set "
                         f"aside in {aside.name}")
    return notes
