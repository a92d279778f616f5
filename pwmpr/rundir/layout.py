"""The run folder's file names and paths: the only module that knows them (the layout is in ``pwmpr.rundir``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

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

TMP_SUFFIX = ".tmp"
SET_ASIDE = ".replaced-"  # --force: the old run's files wait here until the new run's first checkpoint


def folder_name(text: str) -> str:
    """``text`` (a model or data set name, an ``npz:PATH`` or a ``module:function``) made safe for a folder name."""
    return text.replace("npz:", "npz-").replace("/", "_").replace(":", "-")


def default_run_dir(cfg: Any) -> Path:
    """``runs/<method>-<model>-<data>-s<seed>-<hash of the config>`` (open_lth-style naming) for a RunConfig."""
    digest = hashlib.md5(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return Path("runs") / f"{cfg.method}-{folder_name(cfg.model)}-{folder_name(cfg.data)}-s{cfg.seed}-{digest}"


def checkpoint_path(run_dir: Path, phase: int) -> Path:
    """Path of the checkpoint written after ``phase`` (0-based)."""
    return Path(run_dir) / CHECKPOINTS / f"phase-{phase:04d}.safetensors"


def checkpoints(run_dir: Path) -> list[Path]:
    """Existing phase checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    return sorted(folder.glob("phase-*.safetensors")) if folder.is_dir() else []


def is_run_dir(path: Path) -> bool:
    """True when ``path`` holds a pwmpr run (its config.json or checkpoints/)."""
    return (Path(path) / CONFIG).is_file() or (Path(path) / CHECKPOINTS).is_dir()
