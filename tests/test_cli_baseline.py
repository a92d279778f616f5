"""`pwmpr baseline dense|imp|oneshot` end to end on tiny settings: run folders, costs, options, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from pwmpr.cli.app import app

runner = CliRunner()
TINY = ["--data", "digits", "--model", "mlp", "--epochs", "1", "--batch-size", "64", "--max-train", "400",
        "--no-tau-core", "-q"]


def _baseline(*args: str):
    return runner.invoke(app, ["baseline", *args])


def _history(run: Path):
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def _check_run_folder(run: Path, n_rows: int) -> dict:
    for name in ("config.json", "history.jsonl", "summary.json", "final.safetensors", "curve.png"):
        assert (run / name).is_file(), name
    assert len(list((run / "checkpoints").glob("phase-*.safetensors"))) == n_rows
    final = load_file(run / "final.safetensors")
    masks = {k[5:]: v for k, v in final.items() if k.startswith("mask/")}
    weights = {k[6:]: v for k, v in final.items() if k.startswith("model/")}
    assert masks and all((weights[n][~m] == 0).all() for n, m in masks.items())
    assert len(_history(run)) == n_rows
    return json.loads((run / "summary.json").read_text())


def test_dense_is_one_run_at_density_one_costing_one_dense_run(tmp_path):
    result = _baseline("dense", *TINY, "--out", str(tmp_path / "dense"))
    assert result.exit_code == 0, result.output
    summary = _check_run_folder(tmp_path / "dense", 1)
    cfg = json.loads((tmp_path / "dense" / "config.json").read_text())
    assert cfg["method"] == "dense" and cfg["final_epochs"] == 1 and cfg["reference_epochs"] == 1
    assert summary["discovered_density"] == 1.0
    assert summary["cost_flops"] == pytest.approx(1.0) and summary["cost_epochs"] == pytest.approx(1.0)


def test_imp_records_every_level_as_a_point_of_its_curve(tmp_path):
    run = tmp_path / "imp"
    result = _baseline("imp", *TINY, "--levels", "2", "--variant", "rewind", "--rewind-step", "2",
                       "--keep-checkpoints", "0", "--out", str(run))
    assert result.exit_code == 0, result.output
    summary = _check_run_folder(run, 3)
    rows = _history(run)
    assert [r["n_nonzero"] for r in rows] == [50200, 40160, 32128]  # ceil(0.2 * remaining) per level
    assert [r["decision"] for r in rows] == ["prune", "prune", "max-levels"]
    assert all(0 <= r["test_acc"] <= 1 for r in rows) and rows[-1]["test_acc"] == summary["test_acc"]
    assert [r["cost_epochs"] for r in rows] == [1.0, 2.0, 3.0]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["options"]["variant"] == "rewind" and cfg["options"]["rewind_step"] == 2
    assert cfg["options"]["prune_fraction"] == 0.2 and cfg["final_epochs"] == 0
    checkpoint = load_file(run / "checkpoints" / "phase-0000.safetensors")
    assert any(k.startswith("rewind/") for k in checkpoint)  # the rewind point survives for --resume


def test_imp_resume_continues_from_the_last_level(tmp_path):
    run = tmp_path / "imp"
    assert _baseline("imp", *TINY, "--levels", "1", "--variant", "lr-rewind", "--out", str(run)).exit_code == 0
    before = _history(run)
    (run / "summary.json").unlink()
    (run / "checkpoints" / "phase-0001.safetensors").unlink()  # as if killed during level 1
    result = _baseline("imp", "--resume", str(run), "-q")
    assert result.exit_code == 0, result.output
    strip = [{k: v for k, v in r.items() if not k.startswith("wall")} for r in _history(run)]
    assert strip == [{k: v for k, v in r.items() if not k.startswith("wall")} for r in before]


def test_oneshot_trains_one_fixed_mask(tmp_path):
    run = tmp_path / "os"
    result = _baseline("oneshot", *TINY, "--method", "random", "--density", "0.2", "--out", str(run))
    assert result.exit_code == 0, result.output
    summary = _check_run_folder(run, 1)
    assert summary["discovered_density"] == pytest.approx(0.2, abs=1e-4)
    assert summary["cost_flops"] == pytest.approx(0.2, abs=1e-3) and summary["cost_epochs"] == 1.0
    assert json.loads((run / "config.json").read_text())["options"] == {"pruner": "random", "density": 0.2}
    # A baseline run folder is a run folder like any other: it exports.
    exported = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "export")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "export" / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["imp", "--variant", "magic"], "IMP variant must be one of rewind, lr-rewind, continue"),
        (["imp", "--levels", "-1"], "levels must be >= 0"),
        (["imp", "--variant", "rewind", "--rewind-step", "100000"], "--rewind-step 100000 is past the end of level 0"),
        (["oneshot", "--method", "magic"], "unknown one-shot method 'magic'"),
        (["oneshot", "--density", "0"], "density must be in (0, 1]"),
        (["dense", "--epochs", "0"], "--epochs must be >= 1"),
        (["dense", "--model", "resnet21"], "unknown model 'resnet21'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    cmd, *rest = args
    result = _baseline(cmd, *TINY, *rest, "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "summary.json").exists()


def test_resume_refuses_other_flags(tmp_path):
    result = _baseline("imp", "--resume", str(tmp_path), "--variant", "continue")
    assert result.exit_code == 2 and "--resume takes the run folder's own config.json" in result.output


def test_help_lists_the_shared_flags():
    for cmd in ("dense", "imp", "oneshot"):
        result = runner.invoke(app, ["baseline", cmd, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        for flag in ("--model", "--data", "--data-dir", "--seed", "--device", "--out", "--epochs", "--force",
                     "--quiet", "--batch-size", "--lr", "--resume"):
            assert flag in result.output, (cmd, flag)
    out = runner.invoke(app, ["baseline", "imp", "--help"], env={"COLUMNS": "200"}).output
    assert "--variant" in out and "--rewind-step" in out and "--target-density" in out and "--levels" in out
