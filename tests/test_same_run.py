"""bench/same_run.py: two run folders are the same run only when config, history and final tensors agree bit for bit
(timings aside)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from same_run import differences  # noqa: E402


def _run(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"seed": 0, "stop": {"rule": "plateau"}}))
    rows = [{"phase": 0, "density": 0.05, "val_acc": 0.9, "wall_time": 1.0, "tau_core": {"seconds": 0.2, "tau": 3}}]
    (path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "summary.json").write_text(json.dumps({"test_acc": 0.9, "wall_time": 5.0}))
    save_file({"w": torch.tensor([1.0, -0.0, 2.5]), "mask": torch.tensor([1, 0, 1], dtype=torch.uint8)},
              str(path / "final.safetensors"))
    return path


def test_timings_do_not_count_and_one_changed_bit_does(tmp_path):
    a = _run(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    rows = [json.loads(line) for line in (b / "history.jsonl").read_text().splitlines()]
    rows[0]["wall_time"], rows[0]["tau_core"]["seconds"] = 9.0, 7.0  # the machine, not the run
    (b / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    diffs, counts = differences(a, b)
    assert diffs == [] and counts["final tensors"] == 2 and counts["history rows"] == 1
    save_file({"w": torch.tensor([1.0, 0.0, 2.5]), "mask": torch.tensor([1, 0, 1], dtype=torch.uint8)},
              str(b / "final.safetensors"))  # -0.0 became 0.0: equal as numbers, not as bits
    assert differences(a, b)[0] == ["final.safetensors: w differs"]
    rows[0]["tau_core"]["tau"] = 4
    (b / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "history row 0: tau_core: {'tau': 3} against {'tau': 4}" in differences(a, b)[0]


def test_a_field_one_commit_does_not_write_can_be_named_and_only_that_one(tmp_path):
    a = _run(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    rows = [json.loads(line) for line in (b / "history.jsonl").read_text().splitlines()]
    rows[0]["plateau_fit"] = {"slope": 0.001}
    (b / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert differences(a, b)[0] == ["history row 0: plateau_fit: None against {'slope': 0.001}"]
    assert differences(a, b, frozenset({"plateau_fit"}))[0] == []
    rows[0]["val_acc"] = 0.91
    (b / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert differences(a, b, frozenset({"plateau_fit"}))[0] == ["history row 0: val_acc: 0.9 against 0.91"]
