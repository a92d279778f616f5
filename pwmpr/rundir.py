"""Run-folder layout and atomic writes: the only module that knows the run folder's file names.

A run folder holds::

    config.json          the complete GrowConfig (written first; reproduces the run)
    history.jsonl        one JSON line per phase
    curve.png            validation accuracy vs density, fitted curve, rho*
    checkpoints/phase-NNNN.safetensors   state after phase NNNN (weights, masks, optimizer, RNG, history)
    final.safetensors    final weights and masks
    summary.json         discovered density, test accuracy, cost vs dense, stop reason

Every file is written under a temporary name in the same folder and renamed into place, so a crash
never leaves a half-written file. Checkpoints are safetensors only: loading one never runs code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
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


def default_run_dir(cfg: Any) -> Path:
    """``runs/<method>-<model>-<data>-s<seed>-<hash of the config>`` (open_lth-style naming) for a GrowConfig."""
    digest = hashlib.md5(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    data = cfg.data.replace("npz:", "npz-").replace("/", "_")
    return Path("runs") / f"{cfg.method}-{cfg.model}-{data}-s{cfg.seed}-{digest}"


def checkpoint_path(run_dir: Path, phase: int) -> Path:
    """Path of the checkpoint written after ``phase`` (0-based)."""
    return Path(run_dir) / CHECKPOINTS / f"phase-{phase:04d}.safetensors"


def checkpoints(run_dir: Path) -> list[Path]:
    """Existing phase checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    return sorted(folder.glob("phase-*.safetensors")) if folder.is_dir() else []


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files owner-only; give them the usual permissions
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
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


def save_tensors(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Save ``tensors`` plus JSON metadata to a safetensors file, atomically."""
    from safetensors.torch import save_file

    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {"format": "pt", META_KEY: json.dumps(meta, default=_json_default)}
    _atomic(Path(path), lambda tmp: save_file(flat, tmp, metadata=metadata))


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


def rng_to_tensor(state: Tensor) -> Tensor:
    """A generator state as a uint8 tensor (it already is one; copied for safety)."""
    return state.clone().to(torch.uint8)


def check_out_dir(run_dir: Path, *, force: bool) -> None:
    """Refuse an output folder that is a file, is unwritable, or is non-empty (unless ``force``)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise PwmprError(f"output path {run_dir} exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not force:
        raise PwmprError(f"output directory {run_dir} is not empty; pass --resume {run_dir} to continue it "
                         "or --force to overwrite it")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".probe", delete=True):
            pass
    except OSError as exc:
        raise PwmprError(f"output directory {run_dir} is not writable: {exc.strerror or exc}") from None


def clear_run_dir(run_dir: Path) -> None:
    """Remove the files a previous run left in ``run_dir`` (for --force)."""
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
