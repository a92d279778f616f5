"""MODELS: name -> factory for every network pwmpr can seed, grow, prune and export.

Each family lives in its own file and registers its variants with ``@MODELS.register``;
importing this package fills the registry. Factories take ``(num_classes, input_shape)``
where ``input_shape`` excludes the batch dimension: ``(3, 32, 32)``, ``(1, 28, 28)``, ``(784,)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
    factory = MODELS.get(name)
    if int(num_classes) < 1:
        raise PwmprError(f"num_classes must be >= 1, got {num_classes}")
    shape = normalize_input_shape(input_shape)
    try:
        model = factory(num_classes=int(num_classes), input_shape=shape, **kwargs)
    except PwmprError:
        raise
    except ValueError as exc:
        raise PwmprError(f"input_shape {shape} does not suit model {name!r}: {exc}") from None
    check_input_shape(model, shape)
    return model


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
    except (RuntimeError, ValueError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PwmprError(f"input_shape {shape} cannot be fed to this model: {first}") from None
    finally:
        for m, mode in modes:  # restore each module's own flag (a mixed train/eval state stays mixed)
            m.training = mode


def list_models() -> list[str]:
    """Names of all registered models."""
    return MODELS.names()
