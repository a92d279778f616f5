"""GPU tests (marked gpu: skipped without CUDA, never faked): bf16, channels_last, onnxruntime CUDA, grow -> export."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from pwmpr import MaskSet, PwmprError, pwmp_scores
from pwmpr.cli.app import app
from pwmpr.config import TrainConfig
from pwmpr.models import check_input_shape, create_model
from pwmpr.seed import phew_masks
from pwmpr.train import Trainer

pytestmark = pytest.mark.gpu
runner = CliRunner()
TINY = ["--data", "digits", "--model", "cnn", "--phase-epochs", "1", "--final-epochs", "1", "--max-phases", "2",
        "--batch-size", "64", "--device", "cuda", "-q"]


def _trainer(bf16: bool, channels_last: bool) -> Trainer:
    torch.manual_seed(0)
    model = create_model("resnet20", 10, (3, 32, 32))
    masks = phew_masks(model, 0.1, (3, 32, 32), seed=0)
    return Trainer(model, masks, TrainConfig(bf16=bf16, channels_last=channels_last), torch.device("cuda"))


@pytest.mark.parametrize(("bf16", "channels_last"), [(False, False), (True, False), (False, True), (True, True)])
def test_masked_training_on_cuda_keeps_masks(bf16, channels_last):
    trainer = _trainer(bf16, channels_last)
    assert trainer.channels_last == channels_last
    x = torch.randn(32, 3, 32, 32, device="cuda")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,), device="cuda")
    stats = trainer.train([(x, y)] * 3, 1)
    assert torch.isfinite(torch.tensor(stats.train_loss))
    params = dict(trainer.model.named_parameters())
    for name, mask in trainer.masks.items():
        assert params[name].dtype == torch.float32  # autocast never changes the stored weights
        assert not params[name][~mask.bool()].any()
        if channels_last and params[name].dim() == 4:
            assert params[name].is_contiguous(memory_format=torch.channels_last)


def test_scores_on_cuda_match_cpu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5))
    cpu = pwmp_scores(model, MaskSet.dense(model), (3, 8, 8))
    gpu = pwmp_scores(model.cuda(), MaskSet.dense(model), (3, 8, 8))
    for name in cpu:
        torch.testing.assert_close(gpu[name].cpu(), cpu[name])


def test_out_of_memory_is_reported_as_such():
    model = nn.Linear(8, 2).cuda()
    total = torch.cuda.get_device_properties(0).total_memory
    with pytest.raises(PwmprError, match="out of memory on cuda"):
        check_input_shape(model, (total // 4, 8))  # one float32 input larger than the whole GPU


def test_grow_then_export_on_cuda(tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["grow", *TINY, "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["device"] == "cuda"
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "e"), "--provider", "cpu",
                                 "--timing-runs", "3", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e" / "export_report.json").read_text())
    assert report["torch"]["device"].startswith("cuda")


def test_onnxruntime_cuda_provider(tmp_path):
    """Needs onnxruntime-gpu (its own environment: the CPU package shadows it) and a CUDA it can load."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed in this environment")
    run = tmp_path / "run"
    assert runner.invoke(app, ["grow", *TINY, "--out", str(run)]).exit_code == 0
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "e"), "--provider", "cuda",
                                 "--timing-runs", "3", "-q"])
    assert result.exit_code == 0, result.output  # --provider cuda fails unless onnxruntime really ran on CUDA
    report = json.loads((tmp_path / "e" / "export_report.json").read_text())
    assert "CUDAExecutionProvider" in report["encodings"][report["onnx_weights"]]["providers"]
