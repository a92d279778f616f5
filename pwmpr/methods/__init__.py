"""METHODS: what happens between training phases (PWMPR growth, dense, IMP, one-shot pruning, RigL, SET).

A method gives initial masks, phase epochs and after each phase a ``Decision``; ``pwmpr.runner`` drives them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pwmpr.config import RunConfig
from pwmpr.masks import MaskSet
from pwmpr.registry import Registry


@dataclass
class Decision:
    """What the runner does after a phase."""

    stop: bool = False
    reason: str = ""
    masks: MaskSet | None = None  # masks for the next phase (None: unchanged)
    added: dict[str, Tensor] | None = None  # grown entries: zero-initialised, zero optimizer state
    values: dict[str, Tensor] | None = None  # start values of grown entries that do not start at zero (recruits)
    rewind: dict[str, Tensor] | None = None  # state_dict entries to load before the next phase
    reset_optimizer: bool = False  # drop optimizer state (momentum) before the next phase
    info: dict[str, Any] = field(default_factory=dict)  # recorded in the phase's history row


@dataclass
class RunContext:
    """What a method may look at when deciding."""

    cfg: RunConfig
    model: nn.Module
    masks: MaskSet
    input_shape: tuple[int, ...]
    history: list[dict[str, Any]]
    generator: torch.Generator
    sample_batch: Any = None  # callable returning one (x, y) training batch on the model's device
    initial_state: dict[str, Tensor] | None = None  # state_dict at the rewind point (IMP)
    num_classes: int | None = None  # classes of the data set (chance accuracy is 1 / num_classes)


class Method:
    """Base class: one phase of ``phase_epochs``, then stop; subclasses override what they need."""

    name = "method"
    #: True when the method trains a final run after its phases (PWMPR); its phases are then "rough".
    has_final = False
    #: True when the method stops growth on the accuracy-density curve (PWMPR): it reads ``cfg.stop``.
    stops_growth = False
    #: True when every phase ends in a finished network (IMP levels): the runner records its test accuracy too.
    records_test = False
    #: Global training step whose weights the runner keeps as ``RunContext.initial_state`` (IMP rewinding);
    #: None: the weights at the start of the run.
    rewind_step: int | None = None

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def initial_masks(self, model: nn.Module, input_shape: tuple[int, ...]) -> MaskSet:
        """Masks of the first phase (default: dense)."""
        return MaskSet.dense(model)

    def phase_epochs(self, phase: int) -> int:
        """Epochs of phase ``phase``."""
        return self.cfg.phase_epochs

    def phase_schedule(self, phase: int) -> str:
        """Learning-rate schedule of phase ``phase``."""
        return self.cfg.train.phase_schedule

    def phase_lr(self, phase: int) -> float | None:
        """Base learning rate of phase ``phase`` (None: the configured ``train.lr``)."""
        return None

    def phase_warmup(self, phase: int) -> float:
        """Epochs of learning-rate warm-up at the start of phase ``phase`` (default none)."""
        return 0.0

    def after_phase(self, ctx: RunContext) -> Decision:
        """Decide what happens after the phase just recorded in ``ctx.history[-1]``."""
        return Decision(stop=True, reason="done")

    def state_tensors(self) -> dict[str, Tensor]:
        """Tensors to keep across a resume (default none); all else must follow from the config and the history."""
        return {}

    def restore(self, tensors: dict[str, Tensor], history: list[dict[str, Any]]) -> None:
        """Rebuild the method's state on resume from the ``state_tensors`` of the checkpoint and its history."""

    def summary(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """Extra entries of the run's ``summary.json`` (default none)."""
        return {}


def options_from_dict(cls: type, options: dict[str, Any], what: str) -> Any:
    """Build a method's options dataclass ``cls`` from a config's ``options`` dict; unknown keys raise PwmprError."""
    from dataclasses import fields

    from pwmpr.errors import PwmprError

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise PwmprError(f"unknown {what} option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**options)


METHODS: Registry[type[Method]] = Registry("method")

# Importing the methods fills METHODS.
from pwmpr.methods import dense, dst, grow, imp, oneshot  # noqa: E402,F401
