"""The start checks of pwmpr.graph.reach: an edge in every layer (by count) and an input-to-output path (by mask)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pwmpr.errors import PwmprError
from pwmpr.graph import build_unit_graph
from pwmpr.graph.reach import check_density_keeps_every_layer, check_input_reaches_output, has_path, min_density


def _two_by_two() -> nn.Module:
    """2 inputs -> 2 hidden -> 2 outputs; a ReLU between (units: in0, in1, h0, h1, out0, out1)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))


def _masks(first: list[list[int]], second: list[list[int]]) -> dict[str, torch.Tensor]:
    # A Linear weight is [out, in]: entry [o, i] connects input unit i to output unit o.
    return {"0.weight": torch.tensor(first, dtype=torch.bool), "2.weight": torch.tensor(second, dtype=torch.bool)}


def test_every_layer_with_an_edge_but_no_path_is_found():
    graph = build_unit_graph(_two_by_two(), (2,))
    # in0 -> h0 in the first layer; h1 -> out0 in the second: each layer keeps an edge, nothing crosses.
    assert not has_path(graph, _masks([[1, 0], [0, 0]], [[0, 1], [0, 0]]))
    # in0 -> h0 -> out1: one path.
    assert has_path(graph, _masks([[1, 0], [0, 0]], [[0, 0], [1, 0]]))
    # in1 -> h1 -> out0 and in1 -> h0, h0 feeding nothing: still a path.
    assert has_path(graph, _masks([[0, 1], [0, 1]], [[0, 1], [0, 0]]))
    # An empty second layer: no path.
    assert not has_path(graph, _masks([[1, 1], [1, 1]], [[0, 0], [0, 0]]))


def test_no_path_is_refused_and_a_path_is_not():
    model = _two_by_two()
    with pytest.raises(PwmprError, match="keep 2 weight.s. but no path from an input to an output"):
        check_input_reaches_output(model, _masks([[1, 0], [0, 0]], [[0, 1], [0, 0]]), (2,))
    check_input_reaches_output(model, _masks([[1, 0], [0, 0]], [[0, 0], [1, 0]]), (2,))


def test_a_residual_shortcut_is_a_path_even_when_the_branch_is_cut():
    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(2, 2)
            self.head = nn.Linear(2, 2)

        def forward(self, x):
            return self.head(x + self.inner(x))

    model = Skip()
    graph = build_unit_graph(model, (2,))
    head = torch.tensor([[1, 0], [0, 0]], dtype=torch.bool)
    # inner keeps only in1 -> unit 1, unused by the head; the identity carries in0 to the head's edge.
    assert has_path(graph, {"inner.weight": torch.tensor([[0, 0], [0, 1]], dtype=torch.bool), "head.weight": head})
    assert not has_path(graph, {"inner.weight": torch.ones(2, 2, dtype=torch.bool),
                                "head.weight": torch.zeros(2, 2, dtype=torch.bool)})


def test_the_density_count_check_by_hand():
    model = _two_by_two()  # 8 prunable weights in 2 layers
    check_density_keeps_every_layer(model, 0.1875)  # 1.5 weights round (halves up) to 2: one per layer
    with pytest.raises(PwmprError, match=r"density 0.1 keeps 1 of the 8 prunable weights, fewer than the model's 2"):
        check_density_keeps_every_layer(model, 0.1)  # 0.8 rounds to 1
    with pytest.raises(PwmprError, match="use a density of at least 0.188"):
        check_density_keeps_every_layer(model, 1e-9)


@pytest.mark.parametrize(("layers", "total", "expected"), [(2, 8, 0.188), (3, 50_200, 4.99e-05), (1, 3, 0.167)])
def test_min_density_rounds_up_to_three_digits_and_suffices(layers, total, expected):
    from pwmpr.counting import round_half_up

    found = min_density(layers, total)
    assert found == pytest.approx(expected)
    assert round_half_up(found * total) >= layers  # rounded up: the suggested density passes the check


class _Im2col(nn.Module):
    """1 input channel -> 2 channels (1x1 conv) -> F.unfold of 2x2 patches on a 2x2 map -> Linear(8, 1). Unfold
    lays the features out channel by channel: features 0-3 are channel 0's four patch positions, 4-7 channel 1's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 1), nn.Linear(8, 1)

    def forward(self, x):
        return self.fc(torch.nn.functional.unfold(self.conv(x), 2).flatten(1))


@pytest.mark.parametrize(("column", "reaches"), [(1, True), (3, True), (4, False), (6, False)])
def test_f_unfold_carries_each_channel_to_its_own_block_of_features(column, reaches):
    # F.unfold has no integer kernel; the tracer moves the unit ids as floats. The conv keeps channel 0 only, so
    # a path exists exactly when the linear layer keeps a feature of channel 0's block.
    graph = build_unit_graph(_Im2col(), (1, 2, 2))
    fc = torch.zeros(1, 8, dtype=torch.bool)
    fc[0, column] = True
    masks = {"conv.weight": torch.tensor([1, 0], dtype=torch.bool).view(2, 1, 1, 1), "fc.weight": fc}
    assert has_path(graph, masks) is reaches


class _PatchFold(nn.Module):
    """1 input channel -> 2 channels (1x1 conv) -> F.unfold into 2x2 patches of a 4x4 map -> F.fold back (MobileViT
    V2's patch round trip) -> a 1x1 conv to 1 channel -> Linear(16, 1). With ``stride`` 2 the blocks tile the map
    and fold only moves entries; with stride 1 they overlap and fold sums them."""

    def __init__(self, stride: int = 2) -> None:
        super().__init__()
        self.stride = stride
        self.conv, self.mix, self.fc = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 1, 1), nn.Linear(16, 1)

    def forward(self, x):
        F = torch.nn.functional
        patches = F.unfold(self.conv(x), 2, stride=self.stride)
        return self.fc(self.mix(F.fold(patches, (4, 4), 2, stride=self.stride)).flatten(1))


@pytest.mark.parametrize(("kept", "reaches"), [(0, True), (1, False)])
def test_f_fold_of_tiling_blocks_returns_each_channel_to_itself(kept, reaches):
    # The first conv keeps channel 0; the mixing conv reads channel ``kept`` alone: a path only through channel 0.
    graph = build_unit_graph(_PatchFold(), (1, 4, 4))
    mix = torch.zeros(1, 2, 1, 1, dtype=torch.bool)
    mix[0, kept] = True
    masks = {"conv.weight": torch.tensor([1, 0], dtype=torch.bool).view(2, 1, 1, 1), "mix.weight": mix,
             "fc.weight": torch.ones(1, 16, dtype=torch.bool)}
    assert has_path(graph, masks) is reaches


def test_f_fold_of_overlapping_blocks_is_refused_in_one_line():
    with pytest.raises(PwmprError, match=r"calls fold\(\) in its forward: its blocks overlap"):
        build_unit_graph(_PatchFold(stride=1), (1, 4, 4))


class _SliceAdd(nn.Module):
    """A branch added into a slice of its own input, the rest kept (RexNet's, DPN's partial residual):
    1 input -> a (2 channels) -> [a0 + b(a), a1] -> mean -> fc(2 -> 1), spelled four ways."""

    def __init__(self, spelling: str = "cat") -> None:
        super().__init__()
        self.spelling = spelling
        self.a, self.b, self.fc = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 1, 1), nn.Linear(2, 1)

    def forward(self, x):
        h = self.a(x)
        if self.spelling == "cat":
            h = torch.cat([h[:, :1] + self.b(h), h[:, 1:]], 1)
        elif self.spelling == "+=":  # Python writes the view back with a setitem
            h[:, :1] += self.b(h)
        elif self.spelling == "add_":  # in place on the view alone: the tensor it views changes too
            h[:, :1].add_(self.b(h))
        else:
            h.narrow(1, 0, 1).add_(self.b(h))
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize(("a", "b", "column", "reaches"), [
    ([0, 1], [0, 1], 0, True),  # input -> a1 -> b -> merged unit 0 -> fc
    ([0, 1], [1, 0], 0, False),  # b reads the dead channel a0
    ([1, 0], [0, 0], 0, True),  # input -> a0 -> merged unit 0 through the slice, b empty
    ([1, 0], [0, 0], 1, False),  # fc reads a1, which nothing feeds
])
@pytest.mark.parametrize("spelling", ["cat", "+=", "add_", "narrow"])
def test_a_branch_added_into_a_slice_merges_unit_by_unit(a, b, column, reaches, spelling):
    graph = build_unit_graph(_SliceAdd(spelling), (1, 2, 2))
    fc = torch.zeros(1, 2, dtype=torch.bool)
    fc[0, column] = True
    masks = {"a.weight": torch.tensor(a, dtype=torch.bool).view(2, 1, 1, 1),
             "b.weight": torch.tensor(b, dtype=torch.bool).view(1, 2, 1, 1), "fc.weight": fc}
    assert has_path(graph, masks) is reaches


class _AffineAndCast(nn.Module):
    """in (2) -> a -> addcmul(beta, alpha, .) (ResMLP's affine) -> .type_as(b(x)) (b gives a dtype only) -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.fc = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 1)
        self.alpha, self.beta = nn.Parameter(torch.ones(2)), nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return self.fc(torch.addcmul(self.beta, self.alpha, self.a(x)).type_as(self.b(x)))


@pytest.mark.parametrize(("a", "b", "column", "reaches"), [
    ([[1, 0], [0, 0]], [[0, 0], [0, 0]], 0, True),  # in0 -> a's unit 0 -> affine -> cast -> fc
    ([[1, 0], [0, 0]], [[0, 0], [1, 0]], 1, False),  # b's unit 1 is live, but the cast takes only b's dtype
])
def test_addcmul_keeps_the_units_of_its_activation_and_type_as_those_of_its_first(a, b, column, reaches):
    graph = build_unit_graph(_AffineAndCast(), (2,))
    fc = torch.zeros(1, 2, dtype=torch.bool)
    fc[0, column] = True
    masks = {"a.weight": torch.tensor(a, dtype=torch.bool), "b.weight": torch.tensor(b, dtype=torch.bool),
             "fc.weight": fc}
    assert has_path(graph, masks) is reaches


class _SideBranch(nn.Module):
    """in (2) -> a (2) -> relu -> fc (1) + side (1): ``side`` is a branch the path through ``fc`` does not need."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.fc, self.side = nn.Linear(2, 2), nn.Linear(2, 1), nn.Linear(2, 1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.fc(h) + self.side(h)


def test_a_layer_left_empty_off_the_kept_path_is_returned_and_one_on_it_is_refused():
    from pwmpr.masks import MaskSet
    from pwmpr.runner import check_start_masks

    def masks(fc):
        return MaskSet({"a.weight": torch.tensor([[1, 0], [0, 0]], dtype=torch.bool),
                        "fc.weight": torch.tensor([fc], dtype=torch.bool),
                        "side.weight": torch.zeros(1, 2, dtype=torch.bool)})

    # in0 -> a0 -> fc: a path; the empty side branch does not need an edge for it
    assert check_start_masks(_SideBranch(), masks([1, 0]), (2,)) == ["side.weight"]
    # fc empty too: the only way out is closed
    with pytest.raises(PwmprError, match=r"leaves 2 layer\(s\) with no edge \(fc.weight, side.weight\)"):
        check_start_masks(_SideBranch(), masks([0, 0]), (2,))


class _InPlaceAffine(nn.Module):
    """in (2) -> a, b; h = a(x), then h.addcmul_(gain, b(x)) in place (h becomes a(x) + gain * b(x)) -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.fc = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 1)
        self.gain = nn.Parameter(torch.ones(2))

    def forward(self, x):
        h = self.a(x)
        h.addcmul_(self.gain, self.b(x))
        return self.fc(h)


def test_an_in_place_addcmul_merges_into_the_tensor_it_changes():
    # a keeps nothing, b keeps in0 -> unit 0: the only path runs through the in-place update of h
    graph = build_unit_graph(_InPlaceAffine(), (2,))
    masks = {"a.weight": torch.zeros(2, 2, dtype=torch.bool), "b.weight": torch.tensor([[1, 0], [0, 0]]).bool(),
             "fc.weight": torch.tensor([[1, 0]]).bool()}
    assert has_path(graph, masks)


class _CastAttention(nn.Module):
    """Attention whose probabilities are cast to v's type (``a.type_as(v)``, ``a.to(v)``) before they weigh v."""

    def __init__(self, cast: str) -> None:
        super().__init__()
        self.cast, self.qkv, self.fc = cast, nn.Linear(4, 12), nn.Linear(4, 2)

    def forward(self, x):  # (N, T, 4)
        q, k, v = self.qkv(x).chunk(3, -1)
        a = (q @ k.transpose(-2, -1)).softmax(-1)
        a = a.type_as(v) if self.cast == "type_as" else a.to(v)
        return self.fc((a @ v).mean(1))


@pytest.mark.parametrize("cast", ["type_as", "to"])
def test_a_cast_to_another_activations_type_is_followed_by_the_walks_and_the_scores_alike(cast):
    from pwmpr.score import pwmp_scores

    torch.manual_seed(0)
    model = _CastAttention(cast)
    masks = {"qkv.weight": torch.ones(12, 4, dtype=torch.bool), "fc.weight": torch.ones(2, 4, dtype=torch.bool)}
    assert has_path(build_unit_graph(model, (3, 4)), masks)
    scores = pwmp_scores(model, masks, (3, 4))
    assert bool((scores["qkv.weight"][8:] > 0).all())  # v's rows carry every path to the output


class _TokenMix(nn.Module):
    """(3 tokens, 2 features) -> a (channels c0, c1) -> a linear over the tokens (3 -> 2), which every channel shares
    -> mean over tokens -> fc(2 -> 1). No residual: every path crosses the token weight."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.t, self.fc = nn.Linear(2, 2), nn.Linear(3, 2), nn.Linear(2, 1)

    def forward(self, x):
        return self.fc(self.t(self.a(x).transpose(1, 2)).transpose(1, 2).mean(1))


@pytest.mark.parametrize(("a", "t", "column", "reaches"), [
    ([[1, 0], [0, 0]], [[0, 1, 0], [0, 0, 0]], 0, True),  # f0 -> c0 at every token -> token 1 to 0 -> c0 -> fc
    ([[1, 0], [0, 0]], [[0, 0, 0], [0, 0, 0]], 0, False),  # the token weight kept nothing
    ([[1, 0], [0, 0]], [[0, 0, 0], [0, 0, 1]], 1, False),  # the channel stays the channel: c1 is not fed
    ([[0, 0], [0, 1]], [[0, 0, 0], [0, 0, 1]], 1, True),  # f1 -> c1 -> any token entry -> c1 -> fc
])
def test_a_linear_over_tokens_keeps_each_channel_through_the_weight_it_shares(a, t, column, reaches):
    graph = build_unit_graph(_TokenMix(), (3, 2))
    assert graph.groups[0].n == 2  # the input's units are its features, read by a
    fc = torch.zeros(1, 2, dtype=torch.bool)
    fc[0, column] = True
    masks = {"a.weight": torch.tensor(a, dtype=torch.bool), "t.weight": torch.tensor(t, dtype=torch.bool),
             "fc.weight": fc}
    assert has_path(graph, masks) is reaches


class _ClassTokenJoin(nn.Module):
    """(3 tokens, 2 features) -> a (a0, a1); a class token b(mean of a) (b0, b1) joined in front; c reads every
    token (two distinct unit vectors); fc reads the class token's row of c alone."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.fc = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 1)

    def forward(self, x):
        h = self.a(x)
        z = torch.cat([self.b(h.mean(1))[:, None], h], 1)
        return self.fc(self.c(z)[:, 0])


@pytest.mark.parametrize(("b", "c", "reaches"), [
    ([[1, 1], [1, 1]], [[1, 1], [1, 1]], True),
    ([[0, 0], [0, 0]], [[1, 1], [1, 1]], False),  # the class token's row is computed by b alone
    ([[1, 0], [0, 0]], [[1, 0], [0, 0]], True),  # a0 -> b0 -> c0 on the class row -> fc
    ([[1, 0], [0, 0]], [[0, 1], [0, 0]], False),  # c0 reads b1, which b does not feed
])
def test_rows_with_other_units_get_a_link_each(b, c, reaches):
    graph = build_unit_graph(_ClassTokenJoin(), (3, 2))
    assert sum(link.param == "c.weight" for link in graph.links) == 2
    masks = {"a.weight": torch.ones(2, 2, dtype=torch.bool), "b.weight": torch.tensor(b, dtype=torch.bool),
             "c.weight": torch.tensor(c, dtype=torch.bool), "fc.weight": torch.tensor([[True, False]])}
    assert has_path(graph, masks) is reaches


def test_rows_with_too_many_unit_vectors_are_refused():
    class Many(nn.Module):  # 17 tokens, each computed by its own layer, then one linear over all of them
        def __init__(self) -> None:
            super().__init__()
            self.heads = nn.ModuleList(nn.Linear(2, 2) for _ in range(17))
            self.c, self.fc = nn.Linear(2, 2), nn.Linear(2, 1)

        def forward(self, x):
            z = torch.stack([h(x) for h in self.heads], 1)
            return self.fc(self.c(z).mean(1))

    with pytest.raises(PwmprError, match="its input's units vary along other dims than the one it reads"):
        build_unit_graph(Many(), (2,))


def test_past_a_linear_over_tokens_the_next_refusal_is_the_one_named():
    class Later(_TokenMix):
        def forward(self, x):
            return self.fc(self.t(self.a(x).transpose(1, 2)).cumsum(-1).transpose(1, 2).mean(1))

    with pytest.raises(PwmprError, match=r"calls cumsum\(\) in its forward: pwmpr has no rule for this op"):
        build_unit_graph(Later(), (3, 2))


class _StackedHeads(nn.Module):
    """Two heads on the same input, stacked and averaged (CrossViT's head): class j of the mean is fed by both heads'
    class j; the whole is a log_softmax of it (the class scores PyTorch's MNIST example returns)."""

    def __init__(self) -> None:
        super().__init__()
        self.h0, self.h1 = nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x):
        return torch.log_softmax(torch.stack([self.h0(x), self.h1(x)]).mean(0), dim=-1)


@pytest.mark.parametrize(("h0", "h1", "reaches"), [
    ([[0, 0], [0, 0]], [[0, 0], [1, 0]], True),  # in0 -> class 1 through the second head alone
    ([[0, 0], [0, 0]], [[0, 0], [0, 0]], False),
    ([[1, 0], [0, 0]], [[0, 0], [0, 0]], True),
])
def test_a_mean_over_stacked_heads_merges_them_class_by_class(h0, h1, reaches):
    graph = build_unit_graph(_StackedHeads(), (2,))
    assert graph.groups[graph.output].n == 2  # the classes stay apart
    masks = {"h0.weight": torch.tensor(h0, dtype=torch.bool), "h1.weight": torch.tensor(h1, dtype=torch.bool)}
    assert has_path(graph, masks) is reaches


class _ClassTokenAttention(nn.Module):
    """(3 tokens, 2 features) -> a; a class token b(mean of a) joined in front; attention over the 4 tokens (q, k and
    v all the joined tokens, so their tokens carry two unit vectors); fc reads the class token's output."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.fc = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 1)

    def forward(self, x):
        h = self.a(x)
        z = torch.cat([self.b(h.mean(1))[:, None], h], 1)
        return self.fc(torch.nn.functional.scaled_dot_product_attention(z, z, z)[:, 0])


@pytest.mark.parametrize(("a", "b", "reaches"), [
    ([[1, 1], [1, 1]], [[0, 0], [0, 0]], True),  # attention carries the patch tokens' values to the class token
    ([[0, 0], [0, 0]], [[1, 1], [1, 1]], False),  # b reads a, which keeps nothing
    ([[0, 0], [1, 0]], [[0, 0], [0, 0]], False),  # fc reads feature 0; a feeds feature 1 alone
    ([[0, 0], [1, 0]], [[1, 0], [0, 0]], False),  # b's feature 0 reads a's feature 0: nothing there
    ([[0, 0], [1, 0]], [[0, 1], [0, 0]], True),  # in0 -> a1 -> b0 -> the class token's feature 0 -> fc
])
def test_attention_over_tokens_with_other_units_merges_them_feature_by_feature(a, b, reaches):
    graph = build_unit_graph(_ClassTokenAttention(), (3, 2))
    masks = {"a.weight": torch.tensor(a, dtype=torch.bool), "b.weight": torch.tensor(b, dtype=torch.bool),
             "fc.weight": torch.tensor([[True, False]])}
    assert has_path(graph, masks) is reaches


def test_more_than_sixteen_distinct_slices_are_not_merged():
    class ManyHeads(nn.Module):  # 17 heads averaged: the mean keeps nothing the walks could follow
        def __init__(self) -> None:
            super().__init__()
            self.heads = nn.ModuleList(nn.Linear(2, 2) for _ in range(17))

        def forward(self, x):
            return torch.stack([h(x) for h in self.heads]).mean(0)

    class ChannelAttention(nn.Module):  # 20 channels attending to each other (XCiT's cross-covariance attention)
        def __init__(self) -> None:
            super().__init__()
            self.a, self.fc = nn.Linear(2, 20), nn.Linear(20, 2)

        def forward(self, x):
            t = self.a(x).unsqueeze(-1)  # (N, 20 channels as tokens, 1)
            return self.fc(torch.nn.functional.scaled_dot_product_attention(t, t, t).squeeze(-1))

    with pytest.raises(PwmprError, match="returns one tensor of class scores computed from its input"):
        build_unit_graph(ManyHeads(), (2,))
    with pytest.raises(PwmprError, match="the units of an attention operand vary over its tokens"):
        build_unit_graph(ChannelAttention(), (2,))


class _PaddedTokens(nn.Module):
    """(3 tokens, 2 features) -> a -> a constant token padded in front -> a linear over the 4 tokens -> fc."""

    def __init__(self, hole: bool = False) -> None:
        super().__init__()
        self.hole = hole
        self.a, self.t, self.fc = nn.Linear(2, 2), nn.Linear(4, 2), nn.Linear(2, 1)

    def forward(self, x):
        h = torch.nn.functional.pad(self.a(x).transpose(1, 2), (1, 0))  # (N, 2 channels, 4 tokens)
        if self.hole:  # channel 0 also loses token 2: the rows read units at different positions
            h = h.clone()
            h[:, 0, 2] = 0.0
        return self.fc(self.t(h).mean(-1))


@pytest.mark.parametrize(("column", "reaches"), [(0, False), (1, True), (3, True)])
def test_a_linear_over_tokens_has_no_edge_from_a_padded_token(column, reaches):
    graph = build_unit_graph(_PaddedTokens(), (3, 2))
    t = torch.zeros(2, 4, dtype=torch.bool)
    t[1, column] = True  # token 0 is the padding: a constant, no unit
    assert has_path(graph, {"t.weight": t}) is reaches


def test_rows_reading_units_at_different_positions_are_refused():
    with pytest.raises(PwmprError, match="rows with a unit at different positions"):
        build_unit_graph(_PaddedTokens(hole=True), (3, 2))
