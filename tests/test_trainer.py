"""Trainer: masks hold through weight decay and momentum, grown weights start at zero, schedules, NaN guard."""

import math

import pytest
import torch
from torch import nn

from pwmpr.config import TrainConfig
from pwmpr.data import TensorLoader, TensorSplit
from pwmpr.masks import MaskSet
from pwmpr.train import SnapshotMemory, Trainer, TrainingDiverged, lr_at


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
    # An edge dropped and regrown in one decision (prune and regrow) is present before and after: only the
    # grown-edge handling resets its trained weight and momentum.
    regrown = masks["0.weight"].flatten().nonzero().flatten()[:2]
    assert torch.all(w.detach().flatten()[regrown] != 0)
    assert torch.all(trainer.optimizer.state[w]["momentum_buffer"].flatten()[regrown] != 0)
    grown = masks["0.weight"].clone().flatten()
    grown[absent] = True
    new = MaskSet({"0.weight": grown.view(8, 6), "2.weight": masks["2.weight"]})
    added = torch.cat([absent, regrown])
    trainer.set_masks(new, {"0.weight": added})
    assert torch.all(w.detach().flatten()[added] == 0)
    assert torch.all(trainer.optimizer.state[w]["momentum_buffer"].flatten()[added] == 0)
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


def _adamw_setup(lr=0.05, wd=0.1):
    trainer, loader, masks = _setup()
    cfg = TrainConfig(optimizer="adamw", lr=lr, weight_decay=wd)
    return Trainer(trainer.model, masks, cfg, torch.device("cpu")), loader, masks


def test_optimizer_defaults_and_choice():
    assert TrainConfig().base_lr == 0.1 and TrainConfig(optimizer="adamw").base_lr == 1e-3
    assert TrainConfig(optimizer="adamw", lr=0.02).base_lr == 0.02
    trainer, _, _ = _adamw_setup()
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    with pytest.raises(Exception, match="optimizer must be sgd or adamw"):
        TrainConfig(optimizer="adam")


def test_adamw_first_step_by_hand():
    """One AdamW step: w <- w(1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps), with m_hat = g and v_hat = g^2 at step 1."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    masks = MaskSet({"weight": torch.ones(1, 1, dtype=torch.bool)})
    trainer = Trainer(model, masks, TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.5), torch.device("cpu"))
    x, y = torch.ones(1, 1), torch.zeros(1, dtype=torch.long)
    trainer.loss_fn = lambda out, _: (out ** 2).sum()  # dL/dw = 2 w x = 4
    loader = [(x, y)]
    trainer.train(loader, epochs=1)
    expected = 2.0 * (1 - 0.1 * 0.5) - 0.1 * 4.0 / (4.0 + 1e-8)
    assert model.weight.item() == pytest.approx(expected, rel=1e-6)


def test_adamw_never_revives_a_masked_weight_and_pruned_state_is_cleared():
    trainer, loader, masks = _adamw_setup()
    trainer.train(loader, epochs=3)
    params = dict(trainer.model.named_parameters())
    for name, keep in masks.items():
        w = params[name]
        assert torch.all(w[~keep] == 0), name
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.all(trainer.optimizer.state[w][key][~keep] == 0), (name, key)
        assert torch.any(w[keep] != 0)
    # Prune half of the present edges of the first layer: weights and both moments are zero from then on.
    w = params["0.weight"]
    keep = masks["0.weight"].clone()
    present = keep.flatten().nonzero().flatten()
    pruned = keep.flatten().clone()
    pruned[present[: len(present) // 2]] = False
    smaller = MaskSet({"0.weight": pruned.view_as(keep), "2.weight": masks["2.weight"]})
    assert torch.any(trainer.optimizer.state[w]["exp_avg_sq"].flatten()[present[: len(present) // 2]] != 0)
    trainer.set_masks(smaller)
    trainer.train(loader, epochs=2)
    gone = ~smaller["0.weight"]
    assert torch.all(w[gone] == 0)
    assert all(torch.all(trainer.optimizer.state[w][k][gone] == 0) for k in ("exp_avg", "exp_avg_sq"))


def test_adamw_state_round_trips_and_training_continues_identically():
    trainer, loader, masks = _adamw_setup()
    trainer.train(loader, epochs=1)
    saved = {k: v.clone() for k, v in trainer.optimizer_tensors().items()}
    assert {k.rpartition("/")[2] for k in saved} == {"step", "exp_avg", "exp_avg_sq"}
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    other, _, _ = _adamw_setup()
    other.model.load_state_dict(weights)
    other.load_optimizer_tensors(saved)
    assert all(torch.equal(other.optimizer_tensors()[k], v) for k, v in saved.items())
    gen_state = loader.generator.get_state()
    trainer.train(loader, epochs=1)
    loader.generator.set_state(gen_state)
    other.train(loader, epochs=1)
    for (name, a), b in zip(trainer.model.state_dict().items(), other.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_adamw_learns():
    """AdamW (lr 0.01, no weight decay) fits labels that a linear rule of the inputs decides."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    masks = MaskSet({"0.weight": torch.rand(16, 6) < 0.5, "2.weight": torch.ones(3, 16, dtype=torch.bool)})
    x = torch.randn(512, 6)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    loader = TensorLoader(TensorSplit(x, y), 32, torch.device("cpu"), shuffle=True,
                          generator=torch.Generator().manual_seed(0))
    trainer = Trainer(model, masks, TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.0), torch.device("cpu"))
    before, _ = trainer.evaluate(loader)
    trainer.train(loader, epochs=15)
    after, _ = trainer.evaluate(loader)
    assert before < 0.5 and after > 0.85, (before, after)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_epoch_snapshot_memory_by_hand(optimizer):
    """Linear(4, 3) + BatchNorm1d(3): 21 float32 params (84 B); buffers: running mean and var (24 B) and the
    int64 batch count (8 B). SGD's momentum is one more copy of the params (84 B); AdamW's two moments are two
    (168 B) plus a float32 step count per parameter tensor (4 x 4 B). Before the first step there is no state."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    trainer = Trainer(net, MaskSet({}), TrainConfig(optimizer=optimizer), torch.device("cpu"))
    assert trainer.snapshot_memory() == SnapshotMemory(snapshot=116, params=84, buffers=32, optimizer=0)
    trainer.train([(torch.randn(5, 4), torch.randint(0, 3, (5,)))], epochs=1)
    state = {"sgd": 84, "adamw": 168 + 16}[optimizer]
    assert trainer.snapshot_memory() == SnapshotMemory(snapshot=116 + state, params=84, buffers=32, optimizer=state)
