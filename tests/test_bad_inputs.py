"""Bad input through the CLI: each case is one line ``error: ...``, exit code 2, no traceback, nothing half-written.

``CASES`` is also the source of ``docs/bad-inputs.md`` (``python docs/bad_inputs.py`` writes it; a test below checks
that the file is current), so the table of tested bad inputs cannot drift from the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pwmpr.cli.app import app

runner = CliRunner()
TINY = ["--data", "digits", "--model", "mlp", "--phase-epochs", "1", "--final-epochs", "1", "--max-phases", "2",
        "--batch-size", "64", "--seed-density", "0.1", "--no-tau-core", "-q"]

SWEEP_TINY = ["--data", "digits", "--model", "mlp", "--epochs", "1", "--batch-size", "64", "-q"]
BASELINE_TINY = ["--data", "digits", "--model", "mlp", "--epochs", "1", "--batch-size", "64", "--no-tau-core", "-q"]


@dataclass
class Case:
    """One bad input: ``args(tmp, run)`` builds the command line (``run``: a finished tiny run folder)."""

    id: str
    command: str
    what: str  # the bad input, in words (a row of docs/bad-inputs.md)
    args: Callable[[Path, Path], list[str]]
    message: str  # a part of the one-line error


def _npz(tmp: Path, name: str, **arrays) -> str:
    np.savez(tmp / name, **arrays)
    return f"npz:{tmp / name}"


def _digits_like(n: int = 200, labels=None) -> dict:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n) if labels is None else labels
    return {"x": rng.normal(size=(n, 8)).astype(np.float32), "y": y}


def _object_npz(tmp: Path) -> str:
    path = tmp / "objects.npz"
    arr = np.empty(200, dtype=object)
    arr[:] = [{"a": i} for i in range(200)]
    np.savez(path, x=arr, y=np.zeros(200, dtype=int))
    return f"npz:{path}"


def _foreign_zip(tmp: Path) -> str:
    path = tmp / "notes.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not arrays")
        z.writestr("x", "hello")
    return f"npz:{path}"


def _text(tmp: Path, name: str, content: bytes) -> str:
    path = tmp / name
    path.write_bytes(content)
    return f"text:{path}"


def _junk(tmp: Path) -> str:
    path = tmp / "junk.npz"
    path.write_bytes(b"this is not numpy data at all\n" * 10)
    return f"npz:{path}"


def _config(tmp: Path, **fields) -> str:
    base = {"model": "mlp", "data": "digits", "phase_epochs": 1, "final_epochs": 1, "tau_core": False}
    path = tmp / "config.json"
    path.write_text(json.dumps({**base, **fields}))
    return str(path)


def _no_meta_checkpoint(tmp: Path, run: Path) -> str:
    """A copy of ``run`` whose only checkpoint lost its pwmpr metadata."""
    from safetensors.torch import load_file, save_file

    copy = tmp / "nometa"
    copy.mkdir()
    (copy / "config.json").write_text((run / "config.json").read_text())
    (copy / "checkpoints").mkdir()
    first = sorted((run / "checkpoints").glob("phase-*.safetensors"))[0]
    save_file(load_file(first), copy / "checkpoints" / first.name, metadata={"format": "pt"})
    return str(copy)


def _two_seed0_runs(tmp: Path, run: Path) -> list[str]:
    import shutil

    twin = tmp / "twin"
    shutil.copytree(run, twin)
    return [str(run), str(twin)]


USER_MODELS = """
import sys
from torch import nn


class Cumsum(nn.Module):
    def forward(self, x):
        return x.cumsum(dim=1)


def cumsum(num_classes, input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), Cumsum(), nn.Linear(16, num_classes))


def no_layer(num_classes, input_shape):
    return nn.Sequential(nn.Flatten(), nn.ReLU())


def exits(num_classes, input_shape):
    sys.exit(3)


def wide(num_classes, input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes + 3))
"""


def _user_model(tmp: Path, function: str, source: str = USER_MODELS) -> str:
    """``module:function`` of a module written to ``tmp`` (put on sys.path) holding ``source``."""
    import sys

    name = f"user_{function}_{abs(hash(str(tmp)))}"
    (tmp / f"{name}.py").write_text(source)
    if str(tmp) not in sys.path:
        sys.path.insert(0, str(tmp))
    return f"{name}:{function}"


def _under_a_file(tmp: Path) -> str:
    (tmp / "plainfile").write_text("x")
    return str(tmp / "plainfile" / "compare")


def _damaged_run(tmp: Path, run: Path, *, config: dict | None = None, summary: dict | None = None,
                 history_row=None) -> str:
    """A copy of the finished ``run`` with entries of config.json or summary.json replaced, or a history row added."""
    import shutil

    copy = tmp / "damaged"
    shutil.copytree(run, copy)
    for name, edit in (("config.json", config), ("summary.json", summary)):
        if edit:
            data = json.loads((copy / name).read_text())
            (copy / name).write_text(json.dumps({**data, **edit}))
    if history_row is not None:
        with open(copy / "history.jsonl", "a") as fh:
            fh.write(json.dumps(history_row) + "\n")
    return str(copy)


def _sweep_of_run(tmp: Path, run: Path, **base_edit) -> str:
    """A sweep folder whose one point (density 0.5, seed 0) is ``run`` relabelled as that point; its sweep.json's
    base config then gets ``base_edit`` (a hand edit)."""
    import shutil

    from pwmpr.config import RunConfig
    from pwmpr.sweep import SweepConfig, point_dir

    cfg = SweepConfig(densities=[0.5], base=RunConfig.load(run / "config.json"))
    sweep = tmp / "sweep"
    point = point_dir(sweep, 0.5, 0)
    shutil.copytree(run, point)
    (point / "config.json").write_text(json.dumps(cfg.point_config(0.5, 0).to_dict()))
    data = cfg.to_dict()
    data["base"].update(base_edit)
    (sweep / "sweep.json").write_text(json.dumps(data))
    return str(sweep)


CASES = [
    Case("unknown-model", "grow", "`--model` that is not registered", lambda t, r: ["--model", "resnet21"],
         "unknown model 'resnet21'"),
    Case("seed-too-big", "grow", "`--seed 100000000000000000000000` (does not fit the 64-bit generators)",
         lambda t, r: ["--seed", str(10**23)], "seed must be a whole number in [0, 2**63)"),
    Case("val-fraction-tiny", "grow", "`--val-fraction 1e-6` (1 validation sample)",
         lambda t, r: ["--val-fraction", "1e-6"], "the stop rule needs at least 100"),
    Case("npz-one-class", "grow", "npz whose labels are all one class",
         lambda t, r: ["--data", _npz(t, "one.npz", **_digits_like(labels=np.zeros(200, dtype=int)))],
         "a classifier needs at least 2 classes"),
    Case("npz-huge-label", "grow", "npz with one label of 1e9 among labels 0-2",
         lambda t, r: ["--data", _npz(t, "huge.npz", **_digits_like(
             labels=np.r_[np.random.default_rng(0).integers(0, 3, 199), 10**9]))],
         "the largest label is 1000000000"),
    Case("npz-object-array", "grow", "npz holding an object (pickled) array", lambda t, r: ["--data", _object_npz(t)],
         "holds an object array"),
    Case("npz-foreign-zip", "grow", "a zip file that is not an npz archive", lambda t, r: ["--data", _foreign_zip(t)],
         "is a zip file but not an npz archive"),
    Case("npz-junk", "grow", "a file that is neither a zip nor numpy data", lambda t, r: ["--data", _junk(t)],
         "it is not an npz file"),
    Case("text-empty", "grow", "`--data text:FILE` of an empty file (a language model's corpus)",
         lambda t, r: ["--data", _text(t, "empty.txt", b""), "--model", "gpt-mini"], "no documents found"),
    Case("text-binary", "grow", "`--data text:FILE` of a file that is not UTF-8 text",
         lambda t, r: ["--data", _text(t, "bin.txt", b"\xff\xfe\x00\x01binary"), "--model", "gpt-mini"],
         "is not UTF-8 text"),
    Case("text-shorter-than-context", "grow", "`--data text:FILE` shorter than the model's context of 128 bytes",
         lambda t, r: ["--data", _text(t, "short.txt", b"A short paragraph.\n\nAnother one.\n"),
                       "--model", "gpt-mini"], "less than one window of 129 bytes"),
    Case("context-zero", "grow", "`--context 0` (a sequence length of 0 tokens)",
         lambda t, r: ["--data", "pydoc-text", "--model", "gpt-mini", "--context", "0"],
         "context must be a whole number >= 1, got 0"),
    Case("context-longer-than-text", "grow", "`--context` longer than a split of the text",
         lambda t, r: ["--data", "pydoc-text", "--model", "gpt-mini", "--context", "1000000"],
         "less than one window of 1000001 bytes"),
    Case("context-for-images", "grow", "`--context` with a data set that is not text",
         lambda t, r: ["--data", "digits", "--context", "32"], "--context applies to text data sets"),
    Case("torchvision-unknown-argument", "grow", "`--data torchvision:FakeData:colour=3` (an argument the class "
         "does not take)", lambda t, r: ["--data", "torchvision:FakeData:colour=3"],
         "torchvision's FakeData takes no argument 'colour'; it takes image_size, num_classes"),
    Case("augment-unknown", "grow", "`--augment mirror` (not a mode)", lambda t, r: ["--augment", "mirror"],
         "--augment must be one of auto, crop-flip, crop, none, got 'mirror'"),
    Case("augment-crop-features", "grow", "`--augment crop` on features, not images",
         lambda t, r: ["--data", _npz(t, "features.npz", x=np.random.rand(200, 6).astype(np.float32),
                                      y=np.arange(200) % 2), "--augment", "crop"],
         "--augment crop crops images (channels, height, width), but data set"),
    Case("config-bool-as-string", "grow --config", 'config file with `"tau_core": "no"`',
         lambda t, r: ["--config", _config(t, tau_core="no")], 'tau_core must be true or false, got "no"'),
    Case("config-float-as-bool", "grow --config", 'config file with `"train": {"lr": true}`',
         lambda t, r: ["--config", _config(t, train={"lr": True})], "train.lr must be a number, got true"),
    Case("unknown-optimizer", "grow", "`--optimizer adam` (sgd or adamw)", lambda t, r: ["--optimizer", "adam"],
         "optimizer must be sgd or adamw, got 'adam'"),
    Case("config-float-epochs", "grow --config", 'config file with `"phase_epochs": 2.5`',
         lambda t, r: ["--config", _config(t, phase_epochs=2.5)], "phase_epochs must be a whole number, got 2.5"),
    Case("config-float-seed", "grow --config", 'config file with `"seed": 1e23`',
         lambda t, r: ["--config", _config(t, seed=1e23)], "seed must be a whole number"),
    Case("config-list-section", "grow --config", 'config file with `"train": [0.1]` (a list where a section belongs)',
         lambda t, r: ["--config", _config(t, train=[0.1])], "train must be an object"),
    Case("resume-no-metadata", "grow --resume", "resume from a checkpoint that lost its metadata",
         lambda t, r: ["--resume", _no_meta_checkpoint(t, r)], "no checkpoint verifies"),
    Case("unknown-stop-rule", "grow", "`--stop` that is not registered", lambda t, r: ["--stop", "knee"],
         "unknown stop rule 'knee'"),
    Case("unknown-init-scale", "grow", "`--init-scale` that is not registered", lambda t, r: ["--init-scale", "he"],
         "unknown init scale 'he'"),
    Case("stop-tol-negative", "grow", "`--stop-tol -0.01`", lambda t, r: ["--stop-tol", "-0.01"],
         "stop tol must be >= 0"),
    Case("stop-alpha-out-of-range", "grow", "`--stop-alpha 1.5`", lambda t, r: ["--stop-alpha", "1.5"],
         "alpha must be in (0, 1)"),
    Case("zeta-one", "grow", "`--zeta 1` (prune-and-regrow would drop every edge)", lambda t, r: ["--zeta", "1"],
         "zeta must be in [0, 1), got 1.0"),
    Case("zeta-negative", "grow", "`--zeta -0.1`", lambda t, r: ["--zeta", "-0.1"], "zeta must be in [0, 1)"),
    Case("shrink-tol-negative", "grow", "`--shrink --shrink-tol -0.01`",
         lambda t, r: ["--shrink", "--shrink-tol", "-0.01"], "shrink tol must be >= 0"),
    Case("shrink-alpha-one", "grow", "`--shrink --shrink-alpha 1`",
         lambda t, r: ["--shrink", "--shrink-alpha", "1"], "shrink alpha must be in (0, 1), got 1.0"),
    Case("rigl-density-above-1", "baseline rigl", "`--density 1.5`", lambda t, r: ["--density", "1.5"],
         "RigL density must be in (0, 1]"),
    Case("rigl-density-zero", "baseline rigl", "`--density 0`", lambda t, r: ["--density", "0"],
         "RigL density must be in (0, 1]"),
    Case("set-density-above-1", "baseline set", "`--density 2`", lambda t, r: ["--density", "2"],
         "SET density must be in (0, 1]"),
    Case("set-density-negative", "baseline set", "`--density -0.1`", lambda t, r: ["--density", "-0.1"],
         "SET density must be in (0, 1]"),
    Case("seed-density-tiny", "grow", "`--seed-density 1e-9` (keeps 0 of the 50,200 weights: no layer keeps an edge)",
         lambda t, r: ["--seed-density", "1e-9"], "density 1e-09 keeps 0 of the 50,200 prunable weights"),
    Case("seed-density-below-one-per-layer", "grow", "`--seed-density 4e-5` (2 weights for 3 layers)",
         lambda t, r: ["--seed-density", "4e-5"], "keeps 2 of the 50,200 prunable weights, fewer than the model's 3"),
    Case("oneshot-density-tiny", "baseline oneshot", "`--density 1e-9`", lambda t, r: ["--density", "1e-9"],
         "use a density of at least 4.99e-05"),
    Case("oneshot-random-no-path", "baseline oneshot", "`--method random --density 0.001 --seed 1` (every layer "
         "keeps an edge, but no path crosses the network)",
         lambda t, r: ["--method", "random", "--density", "0.001", "--seed", "1"],
         "no path from an input to an output"),
    Case("sweep-density-tiny", "sweep", "`--densities 1e-9,0.5` (checked before sweep.json is written)",
         lambda t, r: ["--densities", "1e-9,0.5"], "the sweep's lowest density 1e-09 keeps 0 of the 50,200"),
    Case("sweep-random-no-path", "sweep", "`--pruner random --densities 0.002,0.5 --seeds 0,1` (seed 1's masks at "
         "0.002 connect no input to an output; checked before sweep.json is written)",
         lambda t, r: ["--pruner", "random", "--densities", "0.002,0.5", "--seeds", "0,1"],
         "the sweep's lowest density 0.002 (seed 1): the starting masks (density 0.00199) keep 100 weight(s) but no "
         "path"),
    Case("sweep-empty-grid", "sweep", "`--densities ''` (an empty grid)", lambda t, r: ["--densities", ""],
         "the density grid is empty"),
    Case("sweep-density-above-1", "sweep", "`--densities 0.1,1.5`", lambda t, r: ["--densities", "0.1,1.5"],
         "every density must be in (0, 1]"),
    Case("sweep-density-zero", "sweep", "`--densities 0,0.5`", lambda t, r: ["--densities", "0,0.5"],
         "every density must be in (0, 1]"),
    Case("sweep-density-not-a-number", "sweep", "`--densities 0.1,x`", lambda t, r: ["--densities", "0.1,x"],
         "comma-separated list of numbers"),
    Case("sweep-density-twice", "sweep", "`--densities 0.1,0.1`", lambda t, r: ["--densities", "0.1,0.1"],
         "repeats a density"),
    Case("sweep-negative-tol", "sweep", "`--tol -0.01`", lambda t, r: ["--tol", "-0.01"], "--tol must be >= 0"),
    Case("sweep-seed-twice", "sweep", "`--seeds 0,0`", lambda t, r: ["--seeds", "0,0"], "repeats a seed"),
    Case("sweep-unknown-pruner", "sweep", "`--pruner nope`", lambda t, r: ["--pruner", "nope"], "unknown"),
    Case("sweep-unknown-init-scale", "sweep", "`--init-scale nope`", lambda t, r: ["--init-scale", "nope"],
         "unknown init scale 'nope'"),
    Case("sweep-min-above-max", "sweep", "`--min-density 0.5 --max-density 0.1`",
         lambda t, r: ["--min-density", "0.5", "--max-density", "0.1"], "min density <= max density"),
    Case("sweep-factor-1", "sweep", "`--factor 1` (a grid that never grows)", lambda t, r: ["--factor", "1"],
         "factor must be > 1"),
    Case("model-unsupported-op", "grow", "own model with an op pwmpr has no rule for (`cumsum` over features)",
         lambda t, r: ["--model", _user_model(t, "cumsum")], "calls cumsum() in its forward"),
    Case("model-no-layer", "grow", "own model with no Conv or Linear layer",
         lambda t, r: ["--model", _user_model(t, "no_layer")], "has no Conv or Linear layer"),
    Case("model-factory-exits", "grow", "own model factory calling `sys.exit(3)`",
         lambda t, r: ["--model", _user_model(t, "exits")], "failed: it called sys.exit(3)"),
    Case("model-module-exits", "grow", "own model module calling `sys.exit(3)` when imported",
         lambda t, r: ["--model", _user_model(t, "f", "import sys\nsys.exit(3)\n")], "failed: it called sys.exit(3)"),
    Case("model-missing-dependency", "grow", "own model module importing a package that is not installed",
         lambda t, r: ["--model", _user_model(t, "f", "import not_installed_xyz\n")],
         "it imports 'not_installed_xyz', which is not installed"),
    Case("model-more-logits-than-classes", "grow", "own model with 13 logits for the 10 classes of the data",
         lambda t, r: ["--model", _user_model(t, "wide")], "returns 13 logits per sample but the data have 10 classes"),
    Case("weight-decay-inf", "grow", "`--weight-decay inf`", lambda t, r: ["--weight-decay", "inf"],
         "weight_decay must be a finite number >= 0"),
    Case("compare-out-under-file", "compare", "`--out` below a regular file (cannot be created)",
         lambda t, r: [str(r), "--out", _under_a_file(t)], "cannot be created"),
    Case("compare-duplicate-seed", "compare", "two run folders of the same configuration and seed",
         lambda t, r: [*_two_seed0_runs(t, r), "--out", str(t / "cmp")], "same configuration with the same seed 0"),
    Case("sweep-density-folders-collide", "sweep", "`--densities 0.1,0.1000001` (one point folder for both)",
         lambda t, r: ["--densities", "0.1,0.1000001"], "share the point folders d0.1-s*"),
    Case("sweep-factor-huge-grid", "sweep", "`--factor 1.0001` (a grid of 46,056 densities)",
         lambda t, r: ["--factor", "1.0001"], "gives 46,056 densities; a sweep takes at most 100"),
    Case("sweep-missing-npz", "sweep", "`--data npz:` of a missing file (checked before anything is written)",
         lambda t, r: ["--data", f"npz:{t / 'missing.npz'}"], "npz file not found"),
    Case("sweep-missing-module", "sweep", "`--model` of a module that is not installed (checked before anything is "
         "written)", lambda t, r: ["--model", "no_such_pkg_xyz:make"], "no module named 'no_such_pkg_xyz'"),
    Case("sweep-resume-with-flags", "sweep --resume", "`--resume SWEEP --densities 0.1 --epochs 3`",
         lambda t, r: ["--resume", _sweep_of_run(t, r), "--densities", "0.1", "--epochs", "3"],
         "--resume takes the sweep folder's own sweep.json; drop the other flags (--epochs, --densities)"),
    Case("sweep-resume-edited-sweep-json", "sweep --resume", "`--resume` of a sweep whose sweep.json was edited to "
         "3 epochs after its points trained 1", lambda t, r: ["--resume", _sweep_of_run(t, r, final_epochs=3)],
         "was trained with final_epochs 1, but"),
    Case("compare-edited-sweep-json", "compare", "a sweep folder whose sweep.json no longer matches its points",
         lambda t, r: [str(r), _sweep_of_run(t, r, final_epochs=3), "--out", str(t / "cmp")],
         "was trained with final_epochs 1, but"),
    Case("compare-nan-test-acc", "compare", "a run whose summary.json has `\"test_acc\": NaN`",
         lambda t, r: [_damaged_run(t, r, summary={"test_acc": float("nan")}), "--out", str(t / "cmp")],
         "test_acc must be a finite number, got NaN"),
    Case("compare-config-seed-text", "compare", "a run whose config.json has `\"seed\": \"x\"`",
         lambda t, r: [_damaged_run(t, r, config={"seed": "x"}), "--out", str(t / "cmp")],
         'seed must be a whole number, got "x"'),
    Case("compare-config-growth-number", "compare", "a run whose config.json has `\"growth\": 5`",
         lambda t, r: [_damaged_run(t, r, config={"growth": 5}), "--out", str(t / "cmp")],
         "growth must be an object"),
    Case("compare-config-options-list", "compare", "a run whose config.json has `\"options\": [1]`",
         lambda t, r: [_damaged_run(t, r, config={"options": [1]}), "--out", str(t / "cmp")],
         "options must be an object"),
    Case("compare-history-row-list", "compare", "a run whose history.jsonl has a row that is a list",
         lambda t, r: [_damaged_run(t, r, history_row=[1, 2]), "--out", str(t / "cmp")],
         "must be a JSON object with a stage"),
    Case("compare-reference-epochs-text", "compare", "a run whose summary.json has a non-numeric "
         "`dense_reference_epochs`",
         lambda t, r: [_damaged_run(t, r, summary={"dense_reference_epochs": "ten"}), "--out", str(t / "cmp")],
         'dense_reference_epochs must be a finite number, got "ten"'),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("bad-inputs") / "run"
    result = runner.invoke(app, ["grow", *TINY, "--out", str(run)])
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, finished_run):
    out = tmp_path / "out"
    args = case.args(tmp_path, finished_run)
    full = {"grow": ["grow", *TINY, *args, "--out", str(out)],
            "grow --config": ["grow", *args, "--out", str(out), "-q"],
            "grow --resume": ["grow", *args, "-q"], "compare": ["compare", *args],
            "sweep --resume": ["sweep", *args, "-q"],
            "sweep": ["sweep", *SWEEP_TINY, *args, "--out", str(out)],
            **{f"baseline {m}": ["baseline", m, *BASELINE_TINY, *args, "--out", str(out)]
               for m in ("rigl", "set", "oneshot")},
            }[case.command]
    result = runner.invoke(app, full)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert case.message in lines[0], lines[0]
    assert not (out / "checkpoints").exists() and not (tmp_path / "cmp").exists()
    assert not (out / "config.json").exists()  # nothing that would refuse the corrected command
    if case.command in ("sweep", "grow") or case.command.startswith("baseline"):
        assert not out.exists()  # checked before anything is written; a failed command leaves no empty --out
    if case.command == "sweep --resume":  # a refused resume trains nothing
        assert not (Path(args[1]) / "summary.json").exists()
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.lock"))


def test_plain_switches_take_no_value():
    result = runner.invoke(app, ["grow", "--help"], env={"COLUMNS": "200"})
    for line in result.output.splitlines():
        if any(flag in line for flag in ("--quiet", "--force", "--tau-core", "--bf16")):
            assert "<bool>" not in line, line
    assert "minutes on a CPU" not in result.output  # no promise of speed in the help
    refused = runner.invoke(app, ["grow", "--quiet", "true"])
    assert refused.exit_code == 2  # a switch takes no value: "true" is an unexpected argument


def test_the_table_in_docs_is_current():
    from importlib import util

    spec = util.spec_from_file_location("bad_inputs_doc", Path(__file__).parents[1] / "docs" / "bad_inputs.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)  # it reads CASES and FAULTS of the test modules pytest has imported already
    assert (Path(__file__).parents[1] / "docs" / "bad-inputs.md").read_text() == module.render(), \
        "docs/bad-inputs.md is stale: run python docs/bad_inputs.py"


def test_compare_and_export_defaults_are_ignored_by_git():
    root = Path(__file__).parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "check-ignore", "compare/x", "exports/x"], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "GIT_DIR": str(root / ".git")})
    assert out.stdout.split() == ["compare/x", "exports/x"]



@pytest.mark.parametrize(("argv", "message"), [
    (["grow", "--bogus"], "No such option: --bogus"),
    (["grow", "--seed-density", "abc"], "Invalid value for '--seed-density'"),
    (["export"], "Missing argument 'run_dir'"),
])
def test_usage_errors_are_one_line_exit_2(argv, message, monkeypatch, capsys):
    """Typer's usage errors through the console script: one ``error:`` line, no box, exit code 2."""
    from pwmpr.cli.app import main

    monkeypatch.setattr("sys.argv", ["pwmpr", *argv])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_out_name_over_255_bytes_is_one_line(tmp_path):
    out = tmp_path / ("a" * 300)
    result = runner.invoke(app, ["grow", *TINY, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write"), result.output
    assert "File name too long" in lines[0]


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_a_density_that_leaves_a_layer_with_no_edge_is_refused(method, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["baseline", method, *BASELINE_TINY, "--density", "1e-9", "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "leaves 3 layer(s) with no edge" in lines[0], result.output
    assert not (out / "config.json").exists()
