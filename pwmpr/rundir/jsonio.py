"""The run folder's JSON files: writing any object as JSON, ``history.jsonl`` and the checked ``summary.json``."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import Tensor

from pwmpr.errors import PwmprError
from pwmpr.rundir.atomic import atomic_write_text
from pwmpr.rundir.layout import HISTORY, SUMMARY


def json_default(obj: Any) -> Any:
    """What ``json.dumps`` writes for a tensor (a list), a path (a string) or a config (its ``to_dict()``)."""
    if isinstance(obj, Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, float):
        return obj
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def write_history(run_dir: Path, rows: Iterable[dict]) -> None:
    """Rewrite ``history.jsonl`` with one line per phase, atomically."""
    text = "".join(json.dumps(r, default=json_default) + "\n" for r in rows)
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
