"""Trainer: masks hold through weight decay and momentum, grown weights start at zero, schedules, NaN guard."""

import math

import pytest
import torch
from torch import nn

from pwmpr.config import TrainConfig
from pwmpr.data import TensorLoader, TensorSplit
from pwmpr.masks import MaskSet
from pwmpr.train import Trainer, TrainingDiverged, lr_at


def _setup(lr=0.5, wd=0.1, momentum=0.9):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    keep0 = torch.rand(8, 6) < 0.3
    keep2 = torch.rand(3, 8) < 0.5
    masks = MaskSet({"0.weight": keep0, "2.weight": keep2})
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    loader = TensorLoader(TensorSplit(x, y), 16, torch.device("cpu"), shuffle=True,
                          generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(lr=lr, weight_decay=wd, momentum=momentum)
    return Trainer(model, masks, cfg, torch.device("cpu")), loader, masks


def test_lr_schedules_by_hand():
    assert lr_at("constant", 0.1, 7, 10) == 0.1
    assert lr_at("cosine", 0.1, 0, 10) == pytest.approx(0.1)
    assert lr_at("cosine", 0.1, 5, 10) == pytest.approx(0.05)
    assert lr_at("step", 0.1, 4, 10) == pytest.approx(0.1)
    assert lr_at("step", 0.1, 5, 10) == pytest.approx(0.01)
    assert lr_at("step", 0.1, 8, 10) == pytest.approx(0.001)


def test_weight_decay_and_momentum_never_revive_a_masked_weight():
    trainer, loader, masks = _setup()
    trainer.train(loader, epochs=3)
    for name, keep in masks.items():
        w = dict(trainer.model.named_parameters())[name]
        assert torch.all(w[~keep] == 0), name
        buf = trainer.optimizer.state[w]["momentum_buffer"]
        assert torch.all(buf[~keep] == 0), name
        assert torch.any(w[keep] != 0)


def test_grown_weights_start_at_zero_with_zero_momentum_then_train():
    trainer, loader, masks = _setup()
    trainer.train(loader, epochs=1)
    w = trainer.model[0].weight
    absent = (~masks["0.weight"]).flatten().nonzero().flatten()[:5]
    grown = masks["0.weight"].clone().flatten()
    grown[absent] = True
    new = MaskSet({"0.weight": grown.view(8, 6), "2.weight": masks["2.weight"]})
    trainer.set_masks(new, {"0.weight": absent})
    assert torch.all(w.detach().flatten()[absent] == 0)
    assert torch.all(trainer.optimizer.state[w]["momentum_buffer"].flatten()[absent] == 0)
    trainer.train(loader, epochs=1)
    assert torch.any(w.detach().flatten()[absent] != 0)  # the grown edges learn


def test_evaluate_counts_correct_predictions():
    trainer, loader, _ = _setup()
    acc, loss = trainer.evaluate(loader)
    with torch.no_grad():
        x, y = loader.x, loader.y
        expected = (trainer.model(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(expected) and math.isfinite(loss)


def test_nan_loss_stops_with_a_clear_error():
    trainer, loader, _ = _setup(lr=1e30, wd=0.0)
    with pytest.raises(TrainingDiverged, match="loss became"):
        trainer.train(loader, epochs=5)


def test_optimizer_state_round_trips_through_named_tensors():
    trainer, loader, masks = _setup()
    trainer.train(loader, epochs=1)
    saved = {k: v.clone() for k, v in trainer.optimizer_tensors().items()}
    assert set(saved) == {f"{n}/momentum_buffer" for n in ["0.weight", "0.bias", "2.weight", "2.bias"]}
    other, _, _ = _setup()
    other.load_optimizer_tensors(saved)
    assert all(torch.equal(other.optimizer_tensors()[k], v) for k, v in saved.items())
