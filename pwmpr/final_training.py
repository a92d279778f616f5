"""The final training: once the phases stop, the discovered masks are trained once more, from ``--final-init``.

``start_final_training`` sets the start weights, ``train_final`` trains and records the ``final`` row; a
checkpoint every ``--checkpoint-minutes`` lets a killed run resume partway.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from pwmpr import checkpoint, dist
from pwmpr.errors import PwmprError
from pwmpr.masks import MaskSet
from pwmpr.methods.final_init import FINAL_INITS, initial_for, needs_start, starts_trained
from pwmpr.train.hooks import Hook

if TYPE_CHECKING:
    from pwmpr.runner import PhaseLoop


def start_final_training(run: PhaseLoop) -> None:
    """Set the weights final training starts from (``--final-init``), keeping the discovered mask."""
    if run.start is None and needs_start(run.cfg.final_init):
        raise PwmprError(f"--final-init {run.cfg.final_init} needs the run's initial weights and seed masks, but "
                         f"the checkpoint this run resumed from does not hold them (start/ tensors); rerun it "
                         f"from the start")
    state = None
    if run.start is not None:
        initial, seed = run.start
        fresh = initial_for(run.model, initial, run.cfg.growth.init_scale)
        state = FINAL_INITS.get(run.cfg.final_init)(run.model, fresh, seed, run.trainer.masks)
    run.start = None  # used once: later checkpoints need not carry it
    if state is None:
        return
    with torch.no_grad():
        checkpoint.load_state(run.model, state)
        run.trainer.masks.apply(run.model)
    run.trainer.optimizer.state.clear()


def train_final(run: PhaseLoop, train_loader, val_loader) -> None:
    """Train the final epochs (carrying on after those a resumed checkpoint holds; warmed up from a start that keeps
    the grown weights), record its row, checkpoint."""
    masks = run.trainer.masks
    epochs = run.cfg.final_epochs
    run.reporter.phase_start(run.phase, masks.density(), "final")
    done, run.progress = run.progress, None  # resumed during final training: carry on after its epochs
    hook = _FinalCheckpointHook(run, epochs)
    run.trainer.hooks.append(hook)
    try:
        stats = run.trainer.train(
            train_loader, epochs, schedule=run.cfg.train.final_schedule, stage="final",
            first_epoch=done["epochs_done"] if done else 0,
            carry=(done["loss_sum"], done["samples"], done["seconds"]) if done else None,
            warmup_epochs=run.cfg.train.warmup_epochs if starts_trained(run.cfg.final_init) else 0.0)
    finally:
        run.trainer.hooks.remove(hook)
    val_acc, val_loss = run.trainer.evaluate(val_loader)
    row = run.history_row("final", epochs, masks, stats, val_acc, val_loss)
    row["decision"] = "done"
    row["final_init"] = run.cfg.final_init
    run.history.append(row)
    run.stage = "done"
    run.phase += 1
    run.save_checkpoint()
    run.reporter.phase_done(row)


def pack_start(start: tuple[dict[str, torch.Tensor], MaskSet] | None) -> dict[str, torch.Tensor] | None:
    """The run's start as checkpoint tensors (``state/`` the initial weights, ``mask/`` the seed masks)."""
    if start is None:
        return None
    state, seed = start
    return {**{"state/" + k: v for k, v in state.items()}, **{"mask/" + k: v for k, v in seed.to_dict().items()}}


def unpack_start(tensors: dict[str, torch.Tensor] | None) -> tuple[dict[str, torch.Tensor], MaskSet] | None:
    """The run's start back from ``pack_start``'s tensors (None when the checkpoint kept none)."""
    if not tensors:
        return None
    state = {k[len("state/"):]: v for k, v in tensors.items() if k.startswith("state/")}
    seed = {k[len("mask/"):]: v for k, v in tensors.items() if k.startswith("mask/")}
    return state, MaskSet(seed)


class _FinalCheckpointHook(Hook):
    """Checkpoints final training at the end of an epoch once ``--checkpoint-minutes`` passed since the last
    checkpoint (not after its last epoch, which the final checkpoint follows). Rank 0 decides and writes; the
    others learn of its failure (``dist.on_primary``)."""

    def __init__(self, run: PhaseLoop, epochs: int) -> None:
        self.run = run
        self.epochs = epochs
        self.last = time.monotonic()  # the phase before final training just wrote one

    def on_epoch_end(self, trainer, *, epoch, loss):
        if epoch + 1 < self.epochs:
            dist.on_primary(lambda: self._write_if_due(trainer, epoch + 1), "writing the checkpoint", share=False)

    def _write_if_due(self, trainer, epochs_done: int) -> None:
        if time.monotonic() - self.last < 60.0 * self.run.cfg.checkpoint_minutes:
            return
        loss_sum, samples, seconds = trainer.totals
        self.run.write_checkpoint(progress={"epochs_done": epochs_done, "loss_sum": float(loss_sum),
                                            "samples": samples, "seconds": seconds})
        self.last = time.monotonic()
