"""grow -> export -> load for mlp, cnn and resnet20 in every ONNX encoding; the files as plain PyTorch/ONNX see them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

import pwmpr
from pwmpr import MaskSet, create_model, prunable, rundir
from pwmpr.cli.app import app
from pwmpr.config import RunConfig
from pwmpr.export import onnx_graph

runner = CliRunner()
ENCODINGS = ("dense", "sparse", "packed")
IMAGE = (3, 16, 16)  # small images keep the conv nets fast; both take any size


def write_run(run_dir: Path, model_name: str, input_shape, density: float, data: str, seed: int = 0) -> None:
    """A finished run folder as `pwmpr grow` leaves it, without the training: random masks, non-trivial BN."""
    torch.manual_seed(seed)
    model = create_model(model_name, 10, input_shape)
    gen = torch.Generator().manual_seed(seed)
    masks = MaskSet({n: torch.rand(p.shape, generator=gen) < density
                     for n, p in model.named_parameters() if n in prunable(model)})
    masks.apply(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # the exporter folds BN into the conv: make it matter
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)
    cfg = RunConfig(model=model_name, data=data).to_dict()
    summary = {"seed_density": density, "discovered_density": masks.density(), "stop_reason": "max-phases",
               "fit": {"rho_star": None}, "method": "pwmpr", "data": data}
    tensors = {rundir.MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    tensors.update({rundir.MASK_PREFIX + k: v for k, v in masks.to_dict().items()})
    meta = {"kind": "final", "config": cfg, "summary": summary, "input_shape": list(input_shape), "num_classes": 10}
    rundir.save_tensors(Path(run_dir) / rundir.FINAL, tensors, meta)
    rundir.write_history(run_dir, [{"phase": 0, "stage": "phase", "density": density, "val_acc": 0.5}])


def image_npz(path: Path, n: int = 80) -> str:
    gen = np.random.default_rng(0)
    np.savez(path, x=gen.standard_normal((n, *IMAGE)).astype(np.float32), y=gen.integers(0, 10, n))
    return f"npz:{path}"


def export(run: Path, out: Path, *args: str):
    return runner.invoke(app, ["export", str(run), "--out", str(out), "--timing-runs", "1", "-q", *args])


@pytest.fixture(scope="module", params=["mlp", "cnn", "resnet20"])
def exported(request, tmp_path_factory):
    """(run folder, export folder, report) for each model, exported with --all-encodings."""
    tmp = tmp_path_factory.mktemp(request.param)
    run = tmp / "run"
    if request.param == "mlp":  # a real grow on the offline digits
        result = runner.invoke(app, ["grow", "--data", "digits", "--model", "mlp", "--phase-epochs", "1",
                                     "--final-epochs", "1", "--max-phases", "2", "--out", str(run), "-q"])
        assert result.exit_code == 0, result.output
    else:
        write_run(run, request.param, IMAGE, 0.1, image_npz(tmp / "images.npz"))
    out = tmp / "export"
    result = export(run, out, "--all-encodings")
    assert result.exit_code == 0, result.output
    return run, out, json.loads((out / "export_report.json").read_text())


def test_export_folder_holds_exactly_the_promised_files(exported):
    _, out, report = exported
    names = {p.name for p in out.iterdir()}
    assert names == {"model.safetensors", "masks.safetensors", "model.onnx", "export_report.json",
                     "model.dense.onnx", "model.sparse.onnx", "model.packed.onnx"}
    assert (out / "model.onnx").read_bytes() == (out / "model.packed.onnx").read_bytes()  # default: packed
    assert not list(out.parent.glob(".export.tmp-*"))
    assert report["onnx_weights"] == "packed" and report["providers_used"] == ["CPUExecutionProvider"]
    assert report["n_inputs"] >= 64 and report["safetensors"]["max_diff"] == 0.0
    for enc in ENCODINGS:
        row = report["encodings"][enc]
        assert row["ok"] and row["max_diff"] <= row["tolerance"] and row["top1_mismatch"] == 0
        assert row["providers"] == ["CPUExecutionProvider"] and row["session_start_s"] > 0
        assert set(row["latency_ms"]) == {"1", "64"}
    assert report["encodings"]["packed"]["folded"] is True
    assert set(report["torch"]["latency_ms"]) == {"1", "64"}


def test_validation_inputs_come_from_the_data_set(exported):
    _, _, report = exported
    assert report["inputs"].startswith("64 from data set")


def test_model_safetensors_loads_into_the_bare_model_strictly(exported):
    run, out, _ = exported
    state = load_file(out / "model.safetensors")  # safetensors alone, no pwmpr code
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == "pt"
    info = json.loads(meta["pwmpr"])
    for key in ("pwmpr_version", "model", "input_shape", "num_classes", "density", "layer_density", "seed_density",
                "discovered_density", "fit", "stop_reason", "history", "masks_sha256"):
        assert key in info, key
    bare = create_model(info["model"]["name"], info["num_classes"], info["input_shape"])
    bare.load_state_dict(state, strict=True)
    model, _ = pwmpr.load(run)
    x = torch.randn(5, *info["input_shape"])
    with torch.no_grad():
        assert torch.equal(bare.eval()(x), model(x))


def test_masks_are_bit_packed_under_each_weights_own_name(exported):
    run, out, _ = exported
    _, masks = pwmpr.load(run)
    packed = load_file(out / "masks.safetensors")
    state = load_file(out / "model.safetensors")
    assert set(packed) == set(masks) == set(prunable(create_model(*_model_args(out))))
    for name, bits in packed.items():
        assert bits.dtype == torch.uint8 and bits.dim() == 1
        mask = np.unpackbits(bits.numpy(), count=masks[name].numel(), bitorder="little").reshape(masks[name].shape)
        assert np.array_equal(mask.astype(bool), masks[name].numpy())
        assert torch.all(state[name][~masks[name]] == 0)  # masked weights are zero


def _model_args(out: Path):
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        info = json.loads(fh.metadata()["pwmpr"])
    return info["model"]["name"], info["num_classes"], info["input_shape"]


def test_load_gives_the_same_model_from_the_run_and_from_the_export(exported):
    run, out, _ = exported
    a_model, a_masks = pwmpr.load(run)
    for path in (out, out / "model.safetensors", out / "masks.safetensors"):
        b_model, b_masks = pwmpr.load(path)
        assert a_masks.equal(b_masks)
        a, b = a_model.state_dict(), b_model.state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not a_model.training


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_each_onnx_encoding_runs_and_matches_the_loaded_model(exported, encoding):
    run, out, report = exported
    path = out / f"model.{encoding}.onnx"
    proto = onnx.load(str(path))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert onnx_graph.default_opset(proto) >= 18
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["pwmpr_encoding"] == encoding and props["pwmpr_masks_sha256"] == report["masks_sha256"]
    assert float(props["pwmpr_density"]) == pytest.approx(report["density"])
    assert set(json.loads(props["pwmpr_layer_density"])) == set(pwmpr.load(run)[1])
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    model, _ = pwmpr.load(run)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = torch.randn(batch, *report["input_shape"])
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        assert np.abs(got - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))


def test_sparse_and_packed_files_decode_to_exactly_the_dense_weights(exported):
    _, out, report = exported
    dense = onnx_graph.weights_from_onnx(onnx.load(str(out / "model.dense.onnx")))
    for encoding in ("sparse", "packed"):
        other = onnx_graph.weights_from_onnx(onnx.load(str(out / f"model.{encoding}.onnx")))
        assert set(other) == set(dense)
        assert all(np.array_equal(other[n], dense[n]) for n in dense), encoding
    assert report["encodings"]["packed"]["layers"]["packed"] >= 1
    assert report["encodings"]["sparse"]["layers"]["sparse"] >= 1  # density 0.1 < 1/3: sparse pays
    assert report["encodings"]["packed"]["ratio_to_dense"] < report["encodings"]["sparse"]["ratio_to_dense"] < 1


@pytest.mark.parametrize("encoding", ["dense", "sparse"])
def test_onnx_weights_picks_the_encoding_of_model_onnx(tmp_path, encoding):
    run = tmp_path / "run"
    write_run(run, "mlp", (1, 8, 8), 0.2, "digits")
    result = export(run, tmp_path / "out", "--onnx-weights", encoding)
    assert result.exit_code == 0, result.output
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "out" / "model.onnx")).metadata_props}
    assert props["pwmpr_encoding"] == encoding
    assert not list((tmp_path / "out").glob("model.*.onnx"))  # only model.onnx without --all-encodings


@pytest.mark.slow
def test_resnet20_grow_export_load_round_trip(tmp_path):
    data = image_npz(tmp_path / "images.npz", n=96)
    run = tmp_path / "run"
    result = runner.invoke(app, ["grow", "--data", data, "--model", "resnet20", "--phase-epochs", "1",
                                 "--final-epochs", "1", "--max-phases", "2", "--batch-size", "32", "--out", str(run),
                                 "-q"])
    assert result.exit_code == 0, result.output
    result = export(run, tmp_path / "out")
    assert result.exit_code == 0, result.output
    a_model, a_masks = pwmpr.load(run)
    b_model, b_masks = pwmpr.load(tmp_path / "out")
    assert a_masks.equal(b_masks)
    x = torch.randn(3, *IMAGE)
    with torch.no_grad():
        assert torch.equal(a_model(x), b_model(x))
