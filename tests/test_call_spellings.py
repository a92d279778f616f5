"""Forwards written in ways the op rules must see through: operands passed by keyword, zero tensors made from an
activation's shape, and custom autograd Functions, whose forward's ops the scoring net reads (not their backward)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pwmpr import pwmp_scores
from pwmpr.cost import training_flops
from pwmpr.errors import PwmprError
from pwmpr.graph import build_unit_graph
from pwmpr.graph.arguments import positional
from pwmpr.graph.mask_hold import check_masks_hold
from pwmpr.graph.ops import op_of
from pwmpr.graph.reach import has_path
from pwmpr.seed import phew_masks
from pwmpr.surrogate.values import inplace

SHAPE = (3, 8, 8)


def test_keyword_operands_move_to_their_positions_and_nothing_else_moves():
    x, w, b = torch.ones(1, 3, 4, 4), torch.ones(2, 3, 1, 1), torch.zeros(2)
    args, kwargs = positional(F.conv2d, (), {"input": x, "weight": w, "stride": 2})
    assert args == (x, w) and kwargs == {"stride": 2}  # bias is not given: stride stays a keyword
    args, kwargs = positional(F.conv2d, (x,), {"bias": b, "weight": w})
    assert args == (x, w, b) and kwargs == {}
    args, kwargs = positional(F.conv2d, (x,), {"bias": b})  # a gap (no weight): left as written
    assert args == (x,) and kwargs == {"bias": b}
    args, kwargs = positional(torch.Tensor.add, (x,), {"other": x, "alpha": 2})
    assert args == (x, x) and kwargs == {"alpha": 2}  # alpha is keyword-only
    args, kwargs = positional(F.layer_norm, (), {"input": x, "normalized_shape": (4,)})  # a Python function
    assert args == (x, (4,)) and kwargs == {}
    c = x > 0
    args, kwargs = positional(torch.where, (c,), {"input": x, "other": w})  # past where(condition), the short one
    assert args == (c, x, w) and kwargs == {}
    args, kwargs = positional(torch.max, (x,), {"other": x})  # the overload with an ``other``, not max(x, dim)
    assert args == (x, x) and kwargs == {}
    args, kwargs = positional(torch.mean, (), {"input": x, "axis": (2, 3)})  # numpy's alias of dim
    assert args == (x,) and kwargs == {"axis": (2, 3)}
    args, kwargs = positional(torch.addcmul, (x, 0.5), {"tensor1": x, "tensor2": x})  # deprecated: as written
    assert args == (x, 0.5) and kwargs == {"tensor1": x, "tensor2": x}

    def only_first(a, /, b, c):
        return a, b, c

    assert positional(only_first, (1,), {"c": 3, "b": 2}) == ((1, 2, 3), {})  # a positional-only one counts


class _Net(nn.Module):
    """conv -> relu -> matmul -> linear, each operand passed by position or (``keywords``) by name."""

    def __init__(self, keywords: bool):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.mix = nn.Parameter(torch.randn(6 * 64, 16) * 0.05)
        self.head = nn.Linear(16, 4)
        self.keywords = keywords

    def forward(self, x):
        if self.keywords:
            h = F.relu(F.conv2d(input=x, weight=self.conv.weight, bias=self.conv.bias, stride=1, padding=1))
            h = torch.matmul(input=h.flatten(1), other=self.mix)
            return F.linear(input=h, weight=self.head.weight, bias=self.head.bias)
        h = F.relu(F.conv2d(x, self.conv.weight, self.conv.bias, 1, 1))
        return F.linear(torch.matmul(h.flatten(1), self.mix), self.head.weight, self.head.bias)


def test_operands_passed_by_keyword_give_the_seed_scores_and_cost_of_the_positional_call():
    plain, named = _Net(keywords=False), _Net(keywords=True)
    graph_plain, graph_named = build_unit_graph(plain, SHAPE), build_unit_graph(named, SHAPE)
    assert graph_named.params() == graph_plain.params() == ["conv.weight", "head.weight"]  # mix: not a layer
    torch.manual_seed(1)
    masks = phew_masks(plain, 0.2, SHAPE)
    torch.manual_seed(1)
    assert all(torch.equal(masks[n], m) for n, m in phew_masks(named, 0.2, SHAPE).items())
    check_masks_hold(named, masks, SHAPE)
    a, b = pwmp_scores(plain, masks, SHAPE), pwmp_scores(named, masks, SHAPE)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert float(sum(a[n][~masks[n]].sum() for n in a)) > 0
    count_plain, count_named = training_flops(plain, masks, SHAPE), training_flops(named, masks, SHAPE)
    assert (count_named.sparse, count_named.dense) == (count_plain.sparse, count_plain.dense)
    assert count_plain.sparse < count_plain.dense


class _AsTensor(nn.Module):
    """conv -> relu -> linear, the activation passed through ``torch.as_tensor`` (MONAI's HighResNet blocks) or not."""

    def __init__(self, wrap: bool):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)
        self.wrap = wrap

    def forward(self, x):
        h = F.relu(self.conv(x))
        return self.head((torch.as_tensor(h) if self.wrap else h).mean((2, 3)))


def test_as_tensor_of_an_activation_keeps_its_units_and_scores():
    plain, wrapped = _AsTensor(wrap=False), _AsTensor(wrap=True)
    masks = phew_masks(wrapped, 0.5, SHAPE)
    check_masks_hold(wrapped, masks, SHAPE)
    a, b = pwmp_scores(plain, masks, SHAPE), pwmp_scores(wrapped, masks, SHAPE)
    assert all(torch.equal(a[n], b[n]) for n in a)


class _ZeroPadShortcut(nn.Module):
    """A residual stage that doubles its channels with a parameter-free shortcut: the input, then as many zero
    channels (``torch.zeros_like``), as the CIFAR ResNets' option-A shortcut does."""

    def __init__(self):
        super().__init__()
        self.widen = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = F.relu(self.widen(x)) + torch.cat([x, torch.zeros_like(x)], 1)
        return self.head(h.mean((2, 3)))


def test_a_zero_padded_shortcut_carries_the_input_channels_and_the_zeros_carry_none():
    model = _ZeroPadShortcut()
    graph = build_unit_graph(model, SHAPE)
    masks = {"widen.weight": torch.zeros(6, 3, 3, 3, dtype=torch.bool),
             "head.weight": torch.zeros(2, 6, dtype=torch.bool)}
    masks["head.weight"][:, :3] = True  # the head reads the shortcut's three input channels only
    assert has_path(graph, masks)  # input channel c -> shortcut channel c -> head, with the convolution empty
    masks["head.weight"][:] = False
    masks["head.weight"][:, 3:] = True  # the zero channels: no path without the convolution
    assert not has_path(graph, masks)


class _StateFromZeros(nn.Module):
    """A recurrent gate whose state starts as ``torch.zeros_like`` of a pooled activation (DIA-Net's attention)."""

    def __init__(self, custom: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.x_gate = nn.Linear(4, 4)
        self.h_gate = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        self.custom = custom  # the state's linear as a custom autograd Function (its output carries no path)

    def forward(self, x):
        h = F.relu(self.conv(x))
        pooled = h.mean((2, 3))
        state = torch.zeros_like(pooled)
        recurrent = (_LinearFunction.apply(state, self.h_gate.weight, self.h_gate.bias) if self.custom
                     else self.h_gate(state))
        gate = torch.sigmoid(self.x_gate(pooled) + recurrent)
        return self.head((h * gate[:, :, None, None]).mean((2, 3)))


@pytest.mark.parametrize("custom", [False, True])
def test_a_weight_applied_to_a_zero_state_is_kept_whole_and_the_rest_is_seeded(custom):
    model = _StateFromZeros(custom)
    graph = build_unit_graph(model, SHAPE)
    assert graph.on_constants == ["h_gate.weight"]
    masks = phew_masks(model, 0.3, SHAPE)
    assert bool(masks["h_gate.weight"].all())
    assert not bool(masks["conv.weight"].all())
    check_masks_hold(model, masks, SHAPE)
    scores = pwmp_scores(model, masks, SHAPE)  # the scoring net reads the zero state as a constant too
    assert float(scores["conv.weight"][~masks["conv.weight"]].sum()) > 0
    plain = pwmp_scores(_StateFromZeros(), masks, SHAPE)
    assert all(torch.equal(scores[n], plain[n]) for n in plain)


class _Swish(torch.autograd.Function):
    """x * sigmoid(x) with its own backward, as memory-saving activations are written."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.metadata["written"] = True  # a ctx attribute a forward may use
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * s * (1 + x * (1 - s))


class _ClippedStraightThrough(torch.autograd.Function):
    """sign(x), passing the gradient where |x| <= 1 (a binarization's straight-through estimator); the new style,
    with ``setup_context``."""

    @staticmethod
    def forward(x):
        return torch.sign(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1)


class _Recomputed(torch.autograd.Function):
    """A block that keeps no graph and recomputes itself in its backward (a reversible block)."""

    @staticmethod
    def forward(ctx, x, layer):
        with torch.no_grad():
            y = layer(x)
        ctx.layer = layer
        return y

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError


class _OwnApply(_Swish):
    """A Function whose ``apply`` calls autograd's C++ base itself, past ``Function.apply``: the scoring net cannot
    open it."""

    @classmethod
    def apply(cls, *args):
        return torch._C._FunctionBase.__dict__["apply"].__get__(None, cls)(*args)


class _LinearFunction(torch.autograd.Function):
    """``F.linear`` with a backward of its own."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return grad @ weight, grad.t() @ x, grad.sum(0)


class _SwishAndMask(torch.autograd.Function):
    """x * sigmoid(x) and the mask x > 0 beside it (an output that carries no units and has no gradient)."""

    @staticmethod
    def forward(ctx, x):
        return x * torch.sigmoid(x), (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad, _):
        raise NotImplementedError


_STORED_SWISH = _Swish.apply  # stored before any scoring net runs, as a module-level alias is


_APPLY = torch.autograd.Function.__dict__["apply"]


class _CustomNet(nn.Module):
    """conv -> an activation -> linear, the activation written plainly or as a custom autograd Function."""

    def __init__(self, activation: str):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)
        self.activation = activation

    def forward(self, x):
        h = self.conv(x)
        if self.activation == "swish":
            h = h * torch.sigmoid(h)
        elif self.activation == "custom swish":
            h = _Swish.apply(h)
        elif self.activation == "sign":
            h = torch.sign(h)
        elif self.activation == "straight-through sign":
            h = _ClippedStraightThrough.apply(h)
        elif self.activation == "own apply":
            h = _OwnApply.apply(h)
        elif self.activation == "numpy":
            h = _Numpy.apply(h)
        elif self.activation == "stored custom swish":
            h = _STORED_SWISH(h)
        elif self.activation == "swish and mask":
            h, mask = h * torch.sigmoid(h), (h > 0).to(h.dtype)
            h = h * mask
        elif self.activation == "custom swish and mask":
            h, mask = _SwishAndMask.apply(h)
            h = h * mask
        else:
            h = _Recomputed.apply(h, torch.relu)
        return self.head(h.mean((2, 3)))


@pytest.mark.parametrize(("plain", "custom"), [("swish", "custom swish"), ("sign", "straight-through sign"),
                                               ("swish", "stored custom swish"),
                                               ("swish and mask", "custom swish and mask")])
def test_a_custom_autograd_function_is_scored_as_the_ops_of_its_forward(plain, custom):
    masks = phew_masks(_CustomNet(plain), 0.5, SHAPE)
    expected = pwmp_scores(_CustomNet(plain), masks, SHAPE)
    scores = pwmp_scores(_CustomNet(custom), masks, SHAPE)  # not through its backward: the scores would differ
    assert all(torch.equal(scores[n], expected[n]) for n in expected)
    assert float(sum(scores[n][~masks[n]].sum() for n in scores)) > 0
    assert torch.autograd.Function.__dict__["apply"] is _APPLY  # the scoring pass put apply back


def test_training_still_runs_a_custom_functions_own_backward_after_scoring():
    net = _CustomNet("straight-through sign")
    pwmp_scores(net, phew_masks(net, 0.5, SHAPE), SHAPE)
    net(torch.randn(2, *SHAPE)).sum().backward()
    assert bool(net.conv.weight.grad.abs().sum() > 0)  # sign's own gradient is zero: this is the straight-through one


class _CutConv(torch.autograd.Function):
    """A convolution whose forward keeps no graph: by ``torch.no_grad`` or by reading the weight's ``.data``."""

    @staticmethod
    def forward(ctx, x, weight, how):
        if how == "no_grad":
            with torch.no_grad():
                return F.conv2d(x, weight, padding=1)
        return F.conv2d(x, weight.data.sign(), padding=1)

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError


class _FirstLayerCut(nn.Module):
    """The first layer through ``_CutConv``: its input, the model's, needs no gradient; its weight does."""

    def __init__(self, how: str):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.head = nn.Linear(4, 2)
        self.how = how

    def forward(self, x):
        return self.head(torch.relu(_CutConv.apply(x, self.conv.weight, self.how)).mean((2, 3)))


class _Numpy(torch.autograd.Function):
    """A forward that leaves torch (it works only while autograd does not record it)."""

    @staticmethod
    def forward(ctx, x):
        return torch.as_tensor(x.numpy())

    @staticmethod
    def backward(ctx, grad):
        return grad


def test_a_function_whose_forward_fails_as_plain_ops_is_refused_in_one_line():
    masks = phew_masks(_CustomNet("swish"), 0.5, SHAPE)
    with pytest.raises(PwmprError, match=r"custom autograd Function \(_Numpy\) whose forward fails") as err:
        pwmp_scores(_CustomNet("numpy"), masks, SHAPE)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("how", ["no_grad", "data"])
def test_a_first_layer_function_that_cuts_its_weights_path_is_refused_not_scored_zero(how):
    model = _FirstLayerCut(how)
    masks = phew_masks(model, 0.5, SHAPE)
    with pytest.raises(PwmprError, match=r"custom autograd Function \(_CutConv\) whose forward detaches"):
        pwmp_scores(model, masks, SHAPE)


@pytest.mark.parametrize(("activation", "words"), [
    ("recomputed", r"custom autograd Function \(_Recomputed\) whose forward detaches its input or turns gradients"),
    ("own apply", r"custom autograd Function \(_OwnApply\) past autograd's Python apply"),
])
def test_a_custom_function_the_scoring_net_cannot_open_is_refused_in_one_line(activation, words):
    masks = phew_masks(_CustomNet("swish"), 0.5, SHAPE)
    with pytest.raises(PwmprError, match=words) as err:
        pwmp_scores(_CustomNet(activation), masks, SHAPE)
    assert "\n" not in str(err.value)


def test_an_in_place_flag_passed_by_keyword_is_read_at_its_position():
    """``F.dropout(x, p, training=..., inplace=True)`` reaches the rules as ``(x, p, training, True)``: a True
    training flag is not taken for the in-place one, and the in-place one is found where it lies."""
    x = torch.ones(2, 3)
    dropout, relu = op_of(F.dropout), op_of(F.relu)
    assert inplace(dropout, *positional(F.dropout, (x,), {"p": 0.5, "training": False, "inplace": True}))
    assert not inplace(dropout, *positional(F.dropout, (x,), {"p": 0.5, "training": True, "inplace": False}))
    assert inplace(relu, *positional(F.relu, (x,), {"inplace": True}))
    assert not inplace(relu, *positional(F.relu, (x,), {"inplace": False}))


class _Unhashable:
    """A callable that cannot be a cache key."""

    __hash__ = None

    def __call__(self, a, b):
        return a, b


def test_an_unhashable_callable_is_read_without_the_cache():
    assert positional(_Unhashable(), (), {"a": 1, "b": 2}) == ((1, 2), {})


def test_only_the_thread_scoring_a_net_runs_functions_as_their_ops():
    import threading

    from pwmpr.surrogate.functions import functions_as_their_ops

    def weight_grad() -> float:
        w = torch.tensor([0.5, -0.3], requires_grad=True)
        _ClippedStraightThrough.apply(w).sum().backward()
        return float(w.grad.abs().sum())

    seen = {}
    with functions_as_their_ops(lambda t: None):
        assert weight_grad() == 0.0  # sign's own gradient: the Function ran as its forward's ops
        other = threading.Thread(target=lambda: seen.setdefault("grad", weight_grad()))
        other.start()
        other.join()
    assert seen["grad"] == 2.0  # the straight-through backward: another thread's training is untouched
    assert weight_grad() == 2.0  # and this thread's, after the block
