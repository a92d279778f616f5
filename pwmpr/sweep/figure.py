"""The figure of a sweep's curve (curve.png), and its curve drawn on other figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pwmpr import rundir


def draw_sweep(ax, summary: dict[str, Any], scale: float = 1.0,
               name: str = "test accuracy (mean ± std over seeds)") -> None:
    """Draw a sweep's curve (mean ± std over seeds), its knee and the knee's threshold on ``ax``; accuracies
    times ``scale`` (100 for percent)."""
    pts = summary["curve"]
    ax.errorbar([p["density"] for p in pts], [scale * p["test_acc"] for p in pts],
                yerr=[scale * (p["test_acc_std"] or 0.0) for p in pts], fmt="o--", color="0.35", ms=4, lw=1,
                capsize=3, label=name, zorder=2)
    knee, tol = summary["knee"]["density"], summary["tol"]
    ax.axvline(knee, color="0.35", ls=":", label=f"sweep knee {knee:g}: smallest density within "
               f"{100 * tol:g} pt of its best", zorder=1)
    ax.axhline(scale * (summary["best"]["test_acc"] - tol), color="0.6", ls="--", lw=0.8,
               label=f"sweep best - {100 * tol:g} pt", zorder=1)


def sweep_figure(summary: dict[str, Any]):
    """The Figure of a sweep folder's curve.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pwmpr.plot import plain_ticks

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    draw_sweep(ax, summary)
    ax.set_xscale("log")
    plain_ticks(ax)
    ax.set_xlabel("density")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"sweep: {summary['model']} on {summary['data']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_curve_png(summary: dict[str, Any], path: Path) -> None:
    """Save the figure of a sweep's curve to ``path`` (its curve.png)."""
    import matplotlib.pyplot as plt

    fig = sweep_figure(summary)
    try:
        rundir.atomic_save_figure(fig, path)
    finally:
        plt.close(fig)
