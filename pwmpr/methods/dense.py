"""Dense baseline: the same trainer and schedule at density 1."""

from __future__ import annotations

from pwmpr.methods import METHODS, Method


@METHODS.register("dense")
class Dense(Method):
    """Train the dense network once, for ``final_epochs`` epochs with the final schedule."""

    name = "dense"

    def phase_epochs(self, phase: int) -> int:
        return self.cfg.final_epochs

    def phase_schedule(self, phase: int) -> str:
        return self.cfg.train.final_schedule
