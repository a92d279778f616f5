"""``--init-scale`` (docs/method.md, "Seed"): each unit's kept start weights scaled to its kept fan-in, or kept as
drawn (the paper's). Checked by hand on single layers, on the weights a run starts from, and on whether a sparse
network with PyTorch's default initialisation learns at all."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import pwmpr
from pwmpr import rundir
from pwmpr.cli.app import app
from pwmpr.data import load_data
from pwmpr.masks import MaskSet
from pwmpr.models import create_model
from pwmpr.seed.scale import fan_in_factors, scale_model

runner = CliRunner()


def test_fan_in_factors_by_hand():
    # 4 inputs per unit: 2 kept -> sqrt(4/2); 1 kept -> sqrt(4/1) = 2; all 4 -> 1; none -> 1 (nothing to scale).
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(fan_in_factors(mask), torch.tensor([math.sqrt(2), 2.0, 1.0, 1.0], dtype=torch.float64))


def test_fan_in_scales_each_unit_of_a_linear_and_a_conv_by_hand():
    model = nn.Sequential(nn.Conv2d(2, 2, 2), nn.Flatten(), nn.Linear(2, 3))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[2].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 4.0], [5.0, 6.0]]))
    conv = torch.zeros(2, 2, 2, 2, dtype=torch.bool)
    conv[0, 0, 0, 0] = True  # channel 0 keeps 1 of its 8 inputs (2 channels x 2 x 2): x sqrt(8)
    conv[1] = True  # channel 1 keeps all 8: x 1
    linear = torch.tensor([[True, False], [True, True], [False, False]])  # x sqrt(2), x 1, none kept: x 1
    masks = MaskSet({"0.weight": conv, "2.weight": linear})
    biases = [model[0].bias.clone(), model[2].bias.clone()]
    scale_model(model, masks, "fan-in")
    torch.testing.assert_close(model[0].weight[0], torch.full((2, 2, 2), math.sqrt(8)))  # the whole row: the mask
    torch.testing.assert_close(model[0].weight[1], torch.ones(2, 2, 2))                  # zeroes the rest later
    torch.testing.assert_close(model[2].weight, torch.tensor([[math.sqrt(2), -2 * math.sqrt(2)], [3.0, 4.0],
                                                              [5.0, 6.0]]))
    assert torch.equal(model[0].bias, biases[0]) and torch.equal(model[2].bias, biases[1])  # biases as drawn
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scale_model(model, masks, "keep")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _final_start(run) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model state and masks final training started from (the checkpoint of the phase growth stopped after)."""
    ck = next(c for c in reversed(rundir.checkpoints(run)) if rundir.load_tensors(c)[1]["stage"] == "final")
    tensors = rundir.load_tensors(ck)[0]
    return rundir.split_prefix(tensors, rundir.MODEL_PREFIX), rundir.split_prefix(tensors, rundir.MASK_PREFIX)


def _by_hand(value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``value`` with each row times sqrt(row length / kept entries of ``mask``'s row), then masked."""
    kept = mask.sum(dim=1).double()
    factors = torch.where(kept > 0, (mask.shape[1] / kept.clamp(min=1)).sqrt(), 1.0).to(value.dtype)
    return value * factors[:, None] * mask


def test_each_final_init_scales_the_initial_weights_for_the_mask_it_starts(tmp_path):
    """Under fan-in the run starts from the draw scaled for the seed (what rewind returns to), and a fresh start of
    the grown mask (reinit, and shrink-perturb's share of it) is the draw scaled for the grown mask."""
    args = ["--seed-density", "0.1", "--phase-epochs", "1", "--final-epochs", "1", "--max-phases", "3", "--stop",
            "none", "--plateau-tol", "0", "--keep-checkpoints", "0", "--init-scale", "fan-in"]
    starts = {}
    for mode in ("rewind", "reinit", "continue", "shrink-perturb"):
        out = tmp_path / mode
        result = runner.invoke(app, ["grow", "--data", "digits", "--model", "mlp", "--no-tau-core", "-q", *args,
                                     "--final-init", mode, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "config.json").read_text())["growth"]["init_scale"] == "fan-in"
        starts[mode] = _final_start(out)
    seed = rundir.split_prefix(rundir.load_tensors(rundir.checkpoints(tmp_path / "rewind")[0])[0], "start/mask/")
    grown = starts["reinit"][1]
    assert any((grown[k] & ~seed[k]).any() for k in grown)  # growth added edges: the two masks differ
    torch.manual_seed(0)  # the model's draw, as the run made it
    drawn = create_model("mlp", 10, (1, 8, 8)).state_dict()
    for name, value in drawn.items():
        if name not in grown:  # biases: as drawn under every rule
            torch.testing.assert_close(starts["rewind"][0][name], value, rtol=0, atol=0)
            continue
        rewound, fresh = _by_hand(value, seed[name]), _by_hand(value, grown[name])
        assert not torch.allclose(rewound, value * seed[name])  # a sparse layer: scaled
        torch.testing.assert_close(starts["rewind"][0][name], rewound, rtol=1e-6, atol=0)
        torch.testing.assert_close(starts["reinit"][0][name], fresh, rtol=1e-6, atol=0)
        mixed = (0.4 * starts["continue"][0][name] + 0.1 * fresh) * grown[name]
        torch.testing.assert_close(starts["shrink-perturb"][0][name], mixed, rtol=0, atol=1e-6)
    # The start kept for final training is the draw itself, before any scaling.
    kept = rundir.split_prefix(rundir.load_tensors(rundir.checkpoints(tmp_path / "rewind")[0])[0], "start/state/")
    assert all(torch.equal(kept[k], v) for k, v in drawn.items())


def test_a_fan_in_run_trains_from_the_draw_scaled_for_its_seed(tmp_path):
    from pwmpr.config import RunConfig
    from pwmpr.runner import PhaseLoop

    cfg = RunConfig(data="digits", model="mlp", device="cpu", tau_core=False,
                    growth={"seed_density": 0.1, "init_scale": "fan-in"})
    run = PhaseLoop(cfg, tmp_path / "run")
    run.start_fresh()
    torch.manual_seed(0)
    drawn = create_model("mlp", 10, (1, 8, 8)).state_dict()
    masks = run.trainer.masks
    for name, value in run.model.state_dict().items():
        want = _by_hand(drawn[name], masks[name]) if name in masks else drawn[name]
        torch.testing.assert_close(value, want, rtol=1e-6, atol=0)


class _Shared(nn.Module):
    """One Linear held under two names (``a`` and ``b``), used twice; a frozen Linear ``c``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = self.a
        self.c = nn.Linear(4, 2)
        self.c.weight.requires_grad_(False)

    def forward(self, x):
        return self.c(self.b(torch.relu(self.a(x))))


def test_a_weight_held_twice_is_scaled_under_both_names_and_a_frozen_one_not_at_all():
    """A state dict lists a module held twice under both names, and loading it sets the weight from the last one;
    a frozen weight could never train back from a scaling."""
    from pwmpr.methods.final_init import initial_for

    torch.manual_seed(0)
    model = _Shared()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    assert {"a.weight", "b.weight"} <= set(initial)
    mask = torch.tensor([[1, 0, 0, 0]] * 4, dtype=torch.bool)  # 1 of 4 kept: x 2
    masks = MaskSet({"a.weight": mask, "c.weight": torch.tensor([[1, 0, 0, 0]] * 2, dtype=torch.bool)})
    fresh = initial_for(model, initial, "fan-in")(masks)
    torch.testing.assert_close(fresh["a.weight"], 2 * initial["a.weight"])
    torch.testing.assert_close(fresh["b.weight"], 2 * initial["a.weight"])
    assert torch.equal(fresh["c.weight"], initial["c.weight"])
    model.load_state_dict(fresh)
    torch.testing.assert_close(model.a.weight.detach(), 2 * initial["a.weight"])
    scale_model(model, masks, "fan-in")  # in place: the weight once (x 2 again), the frozen one never
    torch.testing.assert_close(model.a.weight.detach(), 4 * initial["a.weight"])
    assert torch.equal(model.c.weight.detach(), initial["c.weight"])


class FunctionalReluMLP(nn.Module):
    """A user's MLP with PyTorch's default initialisation and a functional ReLU (no init of its own)."""

    def __init__(self, widths: tuple[int, ...] = (64, 256, 128, 64), num_classes: int = 10) -> None:
        super().__init__()
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.out = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        h = x.flatten(1)
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return self.out(h)


@pytest.mark.parametrize("seed", [0, 1])
def test_fan_in_lets_a_default_initialised_network_at_5_percent_learn_where_keep_stays_at_chance(tmp_path, seed):
    """PyTorch's default initialisation gives a weight variance 1/(3 fan-in), a sixth of He's, and non-zero biases;
    at 5% density four layers leave the output to the biases, and the seed does not train. Scaled to the kept
    fan-in, the same seed learns."""
    b = load_data("digits")
    acc = {}
    for scale in ("keep", "fan-in"):
        torch.manual_seed(seed)
        res = pwmpr.grow_module(FunctionalReluMLP(), (b.train.x, b.train.y), val=(b.val.x, b.val.y),
                                out=tmp_path / scale, phase_epochs=4, final_epochs=0, stop={"max_phases": 1},
                                device="cpu", seed=seed, tau_core=False,
                                growth={"seed_density": 0.05, "init_scale": scale})
        acc[scale] = res.summary["val_acc"]
    assert acc["keep"] < 0.2  # 10 classes: chance is 0.1
    assert acc["fan-in"] > 0.4, acc


def test_an_unknown_init_scale_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["grow", "--data", "digits", "--model", "mlp", "-q", "--init-scale", "bogus",
                                 "--out", str(out)])
    assert result.exit_code == 2
    assert "unknown init scale 'bogus'" in result.output and "fan-in" in result.output
    assert not out.exists()


def test_a_unit_of_a_grouped_conv_or_an_attention_projection_is_its_row():
    """A grouped conv's unit sees in/groups channels x the kernel (its row); an attention's packed in_proj_weight
    has one row per q, k or v feature."""
    model = nn.Sequential(nn.Conv2d(4, 2, 3, groups=2, bias=False))
    attn = nn.MultiheadAttention(4, 1, bias=False)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        attn.in_proj_weight.fill_(1.0)
    conv = torch.zeros(2, 2, 3, 3, dtype=torch.bool)  # each output channel: 2 input channels x 3 x 3 = 18 inputs
    conv[0, 0, 0, :2] = True  # 2 of 18 kept: x 3
    conv[1, :, :, :] = True  # all 18: x 1
    proj = torch.zeros(12, 4, dtype=torch.bool)
    proj[:, 0] = True  # 1 of 4 kept in every row: x 2
    scale_model(model, MaskSet({"0.weight": conv}), "fan-in")
    scale_model(attn, MaskSet({"in_proj_weight": proj}), "fan-in")
    torch.testing.assert_close(model[0].weight[0], torch.full((2, 3, 3), 3.0))
    torch.testing.assert_close(model[0].weight[1], torch.ones(2, 3, 3))
    torch.testing.assert_close(attn.in_proj_weight.detach(), torch.full((12, 4), 2.0))
