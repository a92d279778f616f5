"""The checkpoint format of a run folder: what a phase's checkpoint holds, how it is written, and how it is checked.

One safetensors file with prefixed tensors (``model/``, ``mask/``, ``optim/``, ``rng/``, ``method/``,
``rewind/``, ``start/``) and JSON metadata (history, next phase, stage, config...). :func:`read` refuses a file
that lacks any part resume needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pwmpr import rundir
from pwmpr.errors import PwmprError

KIND = "checkpoint"
STAGES = ("phase", "final", "done")
RNG_KEYS = ("torch", "data", "grow")
CUDA_RNG = "cuda"  # the CUDA generator of the training device, kept when the run trains on CUDA
METHOD_PREFIX = "method/"
REWIND_PREFIX = "rewind/"
START_PREFIX = "start/"
PROGRESS_KEYS = ("epochs_done", "loss_sum", "samples", "seconds")  # a checkpoint written during final training


@dataclass
class Checkpoint:
    """Everything a run needs to carry on after the phase it was written at."""

    model_state: dict[str, Tensor]
    masks: dict[str, Tensor]
    optimizer: dict[str, Tensor]
    rng: dict[str, Tensor]  # RNG_KEYS (and CUDA_RNG on CUDA) -> generator states
    next_phase: int
    stage: str
    history: list[dict[str, Any]]
    stop_reason: str = ""
    global_step: int = 0
    method_state: dict[str, Tensor] = field(default_factory=dict)
    rewind: dict[str, Tensor] | None = None
    start: dict[str, Tensor] | None = None  # the run's start (initial weights, seed masks) that --final-init reads
    extra_meta: dict[str, Any] = field(default_factory=dict)  # config, input shape, classes: for a reader's eyes
    progress: dict[str, Any] | None = None  # written during final training: epochs done, their loss sum, samples


def write(path: Path, ck: Checkpoint) -> None:
    """Write ``ck`` to ``path`` atomically (a crash leaves the old file or the new one, never half of one)."""
    tensors: dict[str, Tensor] = {}
    tensors.update({rundir.MODEL_PREFIX + k: v for k, v in ck.model_state.items()})
    tensors.update({rundir.MASK_PREFIX + k: v for k, v in ck.masks.items()})
    tensors.update({rundir.OPTIM_PREFIX + k: v for k, v in ck.optimizer.items()})
    tensors.update({rundir.RNG_PREFIX + k: v for k, v in ck.rng.items()})
    tensors.update({METHOD_PREFIX + k: v for k, v in ck.method_state.items()})
    if ck.rewind is not None:
        tensors.update({REWIND_PREFIX + k: v for k, v in ck.rewind.items()})
    if ck.start is not None:
        tensors.update({START_PREFIX + k: v for k, v in ck.start.items()})
    meta = {"kind": KIND, "next_phase": ck.next_phase, "stage": ck.stage, "stop_reason": ck.stop_reason,
            "history": ck.history, "global_step": ck.global_step, **ck.extra_meta}
    if ck.progress is not None:
        meta["progress"] = ck.progress
    rundir.save_tensors(path, tensors, meta)


def read(path: Path, model_shapes: dict[str, tuple[int, ...]]) -> Checkpoint:
    """Load checkpoint ``path`` and check that it holds everything resume needs, with weights of ``model_shapes``.

    Raises:
        PwmprError: the file is not a pwmpr checkpoint, lacks a part, or was written for another model.
    """
    tensors, meta = rundir.load_tensors(path)
    if meta.get("kind") != KIND:
        raise PwmprError("it has no pwmpr checkpoint metadata")
    if not isinstance(meta.get("history"), list) or not isinstance(meta.get("next_phase"), int) or \
            meta.get("stage") not in STAGES:
        raise PwmprError("its metadata lacks the history, the next phase or the stage")
    rng = rundir.split_prefix(tensors, rundir.RNG_PREFIX)
    if not set(RNG_KEYS) <= set(rng) or set(rng) - {*RNG_KEYS, CUDA_RNG}:
        raise PwmprError("it lacks the random generator states")
    state = rundir.split_prefix(tensors, rundir.MODEL_PREFIX)
    if {k: tuple(v.shape) for k, v in state.items()} != model_shapes:
        raise PwmprError("its weights do not fit the configured model")
    progress = meta.get("progress")
    if progress is not None and not (isinstance(progress, dict) and set(progress) == set(PROGRESS_KEYS)):
        raise PwmprError("its training progress is incomplete")
    rewind = rundir.split_prefix(tensors, REWIND_PREFIX)
    start = rundir.split_prefix(tensors, START_PREFIX)
    extra = {k: v for k, v in meta.items()
             if k not in ("kind", "next_phase", "stage", "stop_reason", "history", "global_step", "progress")}
    stored = rundir.split_prefix(tensors, rundir.MASK_PREFIX)  # the file keeps names sorted
    masks = {k: stored[k] for k in model_shapes if k in stored}  # the model's order, which growth's draws follow
    masks.update(stored)
    return Checkpoint(model_state=state, masks=masks,
                      optimizer=rundir.split_prefix(tensors, rundir.OPTIM_PREFIX), rng=rng,
                      next_phase=int(meta["next_phase"]), stage=meta["stage"], history=meta["history"],
                      stop_reason=meta.get("stop_reason", ""), global_step=int(meta.get("global_step", 0)),
                      method_state=rundir.split_prefix(tensors, METHOD_PREFIX), rewind=rewind or None,
                      start=start or None, extra_meta=extra, progress=progress)


def rng_states(data_gen: torch.Generator, grow_gen: torch.Generator,
               device: torch.device | str | None = None) -> dict[str, Tensor]:
    """The generator states a checkpoint keeps: torch's global one, the data order's and the growth's, and the
    CUDA generator of ``device`` when it is a CUDA device."""
    states = {"torch": torch.get_rng_state(), "data": data_gen.get_state(), "grow": grow_gen.get_state()}
    if device is not None and torch.device(device).type == "cuda":
        states[CUDA_RNG] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(rng: dict[str, Tensor], data_gen: torch.Generator, grow_gen: torch.Generator,
                   device: torch.device | str | None = None) -> None:
    """Restore the states :func:`rng_states` kept (CUDA's only when the run trains on CUDA again)."""
    torch.set_rng_state(rng["torch"])
    data_gen.set_state(rng["data"])
    grow_gen.set_state(rng["grow"])
    if CUDA_RNG in rng and device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(rng[CUDA_RNG], device)


def load_state(model: torch.nn.Module, state: dict[str, Tensor]) -> None:
    """``model.load_state_dict(state, strict=True)`` for a file's state, with the model's own ``_metadata`` attached."""
    own = getattr(model.state_dict(), "_metadata", None)
    if own is not None and getattr(state, "_metadata", None) is None:
        from collections import OrderedDict

        state = OrderedDict(state)
        state._metadata = own
    model.load_state_dict(state, strict=True)
