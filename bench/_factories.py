"""One model factory per spec name, for the bench's model-zoo modules (bench/hf_models.py, bench/cv_models.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn


def add_factories(namespace: dict, names: Iterable[str], build: Callable[[str, int], nn.Module]) -> None:
    """Put into ``namespace`` (a module's globals) a factory ``NAME(num_classes, input_shape)`` for each name, building
    ``build(NAME, num_classes)``: what ``pwmpr grow --model MODULE:NAME`` calls."""
    for name in names:
        namespace[name] = _factory(name, build)


def _factory(name: str, build: Callable[[str, int], nn.Module]) -> Callable[[int, tuple[int, ...]], nn.Module]:
    def factory(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        return build(name, num_classes)

    factory.__name__ = name
    return factory
