"""Distributed helpers for torchrun (DDP): rank-0 output, growth decided once and broadcast.

Launch: ``torchrun --nproc-per-node N -m pwmpr grow ...`` (or ``torchrun --no-python pwmpr grow ...``). Every rank
trains its shard of each batch through DistributedDataParallel; rank 0 alone evaluates the stop rule, scores and
grows, then broadcasts its decision, so all ranks hold the same masks; only rank 0 writes files or prints.
Everything here is a no-op in a single process, so the runner calls it unconditionally.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import torch
import torch.distributed as tdist

from pwmpr.errors import PwmprError
from pwmpr.masks import MaskSet


def init_from_env() -> torch.device | None:
    """Join the torchrun process group if WORLD_SIZE > 1; return this rank's device (None outside torchrun)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    cuda = torch.cuda.is_available()
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


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


def broadcast_masks(masks: MaskSet) -> MaskSet:
    """Rank 0's masks on every rank (masks change values, never shapes, so DDP needs no re-wrap)."""
    if not is_distributed():
        return masks
    obj = [masks.to_dict() if is_primary() else None]
    tdist.broadcast_object_list(obj, src=0)
    return MaskSet(obj[0])


def broadcast_decision(decision):
    """Rank 0's between-phase decision (stop, new masks, grown indices) on every rank."""
    if not is_distributed():
        return decision
    if is_primary():  # tensors travel on the CPU, so unpickling does not land them all on cuda:0
        cpu = {k: {n: t.cpu() for n, t in v.items()} if isinstance(v, dict) else v
               for k, v in (("added", decision.added), ("rewind", decision.rewind), ("values", decision.values))}
        masks = decision.masks.to("cpu") if decision.masks is not None else None
        decision = dataclasses.replace(decision, masks=masks, **cpu)
    obj = [decision if is_primary() else None]
    tdist.broadcast_object_list(obj, src=0)
    return obj[0]


def check_masks_agree(masks: MaskSet) -> None:
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
        raise PwmprError(f"masks differ across ranks: {digests}")


def shutdown() -> None:
    """Wait for every rank, then leave the process group (a rank that exits early can abort the others)."""
    if is_distributed():
        tdist.barrier()
        tdist.destroy_process_group()
