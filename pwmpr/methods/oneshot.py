"""One-shot pruning at initialisation, then training: the PHEW, SynFlow, random and magnitude baselines.

The mask is chosen once by a ``SEEDS`` factory (``magnitude``: |w| of the initial weights) and never changes;
the network then trains for ``final_epochs`` epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pwmpr.config import check
from pwmpr.errors import PwmprError
from pwmpr.methods import METHODS, Method, options_from_dict
from pwmpr.seed import SEEDS


@dataclass
class OneShotOptions:
    """One-shot's own knobs (``RunConfig.options`` of a run with ``method="oneshot"``; the CLI's ``--method`` is
    ``pruner``)."""

    pruner: str = field(default="phew", metadata={
        "help": "How the mask is chosen at initialisation (magnitude: |w| of the initial weights).",
        "registry": "pwmpr:SEEDS", "flag": "method"})
    density: float = field(default=0.1, metadata={"help": "Fraction of prunable weights kept."})

    def __post_init__(self) -> None:
        if self.pruner not in SEEDS:
            raise PwmprError(f"unknown one-shot method {self.pruner!r}; known: {', '.join(SEEDS.names())}")
        check(0 < self.density <= 1, "one-shot density", self.density, "in (0, 1]")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> OneShotOptions:
        """Build from a config's ``options`` dict; unknown keys raise PwmprError."""
        return options_from_dict(cls, options, "one-shot")


@METHODS.register("oneshot")
class OneShot(Method):
    """Mask once at initialisation, then train for ``final_epochs`` epochs with the final schedule."""

    name = "oneshot"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.options = OneShotOptions.from_options(dict(cfg.options))

    def initial_masks(self, model, input_shape):
        return SEEDS.get(self.options.pruner)(model, self.options.density, input_shape, self.cfg.seed)

    def phase_epochs(self, phase: int) -> int:
        return self.cfg.final_epochs

    def phase_schedule(self, phase: int) -> str:
        return self.cfg.train.final_schedule
