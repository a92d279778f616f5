"""`pwmpr export` refuses bad input with one line and exit 2, and a failed validation leaves no export behind."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from test_export_roundtrip import write_run
from typer.testing import CliRunner

from pwmpr.cli.app import app
from pwmpr.export import onnx_graph, validate

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export-cli") / "run"
    write_run(folder, "mlp", (1, 8, 8), 0.1, "digits")
    return folder


def _export(*args: str):
    return runner.invoke(app, ["export", "--timing-runs", "1", "-q", *args])


def _assert_refused(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def _nothing_left(out) -> bool:
    leftovers = list(out.parent.glob(f".{out.name}.tmp-*"))
    return not leftovers and (not out.exists() or not any(out.iterdir()))


def test_export_help_lists_the_options():
    result = runner.invoke(app, ["export", "--help"])
    assert result.exit_code == 0
    for flag in ("--out", "--onnx-weights", "--provider", "--opset", "--all-encodings"):
        assert flag in result.output


def test_default_out_is_run_dir_export_and_report_is_printed(tmp_path):
    run = tmp_path / "run"
    write_run(run, "mlp", (1, 8, 8), 0.3, "digits")
    result = runner.invoke(app, ["export", str(run), "--timing-runs", "1"])
    assert result.exit_code == 0, result.output
    assert (run / "export" / "model.onnx").is_file()
    for word in ("dense", "sparse", "packed (model.onnx)", "folded by onnxruntime at session start: yes"):
        assert word in result.output
    report = json.loads((run / "export" / "export_report.json").read_text())
    assert report["density"] == pytest.approx(0.3, abs=0.02)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}"], "run folder not found"),
        (["{empty}"], "has no final.safetensors"),
        (["{run}", "--onnx-weights", "zip"], "--onnx-weights must be one of dense, sparse, packed, got 'zip'"),
        (["{run}", "--provider", "gpu"], "--provider must be one of auto, cpu, cuda"),
        (["{run}", "--opset", "17"], "--opset must be between 18 and"),
        (["{run}", "--timing-runs", "0"], "--timing-runs must be >= 1"),
        (["{run}", "--out", "{busy}"], "is not empty"),
        (["{run}", "--out", "{file}"], "exists and is not a directory"),
        (["{run}", "--out", "{file}/sub"], "is a file, not a folder"),
        (["{bad_final}"], "is not a readable safetensors file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, run, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("x")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "final.safetensors").write_bytes(b"\x00" * 64)
    names = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "run": run, "busy": tmp_path / "busy",
             "file": tmp_path / "file", "bad_final": tmp_path / "bad"}
    argv = [a.format(**names) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    _assert_refused(_export(*argv), message)
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    assert _nothing_left(tmp_path / "out")


def test_provider_cuda_without_a_cuda_runtime(tmp_path, run):
    _assert_refused(_export(str(run), "--out", str(tmp_path / "out"), "--provider", "cuda"), "--provider cuda")


def test_provider_cuda_that_silently_falls_back_to_cpu_is_an_error(tmp_path, run, monkeypatch):
    # onnxruntime-gpu lists CUDA, then runs on CPU when CUDA cannot start; the CPU build asked for CUDA does
    # the same (a warning, then CPU), so advertising CUDA here reproduces the fallback.
    monkeypatch.setattr(ort, "get_available_providers", lambda: [validate.CUDA_EP, validate.CPU_EP])
    if hasattr(ort, "preload_dlls"):
        monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: None)
    out = tmp_path / "out"
    _assert_refused(_export(str(run), "--out", str(out), "--provider", "cuda"), "--provider cuda: onnxruntime did "
                    "not use CUDA (it used CPUExecutionProvider)")
    assert _nothing_left(out)


def test_a_planted_wrong_weight_fails_validation_and_leaves_nothing(tmp_path, run, monkeypatch):
    real = onnx_graph.export_dense

    def planted(model, input_shape, opset=18):
        proto = real(model, input_shape, opset)
        init = next(t for t in proto.graph.initializer if t.name == "net.5.weight")  # the classifier
        w = numpy_helper.to_array(init).copy()
        w.flat[np.flatnonzero(w)[0]] += 0.5  # one kept weight off by 0.5 (the first layer's could see only
        # border pixels, which are always zero in digits)
        init.CopyFrom(numpy_helper.from_array(w, init.name))
        return proto

    monkeypatch.setattr(onnx_graph, "export_dense", planted)
    out = tmp_path / "out"
    result = _export(str(run), "--out", str(out))
    _assert_refused(result, "export validation failed: dense: onnxruntime differs from PyTorch")
    assert "packed: onnxruntime differs" in result.output
    assert _nothing_left(out)


def test_a_wrong_packed_decode_fails_validation(tmp_path, run, monkeypatch):
    real = onnx_graph.encode

    def broken(dense, encoding, names):
        model, info = real(dense, encoding, names)
        for t in model.graph.initializer:
            if t.name == "pwmpr.0.values":
                v = numpy_helper.to_array(t).copy()
                v[:-1] = v[1:]  # values shifted by one place
                t.CopyFrom(numpy_helper.from_array(v, t.name))
        return model, info

    monkeypatch.setattr(onnx_graph, "encode", broken)
    out = tmp_path / "out"
    result = _export(str(run), "--out", str(out))
    _assert_refused(result, "export validation failed: packed: onnxruntime differs from PyTorch")
    assert _nothing_left(out)


def test_python_m_pwmpr_export_help():
    result = subprocess.run([sys.executable, "-m", "pwmpr", "export", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--onnx-weights" in result.stdout
