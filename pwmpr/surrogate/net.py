"""The scoring copy of a model: made by :func:`linear_surrogate`, run by :func:`surrogate_forward` and
:func:`path_gradients` on an all-ones input scaled to stay finite."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import BackwardCFunction

from pwmpr.errors import PwmprError
from pwmpr.graph.mode import tensors_in
from pwmpr.masks import MaskSet, prunable
from pwmpr.probe import device_of, run_forward, sum_outputs
from pwmpr.surrogate.functions import functions_as_their_ops
from pwmpr.surrogate.linearizer import Linearizer
from pwmpr.surrogate.values import ACT, ATTENTION, LOGITS, WeightHook


@torch.no_grad()
def linear_surrogate(model: nn.Module, masks: Mapping[str, Tensor] | None = None) -> nn.Module:
    """A deep copy of ``model`` turned into the linear |W| scoring network (docs/method.md, Score).

    Float64, eval mode, non-negative parameters without grad, prunable weights ``|W| * mask``, hooks dropped.

    Raises:
        PwmprError: a mask with an unknown name or a wrong shape.
    """
    masks = MaskSet.checked(model, masks)
    device = device_of(model)
    surrogate = copy.deepcopy(model).double()
    surrogate.eval()
    for m in surrogate.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            d = getattr(m, attr, None)
            if d is not None:
                d.clear()
    params = dict(surrogate.named_parameters())
    for p in params.values():
        p.abs_()
    for name in prunable(surrogate):
        if name in masks:
            w = params[name]
            w.mul_(masks[name].to(device=w.device, dtype=w.dtype))
    for p in surrogate.parameters():
        p.requires_grad_(False)
        p.grad = None
    surrogate.forward = _LinearizedForward(surrogate)
    return surrogate.to(device)


class _LinearizedForward:
    """The scoring copy's forward: the model's own, run under a :class:`Linearizer`."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.on_weight_output: WeightHook | None = None
        self.records: list | None = None  # pwmp-attn: each attention's real batch (pwmpr.attention.SiteRecord)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        mode = Linearizer(self.module, self.on_weight_output, self.records)
        for t in tensors_in(args, kwargs):
            mode.put(t, ACT)
        with mode.watching(self.module, inside=True), functions_as_their_ops(mode.get):
            out = type(self.module).forward(self.module, *args, **kwargs)
        _refuse_custom_backward(out)
        for t in tensors_in(out):
            if mode.get(t) in (LOGITS, ATTENTION):
                raise PwmprError("the model returns attention scores, which PWMP scoring cannot use as outputs")
        return out

    def __deepcopy__(self, memo: dict) -> _LinearizedForward:
        return _LinearizedForward(memo.get(id(self.module), self.module))


def surrogate_forward(surrogate: nn.Module, x: Tensor, on_weight_output: WeightHook | None = None) -> Any:
    """``surrogate(x)``, calling ``on_weight_output`` after each use of a prunable weight (the tau-core's hook)."""
    forward = surrogate.forward
    if not isinstance(forward, _LinearizedForward):
        raise PwmprError("surrogate_forward needs a scoring net made by linear_surrogate")
    forward.on_weight_output = on_weight_output
    try:
        return run_forward(surrogate, x)
    finally:
        forward.on_weight_output = None


# (log2 of the all-ones input's value, log2 of a factor on R) tried in turn: a deep net's path sums can exceed
# float64's range (a DenseNet's reach 1e280 within three blocks), and a smaller input scales every path alike.
_SCALES = ((0, 0), (-600, 0), (-1000, 0), (-1000, -400))


def path_gradients(surrogate: nn.Module, leaves: list[Tensor], shape: tuple[int, ...], batch: int = 1
                   ) -> tuple[Tensor, list[Tensor | None]] | None:
    """``(R, dR/dleaf)`` for R the sum of the scoring net's outputs on an all-ones input of ``batch`` samples.

    Near overflow every score is scaled by one power of two. None when no leaf reaches R; PwmprError when the path
    sums overflow float64 at every scale.
    """
    device = leaves[0].device if leaves else torch.device("cpu")
    for a, b in _SCALES:
        x = torch.full((batch, *shape), 2.0 ** a, dtype=torch.float64, device=device)
        total = sum_outputs(run_forward(surrogate, x)) * 2.0 ** b
        if not total.requires_grad:
            return None
        if not _finite(total):
            continue
        grads = list(torch.autograd.grad(total, leaves, allow_unused=True))
        if all(g is None or _finite(g) for g in grads):
            return total.detach(), grads
    raise PwmprError("the scoring net's path sums overflow float64 even with the input scaled by 2^-1000: the "
                     "network is too deep or its weights too large for path sums")


def _refuse_custom_backward(out: Any) -> None:
    """Refuse a scoring net whose outputs' graph still runs through a custom ``torch.autograd.Function`` that
    :func:`functions_as_their_ops` could not open (called through autograd's C++ base directly): its own backward,
    not the ops its forward ran (which the scoring net replaced by their linear stand-ins), would give the gradients
    of every score (PWMP, SynFlow, the tau-core)."""
    seen, stack = set(), [t.grad_fn for t in tensors_in(out)]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if isinstance(node, BackwardCFunction):
            name = getattr(getattr(node, "_forward_cls", None), "__name__", type(node).__name__)
            raise PwmprError(f"the model's forward calls a custom autograd Function ({name}) past autograd's "
                             f"Python apply, whose own backward would replace the gradients of the "
                             f"scoring net's linear stand-ins: PWMP cannot score through it; call it through its "
                             f"apply, or use a version of that layer without a custom backward")
        stack.extend(next_node for next_node, _ in node.next_functions)


def scoring_input(surrogate: nn.Module, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """The all-ones input scaled (by a power of two) so that the scoring net's outputs stay finite."""
    with torch.no_grad():
        for a, _ in _SCALES:
            x = torch.full((1, *shape), 2.0 ** a, dtype=torch.float64, device=device)
            if _finite(sum_outputs(run_forward(surrogate, x))):
                return x
    raise PwmprError("the scoring net's path sums overflow float64 even with the input scaled by 2^-1000")


def _finite(t: Tensor) -> bool:
    """True when every entry is finite (a tensor without data, on the meta device, counts as finite)."""
    return t.device.type == "meta" or bool(torch.isfinite(t).all())

