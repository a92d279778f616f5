"""One-shot pruning at initialisation: every pruner hits its density, magnitude ranks the initial |w|, bad options."""

from __future__ import annotations

import pytest
import torch

from pwmpr.config import RunConfig
from pwmpr.errors import PwmprError
from pwmpr.methods import METHODS
from pwmpr.methods.oneshot import OneShotOptions
from pwmpr.models import create_model
from pwmpr.seed import SEEDS


def _method(**opts):
    cfg = RunConfig(method="oneshot", model="mlp", data="digits", final_epochs=3, options=opts)
    return METHODS.get("oneshot")(cfg)


@pytest.mark.parametrize("pruner", SEEDS.names())
def test_every_pruner_masks_once_at_the_requested_density(pruner):
    torch.manual_seed(0)
    model = create_model("mlp", 10, (1, 8, 8))
    method = _method(pruner=pruner, density=0.2)
    masks = method.initial_masks(model, (1, 8, 8))
    assert masks.density() == pytest.approx(0.2, abs=0.005)
    # One phase of final_epochs with the final schedule, then the base class stops: the mask never changes.
    assert method.phase_epochs(0) == 3 and method.phase_schedule(0) == "cosine" and not method.has_final


def test_magnitude_keeps_the_largest_initial_weights():
    torch.manual_seed(1)
    model = create_model("mlp", 10, (1, 8, 8))
    masks = _method(pruner="magnitude", density=0.1).initial_masks(model, (1, 8, 8))
    kept = torch.cat([model.get_parameter(n).detach().abs()[m] for n, m in masks.items()])
    dropped = torch.cat([model.get_parameter(n).detach().abs()[~m] for n, m in masks.items()])
    assert kept.min() >= dropped.max()


def test_bad_options_are_refused():
    with pytest.raises(PwmprError, match="unknown one-shot method 'magic'"):
        OneShotOptions(pruner="magic")
    with pytest.raises(PwmprError, match="density must be in"):
        OneShotOptions(density=0.0)
    with pytest.raises(PwmprError, match="unknown one-shot option"):
        OneShotOptions.from_options({"sparsity": 0.9})
