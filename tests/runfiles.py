"""Reading run folders in tests: the history, and the history without its wall-clock fields."""

from __future__ import annotations

import json
from pathlib import Path


def history(run: Path) -> list[dict]:
    """The rows of ``run/history.jsonl``."""
    return [json.loads(line) for line in (Path(run) / "history.jsonl").read_text().splitlines()]


def without_timing(rows: list[dict]) -> list[dict]:
    """History rows without wall-clock fields (the tau-core's timing included), which differ between two runs."""
    def clean(r: dict) -> dict:
        out = {k: v for k, v in r.items() if not k.startswith("wall")}
        if isinstance(out.get("tau_core"), dict):
            out["tau_core"] = {k: v for k, v in out["tau_core"].items() if k not in ("seconds", "share_of_training")}
        return out

    return [clean(r) for r in rows]
