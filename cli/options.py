"""Shared option helpers: help text comes from the config dataclasses, so flags and config cannot disagree."""

from __future__ import annotations

import dataclasses
from typing import Any

from pwmpr.config import GrowConfig, GrowthConfig, StopConfig, TrainConfig, field_help

_PARTS = {"": GrowConfig, "train": TrainConfig, "growth": GrowthConfig, "stop": StopConfig}


def hlp(path: str) -> str:
    """Help text for config field ``path`` (``seed`` or ``growth.gamma``) with its default."""
    part, _, name = path.rpartition(".")
    cls = _PARTS[part]
    fld = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = fld.default
    shown = "none" if default is None else str(default).lower() if isinstance(default, bool) else default
    text = field_help(cls, name)
    if "registry" in fld.metadata:  # "module:NAME" of the registry whose names the field takes
        import importlib

        module, _, attr = fld.metadata["registry"].partition(":")
        text += f" One of: {', '.join(getattr(importlib.import_module(module), attr).names())}."
    return f"{text} (default: {shown})"


def apply_overrides(cfg: GrowConfig, overrides: dict[str, Any]) -> GrowConfig:
    """A copy of ``cfg`` with every non-None ``{"growth.gamma": 0.3, "seed": 1}`` override set, re-validated."""
    data = cfg.to_dict()
    for path, value in overrides.items():
        if value is None:
            continue
        part, _, name = path.rpartition(".")
        (data[part] if part else data)[name] = value
    return GrowConfig.from_dict(data)
