"""How pwmpr turns a fraction of a count into a whole count, and how learning rates follow their schedules."""

from __future__ import annotations

import math

from pwmpr.errors import PwmprError


def round_half_up(x: float) -> int:
    """``x`` rounded to the nearest whole number, halves up (``round_half_up(2.5) == 3``, as by hand)."""
    return int(math.floor(x + 0.5))


def floor_count(x: float) -> int:
    """``floor(x)``, robust to float error just below a whole number (``0.29 * 100`` is 28.999...96)."""
    return int(math.floor(x + 1e-9))


def schedule_factor(schedule: str, frac: float) -> float:
    """LR multiplier at fraction ``frac``: ``cosine`` (to 0 at 1), ``step`` (x0.1 at 50% and 75%) or ``constant``."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.0 if frac >= 1 else 0.5 * (1.0 + math.cos(math.pi * frac))
    if schedule == "step":
        return 0.1 ** ((frac >= 0.5) + (frac >= 0.75))
    raise PwmprError(f"unknown learning-rate schedule {schedule!r}")
