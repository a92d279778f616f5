"""Running any nn.Module once on a probe input: input shapes, forward errors, out of memory, device.

Imports nothing of pwmpr but :mod:`pwmpr.errors`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from pwmpr.errors import PwmprError


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def normalize_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints; PwmprError otherwise."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise PwmprError(f"input_shape must be a sequence of ints, got {input_shape!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise PwmprError(f"input_shape must be non-empty with positive sizes (batch excluded), got {input_shape!r}")
    return shape


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


_INPUT_DTYPE = "_pwmpr_input_dtype"  # the attribute that holds a declared input dtype (it survives deepcopy)


def declare_input_dtype(model: nn.Module, dtype: torch.dtype) -> None:
    """Record that ``model`` takes inputs of ``dtype`` (int64: token ids; floats record nothing).

    PwmprError when ``model`` declared another dtype.
    """
    if dtype.is_floating_point:
        held = getattr(model, _INPUT_DTYPE, None)
        if held is not None:
            raise PwmprError(f"the model takes {str(held).removeprefix('torch.')} token ids but the data are "
                             f"{str(dtype).removeprefix('torch.')} values: pick a text data set for it")
        return
    held = getattr(model, _INPUT_DTYPE, None)
    if held is not None and held != dtype:
        raise PwmprError(f"the model takes {held} inputs, not {dtype}")
    setattr(model, _INPUT_DTYPE, dtype)


#: Token-id dtypes a run or export file may record as its ``input_dtype`` (float inputs record none).
TOKEN_DTYPES = {"int64": torch.int64}


def declared_dtype_name(model: nn.Module) -> str | None:
    """The name of ``model``'s declared token-id dtype (``"int64"``), as run and export files record it; None for
    float inputs."""
    declared = getattr(model, _INPUT_DTYPE, None)
    return None if declared is None else str(declared).removeprefix("torch.")


def dtype_named(name: Any, source: str) -> torch.dtype | None:
    """The token-id dtype a file records as ``name`` (None: float inputs); PwmprError for one pwmpr does not know."""
    if name is None:
        return None
    if name not in TOKEN_DTYPES:
        raise PwmprError(f"{source}: unknown input dtype {name!r} (known: {', '.join(TOKEN_DTYPES)})")
    return TOKEN_DTYPES[name]


def input_dtype_of(model: nn.Module) -> torch.dtype:
    """The dtype a probe input of ``model`` needs: its declared input dtype (token ids), else the dtype of its first
    parameter when that is a float, else float32."""
    declared = getattr(model, _INPUT_DTYPE, None)
    if declared is not None:
        return declared
    param = next(model.parameters(), None)
    return param.dtype if param is not None and param.is_floating_point() else torch.float32




@contextmanager
def training_mode(model: nn.Module, train: bool) -> Iterator[nn.Module]:
    """Within the block ``model`` is in train (or eval) mode; afterwards every submodule has its own flag back,
    mixed train/eval states included."""
    modes = {m: m.training for m in model.modules()}
    model.train(train)
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


@torch.no_grad()
def check_input_shape(model: nn.Module, input_shape: Sequence[int]) -> None:
    """Raise PwmprError naming ``input_shape`` unless ``model`` runs on a batch of that shape."""
    shape = normalize_input_shape(input_shape)
    modes = [(m, m.training) for m in model.modules()]
    device = device_of(model)
    model.eval()
    try:
        model(torch.zeros((1, *shape), device=device, dtype=input_dtype_of(model)))
    except PwmprError:
        raise
    except (RuntimeError, ValueError, IndexError) as exc:
        user_error = forward_error(exc, shape, device)
        if user_error is None:
            raise  # a bug (device mix-up, cuDNN failure, ...): keep its traceback
        raise user_error from None
    finally:
        for m, mode in modes:  # restore each module's own flag (a mixed train/eval state stays mixed)
            m.training = mode


def check_float32(model: nn.Module, name: str) -> None:
    """Refuse a model whose floating-point weights or buffers are not float32 (pwmpr trains in float32)."""
    other = {t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()} - {torch.float32}
    if other:
        kinds = ", ".join(sorted(str(d).removeprefix("torch.") for d in other))
        raise PwmprError(f"model {name} holds {kinds} weights; pwmpr trains float32 models (convert it with "
                         "model.float(); --bf16 trains in bf16 autocast)")


@torch.no_grad()
def output_width(model: nn.Module, input_shape: Sequence[int]) -> int | None:
    """The number of logits ``model`` returns per sample, or per position for a model of token ids (None when it
    returns no such tensor)."""
    shape = normalize_input_shape(input_shape)
    with training_mode(model, False):
        out = run_forward(model, torch.zeros((1, *shape), device=device_of(model), dtype=input_dtype_of(model)))
    try:
        out = class_scores(out)
    except PwmprError:
        return None
    if out.dim() == 3 and not input_dtype_of(model).is_floating_point:
        return int(out.shape[-1])  # a language model: logits per position (batch, seq, vocabulary)
    return int(out.shape[1]) if out.dim() == 2 else None


def check_output_width(model: nn.Module, input_shape: Sequence[int], num_classes: int, name: str) -> None:
    """Refuse a classifier whose logits do not number ``num_classes`` (fewer fail at a label; more are never
    trained as targets and hide a mistake)."""
    width = output_width(model, input_shape)
    if width is not None and width != num_classes:
        raise PwmprError(f"model {name} returns {width} logits per sample but the data have {num_classes} classes; "
                         f"its last layer must have {num_classes} outputs")


def run_forward(model: nn.Module, x: Tensor) -> Any:
    """``model(x)``; a shape mismatch or out of memory raises PwmprError, anything else is re-raised unchanged."""
    try:
        return model(x)
    except PwmprError:
        raise
    except (RuntimeError, ValueError, IndexError) as exc:
        user_error = forward_error(exc, tuple(x.shape[1:]), x.device)
        if user_error is None:
            raise
        raise user_error from None


def class_scores(out: Any) -> Tensor:
    """The class scores in what a model returns: the output itself when it is a tensor; else its ``logits`` entry
    or attribute (a dict, transformers' ``ModelOutput``); else the one tensor a mapping holds; else the first entry
    of a tuple or list (``return logits, features``, torchvision's ``GoogLeNetOutputs`` in training).

    Raises:
        PwmprError: no tensor of class scores can be read from ``out``.
    """
    if isinstance(out, Tensor):
        return out
    logits = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, Mapping):
        tensors = [v for v in out.values() if isinstance(v, Tensor)]
        if len(tensors) == 1:
            return tensors[0]
    elif isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise PwmprError(f"the model returns {_shown(out)}: pwmpr reads class scores from a tensor, from the 'logits' "
                     "entry or attribute of what it returns (or the one tensor of a dict), or from the first entry of "
                     "a tuple or list")


def _shown(out: Any) -> str:
    if isinstance(out, Mapping):
        return f"a {type(out).__name__} with keys {', '.join(map(repr, list(out)[:6]))}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {', '.join(type(o).__name__ for o in out[:6]) or 'nothing'}"
    return f"a {type(out).__name__}"


def sum_outputs(out: Any) -> Tensor:
    """R = the sum of the class scores' entries (:func:`class_scores`): what PWMP and SynFlow differentiate."""
    return class_scores(out).sum()


# What torch says when an input does not fit a layer: the only forward failures that are the user's input_shape.
_SHAPE_MESSAGES = re.compile(
    r"shapes cannot be multiplied|expected input\[.*\] to have \d+ channels|expected \d+D (or \d+D )?input"
    r"|Expected \d+D \(unbatched\) or \d+D \(batched\) input|output size is too small"
    r"|must match the size of tensor|Kernel size can't be greater than actual input size"
    r"|is invalid for input of size|Dimension out of range|doesn't match the broadcast shape"
    r"|Padding size should be less than|Expected more than 1 value per channel|size mismatch"
    r"|input\.size\(-1\) must be equal to input_size|non-empty \d+D .*tensor expected",
    re.IGNORECASE,
)
# Messages that look like the above but name a bug of the program, not of the input: never reported as a shape.
_BUG_MESSAGES = re.compile(r"device|cudnn|cublas|cuda error|dtype|scalar type|autocast|NCCL", re.IGNORECASE)
_OOM_MESSAGES = re.compile(r"out of memory|can't allocate memory|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA (and CPU allocator) out-of-memory errors."""
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    if oom and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and bool(_OOM_MESSAGES.search(str(exc)))


def out_of_memory_error(exc: BaseException, device: torch.device | str, what: str) -> PwmprError:
    """The user-facing error for running out of memory on ``device`` during ``what``."""
    return PwmprError(f"out of memory on {device} during {what}: {first_line(exc)}; try a smaller --batch-size, "
                      "--bf16, a smaller model or input, or a device with more memory")


def forward_error(exc: BaseException, shape: Sequence[int], device: torch.device | str = "cpu") -> PwmprError | None:
    """The PwmprError a failed forward on inputs of ``shape`` stands for (shape mismatch, out of memory), else None."""
    if is_out_of_memory(exc):
        return out_of_memory_error(exc, device, f"a forward pass on input_shape {tuple(shape)}")
    text = str(exc)
    if _BUG_MESSAGES.search(text) or not _SHAPE_MESSAGES.search(text):
        return None
    return PwmprError(f"input_shape {tuple(shape)} cannot be fed to this model: {first_line(exc)}")
