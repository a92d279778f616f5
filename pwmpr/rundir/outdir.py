"""The policy for an output folder (``--out``): create it, refuse a non-empty one unless ``--force`` may replace
it, tell pwmpr's own leftovers from results, and clean those leftovers up."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from pwmpr.errors import PwmprError
from pwmpr.rundir.layout import (
    CHECKPOINTS,
    CONFIG,
    CURVE,
    FINAL,
    HISTORY,
    SET_ASIDE,
    SUMMARY,
    TMP_SUFFIX,
    checkpoints,
    is_run_dir,
)


def is_leftover(p: Path) -> bool:
    """Names only pwmpr's own temporary files, locks and set-aside folders have (hidden; never results)."""
    from pwmpr.lock import RUN_LOCK

    return p.name == RUN_LOCK or (p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)) or \
        p.name.startswith(SET_ASIDE)


def make_out_dir(run_dir: Path) -> None:
    """Create the output folder; refuse one that is a file or is unwritable."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise PwmprError(f"output path {run_dir} exists and is not a directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".probe", delete=True):
            pass
    except OSError as exc:
        raise PwmprError(f"output directory {run_dir} is not writable: {exc.strerror or exc}") from None


def remove_if_empty(folder: Path) -> bool:
    """Remove ``folder`` when it holds nothing but pwmpr's leftovers (a failed command's own empty ``--out``)."""
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
        if not all(is_leftover(p) and p.is_file() for p in entries):
            return False
        for p in entries:
            p.unlink(missing_ok=True)
        folder.rmdir()
    except OSError:  # someone else is writing there now, or it went already: leave it
        return False
    return True


def check_out_dir(run_dir: Path, *, force: bool) -> None:
    """Refuse an output folder that is a file, unwritable, or non-empty (unless ``force`` and a run folder).

    pwmpr's own leftovers (a lock, ``.*.tmp`` files) do not count.
    """
    run_dir = Path(run_dir)
    make_out_dir(run_dir)
    check_replaceable(run_dir, force=force, kind="pwmpr run folder", is_kind=is_run_dir,
                      marker=f"{CONFIG} and no {CHECKPOINTS}/", resume=f"--resume {run_dir} to continue it")


def check_replaceable(folder: Path, *, force: bool, kind: str, is_kind: Callable[[Path], bool], marker: str,
                      resume: str) -> bool:
    """Whether ``folder`` holds anything but pwmpr's leftovers, which only ``force`` may replace, and only when it
    is a folder of ``kind`` (``is_kind``; ``marker`` names what one has); otherwise refuse with PwmprError."""
    folder = Path(folder)
    if not folder.is_dir() or all(is_leftover(p) for p in folder.iterdir()):
        return False
    if not force:
        raise PwmprError(f"output directory {folder} is not empty; pass {resume} or --force to overwrite it")
    if not is_kind(folder):
        raise PwmprError(f"--force replaces a {kind}, and {folder} is not one (it has no {marker}): pick another "
                         "--out")
    return True


def clean_leftovers(run_dir: Path) -> list[str]:
    """Remove a dead writer's ``.NAME.*.tmp`` files in ``run_dir`` and checkpoints/ (hold the lock); return them."""
    run_dir = Path(run_dir)
    gone = []
    for folder in (run_dir, run_dir / CHECKPOINTS):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file():
                p.unlink(missing_ok=True)
                gone.append(str(p.relative_to(run_dir)))
    return gone


def clear_run_dir(run_dir: Path) -> None:
    """Remove the files a previous run left in ``run_dir`` (kept for API users; the CLI uses set_aside)."""
    run_dir = Path(run_dir)
    for name in (CONFIG, HISTORY, CURVE, SUMMARY, FINAL):
        (run_dir / name).unlink(missing_ok=True)
    for ck in checkpoints(run_dir):
        ck.unlink()
