"""Distributed helpers for torchrun (DDP): rank-0 output, growth decided once and broadcast.

Launch: ``torchrun --nproc-per-node N -m pwmpr grow ...``. Rank 0 alone decides, writes and prints; its errors
reach every rank through :func:`on_primary`. Everything is a no-op in a single process.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as tdist

from pwmpr.errors import PwmprError
from pwmpr.masks import MaskSet

T = TypeVar("T")

#: How long a rank waits in a collective before it gives up: rank 0's work between phases (scoring, growth, the
#: tau-core, the checkpoint) must fit in it. Its failures reach the other ranks at once (:func:`on_primary`).
TIMEOUT = datetime.timedelta(minutes=30)


def init_from_env() -> None:
    """Join the torchrun process group if WORLD_SIZE > 1 (gloo for CPU tensors, NCCL as well where CUDA is)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or tdist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    tdist.init_process_group(backend, timeout=TIMEOUT)


def rank_device(device: torch.device) -> torch.device:
    """This rank's device: under torchrun ``cuda`` is GPU LOCAL_RANK (``cuda:N`` is refused); else ``device``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise PwmprError(f"--device {device} names one GPU for every rank; under torchrun use --device cuda "
                         f"(rank i takes GPU LOCAL_RANK) or cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside torchrun); torchrun's RANK before the group starts or after it ends."""
    return tdist.get_rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of ranks (1 outside torchrun)."""
    return tdist.get_world_size() if is_distributed() else 1


def is_primary() -> bool:
    """True on rank 0 (and in a single process): the only rank that writes files or prints."""
    return rank() == 0


def on_primary(fn: Callable[[], T], what: str, *, share: bool = True) -> T:
    """``fn()`` run on rank 0 alone; its result on every rank (``share``), its error raised on every rank."""
    if not is_distributed():
        return fn()
    result: Any = None
    error: BaseException | None = None
    if is_primary():
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - passed on below, to every rank
            error = exc
    failed = None if error is None else _describe(error)
    box = [(failed, result if share else None) if is_primary() else None]
    tdist.broadcast_object_list(box, src=0)
    failed, shared = box[0]
    if error is not None:
        raise error
    if failed is not None:
        raise PwmprError(f"rank 0 failed while {what}: {failed}")
    return result if is_primary() else shared


def _describe(exc: BaseException) -> str:
    """One line saying what went wrong on rank 0 (an OSError: its reason and file)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f" ({exc.filename})" if exc.filename else "")
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__


def broadcast_masks(masks: MaskSet) -> MaskSet:
    """Rank 0's masks on every rank (masks change values, never shapes, so DDP needs no re-wrap)."""
    if not is_distributed():
        return masks
    obj = [masks.to_dict() if is_primary() else None]
    tdist.broadcast_object_list(obj, src=0)
    return MaskSet(obj[0])


def broadcast_decision(decide: Callable[[], Any]):
    """Rank 0's between-phase decision (stop, new masks, grown indices), made by ``decide()``, on every rank;
    an exception in ``decide`` ends every rank with it (:func:`on_primary`)."""
    if not is_distributed():
        return decide()

    def on_cpu():  # tensors travel on the CPU, so unpickling does not land them all on cuda:0
        decision = decide()
        cpu = {k: {n: t.cpu() for n, t in v.items()} if isinstance(v, dict) else v
               for k, v in (("added", decision.added), ("rewind", decision.rewind), ("values", decision.values))}
        masks = decision.masks.to("cpu") if decision.masks is not None else None
        return dataclasses.replace(decision, masks=masks, **cpu)

    return on_primary(on_cpu, "deciding growth")


def check_masks_agree(masks: MaskSet, when: str = "") -> None:
    """Raise unless every rank holds exactly the same masks (guards against silently diverging ranks)."""
    if not is_distributed():
        return
    h = hashlib.sha256()
    for name in sorted(masks):
        h.update(name.encode())
        h.update(masks[name].cpu().numpy().tobytes())
    digests = [None] * world_size()
    tdist.all_gather_object(digests, h.hexdigest())
    if len(set(digests)) != 1:
        short = ", ".join(f"rank {i}: {d[:12]}" for i, d in enumerate(digests))
        raise PwmprError(f"masks differ across ranks{' ' + when if when else ''} ({short})")


def barrier() -> None:
    """Wait until every rank got here (nothing in a single process)."""
    if is_distributed():
        tdist.barrier()


def shutdown() -> None:
    """Wait for every rank, then leave the process group (a rank that exits early can abort the others)."""
    if is_distributed():
        tdist.barrier()
        tdist.destroy_process_group()
