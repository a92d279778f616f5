"""MaskSet: densities by hand, apply, checks, and prunable()."""

import pytest
import torch
from torch import nn

from pwmpr import MaskSet, PwmprError, create_model, prunable


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2, 3))


def test_prunable_names_every_conv_and_linear_weight_but_no_bias_or_norm():
    assert prunable(_net()) == ["0.weight", "4.weight"]
    names = prunable(create_model("resnet20", 10, (3, 32, 32)))
    assert "fc.weight" in names and "blocks.3.shortcut.0.weight" in names
    assert not any(n.endswith("bias") or ".bn" in n for n in names)


def test_a_module_used_twice_is_prunable_and_a_weight_tied_across_modules_is_not():
    shared = nn.Linear(4, 4)
    assert prunable(nn.Sequential(nn.Linear(4, 4), shared, nn.ReLU(), shared)) == ["0.weight", "1.weight"]
    embed, head = nn.Embedding(5, 4), nn.Linear(4, 5)
    head.weight = embed.weight  # a language model's tied head: masking it would mask the table too
    assert prunable(nn.ModuleDict({"embed": embed, "head": head, "fc": nn.Linear(4, 4)})) == ["fc.weight"]


def test_a_parametrized_weight_is_left_dense_and_the_rest_still_grows():
    """weight_norm computes the weight from two Parameters: there is no weight Parameter to mask, so it stays dense
    (as an embedding does) and the other layers are seeded, scored and costed as usual."""
    from torch.nn.utils.parametrizations import weight_norm

    from pwmpr.cost import training_flops
    from pwmpr.seed import phew_masks

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), weight_norm(nn.Linear(8, 8)), nn.ReLU(), nn.Linear(8, 3))
    assert prunable(model) == ["0.weight", "4.weight"]
    assert training_flops(model, MaskSet.dense(model), (4,)).dense == 4 * 8 + 8 * 3
    assert set(phew_masks(model, 0.5, (4,), seed=0)) == {"0.weight", "4.weight"}


def test_density_counts_by_hand():
    masks = MaskSet({"a": torch.tensor([True, False, False, True]), "b": torch.tensor([[1, 0], [0, 0]])})
    assert masks.n_total() == 8 and masks.n_nonzero() == 3
    assert masks.density() == pytest.approx(3 / 8)
    assert masks.layer_density() == {"a": 0.5, "b": 0.25}
    assert masks["b"].dtype == torch.bool


def test_apply_zeroes_masked_weights_in_place_and_keeps_the_rest():
    net = _net()
    before = net[4].weight.detach().clone()
    keep = torch.tensor([[True, False], [False, True], [True, True]])
    MaskSet({"4.weight": keep}).apply(net)
    assert torch.equal(net[4].weight.detach(), before * keep)


def test_dense_and_from_weights_round_trip():
    net = _net()
    dense = MaskSet.dense(net)
    assert dense.density() == 1.0
    with torch.no_grad():
        net[4].weight[0, 0] = 0
    assert MaskSet.from_weights(net).n_nonzero() == dense.n_nonzero() - 1


@pytest.mark.parametrize(
    ("masks", "message"),
    [
        ({"nope.weight": torch.ones(2, dtype=torch.bool)}, "names no parameter"),
        ({"4.bias": torch.ones(3, dtype=torch.bool)}, "not prunable"),
        ({"4.weight": torch.ones(2, 3, dtype=torch.bool)}, "shape"),
    ],
)
def test_bad_masks_are_refused_with_the_name(masks, message):
    with pytest.raises(PwmprError, match=message):
        MaskSet(masks).apply(_net())


def test_non_binary_mask_is_refused():
    with pytest.raises(ValueError, match="only 0 and 1"):
        MaskSet({"a": torch.tensor([0.5, 1.0])})
