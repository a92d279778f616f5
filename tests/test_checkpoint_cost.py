"""The checkpoint format round-trips and refuses what resume could not use; the cost entries match a hand count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pwmpr import checkpoint
from pwmpr.cost import phase_cost
from pwmpr.errors import PwmprError


def test_phase_cost_by_hand():
    # 10 forward FLOPs per sample sparse, 100 dense, 50 samples, 2 epochs, against one dense run of 10 epochs:
    # phase 3 * 10 * 50 * 2 = 3,000; dense run 3 * 100 * 50 * 10 = 150,000.
    first = phase_cost(None, sparse_fwd=10, dense_fwd=100, n_train=50, epochs=2, reference_epochs=10)
    assert first["train_flops"] == 3000 and first["train_flops_total"] == 3000
    assert first["cost_flops"] == pytest.approx(0.02) and first["cost_epochs"] == pytest.approx(0.2)
    # A second phase of 3 epochs at 20 FLOPs: 3 * 20 * 50 * 3 = 9,000 more; 5 epochs in all.
    second = phase_cost(first, sparse_fwd=20, dense_fwd=100, n_train=50, epochs=3, reference_epochs=10)
    assert second["train_flops_total"] == 12000 and second["epochs_total"] == 5
    assert second["cost_flops"] == pytest.approx(0.08) and second["cost_epochs"] == pytest.approx(0.5)


def _ck(model: nn.Module) -> checkpoint.Checkpoint:
    gens = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    return checkpoint.Checkpoint(
        model_state=model.state_dict(), masks={"weight": torch.rand(3, 4) > 0.5},
        optimizer={"0/momentum_buffer": torch.ones(3, 4)}, rng=checkpoint.rng_states(*gens), next_phase=2,
        stage="phase", history=[{"phase": 0, "val_acc": 0.5}, {"phase": 1, "val_acc": 0.6}], stop_reason="",
        global_step=17, method_state={"best": torch.tensor([0.6])}, rewind={"weight": torch.zeros(3, 4)},
        extra_meta={"input_shape": [4]})


def test_checkpoint_round_trip(tmp_path):
    model = nn.Linear(4, 3)
    ck = _ck(model)
    path = tmp_path / "phase-001.safetensors"
    checkpoint.write(path, ck)
    back = checkpoint.read(path, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    assert back.next_phase == 2 and back.stage == "phase" and back.global_step == 17 and back.history == ck.history
    assert torch.equal(back.masks["weight"], ck.masks["weight"]) and torch.equal(back.model_state["weight"],
                                                                                 model.weight.detach())
    assert torch.equal(back.method_state["best"], torch.tensor([0.6])) and back.rewind is not None
    assert set(back.rng) == {"torch", "data", "grow"} and back.extra_meta["input_shape"] == [4]
    g = torch.Generator()
    g.set_state(back.rng["data"])
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=torch.Generator().manual_seed(1)))


def test_masks_come_back_in_the_models_order_not_the_files(tmp_path):
    """Growth draws over the layers in the masks' order, so a resumed run must see them in the model's order
    (here "z" before "a"), not the sorted order the file keeps."""
    from collections import OrderedDict

    model = nn.Sequential(OrderedDict([("z", nn.Linear(4, 3)), ("a", nn.Linear(3, 2))]))
    ck = _ck(nn.Linear(4, 3))
    ck.model_state = model.state_dict()
    ck.masks = {"z.weight": torch.ones(3, 4, dtype=torch.bool), "a.weight": torch.ones(2, 3, dtype=torch.bool)}
    ck.rewind = None
    path = tmp_path / "phase-000.safetensors"
    checkpoint.write(path, ck)
    back = checkpoint.read(path, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    assert list(back.masks) == ["z.weight", "a.weight"]
    ck.masks["ghost.weight"] = torch.ones(2, dtype=torch.bool)  # not the model's: kept, for resume's checks to refuse
    checkpoint.write(path, ck)
    back = checkpoint.read(path, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    assert list(back.masks) == ["z.weight", "a.weight", "ghost.weight"]


def test_checkpoint_refuses_another_model_and_missing_parts(tmp_path):
    model = nn.Linear(4, 3)
    path = tmp_path / "phase-000.safetensors"
    checkpoint.write(path, _ck(model))
    with pytest.raises(PwmprError, match="do not fit"):
        checkpoint.read(path, {"weight": (5, 4), "bias": (5,)})
    ck = _ck(model)
    ck.rng.pop("grow")
    checkpoint.write(path, ck)
    with pytest.raises(PwmprError, match="random generator"):
        checkpoint.read(path, {k: tuple(v.shape) for k, v in model.state_dict().items()})
