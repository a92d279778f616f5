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
    to its position, in order, so long as the positions run on without a gap; the call means the same. A call that
    names a parameter its positional arguments already fill uses another signature (a deprecated one, such as
    ``addcmul(x, 0.5, tensor1=a, tensor2=b)``) and is left as written."""
    if not kwargs:
        return args, kwargs
    names = _positional_names(func, frozenset(kwargs))
    if len(args) >= len(names) or names[len(args)] not in kwargs or any(n in kwargs for n in names[:len(args)]):
        return args, kwargs
    kwargs = dict(kwargs)
    moved = list(args)
    while len(moved) < len(names) and names[len(moved)] in kwargs:
        moved.append(kwargs.pop(names[len(moved)]))
    return tuple(moved), kwargs


def _positional_names(func: Any, keys: frozenset[str]) -> tuple[str, ...]:
    """The names of ``func``'s parameters that may be passed by position, in order, for a call giving the keyword
    arguments ``keys`` (empty when unknown)."""
    try:
        return _cached_names(func, keys)
    except TypeError:  # an unhashable callable
        return _names(func, keys)


@functools.cache
def _cached_names(func: Any, keys: frozenset[str]) -> tuple[str, ...]:
    return _names(func, keys)


def _names(func: Any, keys: frozenset[str]) -> tuple[str, ...]:
    """A Python function's from its signature; a torch builtin's from its ATen schemas (``_schema_names``)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin: read its schemas
        return _schema_names(getattr(func, "__name__", ""), keys)
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in params if p.kind in kinds)


def _schema_names(name: str, keys: frozenset[str]) -> tuple[str, ...]:
    """The positional names of the ATen overloads of ``name`` that take a tensor first and have a parameter for every
    keyword in ``keys`` (``where(condition)`` does not cut ``where(condition, input=a, other=b)`` short), as far as
    every such overload takes the position under the same name, with ``self`` called ``input`` as torch's Python
    bindings call it."""
    if not name.isidentifier():
        return ()
    try:
        schemas = torch._C._jit_get_schemas_for_operator(f"aten::{name}")
    except RuntimeError:
        return ()

    def named(n: str) -> str:
        return "input" if n == "self" else n

    schemas = [s for s in schemas if s.arguments and "Tensor" in str(s.arguments[0].type)]  # not aten::add(int a, ..)
    known = {named(a.name) for s in schemas for a in s.arguments}
    keys = keys & known  # torch's numpy aliases (axis, keepdims) name no schema's parameter: they select nothing
    lists = [[named(a.name) for a in s.arguments if not a.kwarg_only] for s in schemas
             if keys <= {named(a.name) for a in s.arguments}]
    common: list[str] = []
    for at in zip(*lists, strict=False):  # up to the shortest: a position every such overload takes
        if len(set(at)) != 1:
            break
        common.append(at[0])
    return tuple(common)
