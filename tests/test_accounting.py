"""Training FLOPs (pwmpr.cost) and the tau-core (pwmpr.taucore) against hand counts and brute-force path enumeration."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toy import (
    Bypass,
    FlopNet,
    first_k_mask,
    funnel,
    mlp_3432,
    mlp_3432_paths,
    random_mlp,
    random_mlp_paths,
    tiny_cnn,
    tiny_cnn_paths,
    two_hidden,
)

from pwmpr import MaskSet, PwmprError, create_model, prunable
from pwmpr.cost import FlopCount, LayerFlops, training_flops
from pwmpr.taucore import tau_core


# -- FLOPs --------------------------------------------------------------------------------------------------------
def _flopnet_masks(net: FlopNet) -> MaskSet:
    return MaskSet(
        {
            "conv1.weight": first_k_mask(net.conv1.weight.shape, 50),
            "conv2.weight": first_k_mask(net.conv2.weight.shape, 100),
            "fc.weight": first_k_mask(net.fc.weight.shape, 40),
            "fc_tok.weight": first_k_mask(net.fc_tok.weight.shape, 10),
        }
    )


def test_training_flops_match_hand_count():
    # Input 3x8x8. One multiply-accumulate = 1.
    #   conv1  4x3x3x3 = 108 weights, 8x8 = 64 positions: dense 108*64 = 6912, 50 present: 50*64 = 3200
    #   conv2  8x4x3x3 = 288 weights, stride 2 -> 4x4 = 16: dense 288*16 = 4608, 100 present: 1600
    #   fc     10x8 = 80 weights, 1 position:                  dense 80,          40 present: 40
    #   fc_tok 4x6 = 24 weights, 5 tokens:                    dense 24*5 = 120,  10 present: 50
    net = FlopNet()
    f = training_flops(net, _flopnet_masks(net), (3, 8, 8))
    assert f.layers == {
        "conv1.weight": LayerFlops(sparse=3200, dense=6912, positions=64),
        "conv2.weight": LayerFlops(sparse=1600, dense=4608, positions=16),
        "fc.weight": LayerFlops(sparse=40, dense=80, positions=1),
        "fc_tok.weight": LayerFlops(sparse=50, dense=120, positions=5),
    }
    assert (f.sparse, f.dense) == (4890, 11720)
    assert f.ratio == pytest.approx(4890 / 11720)
    assert (f.training_step, f.dense_training_step) == (3 * 4890, 3 * 11720)


def test_training_flops_unmasked_layers_count_dense():
    net = FlopNet()
    assert training_flops(net, None, (3, 8, 8)).ratio == 1.0
    only = MaskSet({"conv1.weight": first_k_mask(net.conv1.weight.shape, 50)})
    f = training_flops(net, only, (3, 8, 8))
    assert (f.sparse, f.dense) == (3200 + 4608 + 80 + 120, 11720)


def test_training_flops_resnet20_dense_matches_hand_count():
    # CIFAR ResNet-20 on 3x32x32, kernel entries x output positions:
    #   stem 3*16*9*1024 = 442368; stage 1: 6 convs 16*16*9*1024 = 2359296 each;
    #   stage 2: 16*32*9*256 = 1179648, shortcut 16*32*256 = 131072, 5 convs 32*32*9*256 = 2359296 each;
    #   stage 3: 32*64*9*64 = 1179648, shortcut 32*64*64 = 131072, 5 convs 64*64*9*64 = 2359296 each; fc 64*10.
    expected = 442368 + 6 * 2359296 + 2 * (1179648 + 131072 + 5 * 2359296) + 640
    assert expected == 40_813_184
    model = create_model("resnet20", 10, (3, 32, 32))
    assert training_flops(model, MaskSet.dense(model), (3, 32, 32)).dense == expected


def test_training_flops_leave_model_unchanged_and_validate():
    net, masks = tiny_cnn()
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    f = training_flops(net, masks, (1, 6, 6))
    assert isinstance(f, FlopCount) and net.training and net.bn.training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())  # BN ran in eval mode
    with pytest.raises(PwmprError, match="input_shape"):
        training_flops(net, masks, (3, 6, 6))
    with pytest.raises(PwmprError, match="names no parameter"):
        training_flops(net, {"x.weight": torch.ones(1, dtype=torch.bool)}, (1, 6, 6))


# -- tau-core on hand-analysable nets -----------------------------------------------------------------------------
def test_tau_core_of_funnel_is_the_one_unit_carrying_95_percent():
    net = funnel()  # paths x-h0-y 19, x-h1-y 1; R = 20
    core = tau_core(net, MaskSet.dense(net), (1,), tau=0.9)
    assert (core.size, core.n_hidden, core.ratio, core.total) == (1, 2, 0.5, 20.0)
    assert core.units == [("0.weight", 0)]
    assert core.coverage == [pytest.approx(19 / 20, rel=1e-12)]
    assert core.reached
    # tau above 95% needs the second unit too.
    core = tau_core(net, MaskSet.dense(net), (1,), tau=0.99)
    assert core.units == [("0.weight", 0), ("0.weight", 1)] and core.coverage == [pytest.approx(0.95), 1.0]
    with torch.no_grad():  # a caller's no_grad() changes nothing
        assert tau_core(net, None, (1,), tau=0.9).units == [("0.weight", 0)]


def test_tau_core_greedy_recomputes_centrality_after_each_removal():
    # two_hidden: paths x-a1-a2-y 3, x-b1-a2-y 1, x-b1-b2-y 1 (R = 5); centralities a1 3, b1 2, a2 4, b2 1.
    # Step 1 removes a2 (layer 2.weight, unit 0): 4/5 covered, only x-b1-b2-y is left. Now b1 and b2 both
    # carry 1 (a1 carries 0, though it ranked second at the start); the tie goes to the first, b1.
    net = two_hidden()
    masks = MaskSet.dense(net)
    core = tau_core(net, masks, (1,), tau=0.8)
    assert core.units == [("2.weight", 0)] and core.coverage == [pytest.approx(0.8, rel=1e-12)]
    core = tau_core(net, masks, (1,), tau=0.9)
    assert core.units == [("2.weight", 0), ("0.weight", 1)]
    assert core.coverage == [pytest.approx(0.8, rel=1e-12), 1.0]
    assert (core.size, core.n_hidden, core.ratio) == (2, 4, 0.5)
    assert core.per_layer() == {"2.weight": 1, "0.weight": 1}


def test_tau_core_without_any_path_is_empty():
    net = funnel()
    cut = MaskSet({"0.weight": torch.zeros(2, 1, dtype=torch.bool)})
    core = tau_core(net, cut, (1,))
    assert (core.size, core.ratio, core.coverage, core.total, core.units) == (0, 0.0, [], 0.0, [])
    assert core.n_hidden == 2 and core.reached


def test_tau_core_stops_when_remaining_mass_bypasses_hidden_units():
    # Bypass: y = skip(x) + out(hidden(x)); skip carries 3 of R = 4 through no hidden unit, and both skip and
    # out produce the output, so the one hidden unit is hidden's. Removing it covers 1/4 at most.
    net = Bypass()
    core = tau_core(net, MaskSet.dense(net), (1,), tau=0.9)
    assert core.n_hidden == 1 and core.units == [("hidden.weight", 0)]
    assert core.coverage == [0.25] and not core.reached
    assert tau_core(net, MaskSet.dense(net), (1,), tau=0.25).reached


# -- tau-core against brute force ---------------------------------------------------------------------------------
def _brute_greedy(net, masks, paths_fn, units: dict[str, int], tau: float) -> tuple[list, list]:
    """Greedy tau-core by path enumeration: remove a unit by masking its incoming edges, re-enumerate."""
    masks = masks.clone()
    r0 = paths_fn(net, masks).total
    picked, coverage = [], []
    while True:
        sums = paths_fn(net, masks)
        cent = {
            (name, c): sum(v for node, v in sums.through.items() if node[0] == level and node[1] == c)
            for name, level in units.items()
            for c in range(masks[name].shape[0])
        }
        best = max(cent, key=cent.get)
        picked.append(best)
        m = masks.to_dict()
        m[best[0]][best[1]] = False
        masks = MaskSet(m)
        coverage.append(1 - paths_fn(net, masks).total / r0)
        if coverage[-1] >= tau:
            return picked, coverage


def test_tau_core_matches_brute_force_greedy_on_mlp():
    net, masks = random_mlp((3, 6, 5, 2), density=0.6, seed=5)
    # Hidden units: outputs of 0.weight (node level 1) and 2.weight (level 2); 4.weight is the classifier.
    picked, coverage = _brute_greedy(net, masks, random_mlp_paths, {"0.weight": 1, "2.weight": 2}, tau=0.99)
    assert len(picked) == 6 and {n for n, _ in picked} == {"0.weight", "2.weight"}  # a non-trivial greedy
    core = tau_core(net, masks, (3,), tau=0.99)
    assert core.n_hidden == 6 + 5
    assert core.units == picked
    torch.testing.assert_close(torch.tensor(core.coverage), torch.tensor(coverage), rtol=1e-9, atol=1e-12)
    assert core.total == pytest.approx(random_mlp_paths(net, masks).total, rel=1e-9)


def test_tau_core_matches_brute_force_greedy_on_mlp_with_norms_and_a_dead_unit():
    net, masks = mlp_3432(seed=2)
    picked, coverage = _brute_greedy(net, masks, mlp_3432_paths, {"0.weight": 1, "3.weight": 3}, tau=0.999)
    core = tau_core(net, masks, (3,), tau=0.999)
    assert core.n_hidden == 4 + 3 and core.units == picked
    torch.testing.assert_close(torch.tensor(core.coverage), torch.tensor(coverage), rtol=1e-9, atol=1e-12)


def test_tau_core_matches_brute_force_greedy_on_cnn():
    net, masks = tiny_cnn()
    # Hidden units: conv1 channels (node level 1), conv2 channels (level 4); fc is the classifier.
    picked, coverage = _brute_greedy(net, masks, tiny_cnn_paths, {"conv1.weight": 1, "conv2.weight": 4}, tau=0.9)
    core = tau_core(net, masks, (1, 6, 6), tau=0.9)
    assert core.n_hidden == 3 + 3
    assert core.units == picked
    torch.testing.assert_close(torch.tensor(core.coverage), torch.tensor(coverage), rtol=1e-9, atol=1e-12)


# -- tau-core on registered models --------------------------------------------------------------------------------
def test_tau_core_on_resnet20_counts_hidden_channels_and_leaves_model_alone():
    model = create_model("resnet20", 10, (3, 8, 8))
    g = torch.Generator().manual_seed(0)
    masks = MaskSet({n: torch.rand(model.get_parameter(n).shape, generator=g) < 0.1 for n in prunable(model)})
    state = {k: v.clone() for k, v in model.state_dict().items()}
    core = tau_core(model, masks, (3, 8, 8), tau=0.9)
    # Stem 16, stage 1: 6 convs x 16, stage 2: 6 convs + shortcut x 32, stage 3: 7 x 64; fc excluded.
    assert core.n_hidden == 16 + 6 * 16 + 7 * 32 + 7 * 64 == 784
    assert core.reached and core.coverage[-1] >= 0.9 and core.coverage[-2:-1] < [0.9]
    assert all(a < b for a, b in zip(core.coverage, core.coverage[1:], strict=False))
    assert len(set(core.units)) == core.size and all(n != "fc.weight" for n, _ in core.units)
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_tau_core_rejects_bad_tau_and_input_shape():
    net = funnel()
    for tau in (0.0, 1.5, -0.1):
        with pytest.raises(PwmprError, match="tau"):
            tau_core(net, None, (1,), tau=tau)
    with pytest.raises(PwmprError, match="input_shape"):
        tau_core(net, None, (4,))


def test_flops_of_grouped_and_depthwise_convolutions_by_hand():
    # 5x5 maps, padding 1. Grouped conv 8 -> 16 in 4 groups: each output reads 8 / 4 = 2 channels x 9 cells, so
    # 16 * 25 * 18 = 7200 MACs. Depthwise 16 -> 16: 16 * 25 * 9 = 3600. The classifier: 16 * 3 = 48.
    net = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=4), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
    dense = training_flops(net, None, (8, 5, 5))
    assert dense.layers["0.weight"].dense == 7200 and dense.layers["2.weight"].dense == 3600
    assert dense.dense == dense.sparse == 7200 + 3600 + 48
    keep = torch.zeros(16, 2, 3, 3, dtype=torch.bool)
    keep.view(-1)[:10] = True  # 10 entries, each applied at 25 positions
    sparse = training_flops(net, {"0.weight": keep}, (8, 5, 5))
    assert sparse.layers["0.weight"].sparse == 10 * 25 and sparse.sparse == 250 + 3600 + 48


def test_flops_of_packed_attention_projections_by_hand():
    # 3 tokens of width 4: the packed q/k/v projection costs 12 * 4 per token, the output projection 4 * 4.
    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x)[0].mean(1)

    net = Attention()
    flops = training_flops(net, None, (3, 4))
    assert flops.layers["attn.in_proj_weight"].dense == 3 * 12 * 4
    assert flops.layers["attn.out_proj.weight"].dense == 3 * 4 * 4
    keep = torch.zeros(12, 4, dtype=torch.bool)
    keep[8:] = True  # the value rows only
    assert training_flops(net, {"attn.in_proj_weight": keep}, (3, 4)).layers["attn.in_proj_weight"].sparse == 3 * 16
