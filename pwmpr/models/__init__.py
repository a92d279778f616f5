"""MODELS: name -> factory for every network pwmpr can seed, grow, prune and export.

Each family lives in its own file and registers its variants with ``@MODELS.register``;
importing this package fills the registry. Factories take ``(num_classes, input_shape)``
where ``input_shape`` excludes the batch dimension: ``(3, 32, 32)``, ``(1, 28, 28)``, ``(784,)``.

A model name may also be a *code spec* ``package.module:function`` naming the user's own factory
``function(num_classes, input_shape) -> nn.Module``. Importing a module runs its code, so a code spec is only
imported inside :func:`trusted_code` (the CLI enters it for a ``--model`` typed on its command line or for
``--trust-code``; ``pwmpr.load(path, trust_remote_code=True)`` for a saved one): a spec read from a run or
export folder is never imported silently.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from pwmpr.errors import PwmprError
from pwmpr.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")

# Importing the families fills MODELS (timm style).
from pwmpr.models import cifar_resnet, cnn, mlp, tv_resnet, vit  # noqa: E402,F401


def create_model(name: str, num_classes: int, input_shape: Sequence[int], **kwargs) -> nn.Module:
    """Build the registered model ``name`` for ``num_classes`` outputs and inputs of ``input_shape``.

    Raises:
        PwmprError: unknown name, a non-positive class count, or an input shape the model cannot take.
    """
    if int(num_classes) < 1:
        raise PwmprError(f"num_classes must be >= 1, got {num_classes}")
    shape = normalize_input_shape(input_shape)
    if is_code_spec(name):
        model = _create_from_code(name, int(num_classes), shape, kwargs)
        check_input_shape(model, shape)
        return model
    if name.startswith(OBJECT_PREFIX):
        raise PwmprError(f"model {name!r} was handed to pwmpr.grow_module as a Python object and cannot be rebuilt "
                         "from its name: hand the object over again (pwmpr.grow_module(model, ..., resume=True)), or "
                         "grow a package.module:function model, which pwmpr can rebuild")
    factory = MODELS.get(name)
    try:
        model = factory(num_classes=int(num_classes), input_shape=shape, **kwargs)
    except PwmprError:
        raise
    except ValueError as exc:
        raise PwmprError(f"input_shape {shape} does not suit model {name!r}: {exc}") from None
    check_input_shape(model, shape)
    return model


# -- the user's own models: ``package.module:function`` ----------------------------------------------------------
#: Model name recorded for a model handed over as an object (pwmpr.grow_module): ``python:<class name>``.
OBJECT_PREFIX = "python:"
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
_CODE_SPEC = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
# True: every code spec may be imported; a frozenset: only these. Default: none (loading never runs code).
_TRUSTED: contextvars.ContextVar[bool | frozenset[str]] = contextvars.ContextVar("pwmpr_trusted_code",
                                                                                  default=frozenset())


def is_code_spec(name: str) -> bool:
    """True for ``package.module:function`` (a user factory), False for registered names and ``python:...``."""
    return isinstance(name, str) and not name.startswith(OBJECT_PREFIX) and bool(_CODE_SPEC.match(name))


@contextlib.contextmanager
def trusted_code(spec: str | bool = True) -> Iterator[None]:
    """Allow :func:`create_model` to import code specs inside the block: all of them (True) or one ``spec``.

    Importing a module runs its code; a run or export folder naming one is only rebuilt inside this block.
    """
    current = _TRUSTED.get()
    if spec is True or current is True:
        new: bool | frozenset[str] = True
    elif spec is False:
        new = current
    else:
        new = current | {spec}
    token = _TRUSTED.set(new)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def _is_trusted(spec: str) -> bool:
    trusted = _TRUSTED.get()
    return trusted is True or spec in trusted


def _create_from_code(spec: str, num_classes: int, shape: tuple[int, ...], kwargs: dict) -> nn.Module:
    """``function(num_classes, input_shape, **kwargs)`` of ``package.module:function``; PwmprError when it can't."""
    if not _is_trusted(spec):
        raise PwmprError(f"model {spec!r} is Python code, and importing it runs that code; pwmpr imports it only when "
                         "asked: pass --trust-code (pwmpr.load(..., trust_remote_code=True)) if you trust it")
    module_name, _, attr = spec.partition(":")
    module = _import(module_name, spec)
    factory: object = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise PwmprError(f"--model {spec}: module {module_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise PwmprError(f"--model {spec}: {attr!r} is not callable; it must be function(num_classes, input_shape)")
    try:
        model = factory(num_classes, shape, **kwargs)
    except PwmprError:
        raise
    except Exception as exc:  # the user's factory failed: say where, keep its traceback chained for debugging
        raise PwmprError(f"--model {spec}: {attr}(num_classes={num_classes}, input_shape={shape}) failed: "
                         f"{type(exc).__name__}: {_first_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise PwmprError(f"--model {spec}: {attr}(num_classes, input_shape) must return a torch.nn.Module, "
                         f"got {type(model).__name__}")
    return model


def _import(module_name: str, spec: str):
    """Import ``module_name``; the current directory is searched last (``python -m`` has it, console scripts don't)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):  # the module exists; one of its imports is missing
            raise PwmprError(f"--model {spec}: importing {module_name!r} failed: {type(exc).__name__}: "
                             f"{_first_line(exc)}") from exc
    except Exception as exc:  # the user's module raised while being imported
        raise PwmprError(f"--model {spec}: importing {module_name!r} failed: {type(exc).__name__}: "
                         f"{_first_line(exc)}") from exc
    cwd = os.getcwd()
    if cwd in sys.path:
        raise PwmprError(f"--model {spec}: no module named {module_name!r} (not installed, not on PYTHONPATH and not "
                         f"in {cwd})")
    sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise PwmprError(f"--model {spec}: no module named {module_name!r} (not installed, not on PYTHONPATH and not "
                         f"in {cwd}): {_first_line(exc)}") from None
    except Exception as exc:
        raise PwmprError(f"--model {spec}: importing {module_name!r} failed: {type(exc).__name__}: "
                         f"{_first_line(exc)}") from exc
    finally:
        sys.path.remove(cwd)


def _first_line(exc: BaseException) -> str:
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


@torch.no_grad()
def check_input_shape(model: nn.Module, input_shape: Sequence[int]) -> None:
    """Raise PwmprError naming ``input_shape`` unless ``model`` runs on a batch of that shape."""
    shape = normalize_input_shape(input_shape)
    modes = [(m, m.training) for m in model.modules()]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    model.eval()
    try:
        model(torch.zeros((1, *shape), device=device, dtype=dtype))
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
    return PwmprError(f"out of memory on {device} during {what}: {_first_line(exc)}; try a smaller --batch-size, "
                      "--bf16, a smaller model or input, or a device with more memory")


def forward_error(exc: BaseException, shape: Sequence[int], device: torch.device | str = "cpu") -> PwmprError | None:
    """The PwmprError a failed forward on inputs of ``shape`` stands for, or None when it is a bug to re-raise.

    Only a true shape mismatch is the user's input_shape; out of memory gets its own message; anything else
    (device mix-ups, cuDNN or cuBLAS failures, dtype errors, a bug in a forward) is not a user error.
    """
    if is_out_of_memory(exc):
        return out_of_memory_error(exc, device, f"a forward pass on input_shape {tuple(shape)}")
    text = str(exc)
    if _BUG_MESSAGES.search(text) or not _SHAPE_MESSAGES.search(text):
        return None
    return PwmprError(f"input_shape {tuple(shape)} cannot be fed to this model: {_first_line(exc)}")


def list_models() -> list[str]:
    """Names of all registered models."""
    return MODELS.names()
