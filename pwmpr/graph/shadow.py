"""What the unit tracer keeps per tensor (its *shadow*), and the helpers that read unit ids off a shadow."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pwmpr.errors import PwmprError

#: The most distinct unit vectors the rows a linear layer reads, or the tokens of an attention operand, may carry
#: (one link, or one merge operand, each) before the op is refused.
MAX_UNIT_VECTORS = 16


@dataclass(frozen=True)
class Units:
    """An activation: ``ids[entry]`` is the global unit id of each entry (-1: none), shaped like the tensor."""

    ids: Tensor


@dataclass(frozen=True)
class Statistic(Units):
    """A reduction whose slices carried other units (their merge), with the ids it reduced (``source``): combined
    back with those elementwise (``q / q.norm(dim=-1)`` per head), it is a normalization, and they keep their
    units, as a norm layer's do."""

    source: Tensor


@dataclass(frozen=True)
class Logits:
    """Attention logits ``q @ k^T`` of attention site ``site``: the unit ids of q and k along the contracted dim,
    laid out ``(..., 1, d)``."""

    q: Tensor
    k: Tensor
    site: int


@dataclass(frozen=True)
class AttentionMap:
    """The softmax of attention logits (as in :class:`Logits`)."""

    q: Tensor
    k: Tensor
    site: int


MARKERS = (Logits, AttentionMap)


class LayoutError(PwmprError):
    """An op reads units along another dim than the one they lie on: the input's units may lie elsewhere."""


class SignalLayout(LayoutError):
    """A convolution slides over the input's units: the input may be one signal (one unit), as a one-channel image
    is."""


class Data:
    """A value computed from the input that carries no units: a comparison, an argmax, a mask."""


DATA = Data()


def along(vec: Tensor, dim: int, shape: Sequence[int]) -> Tensor:
    """``vec`` laid along ``dim`` of a tensor of ``shape`` (broadcast over the other dims)."""
    dim = dim % len(shape)
    view = [1] * len(shape)
    view[dim] = -1
    return vec.view(view).expand(tuple(shape))


def constant_along(ids: Tensor, dim: int) -> bool:
    """True when the units do not vary along ``dim`` (entries without a unit aside)."""
    top = ids.amax(dim=dim, keepdim=True)
    return bool(((ids == top) | (ids < 0)).all())


def unit_vector(ids: Tensor, dim: int, error) -> Tensor:
    """The unit of each position along ``dim`` (-1: none); ``error()`` is raised when units vary along other dims."""
    moved = ids.movedim(dim, -1).reshape(-1, ids.shape[dim])
    unit = moved.amax(0)
    if not bool(((moved == unit) | (moved < 0)).all()):
        exc = error()
        if exc is not None:
            raise exc
    return unit


def cpu_index(index: Any) -> Any:
    """An index with every tensor in it moved to the CPU (to index a shadow)."""
    if isinstance(index, Tensor):
        return index.cpu()
    if isinstance(index, (tuple, list)):
        return type(index)(cpu_index(i) for i in index)
    return index


def first_appearance(ids: Tensor) -> Tensor:
    """The distinct values of ``ids`` in the order they first appear."""
    uniq, inverse = torch.unique(ids, return_inverse=True)
    first = torch.full((uniq.numel(),), ids.numel(), dtype=torch.long).scatter_reduce_(
        0, inverse, torch.arange(ids.numel()), "amin")
    return uniq[torch.argsort(first)]


def constant_along_rows(ids: Tensor) -> bool:
    """True when every row along the last dim carries the same unit vector (entries without a unit aside)."""
    rows = ids.reshape(-1, ids.shape[-1])
    unit = rows.amax(0)
    return bool(((rows == unit) | (rows < 0)).all())


def distinct_slices(ids: Tensor) -> list[Tensor]:
    """The distinct slices of ``ids`` along dim 0 that carry a unit, in the order they first appear."""
    flat = ids.reshape(ids.shape[0], -1)
    keep = torch.nonzero((flat >= 0).any(1)).squeeze(1)
    if keep.numel() == 0:
        return []
    _, inverse = torch.unique(flat[keep], dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), keep.numel(), dtype=torch.long).scatter_reduce_(
        0, inverse, torch.arange(keep.numel()), "amin")
    return [ids[keep[i]] for i in first.sort().values.tolist()]
