"""Run folders in tests: the history, the history without its wall-clock fields, and a grow-then-export run."""

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


def grow_and_export(grow_args: list[str], tmp_path: Path) -> tuple[dict, dict]:
    """``pwmpr grow GROW_ARGS --out tmp_path/run`` then ``pwmpr export`` of that run, each asserted to exit 0: the
    run's ``summary.json`` and the export's ``export_report.json``."""
    from typer.testing import CliRunner

    from pwmpr.cli.app import app

    run, export = Path(tmp_path) / "run", Path(tmp_path) / "export"
    runner = CliRunner()
    grown = runner.invoke(app, ["grow", *grow_args, "--out", str(run)])
    assert grown.exit_code == 0, grown.output
    exported = runner.invoke(app, ["export", str(run), "--out", str(export), "-q"])
    assert exported.exit_code == 0, exported.output
    return (json.loads((run / "summary.json").read_text()),
            json.loads((export / "export_report.json").read_text()))
