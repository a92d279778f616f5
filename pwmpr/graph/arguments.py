"""Calls as the op rules read them: arguments a forward passed by keyword moved to their positions.

``F.conv2d(input=x, weight=w)`` and ``F.conv2d(x, w)`` are the same call, and every rule of the unit tracer, the
scoring net and the FLOPs count reads the operands by position. :func:`positional` rewrites the first into the second
once, where every torch call is watched (:class:`pwmpr.graph.mode.WatchMode`), so no rule has to know both spellings.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch


def positional(func: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``args`` and ``kwargs`` with each keyword argument that names the next positional parameter of ``func`` moved
    to its position, in order, so long as the positions run on without a gap; the call means the same."""
    if not kwargs:
        return args, kwargs
    names = _positional_names(func)
    if len(args) >= len(names) or names[len(args)] not in kwargs:
        return args, kwargs
    kwargs = dict(kwargs)
    moved = list(args)
    while len(moved) < len(names) and names[len(moved)] in kwargs:
        moved.append(kwargs.pop(names[len(moved)]))
    return tuple(moved), kwargs


@functools.cache
def _positional_names(func: Any) -> tuple[str, ...]:
    """The names of ``func``'s parameters that may be passed by position, in order (empty when unknown).

    A Python function's come from its signature; a torch builtin's from its ATen schemas, as far as every overload
    agrees (those taking a tensor first), with ``self`` called ``input`` as torch's Python bindings call it."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin: read its schemas
        return _schema_names(getattr(func, "__name__", ""))
    return tuple(p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _schema_names(name: str) -> tuple[str, ...]:
    if not name.isidentifier():
        return ()
    try:
        schemas = torch._C._jit_get_schemas_for_operator(f"aten::{name}")
    except RuntimeError:
        return ()
    lists = [[a.name for a in s.arguments if not a.kwarg_only] for s in schemas
             if s.arguments and "Tensor" in str(s.arguments[0].type)]  # not TorchScript's aten::add(int a, int b)
    if not lists:
        return ()
    common = []
    for names in zip(*lists, strict=False):
        if len(set(names)) != 1:
            break
        common.append(names[0])
    return tuple("input" if n == "self" else n for n in common)
