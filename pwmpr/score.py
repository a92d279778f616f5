"""Step 3 of the pipeline (seed -> train -> score -> grow): PWMP scores for every edge, present or absent.

The PWMP score of edge (i, j) is the summed |weight| product of every input->output path through it,
the edge itself left out (docs/method.md, Score): ``F_i * B_j = dR/dW_eff`` in the *linear* |W| network on an
all-ones input, R the sum of the outputs. :func:`linear_surrogate` builds that network once, as a deep
copy, so that :mod:`pwmpr.accounting` (the tau-core) uses exactly the same one. RigL-style
gradient scores (:func:`gradient_scores`) live here too, as the baseline growth rule's score.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from pwmpr.errors import PwmprError
from pwmpr.masks import PRUNABLE_TYPES, MaskSet, prunable
from pwmpr.probe import device_of, normalize_input_shape, run_forward, sum_outputs, training_mode

#: The method a module type defines to take part in PWMP scoring on its own terms (an attention block, a model
#: holding additive embeddings): :func:`linear_surrogate` calls ``module.pwmp_linearize()`` on the scoring copy
#: (float64, eval mode, under no_grad), which must make the module's own forward linear in its input and zero the
#: additive shifts it holds as parameters. Such a module may hold parameters of its own; see pwmpr.models.vit.
LINEARIZE_HOOK = "pwmp_linearize"

# docs/method.md, Score: activations become the identity. With non-negative weights, zero shifts and a
# positive input a ReLU already passes every positive value unchanged, but its derivative at 0 is 0 in torch:
# a unit with no incoming edge would block the backward pass and every edge into it would score 0 instead of
# its true path sum. The identity keeps the scoring net exactly linear, so every score is an exact path sum.
_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_MAX_POOLS = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d}
_ADAPTIVE_MAX_POOLS = {
    nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d,
}


# Nonlinear torch functions a forward may call directly (not through a module the surrogate can swap out).
_NONLINEAR_FUNCTIONS = frozenset(
    f"{name}{suffix}"
    for name in (
        "relu", "relu6", "leaky_relu", "rrelu", "prelu", "elu", "selu", "celu", "gelu", "silu", "mish", "hardswish",
        "hardsigmoid", "hardtanh", "sigmoid", "tanh", "softplus", "softsign", "softmax", "log_softmax",
        "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    )
    for suffix in ("", "_")
)  # fmt: skip


# Functions that are not linear in their input whatever they are called on (beyond the activations above): a
# forward that calls one of them directly would give scores that are no path sums.
_NONLINEAR_FUNCTIONS = _NONLINEAR_FUNCTIONS | frozenset(
    f"{name}{suffix}"
    for name in (
        "softmin", "logsigmoid", "glu", "hardshrink", "softshrink", "threshold", "exp", "exp2", "expm1", "log",
        "log2", "log10", "log1p", "sqrt", "rsqrt", "square", "pow", "abs", "clamp", "clip", "clamp_min",
        "clamp_max", "maximum", "minimum", "sign", "erf", "sin", "cos", "reciprocal", "layer_norm", "group_norm",
        "batch_norm", "instance_norm", "local_response_norm", "normalize", "norm", "var", "std", "lp_pool1d",
        "lp_pool2d", "scaled_dot_product_attention",
    )
    for suffix in ("", "_")
)  # fmt: skip
# Products of two tensors: linear in the input only when at most one factor depends on it.
_PRODUCTS = frozenset(("mul", "mul_", "__mul__", "__rmul__", "__imul__", "matmul", "__matmul__", "__rmatmul__",
                       "bmm", "mm", "einsum", "div", "div_", "__truediv__", "__rtruediv__", "__itruediv__", "addcmul",
                       "baddbmm", "bilinear"))
# Parameter-free modules that are not linear and that the scoring net has no stand-in for (a module with
# parameters that is not supported is refused by linear_surrogate itself).
_UNSUPPORTED_MODULES = (
    nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d, nn.LogSigmoid, nn.GLU, nn.Threshold, nn.Hardshrink,
    nn.Softshrink, nn.LocalResponseNorm, nn.CrossMapLRN2d, nn.LPPool1d, nn.LPPool2d, nn.InstanceNorm1d,
    nn.InstanceNorm2d, nn.InstanceNorm3d, nn.FractionalMaxPool2d, nn.FractionalMaxPool3d,
)  # fmt: skip


def _depends_on_input(t: object) -> bool:
    """A tensor computed from the input during the scoring pass (not a parameter, buffer or constant)."""
    return isinstance(t, Tensor) and t.grad_fn is not None


def _tensor_args(args, kwargs) -> list[object]:
    flat: list[object] = []
    for a in (*args, *(kwargs or {}).values()):
        flat.extend(a if isinstance(a, (tuple, list)) else [a])
    return flat


class _NonlinearityGuard(TorchFunctionMode):
    """Refuse nonlinear torch functions called in a forward: the surrogate could not linearize them.

    ``F.relu(conv(x))`` in a forward stays a ReLU in the scoring net; its zero derivative at 0 would give every
    edge into an input-less unit a score of 0 instead of its path sum (docs/method.md, Score), silently. So do a product
    of two activations (``x * torch.sigmoid(x)``, attention's ``q @ k``) and any function in the list above. The
    message names the module whose forward made the call (``where``, kept up to date by forward hooks).
    """

    def __init__(self) -> None:
        super().__init__()
        self.where: list[str] = []

    def _module(self) -> str:
        return f"module {self.where[-1]}" if self.where else "the model"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _NONLINEAR_FUNCTIONS:
            raise PwmprError(
                f"{self._module()} calls {name}() in its forward, which PWMP scoring cannot linearize; "
                "use an nn module the scoring net knows instead (e.g. nn.ReLU, which it swaps for the identity)"
            )
        if name in _PRODUCTS and sum(_depends_on_input(a) for a in _tensor_args(args, kwargs)) >= 2:
            raise PwmprError(
                f"{self._module()} multiplies two activations ({name}()) in its forward, which is not linear in the "
                "input: PWMP scoring cannot linearize it"
            )
        return func(*args, **(kwargs or {}))


class _ChannelScale(nn.Module):
    """``y = x * scale`` along dim 1 (channels): batch norm and group norm in positive-scale form."""

    def __init__(self, scale: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale.view(1, -1, *([1] * (x.dim() - 2)))


class _TrailingScale(nn.Module):
    """``y = x * scale`` over the trailing (normalized) dims: layer norm in positive-scale form."""

    def __init__(self, scale: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def guarded_forward(model: nn.Module, x: Tensor) -> Any:
    """``model(x)`` as :func:`pwmpr.probe.run_forward`, refusing nonlinear torch functions called in a forward.

    A nonlinear function or a product of two activations raises PwmprError naming the module whose forward made
    the call (see _NonlinearityGuard): run a scoring net through this, so every score stays an exact path sum.
    """
    mode = _NonlinearityGuard()
    names = {m: n or type(m).__name__ for n, m in model.named_modules()}

    def enter(module, _args):
        mode.where.append(f"{names.get(module, '?')} ({type(module).__name__})")

    def leave(module, _args, _out):
        mode.where.pop()

    handles = [h for m in model.modules()
               for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave, always_call=True))]
    try:
        with mode:
            return run_forward(model, x)
    finally:
        for h in handles:
            h.remove()


def _abs_gamma(weight: Tensor | None, shape: int | Sequence[int], like: Tensor | None) -> Tensor:
    """|gamma| of a norm layer, or ones where it has no affine weight (on ``like``'s device and dtype)."""
    if weight is not None:
        return weight.detach().abs().clone()
    device = like.device if like is not None else None
    dtype = like.dtype if like is not None and like.is_floating_point() else torch.float64
    return torch.ones(shape, dtype=dtype, device=device)


def _unsupported(module: nn.Module) -> None:
    """Raise PwmprError naming ``module`` when it is nonlinear and the scoring net has no stand-in for it."""
    if isinstance(module, _UNSUPPORTED_MODULES):
        raise PwmprError(f"cannot linearize module {type(module).__name__} for PWMP scoring: it is not linear in its "
                         "input and has no linear stand-in; only Conv/Linear, BatchNorm, GroupNorm, LayerNorm, "
                         f"elementwise activations, pooling and modules with a {LINEARIZE_HOOK}() method (such as "
                         "the pwmpr ViT) are supported")


def _linearized(module: nn.Module) -> nn.Module | None:
    """The linear stand-in for ``module`` in the scoring net, or None where the module is kept."""
    _unsupported(module)
    if isinstance(module, _ACTIVATIONS):
        return nn.Identity()
    if isinstance(module, _BATCH_NORMS):
        # docs/method.md, Score: y = x*|gamma|/sqrt(running_var+eps), shift and running_mean dropped.
        # SynFlow's abs() of every BN entry can make pre-activations negative on a trained net (|running_mean| is
        # subtracted), and then the network is no longer the path sum. Without running statistics the variance
        # is taken as 1. A fixed per-channel scale keeps the net linear whatever the module's mode.
        # The ones of a BN without affine weight are made where running_var lives (a CUDA running_var divided
        # by CPU ones would fail, or worse, be moved silently).
        gamma = _abs_gamma(module.weight, module.num_features, module.running_var)
        if module.running_var is not None:
            gamma = gamma / torch.sqrt(module.running_var.detach() + module.eps)
        return _ChannelScale(gamma)
    if isinstance(module, nn.GroupNorm):
        return _ChannelScale(_abs_gamma(module.weight, module.num_channels, _any_tensor(module)))
    if isinstance(module, nn.LayerNorm):
        # docs/method.md, Score: LayerNorm as x*|gamma|, no centering, no shift.
        return _TrailingScale(_abs_gamma(module.weight, module.normalized_shape, _any_tensor(module)))
    if type(module) in _MAX_POOLS:
        # Max pooling is not linear: on the ones input its gradient would go to one arbitrary arg-max per window.
        # Average pooling gives every entry of a window the same path weight 1/(window size); padding is left out
        # of the count, as max pooling pads with -inf.
        if module.dilation not in (1, (1,) * len(_tuple(module.kernel_size))):
            raise PwmprError(f"max pooling with dilation {module.dilation} cannot be linearized for PWMP scoring")
        return _MAX_POOLS[type(module)](
            module.kernel_size, module.stride, module.padding, ceil_mode=module.ceil_mode, count_include_pad=False
        )
    if type(module) in _ADAPTIVE_MAX_POOLS:
        return _ADAPTIVE_MAX_POOLS[type(module)](module.output_size)
    return None


def _any_tensor(module: nn.Module) -> Tensor | None:
    """A parameter or buffer of ``module`` (its device and dtype), or None."""
    for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
        if t is not None:
            return t
    return None


def _tuple(v: int | Sequence[int]) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, Sequence) else (v,)


@torch.no_grad()
def linear_surrogate(model: nn.Module, masks: Mapping[str, Tensor] | None = None) -> nn.Module:
    """A deep copy of ``model`` turned into the linear |W| scoring network (docs/method.md, Score).

    In the copy (float64, eval mode, on the model's device, every parameter with ``requires_grad=False``):

    - Conv/Linear weights are the effective weights ``|W| * mask`` (absent edges are 0; weights without a mask
      stay dense) and their biases are 0: biases are not path edges.
    - BatchNorm is a fixed positive per-channel scale ``|gamma| / sqrt(running_var + eps)``, its shift and
      running mean dropped (docs/method.md, Score); GroupNorm is ``x * |gamma|`` per channel and
      LayerNorm ``x * |gamma|`` (no centering, no shift).
    - Activations are the identity, max pooling becomes average pooling with the same window.
    - A module that defines ``pwmp_linearize()`` (:data:`LINEARIZE_HOOK`) linearizes itself: the pwmpr ViT's
      attention becomes uniform, its class token and position embedding, additive shifts like biases, become 0
      (docs/method.md, Score).
    - Torch forward/backward hooks of the original are dropped, so the copy is a pure function of its input.

    On an all-ones input every hidden value is then ``F_v``, the |W|-product sum over input->v paths, and
    ``dR/dW_eff[j, i] = F_i * B_j`` with R the sum of the outputs: exact path sums, absent edges included.

    Args:
        model: the network (left unchanged).
        masks: ``{weight name: bool mask}`` for some prunable weights; None means dense.

    Returns:
        The surrogate module; its parameter names are those of ``model``.

    Raises:
        PwmprError: a mask with an unknown name or a wrong shape, or a module with parameters that cannot be
            linearized (anything but Conv/Linear, the norms above and modules with the hook).
    """
    masks = MaskSet.checked(model, masks)
    device = device_of(model)
    # float64 first, so the norm scales below are computed in float64 too.
    surrogate = copy.deepcopy(model).double()
    surrogate.eval()

    # Drop the hooks of the original: a copied meter or logger would otherwise fire on every scoring pass.
    for m in surrogate.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            d = getattr(m, attr, None)
            if d is not None:
                d.clear()

    # Swap in the linear replacements (norms, activations, max pools).
    for parent in list(surrogate.modules()):
        for child_name, child in list(parent.named_children()):
            replacement = _linearized(child)
            if replacement is not None:
                setattr(parent, child_name, replacement.to(device))

    # Effective weights |W| * mask, zero biases; modules with a linearize hook (attention, additive embeddings)
    # linearize themselves.
    for m in surrogate.modules():
        if isinstance(m, PRUNABLE_TYPES):
            if m.bias is not None:
                m.bias.zero_()
        elif callable(getattr(m, LINEARIZE_HOOK, None)):
            getattr(m, LINEARIZE_HOOK)()
        elif next(m.parameters(recurse=False), None) is not None:
            raise PwmprError(
                f"cannot linearize module {type(m).__name__} for PWMP scoring: only Conv/Linear, BatchNorm, "
                f"GroupNorm, LayerNorm, activations, pooling and modules with a {LINEARIZE_HOOK}() method (such as "
                "the pwmpr ViT) are supported"
            )
    params = dict(surrogate.named_parameters())
    for name in prunable(surrogate):
        w = params[name]
        w.abs_()
        if name in masks:
            w.mul_(masks[name].to(device=w.device, dtype=w.dtype))

    for p in surrogate.parameters():
        p.requires_grad_(False)
        p.grad = None
    return surrogate


@torch.enable_grad()  # a caller's no_grad() must not silently turn every score into 0
def pwmp_scores(model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int]) -> dict[str, Tensor]:
    """PWMP score ``F_i * B_j`` of every entry of every masked weight, present or absent (docs/method.md, Score).

    One forward and one backward pass of :func:`linear_surrogate` on ``ones(1, *input_shape)`` in float64;
    the gradient is taken with respect to the effective weights ``|W| * mask`` themselves, so an absent edge
    gets the path sum it would carry with weight 1. For a Conv weight the score sums over the spatial positions
    where the kernel entry is used. Scores are exact also for edges into units with no incoming edge (the
    scoring net is linear). For present edges SynFlow's score is ``|W| * PWMP``.

    Args:
        model: the network; its parameters, buffers and train/eval mode are left unchanged.
        masks: ``{weight name: bool mask}``; a score is returned for each of these names. Prunable weights
            without a mask count as dense.
        input_shape: one input without the batch dimension, e.g. ``(3, 32, 32)``.

    Returns:
        ``{weight name: float64 tensor of the weight's shape}`` on the model's device, all entries >= 0.

    Raises:
        PwmprError: unknown mask names or wrong mask shapes, or an ``input_shape`` the model cannot take.
    """
    surrogate = linear_surrogate(model, masks)
    shape = normalize_input_shape(input_shape)

    params = dict(surrogate.named_parameters())
    leaves = [params[n] for n in masks]
    for p in leaves:
        p.requires_grad_(True)
    x = torch.ones((1, *shape), dtype=torch.float64, device=device_of(model))
    total = sum_outputs(guarded_forward(surrogate, x))
    if not total.requires_grad:  # no masked weight reaches the output (e.g. empty masks)
        return {n: torch.zeros_like(p) for n, p in zip(masks, leaves, strict=True)}
    grads = torch.autograd.grad(total, leaves, allow_unused=True)
    return {
        n: (g.detach() if g is not None else torch.zeros_like(p)) for n, p, g in zip(masks, leaves, grads, strict=True)
    }


@torch.enable_grad()
def gradient_scores(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    batch: tuple[Tensor, Tensor] | Sequence[Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    *,
    train: bool = True,
) -> dict[str, Tensor]:
    """RigL-style scores ``|dL/dW_eff|`` of every entry of every masked weight on one batch.

    The gradient is taken with respect to the effective weight ``W * mask``, so absent entries get their dense
    gradient (what RigL grows by). The model runs with its own signs, biases and nonlinearities.

    Args:
        model: the network; its parameters, buffers (BN running statistics included) and mode are left unchanged.
        masks: ``{weight name: bool mask}``; a score is returned for each of these names.
        batch: ``(x, y)``, moved to the model's device.
        loss_fn: ``loss_fn(output, y) -> scalar``; cross-entropy by default.
        train: score in train mode (batch statistics in BN, as during training) or, if False, in eval mode.

    Returns:
        ``{weight name: float64 tensor of the weight's shape}`` on the model's device, all entries >= 0.

    Raises:
        PwmprError: unknown mask names or wrong mask shapes, or a batch that is not ``(x, y)``.
    """
    masks = MaskSet.checked(model, masks)
    if not isinstance(batch, Sequence) or len(batch) != 2 or not all(isinstance(t, Tensor) for t in batch):
        raise PwmprError(f"batch must be a pair of tensors (x, y), got {type(batch).__name__}")
    device = device_of(model)
    x, y = batch[0].to(device), batch[1].to(device)

    params = dict(model.named_parameters())
    leaves = {
        n: (params[n].detach() * masks[n].to(device=device, dtype=params[n].dtype)).requires_grad_(True) for n in masks
    }
    # Clones of the buffers take the in-place running-statistics updates of train-mode BN.
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    with training_mode(model, train):
        loss = loss_fn(functional_call(model, {**buffers, **leaves}, (x,)), y)
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return {
        n: (g.detach().abs().double() if g is not None else torch.zeros_like(p, dtype=torch.float64))
        for (n, p), g in zip(leaves.items(), grads, strict=True)
    }
