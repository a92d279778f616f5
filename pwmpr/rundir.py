"""Run-folder layout and atomic writes: the only module that knows the run folder's file names.

A run folder holds::

    config.json          the complete GrowConfig (written first; reproduces the run)
    history.jsonl        one JSON line per phase
    curve.png            accuracy vs density (vs epochs at one density), the stop rule's view, why it stopped
    checkpoints/phase-NNNN.safetensors   state after phase NNNN (weights, masks, optimizer, RNG, history)
    final.safetensors    final weights and masks
    summary.json         discovered density, test accuracy, cost vs dense, stop reason

Every file is written under a temporary name in the same folder and renamed into place, so a crash
never leaves a half-written file. Checkpoints are safetensors only: loading one never runs code.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from torch import Tensor

from pwmpr.errors import PwmprError

CONFIG = "config.json"
HISTORY = "history.jsonl"
CURVE = "curve.png"
SUMMARY = "summary.json"
FINAL = "final.safetensors"
CHECKPOINTS = "checkpoints"

# Key prefixes inside checkpoint and final safetensors files.
MODEL_PREFIX = "model/"
MASK_PREFIX = "mask/"
OPTIM_PREFIX = "optim/"
RNG_PREFIX = "rng/"
META_KEY = "pwmpr"


def folder_name(text: str) -> str:
    """``text`` (a model or data set name, an ``npz:PATH`` or a ``module:function``) made safe for a folder name."""
    return text.replace("npz:", "npz-").replace("/", "_").replace(":", "-")


def default_run_dir(cfg: Any) -> Path:
    """``runs/<method>-<model>-<data>-s<seed>-<hash of the config>`` (open_lth-style naming) for a GrowConfig."""
    digest = hashlib.md5(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return Path("runs") / f"{cfg.method}-{folder_name(cfg.model)}-{folder_name(cfg.data)}-s{cfg.seed}-{digest}"


def checkpoint_path(run_dir: Path, phase: int) -> Path:
    """Path of the checkpoint written after ``phase`` (0-based)."""
    return Path(run_dir) / CHECKPOINTS / f"phase-{phase:04d}.safetensors"


def checkpoints(run_dir: Path) -> list[Path]:
    """Existing phase checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    return sorted(folder.glob("phase-*.safetensors")) if folder.is_dir() else []


# OSErrors that mean "this output path cannot take the file": the user's to fix (free space, another folder),
# reported in one line. Any other OSError is a bug and keeps its traceback.
USER_OS_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                  errno.ENAMETOOLONG)
TMP_SUFFIX = ".tmp"
SET_ASIDE = ".replaced-"  # --force: the old run's files wait here until the new run's first checkpoint


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


def _atomic(path: Path, write) -> None:
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

    _atomic(path, write)


def atomic_save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG to ``path`` via a temporary file and a rename."""
    _atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_history(run_dir: Path, rows: Iterable[dict]) -> None:
    """Rewrite ``history.jsonl`` with one line per phase, atomically."""
    text = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
    atomic_write_text(Path(run_dir) / HISTORY, text)


def read_history(run_dir: Path) -> list[dict]:
    """The rows of ``history.jsonl`` (empty if there is none)."""
    path = Path(run_dir) / HISTORY
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


#: summary.json entries that must be finite numbers (``test_acc`` too, unless the run had no test split: None).
SUMMARY_NUMBERS = ("discovered_density", "cost_flops", "cost_epochs")


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The run's ``summary.json``, checked: a JSON object whose result entries are finite numbers; else PwmprError."""
    import math

    path = Path(run_dir) / SUMMARY
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PwmprError(f"{run_dir} has no {SUMMARY}: the run has not finished (continue it with --resume)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PwmprError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise PwmprError(f"{path} must hold a JSON object")

    def number(key: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PwmprError(f"{path}: {key} must be a finite number, got {json.dumps(value)}")

    for key in SUMMARY_NUMBERS:
        number(key, data.get(key))
    for key in ("test_acc", "val_acc", "dense_reference_epochs", "wall_time"):  # optional, but a number when present
        if data.get(key) is not None:
            number(key, data[key])
    return data


def finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished run folder; None when it has none or it is unreadable (the run is not finished)."""
    try:
        return read_summary(run_dir)
    except PwmprError:
        return None


def save_tensors(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Save ``tensors`` plus JSON metadata to a safetensors file, atomically.

    The bytes are built in memory and written by Python, so a full disk is an OSError like any other write.
    ``PWMPR_TEST_SLOW_WRITE=SECONDS[:NAME]`` (tests only) pauses halfway through every write (of file NAME only,
    when given), so a test can kill the process while a checkpoint is half-written.
    """
    from safetensors.torch import save

    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {"format": "pt", META_KEY: json.dumps(meta, default=_json_default)}
    blob = save(flat, metadata=metadata)
    seconds, _, only = os.environ.get("PWMPR_TEST_SLOW_WRITE", "").partition(":")
    pause = float(seconds or 0) if not only or only == Path(path).name else 0.0

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            half = len(blob) // 2
            fh.write(blob[:half])
            if pause:
                fh.flush()
                time.sleep(pause)
            fh.write(blob[half:])

    _atomic(Path(path), write)


def load_tensors(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load a safetensors file written by ``save_tensors``: (tensors, metadata JSON)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise PwmprError(f"file not found: {path}") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise PwmprError(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        meta = json.loads(raw.get(META_KEY, "{}"))
    except json.JSONDecodeError:
        raise PwmprError(f"{path} has unreadable pwmpr metadata") from None
    return tensors, meta


def split_prefix(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _is_leftover(p: Path) -> bool:
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
        if not all(_is_leftover(p) and p.is_file() for p in entries):
            return False
        for p in entries:
            p.unlink(missing_ok=True)
        folder.rmdir()
    except OSError:  # someone else is writing there now, or it went already: leave it
        return False
    return True


def check_out_dir(run_dir: Path, *, force: bool) -> None:
    """Refuse an output folder that is a file, is unwritable, or is non-empty (unless ``force`` and a run folder).

    pwmpr's own leftovers (a lock, ``.*.tmp`` files of a killed writer) do not make a folder non-empty.
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
    if not folder.is_dir() or all(_is_leftover(p) for p in folder.iterdir()):
        return False
    if not force:
        raise PwmprError(f"output directory {folder} is not empty; pass {resume} or --force to overwrite it")
    if not is_kind(folder):
        raise PwmprError(f"--force replaces a {kind}, and {folder} is not one (it has no {marker}): pick another "
                         "--out")
    return True


def clean_leftovers(run_dir: Path) -> list[str]:
    """Remove what a dead writer left in ``run_dir``: ``.NAME.*.tmp`` files, here and in checkpoints/.

    Call it only while holding the folder's lock (then no live process is writing them). Returns what went.
    """
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


def is_run_dir(path: Path) -> bool:
    """True when ``path`` holds a pwmpr run (its config.json or checkpoints/)."""
    return (Path(path) / CONFIG).is_file() or (Path(path) / CHECKPOINTS).is_dir()


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


def clear_run_dir(run_dir: Path) -> None:
    """Remove the files a previous run left in ``run_dir`` (kept for API users; the CLI uses set_aside)."""
    run_dir = Path(run_dir)
    for name in (CONFIG, HISTORY, CURVE, SUMMARY, FINAL):
        (run_dir / name).unlink(missing_ok=True)
    for ck in checkpoints(run_dir):
        ck.unlink()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, float):
        return obj
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
