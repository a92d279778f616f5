"""Trainer hooks: a small protocol with no-op defaults at the named points of the training loop."""

from __future__ import annotations

from typing import Any


class Hook:
    """Base hook; override the points you need. All methods receive the Trainer first."""

    def on_phase_start(self, trainer: Any, *, stage: str, epochs: int, n_batches: int) -> None:
        """Before the first step of a call to ``Trainer.train``."""

    def after_optimizer_step(self, trainer: Any, *, loss: Any) -> None:
        """After every optimizer step (masks already enforced); ``loss`` is a detached tensor."""

    def on_epoch_end(self, trainer: Any, *, epoch: int, loss: float) -> None:
        """After every epoch, with its mean training loss."""

    def on_phase_end(self, trainer: Any, *, stats: Any) -> None:
        """After the last epoch of a call to ``Trainer.train``."""


class ProgressHook(Hook):
    """Forwards loop events to a progress reporter (``pwmpr.progress``)."""

    def __init__(self, reporter: Any) -> None:
        self.reporter = reporter

    def on_phase_start(self, trainer, *, stage, epochs, n_batches):
        self.reporter.train_start(stage=stage, epochs=epochs, n_batches=n_batches)

    def after_optimizer_step(self, trainer, *, loss):
        self.reporter.batch_done()

    def on_epoch_end(self, trainer, *, epoch, loss):
        self.reporter.epoch_done(epoch=epoch, loss=loss)

    def on_phase_end(self, trainer, *, stats):
        self.reporter.train_done()
