"""Safetensors files of tensors plus JSON metadata (checkpoints, final weights, exports): loading one runs no code."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from torch import Tensor

from pwmpr.errors import PwmprError
from pwmpr.rundir.atomic import atomic_write
from pwmpr.rundir.jsonio import json_default
from pwmpr.rundir.layout import META_KEY


def _slow_write_from_env() -> tuple[float, str]:
    """``PWMPR_TEST_SLOW_WRITE=SECONDS[:NAME]`` as ``(seconds, name or "")``; ``(0.0, "")`` when unset."""
    seconds, _, only = os.environ.get("PWMPR_TEST_SLOW_WRITE", "").partition(":")
    return float(seconds or 0), only


#: Tests only: ``save_tensors`` pauses this many seconds halfway through every write (of the file named here only,
#: when a name is given), so a test can kill the process while a checkpoint is half-written. Read once, at import,
#: from ``PWMPR_TEST_SLOW_WRITE=SECONDS[:NAME]`` (a test sets it in the environment of the process it starts).
SLOW_WRITE: tuple[float, str] = _slow_write_from_env()


def save_tensors(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Save ``tensors`` plus JSON metadata to a safetensors file, atomically.

    The bytes are built in memory and written by Python, so a full disk is an OSError like any other write.
    """
    from safetensors.torch import save

    flat, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        if v.numel() and v.untyped_storage().data_ptr() in seen:  # a tied weight's second name: its own copy
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        flat[k] = v
    metadata = {"format": "pt", META_KEY: json.dumps(meta, default=json_default)}
    blob = save(flat, metadata=metadata)
    seconds, only = SLOW_WRITE
    pause = seconds if not only or only == Path(path).name else 0.0

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            half = len(blob) // 2
            fh.write(blob[:half])
            if pause:
                fh.flush()
                time.sleep(pause)
            fh.write(blob[half:])

    atomic_write(Path(path), write)


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
