"""Training: the one loop (``trainer``) and its hooks."""

from pwmpr.train.hooks import Hook, ProgressHook
from pwmpr.train.trainer import PhaseStats, SnapshotMemory, Trainer, TrainingDiverged, lr_at

__all__ = ["Hook", "PhaseStats", "ProgressHook", "SnapshotMemory", "Trainer", "TrainingDiverged", "lr_at"]
