"""`pwmpr inspect`: density tables for every kind of file, and one-line errors for bad or foreign ones."""

from __future__ import annotations

import json
import pickle

import onnx
import pytest
import torch
from safetensors.torch import save_file
from test_export_roundtrip import write_run
from typer.testing import CliRunner

from pwmpr import rundir
from pwmpr.cli.app import app
from pwmpr.export import packing

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inspect")
    run = tmp / "run"
    write_run(run, "mlp", (1, 8, 8), 0.25, "digits")
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp / "out"), "--all-encodings", "--timing-runs",
                                 "1", "-q"])
    assert result.exit_code == 0, result.output
    return run, tmp / "out"


def _inspect(*args: str):
    return runner.invoke(app, ["inspect", *args])


def _json(path) -> dict:
    result = _inspect(str(path), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("target", ["run", "run/final.safetensors", "out", "out/model.safetensors",
                                    "out/masks.safetensors", "out/model.dense.onnx", "out/model.sparse.onnx",
                                    "out/model.packed.onnx"])
def test_every_kind_of_file_gives_the_same_density_table(exported, target):
    run, out = exported
    path = run.parent / target
    reference = _json(run)
    got = _json(path)
    assert [x["name"] for x in got["layers"]] == ["net.1.weight", "net.3.weight", "net.5.weight"]
    assert [x["n_kept"] for x in got["layers"]] == [x["n_kept"] for x in reference["layers"]]
    assert got["density"] == pytest.approx(0.25, abs=0.01) == reference["density"]
    assert got["metadata"]["masks_sha256"] == reference["metadata"]["masks_sha256"]
    if "onnx" in target:
        assert got["metadata"]["pwmpr_encoding"] in target and got["metadata"]["opset"] >= 18


def test_table_view_shows_layers_overall_and_metadata(exported):
    _, out = exported
    result = _inspect(str(out / "model.onnx"))
    assert result.exit_code == 0, result.output
    for text in ("net.3.weight", "100x300", "overall", "pwmpr_version: ", "stop_reason: max-phases",
                 "pwmpr_masks_sha256: "):
        assert text in result.output


def _write_masks(path, bits: dict, shapes: dict, sha: str | None = None) -> None:
    meta = {"kind": "masks", "layer_shapes": shapes}
    if sha:
        meta["masks_sha256"] = sha
    rundir.save_tensors(path, bits, meta)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d, out: d / "missing.safetensors", "not found"),
        (lambda d, out: _bytes(d / "notes.safetensors", b"plain text, no tensors"), "not a readable safetensors"),
        (lambda d, out: _bytes(d / "pickle.safetensors", pickle.dumps({"w": [1.0]})), "not a readable safetensors"),
        (lambda d, out: _truncated(d, out / "model.safetensors"), "not a readable safetensors"),
        (lambda d, out: _foreign_safetensors(d / "foreign.safetensors"), "without pwmpr metadata"),
        (lambda d, out: _truncated(d, out / "model.onnx"), "not a readable ONNX file"),
        (lambda d, out: _bytes(d / "text.onnx", b"hello"), "not a readable ONNX file"),
        (lambda d, out: _onnx_without_metadata(d, out), "has no pwmpr metadata"),
        (lambda d, out: _onnx_missing_tensor(d, out), "is missing"),
        (lambda d, out: _masks_wrong_size(d), "packed mask has 2 bytes but shape [8, 8] needs 8"),
        (lambda d, out: _masks_wrong_shape_for_weights(d, out), "has shape (8, 8) but the weight has shape (300, 64)"),
        (lambda d, out: _masks_altered(d, out), "do not match the sha256"),
        (lambda d, out: d, "neither a run folder"),
    ],
)
def test_bad_or_foreign_files_are_one_line_errors(exported, tmp_path, make, message):
    path = make(tmp_path, exported[1])
    result = _inspect(str(path))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def _bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def _truncated(tmp, src):
    data = src.read_bytes()
    return _bytes(tmp / src.name, data[: len(data) // 2])


def _foreign_safetensors(path):
    save_file({"weight": torch.zeros(3)}, str(path))
    return path


def _onnx_without_metadata(tmp, out):
    model = onnx.load(str(out / "model.dense.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp / "plain.onnx"))
    return tmp / "plain.onnx"


def _onnx_missing_tensor(tmp, out):
    model = onnx.load(str(out / "model.packed.onnx"))
    keep = [t for t in model.graph.initializer if t.name != "pwmpr.0.bits"]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.save(model, str(tmp / "broken.onnx"))
    return tmp / "broken.onnx"


def _masks_wrong_size(tmp):
    path = tmp / "masks.safetensors"
    _write_masks(path, {"net.1.weight": torch.zeros(2, dtype=torch.uint8)}, {"net.1.weight": [8, 8]})
    return path


def _masks_wrong_shape_for_weights(tmp, out):
    # An export folder whose masks declare shapes the weights do not have.
    (tmp / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    path = tmp / "masks.safetensors"
    bits = {"net.1.weight": torch.from_numpy(packing.pack_bits(torch.ones(8, 8, dtype=torch.bool)))}
    _write_masks(path, bits, {"net.1.weight": [8, 8]})
    return path


def _masks_altered(tmp, out):
    from safetensors import safe_open
    from safetensors.torch import load_file

    src = out / "masks.safetensors"
    with safe_open(str(src), framework="pt") as fh:
        meta = json.loads(fh.metadata()["pwmpr"])
    tensors = load_file(str(src))
    tensors["net.5.weight"] = tensors["net.5.weight"] ^ 1  # flip one bit
    path = tmp / "masks.safetensors"
    rundir.save_tensors(path, tensors, meta)
    return path


def test_inspect_never_unpickles_or_torch_loads(exported, monkeypatch):
    run, out = exported

    def forbidden(*args, **kwargs):
        raise AssertionError("inspect/load must not run pickle or torch.load")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    for path in (run, out, out / "model.safetensors", out / "masks.safetensors", out / "model.onnx"):
        assert _inspect(str(path)).exit_code == 0
