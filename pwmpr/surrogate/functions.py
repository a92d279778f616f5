"""Custom ``torch.autograd.Function`` s in the scoring net: run as the ops of their forward.

A custom Function (a memory-saving activation, a straight-through binarization) wraps its forward's ops in a
backward of its own. The scoring net replaces every op by its linear stand-in (docs/method.md, Operations), so the
gradient it needs is that of the stand-ins, not the Function's. :func:`functions_as_their_ops` makes
``Function.apply`` call the forward directly, with autograd recording, for the length of one scoring forward; a
forward that turns gradients off itself (a reversible block recomputing in its backward) is refused in one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import Function, _SingleLevelFunction
from torch.utils._pytree import tree_flatten

from pwmpr.errors import PwmprError


class _Context:
    """What a Function's forward may call on ``ctx``, doing nothing: there is no backward of its own to feed."""

    def __init__(self, args: tuple):
        self.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        self.saved_tensors: tuple = ()

    def save_for_backward(self, *tensors: Any) -> None:
        self.saved_tensors = tensors

    def save_for_forward(self, *tensors: Any) -> None:
        pass

    def mark_dirty(self, *tensors: Any) -> None:
        pass

    def mark_non_differentiable(self, *tensors: Any) -> None:
        pass

    def set_materialize_grads(self, value: bool) -> None:
        pass


def _apply_as_ops(cls: type[Function], *args: Any, **kwargs: Any) -> Any:
    """``cls.apply(*args)`` as the ops ``cls.forward`` runs, recorded by autograd."""
    if getattr(cls, "setup_context", None) is not _SingleLevelFunction.setup_context:
        out = cls.forward(*args, **kwargs)  # the new style: forward takes no ctx
    else:
        out = cls.forward(_Context(args), *args, **kwargs)
    needs_grad = any(isinstance(a, Tensor) and a.requires_grad for a in tree_flatten((args, kwargs))[0])
    outs = [t for t in tree_flatten(out)[0] if isinstance(t, Tensor) and t.is_floating_point()]
    if needs_grad and torch.is_grad_enabled() and outs and not any(t.requires_grad for t in outs):
        raise PwmprError(f"the model's forward calls a custom autograd Function ({cls.__name__}) whose forward turns "
                         f"gradients off (its backward recomputes it): PWMP cannot score through it; use a version "
                         f"of that layer without a custom backward")
    return out


@contextlib.contextmanager
def functions_as_their_ops() -> Iterator[None]:
    """Within the block, every custom autograd Function runs as the ops of its forward (not thread-safe: the scoring
    net runs one forward at a time)."""
    original = Function.__dict__["apply"]
    Function.apply = classmethod(_apply_as_ops)
    try:
        yield
    finally:
        Function.apply = original
