"""Counting copies between the host and a device, both ways: the check that training copies nothing per step.

:func:`count_copies` runs a function under :class:`DeviceTraffic`; the ``meta`` device stands in for a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode

T = TypeVar("T")


@dataclass(frozen=True)
class Copies:
    """Copies counted between the host and a device: to the device, and back to the host."""

    to_device: int
    to_host: int


class DeviceTraffic(TorchDispatchMode):
    """Counts copies between the CPU and devices of type ``device_type`` (default ``meta``), both ways."""

    def __init__(self, device_type: str = "meta") -> None:
        super().__init__()
        self.device_type = device_type
        self.to_device = 0
        self.to_host = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        meta = self.device_type == "meta"
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device.type == self.device_type:
            self.to_host += 1
            if meta:
                return 0
        elif func is torch.ops.aten._to_copy.default:
            src, dst = args[0].device.type, torch.device(kwargs.get("device") or args[0].device).type
            if src == self.device_type and dst == "cpu":
                self.to_host += 1
                if meta:
                    return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
            self.to_device += src == "cpu" and dst == self.device_type
        elif func is torch.ops.aten.copy_.default:
            dst, src = args[0].device.type, args[1].device.type
            self.to_device += src == "cpu" and dst == self.device_type
            if src == self.device_type and dst == "cpu":
                self.to_host += 1
                if meta:
                    return args[0].zero_()
        return func(*args, **kwargs)

    @property
    def copies(self) -> Copies:
        """The counts so far."""
        return Copies(self.to_device, self.to_host)


def count_copies(fn: Callable[[], T], device: torch.device | str = "meta") -> tuple[T, Copies]:
    """``fn()`` run with every copy between the host and ``device``'s type counted; its result and the counts."""
    traffic = DeviceTraffic(torch.device(device).type)
    with traffic:
        result: Any = fn()
    return result, traffic.copies
