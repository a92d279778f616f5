"""The accuracy-density curve by brute force: one model trained at a geometric grid of fixed densities.

Every point is an ordinary one-shot run (``pwmpr.methods.oneshot``: a mask drawn once at the density, PHEW by
default, then one training of ``final_epochs`` with the final schedule) on the same runner, data and cost
accounting as ``pwmpr grow``. The runs live in one sweep folder::

    sweep.json        the SweepConfig (written first; ``pwmpr sweep --resume`` reads it)
    runs/d0.01-s0/    one run folder per (density, seed), resumable like any other
    curve.csv, curve.md, curve.png, summary.json
                      mean +/- std test accuracy per density, the best point, the knee and the total cost

The knee is the smallest density whose mean test accuracy is within ``tol`` of the best mean: the density a
perfect density discovery would find. It is the ground truth that ``pwmpr compare`` judges PWMPR runs against.
"""

from __future__ import annotations

from pwmpr.sweep.config import (
    DEFAULT_DENSITIES,
    MAX_DENSITIES,
    RUNS,
    SWEEP_CONFIG,
    SWEEP_SUMMARY,
    SweepConfig,
    check_points,
    is_sweep,
    load_config,
    point_dir,
    point_name,
)
from pwmpr.sweep.figure import draw_sweep, save_curve_png, sweep_figure
from pwmpr.sweep.running import (
    check_lowest_density,
    prepare,
    recover_sweep_set_aside,
    run_sweep,
    set_sweep_aside,
)
from pwmpr.sweep.summary import curve, curve_markdown, knee, read_points, summarise, write_summary

__all__ = [
    "DEFAULT_DENSITIES", "MAX_DENSITIES", "RUNS", "SWEEP_CONFIG", "SWEEP_SUMMARY", "SweepConfig",
    "check_lowest_density", "check_points", "curve", "curve_markdown", "draw_sweep", "is_sweep", "knee", "load_config",
    "point_dir", "point_name", "prepare", "read_points", "recover_sweep_set_aside", "run_sweep", "save_curve_png",
    "set_sweep_aside", "summarise", "sweep_figure", "write_summary",
]
