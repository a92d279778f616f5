"""What a tracked tensor of the scoring net holds, and the argument helpers the stand-ins share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pwmpr.graph.mode import tensors_in
from pwmpr.graph.ops import Op

# What a tracked tensor of the scoring net holds; DATA is computed from the input but carries no path (a mask);
# TANGENT_LOGITS and TANGENT_ATTENTION are an attention's q-k tangent and softmax tangent (pwmp-attn).
ACT, LOGITS, ATTENTION, DATA = "activation", "logits", "attention", "data"
TANGENT_LOGITS, TANGENT_ATTENTION = "tangent logits", "tangent attention"
# Called after each use of a prunable weight: (weight name, positions of the entries used or None, output, the dim
# of the output's units) -> the output to go on with.
WeightHook = Callable[[str, "Tensor | None", Tensor, int], Tensor]

DROPOUTS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
            "feature_dropout"}


def arg(args: tuple, kwargs: dict, pos: int, name: str, default: Any = None) -> Any:
    """An op's argument ``name`` (at position ``pos`` when not given by keyword), or ``default``."""
    if name in kwargs:
        return kwargs[name]
    return args[pos] if len(args) > pos else default


def positive(weight: Tensor | None, n: int, like: Tensor) -> Tensor:
    """``|weight|``, or ones where a norm has no affine weight."""
    if weight is None:
        return torch.ones(n, dtype=like.dtype, device=like.device)
    return weight.abs().to(like.dtype)


def inplace(op: Op, args: tuple, kwargs: dict) -> bool:
    """True when the op writes into its input (``x.relu_()``, ``inplace=True``)."""
    if op.inplace or kwargs.get("inplace") is True:
        return True
    if op.name in DROPOUTS:  # (input, p, training, inplace): a True before the last is training
        return len(args) > 3 and args[3] is True
    return len(args) > 1 and args[-1] is True


def first_tensor(out: Any) -> Tensor:
    """The first tensor of an op's result."""
    return tensors_in(out)[0]


def detached(x: Any) -> Any:
    """``x`` with every tensor in it (nested dicts, tuples and lists included) detached."""
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, dict):
        return {k: detached(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(detached(v) for v in x)
    return x
