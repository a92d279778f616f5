"""Seed masks (pwmpr.seed, pwmpr.graph): PHEW walks on the real compute graph, and the one-shot baselines."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pwmpr.errors import PwmprError
from pwmpr.graph import build_unit_graph
from pwmpr.masks import PRUNABLE_TYPES, MaskSet, prunable
from pwmpr.models import create_model
from pwmpr.seed import SEEDS, phew_masks
from pwmpr.seed.phew import _PhewWalks
from pwmpr.surrogate import linear_surrogate

CIFAR = (3, 32, 32)


def _model(name: str, input_shape=CIFAR, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes, input_shape)


def _target(density: float, masks: MaskSet) -> int:
    return round(density * masks.n_total())


def _set(layer: nn.Module, values) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(values, dtype=torch.float32).view_as(layer.weight))


# -- dead-unit checks (test helpers) -------------------------------------------------------------------------------


def assert_no_dead_units(model: nn.Module, masks: MaskSet, input_shape, chain: bool = False) -> None:
    """Every enabled weight lies on an enabled input-output path of the masked |W| linear net on an all-ones input.

    For each prunable layer, with F the forward mass (activation) and B the backward mass (gradient of the
    summed output) per unit of the layer's input and output: a unit with an enabled outgoing weight has
    F > 0 and B > 0 at the input; a unit with an enabled incoming weight has F > 0 and B > 0 at the output.
    With ``chain=True`` (no residual merges) also, for every hidden layer input, F > 0 iff B > 0: a unit has
    an incoming path iff it has an outgoing one. (With residual merges a stream unit no walk visits can
    still have B > 0 through the identity path, which is no dead weight, so only the edge form applies.)
    """
    lin = linear_surrogate(model, masks)
    seen: dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]] = {}

    def hook(name):
        def fn(mod, inputs, out):
            if inputs[0].requires_grad:
                inputs[0].retain_grad()
            out.retain_grad()
            seen[name] = (mod, inputs[0], out)

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in lin.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    x = torch.ones((1, *input_shape), dtype=torch.float64, requires_grad=True)
    lin(x).sum().backward()
    for h in handles:
        h.remove()
    first = True
    for name, (mod, inp, out) in seen.items():
        mask = masks[f"{name}.weight"].cpu()
        unit_dim = 1 if not isinstance(mod, nn.Linear) else -1

        def per_unit(t, unit_dim=unit_dim):
            return t.detach().movedim(unit_dim, 0).reshape(t.shape[unit_dim], -1).sum(1)

        f_in, b_in, f_out, b_out = per_unit(inp), per_unit(inp.grad), per_unit(out), per_unit(out.grad)
        uses = mask.transpose(0, 1).reshape(mask.shape[1], -1).any(1)
        feeds = mask.reshape(mask.shape[0], -1).any(1)
        assert bool((f_in[uses] > 0).all() and (b_in[uses] > 0).all()), f"{name}: enabled weight from a dead unit"
        assert bool((f_out[feeds] > 0).all() and (b_out[feeds] > 0).all()), f"{name}: enabled weight into a dead unit"
        if chain and not first:
            assert torch.equal(f_in > 0, b_in > 0), f"{name}: a hidden unit has inputs but no outputs or vice versa"
        first = False


def assert_chain_consistent(model: nn.Module, masks: MaskSet) -> None:
    """Plain chains: the units a layer writes to (rows with an enabled weight) are the units the next layer reads."""
    names = prunable(model)
    for a, b in zip(names, names[1:], strict=False):
        rows = masks[a].reshape(masks[a].shape[0], -1).any(1)
        cols = masks[b].transpose(0, 1).reshape(masks[b].shape[1], -1).any(1)
        assert torch.equal(rows, cols), f"{a} -> {b}: units with inputs differ from units with outputs"


# -- hand-checkable nets -------------------------------------------------------------------------------------------


def _two_two_two(w1, w2) -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 2))
    _set(net[0], w1)
    _set(net[2], w2)
    return net


class _ConvThenLinear(nn.Module):
    """1 input channel -> conv (2 channels, 1x2 kernel) -> flatten -> Linear to 1 class."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, (1, 2), bias=False)
        self.fc = nn.Linear(2, 1, bias=False)
        _set(self.conv, [[1.0, 3.0], [0.0, 12.0]])  # N = [4, 12]; cells of unit 0: 1/4, 3/4
        _set(self.fc, [[1.0, 4.0]])

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x), 1))


class _Residual(nn.Module):
    """a -> h; out = c(h + b(h)): a fork at h with a weight branch (b) and an identity branch."""

    def __init__(self, wb: float) -> None:
        super().__init__()
        self.a, self.b, self.c = (nn.Linear(1, 1, bias=False) for _ in range(3))
        for layer, w in ((self.a, 1.0), (self.b, wb), (self.c, 1.0)):
            _set(layer, [[w]])

    def forward(self, x):
        h = self.a(x)
        return self.c(h + self.b(h))


def _walk(model: nn.Module, input_shape, n: int, seed: int = 0):
    """Edges (flat ids over the prunable weights) and walk ids of walks 0..n-1."""
    graph = build_unit_graph(model, input_shape)
    offsets, total = {}, 0
    for name, p in ((n, dict(model.named_parameters())[n]) for n in prunable(model)):
        offsets[name] = total
        total += p.numel()
    return _PhewWalks(graph, offsets)._walk(torch.arange(n), torch.Generator().manual_seed(seed))


def test_phew_two_two_two_follows_the_only_paths():
    # W1 diagonal, W2 anti-diagonal: walk 0 goes in0 -> h0 -> out1, walk 1 comes back out0 -> h1 -> in1.
    net = _two_two_two([[1, 0], [0, 1]], [[0, 1], [1, 0]])
    for seed in (0, 1, 7):
        quarter = phew_masks(net, 0.25, (2,), seed=seed)
        assert quarter["0.weight"].tolist() == [[True, False], [False, False]]
        assert quarter["2.weight"].tolist() == [[False, False], [True, False]]
        half = phew_masks(net, 0.5, (2,), seed=seed)
        assert half["0.weight"].tolist() == [[True, False], [False, True]]
        assert half["2.weight"].tolist() == [[False, True], [True, False]]


def test_phew_out_of_reach_density_raises():
    net = _two_two_two([[1, 0], [0, 1]], [[0, 1], [1, 0]])  # only 4 of the 8 weights lie on any walk
    with pytest.raises(PwmprError, match="density"):
        phew_masks(net, 0.75, (2,))


def test_phew_zero_column_moves_uniformly():
    net = _two_two_two([[0, 0], [0, 0]], [[1, 0], [0, 1]])
    hidden = {int(phew_masks(net, 0.25, (2,), seed=s)["0.weight"][:, 0].int().argmax()) for s in range(20)}
    assert hidden == {0, 1}


def test_phew_hops_in_proportion_to_kernel_norms_and_cells():
    n = 20000
    edges, walks = _walk(_ConvThenLinear(), (1, 1, 2), n)
    # Flat ids: conv (o, cell) -> 2 * o + cell in 0..3; fc unit h -> 4 + h.
    for direction, expected in (
        (0, {0: 0.25 * 0.25, 1: 0.25 * 0.75, 2: 0.0, 3: 0.75, 4: 0.25, 5: 0.75}),  # forward: P(o|c) = N[o, c] / sum_o
        (1, {0: 0.2 * 0.25, 1: 0.2 * 0.75, 2: 0.0, 3: 0.8, 4: 0.2, 5: 0.8}),  # backward: P(c|o) = N[o, c] / sum_c
    ):
        counts = torch.bincount(edges[walks % 2 == direction], minlength=6).double() / (n / 2)
        for idx, p in expected.items():
            assert abs(float(counts[idx]) - p) < 0.02, (direction, idx, float(counts[idx]), p)


def test_phew_residual_branch_in_proportion_to_path_mass():
    # At h: branch b carries N_b * B = 3, the identity 1, so P(b) = 3/4; backward, F(b) = 3 vs F(h) = 1.
    n = 20000
    edges, walks = _walk(_Residual(3.0), (1,), n)
    for direction in (0, 1):
        through_b = float((edges[walks % 2 == direction] == 1).sum()) / (n / 2)
        assert abs(through_b - 0.75) < 0.02, (direction, through_b)
    # A branch without mass is never taken.
    edges, _ = _walk(_Residual(0.0), (1,), 2000)
    assert not bool((edges == 1).any())


# -- real models ---------------------------------------------------------------------------------------------------

MODELS = [
    pytest.param("mlp", (1, 28, 28), id="mlp-image"),
    pytest.param("mlp", (784,), id="mlp-flat"),
    pytest.param("cnn", CIFAR, id="cnn"),
    pytest.param("resnet20", CIFAR, id="resnet20"),
]


@pytest.mark.parametrize("name,shape", MODELS)
@pytest.mark.parametrize("density", [0.02, 0.1])
def test_phew_density_within_a_thousandth(name, shape, density):
    model = _model(name, shape)
    masks = phew_masks(model, density, shape, seed=0)
    assert set(masks) == set(prunable(model))
    target = _target(density, masks)
    assert target <= masks.n_nonzero() <= target + 0.001 * masks.n_total()


@pytest.mark.parametrize("name,shape", MODELS)
def test_phew_leaves_no_dead_units(name, shape):
    model = _model(name, shape)
    masks = phew_masks(model, 0.03, shape, seed=1)
    chain = name != "resnet20"
    assert_no_dead_units(model, masks, shape, chain=chain)
    assert sum(build_unit_graph(model, shape).dead_edges(masks).values()) == 0
    if chain:
        assert_chain_consistent(model, masks)
    assert all(n > 0 for n in masks.layer_nonzero().values())


def test_dead_unit_checks_catch_a_dead_edge():
    model = _model("mlp", (784,))
    masks = phew_masks(model, 0.05, (784,), seed=0).to_dict()
    unit = int(masks["net.3.weight"].any(0).nonzero()[0])  # a hidden unit with outgoing edges ...
    masks["net.1.weight"][unit] = False  # ... loses its incoming ones
    n_out = int(masks["net.3.weight"][:, unit].sum())
    masks = MaskSet(masks)
    dead = build_unit_graph(model, (784,)).dead_edges(masks)
    assert dead["net.1.weight"] == 0 and dead["net.3.weight"] == n_out
    with pytest.raises(AssertionError, match="dead unit"):
        assert_no_dead_units(model, masks, (784,))
    with pytest.raises(AssertionError):
        assert_chain_consistent(model, masks)


@pytest.mark.parametrize("name,shape", [MODELS[0], MODELS[3]])
def test_phew_same_seed_same_masks_other_seed_other_masks(name, shape):
    model = _model(name, shape)
    a = phew_masks(model, 0.05, shape, seed=3)
    assert a.equal(phew_masks(model, 0.05, shape, seed=3))
    assert not a.equal(phew_masks(model, 0.05, shape, seed=4))


def test_phew_walks_resnet_shortcuts():
    model = _model("resnet20")
    graph = build_unit_graph(model, CIFAR)
    assert set(graph.params()) == set(prunable(model))
    assert sum(g.kind == "merge" for g in graph.groups) == 9  # one residual add per block
    masks = phew_masks(model, 0.1, CIFAR, seed=0)
    assert all(masks[f"blocks.{b}.shortcut.0.weight"].any() for b in (3, 6))


def test_phew_leaves_model_and_global_rng_alone():
    model = _model("resnet20")
    model.train()
    model.blocks[1].eval()  # a mixed state must survive too
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    rng = torch.get_rng_state()
    phew_masks(model, 0.05, CIFAR, seed=0)
    assert torch.equal(rng, torch.get_rng_state())
    assert {n: m.training for n, m in model.named_modules()} == modes
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.grad_fn and p.grad is None for p in model.parameters())


def test_phew_density_one_is_dense():
    model = _model("cnn")
    masks = phew_masks(model, 1.0, CIFAR)
    assert masks.density() == 1.0 and set(masks) == set(prunable(model))


class _Functional(nn.Module):
    """Functional ops, a view-flatten, a spatial mean and modules declared in reverse order of use."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8 * 4 * 4, 10)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.side = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x)) * 0.5 + self.side(x)
        x = F.avg_pool2d(x, 2)
        return self.fc(x.view(x.size(0), -1))


def test_phew_follows_compute_graph_not_parameter_order():
    model = _Functional()
    shape = (3, 16, 16)
    masks = phew_masks(model, 0.1, shape, seed=0)
    target = _target(0.1, masks)
    assert target <= masks.n_nonzero() <= target + 0.001 * masks.n_total() + 8
    assert_no_dead_units(model, masks, shape)
    # The fc reads a flattened 8 x 4 x 4 map: its units are the 8 channels, its cells the 16 positions.
    link = next(link for link in build_unit_graph(model, shape).links if link.param == "fc.weight")
    assert link.cells.shape == (10, 8, 16)


def test_phew_vit_gives_q_k_v_edges():
    model = _model("vit-tiny")
    masks = phew_masks(model, 0.02, CIFAR, seed=0)
    target = _target(0.02, masks)
    assert target <= masks.n_nonzero() <= target + 0.001 * masks.n_total()
    nonzero = masks.layer_nonzero()
    assert all(nonzero[f"blocks.{b}.attn.{p}.weight"] > 0 for b in range(12) for p in ("q", "k", "v", "proj"))
    # Checked on the unit graph: in the |W| net (uniform attention) q and k carry no path mass at all.
    assert sum(build_unit_graph(model, CIFAR).dead_edges(masks).values()) == 0


def test_phew_resnet18_smoke():
    model = _model("resnet18")
    masks = phew_masks(model, 0.01, CIFAR, seed=0)
    target = _target(0.01, masks)
    assert target <= masks.n_nonzero() <= target + 0.001 * masks.n_total()
    assert all(n > 0 for n in masks.layer_nonzero().values())
    assert sum(build_unit_graph(model, CIFAR).dead_edges(masks).values()) == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet32", "resnet18", "resnet50"])
def test_phew_large_models_no_dead_units(name):
    model = _model(name)
    masks = phew_masks(model, 0.05, CIFAR, seed=0)
    target = _target(0.05, masks)
    assert target <= masks.n_nonzero() <= target + 0.001 * masks.n_total()
    assert_no_dead_units(model, masks, CIFAR)


# -- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["phew", "random", "magnitude", "synflow"])
@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, math.nan, "0.1", True, None])
def test_bad_density_is_named(method, density):
    with pytest.raises(PwmprError, match="density"):
        SEEDS.get(method)(_model("mlp", (784,)), density, (784,), 0)


@pytest.mark.parametrize("method", ["phew", "random", "magnitude", "synflow"])
@pytest.mark.parametrize("shape", [(3, 32), (1, 28, 28, 1), (0, 32, 32), "abc"])
def test_bad_input_shape_is_named(method, shape):
    with pytest.raises(PwmprError, match="input_shape"):
        SEEDS.get(method)(_model("resnet20"), 0.1, shape, 0)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_bad_seed_is_named(seed):
    with pytest.raises(PwmprError, match="seed"):
        phew_masks(_model("mlp", (784,)), 0.1, (784,), seed)


def test_unknown_seed_method_lists_known_ones():
    with pytest.raises(PwmprError, match="phew"):
        SEEDS.get("lottery")
    assert {"phew", "random", "magnitude", "synflow"} <= set(SEEDS.names())


class _Upsampling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.up(self.conv(x)).mean((2, 3)))


class _Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.a(x) * self.b(x))


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.other = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) if x.sum() >= 0 else self.other(x)


@pytest.mark.parametrize(
    "model,shape",
    [
        (_Upsampling(), CIFAR),
        (_Gated(), (4,)),
        (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2)), (4, 3, 3)),
    ],
    ids=["upsample", "gate", "grouped-conv"],
)
def test_ops_beyond_the_paper_are_walked(model, shape):
    masks = phew_masks(model, 0.5, shape)
    assert all(n > 0 for n in masks.layer_nonzero().values())
    assert sum(build_unit_graph(model, shape).dead_edges(masks).values()) == 0


def test_python_control_flow_follows_the_probe_input():
    # The forward runs for real on a probe input of zeros: the branch it takes is the graph.
    assert build_unit_graph(_Branchy(), (4,)).params() == ["fc.weight"]


class _Fn(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.a, self.fn, self.b = nn.Linear(4, 6), fn, nn.Linear(6, 2)

    def forward(self, x):
        return self.b(self.fn(self.a(x)))


@pytest.mark.parametrize(
    "fn,op",
    [
        (lambda h: torch.cumsum(h, dim=1), r"cumsum\(\).*no rule"),
        (lambda h: h[:, h.argmax(1)].expand(-1, 6), r"__getitem__\(\).*positions computed from the input"),
    ],
    ids=["unknown-op", "data-dependent-index"],
)
def test_an_op_without_a_rule_is_named(fn, op):
    with pytest.raises(PwmprError, match=r"module _Fn \(_Fn\) calls " + op):
        phew_masks(_Fn(fn), 0.1, (4,))


# -- one-shot baselines --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["random", "magnitude", "synflow"])
def test_baselines_keep_exactly_the_target(method):
    model = _model("mlp", (64,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = SEEDS.get(method)(model, 0.05, (64,), 0)
    assert set(masks) == set(prunable(model))
    assert masks.n_nonzero() == _target(0.05, masks)
    assert masks.equal(SEEDS.get(method)(model, 0.05, (64,), 0))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_random_depends_on_seed():
    model = _model("cnn")
    assert not SEEDS.get("random")(model, 0.1, CIFAR, 0).equal(SEEDS.get("random")(model, 0.1, CIFAR, 1))


def test_magnitude_keeps_the_largest_weights():
    model = _model("cnn")
    masks = SEEDS.get("magnitude")(model, 0.1, CIFAR, 0)
    params = dict(model.named_parameters())
    kept = torch.cat([params[n].detach().abs()[masks[n]] for n in masks])
    dropped = torch.cat([params[n].detach().abs()[~masks[n]] for n in masks])
    assert kept.min() >= dropped.max()


def test_synflow_keeps_the_heaviest_path():
    # Paths in0-h0-out0 (product 2*3) and in1-h1-out1 (1*1): at density 1/4 SynFlow keeps the first.
    net = _two_two_two([[2, 0], [0, 1]], [[3, 0], [0, 1]])
    masks = SEEDS.get("synflow")(net, 0.25, (2,), 0)
    assert masks["0.weight"].tolist() == [[True, False], [False, False]]
    assert masks["2.weight"].tolist() == [[True, False], [False, False]]


def test_synflow_runs_on_a_cnn():
    model = _model("cnn", (3, 16, 16))
    masks = SEEDS.get("synflow")(model, 0.1, (3, 16, 16), 0)
    assert masks.n_nonzero() == _target(0.1, masks)


@pytest.mark.slow
def test_synflow_runs_on_vit():
    model = _model("vit-tiny")
    masks = SEEDS.get("synflow")(model, 0.1, CIFAR, 0)
    assert masks.n_nonzero() == _target(0.1, masks)
    assert not masks["blocks.0.attn.q.weight"].any()  # no path mass through q/k under uniform attention


class _ConstantBias(nn.Module):
    """(3 tokens, 4 features) -> a; plus a bias over the tokens from an MLP of fixed coordinates (Swin V2's
    relative-position MLP, which reads no input), as a Linear or as a matmul -> mean over the tokens -> head."""

    def __init__(self, matmul: bool = False) -> None:
        super().__init__()
        self.matmul = matmul
        self.a, self.bias_mlp, self.head = nn.Linear(4, 8), nn.Linear(2, 8), nn.Linear(8, 2)
        self.register_buffer("coords", torch.randn(3, 2, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        bias = self.coords @ self.bias_mlp.weight.T if self.matmul else self.bias_mlp(self.coords)
        return self.head((self.a(x) + bias).mean(dim=1))


@pytest.mark.parametrize("matmul", [False, True])
@pytest.mark.parametrize("density", [0.3, 0.8])
def test_a_weight_applied_to_constants_is_kept_whole_within_the_density(density, matmul):
    masks = phew_masks(_ConstantBias(matmul), density, (3, 4))
    assert masks["bias_mlp.weight"].all()  # it computes a constant: an empty mask would change it
    assert not masks["a.weight"].all() and not masks["head.weight"].all()
    walked, target = int(masks["a.weight"].sum() + masks["head.weight"].sum()), round(density * (32 + 16))
    assert target <= walked < target + 8  # the density is over the other weights; walks overshoot by < one walk


def test_a_weight_the_forward_never_applies_is_not_kept_whole():
    class Unused(_ConstantBias):  # an auxiliary head the eval forward never runs
        def __init__(self) -> None:
            super().__init__()
            self.aux = nn.Linear(8, 2)

    masks = phew_masks(Unused(), 0.3, (3, 4))
    assert not masks["aux.weight"].any() and masks["bias_mlp.weight"].all()
