"""Training: the one loop (``trainer``) and its hooks."""

from pwmpr.train.hooks import Hook, ProgressHook
from pwmpr.train.trainer import PhaseStats, Trainer, TrainingDiverged, lr_at

__all__ = ["Hook", "PhaseStats", "ProgressHook", "Trainer", "TrainingDiverged", "lr_at"]
