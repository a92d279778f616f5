"""Custom ``torch.autograd.Function`` s in the scoring net: run as the ops of their forward.

A custom Function (a memory-saving activation, a straight-through binarization) wraps its forward's ops in a
backward of its own. The scoring net replaces every op by its linear stand-in (docs/method.md, Operations), so the
gradient it needs is that of the stand-ins, not the Function's. Within :func:`functions_as_their_ops`, in the thread
that entered it, a Function's ``apply`` calls its forward directly, with autograd recording. The hook sits below
``Function.apply`` (on ``_SingleLevelFunction``, where ``Function.apply`` hands over to autograd's C++ base), so an
``apply`` stored before the scoring net ran (``self.fn = MyFunction.apply``) is caught as well; other threads, and
every call outside the block, reach the C++ base as before. A forward that detaches its input or turns gradients off
(a reversible block that recomputes itself in its backward) is refused in one line.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import _SingleLevelFunction
from torch.utils._pytree import tree_flatten

from pwmpr.errors import PwmprError
from pwmpr.surrogate.values import ACT

_STATE = threading.local()  # .value_of: the innermost block's reader of values, in this thread (absent: outside)
_INSTALL = threading.Lock()
_USERS = 0  # blocks open in any thread: the hook is installed while there is one
_ORIGINAL = _SingleLevelFunction.__dict__.get("apply")  # None: the C++ base's, inherited


class _Context:
    """What a Function's forward may call on ``ctx``, doing nothing: there is no backward of its own to feed."""

    def __init__(self, args: tuple):
        self.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        self.saved_tensors: tuple = ()
        self.metadata: dict = {}

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


def _apply(cls: type, *args: Any, **kwargs: Any) -> Any:
    """The hook: inside a block of this thread, the Function as its forward's ops; else autograd's own apply."""
    value_of = getattr(_STATE, "value_of", None)
    if value_of is None:
        if _ORIGINAL is not None:
            return _ORIGINAL.__get__(None, cls)(*args, **kwargs)
        return super(_SingleLevelFunction, cls).apply(*args, **kwargs)
    new_style = getattr(cls, "setup_context", None) is not _SingleLevelFunction.setup_context
    try:  # the new style's forward takes no ctx (Function.apply bound its defaults)
        out = cls.forward(*args, **kwargs) if new_style else cls.forward(_Context(args), *args, **kwargs)
    except PwmprError:
        raise
    except Exception as err:
        raise PwmprError(f"the model's forward calls a custom autograd Function ({cls.__name__}) whose forward fails "
                         f"when the scoring net runs it as plain ops ({type(err).__name__}: "
                         f"{' '.join(str(err).split())}): PWMP cannot score through it") from err
    # the scoring net's tracked inputs (activations, prunable weights) that need a gradient, and the activations out
    needs = [t for t in tree_flatten((args, kwargs))[0]
             if isinstance(t, Tensor) and t.requires_grad and value_of(t) is not None]
    cut = [t for t in tree_flatten(out)[0] if isinstance(t, Tensor) and value_of(t) == ACT and not t.requires_grad]
    if torch.is_grad_enabled() and needs and cut:
        raise PwmprError(f"the model's forward calls a custom autograd Function ({cls.__name__}) whose forward "
                         f"detaches its input or turns gradients off (its backward recomputes it): PWMP cannot score "
                         f"through it; use a version of that layer without a custom backward")
    return out


@contextlib.contextmanager
def functions_as_their_ops(value_of: Callable[[Tensor], Any]) -> Iterator[None]:
    """Within the block, in this thread, every custom autograd Function runs as the ops of its forward;
    ``value_of(t)``: the scoring net's value of ``t`` (None: untracked, ``ACT``: an activation carrying path sums)."""
    global _USERS
    with _INSTALL:
        if _USERS == 0:
            _SingleLevelFunction.apply = classmethod(_apply)
        _USERS += 1
    outer = getattr(_STATE, "value_of", None)
    _STATE.value_of = value_of
    try:
        yield
    finally:
        _STATE.value_of = outer
        with _INSTALL:
            _USERS -= 1
            if _USERS == 0 and _ORIGINAL is not None:
                _SingleLevelFunction.apply = _ORIGINAL
            elif _USERS == 0:
                del _SingleLevelFunction.apply
