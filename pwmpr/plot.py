"""curve.png of a run folder: validation accuracy vs density, with what the stop rule saw.

The gain rule's posterior is drawn as its 90% band and median from the smallest observed density up to the
largest density growth may reach (the extrapolation the rule decides on); a paper-rule fit is drawn only over
the observed densities and up to its rho*. When the last phase had neither, the plot says so.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pwmpr.rundir import atomic_save_figure
from pwmpr.stop.decision import growth_rows, shrink_rows


def saturation_curve(fit: dict[str, Any], rho):
    """``P0 + A (1 - exp(-beta rho))`` of a fit as recorded in history.jsonl (``SaturationFit.to_dict``)."""
    import numpy as np

    return fit["p0"] + fit["a"] * -np.expm1(-fit["beta"] * np.asarray(rho, dtype=np.float64))


def plot_curve(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Draw validation accuracy vs density of the growth phases and the stop rule's view; write ``path`` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    phases = growth_rows(history)
    shrinks = shrink_rows(history)
    finals = [r for r in history if r.get("stage") == "final"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    try:
        xs = [r["density"] for r in phases]
        if phases:
            ax.plot(xs, [r["val_acc"] for r in phases], "o-", label="phases (val acc)", zorder=3)
        if shrinks:
            ax.plot([r["density"] for r in shrinks], [r["val_acc"] for r in shrinks], "v", color="C3",
                    label="shrink stage (val acc)", zorder=3)
        if finals:
            ax.plot([r["density"] for r in finals], [r["val_acc"] for r in finals], "*", ms=14,
                    label="final (val acc)", zorder=3)
        last = phases[-1] if phases else {}
        post, fit = last.get("posterior"), last.get("fit")
        note = ""
        if post and post.get("rho"):
            rho = post["rho"]
            ax.fill_between(rho, post["q05"], post["q95"], alpha=0.2, color="C2", label="posterior 90% band")
            ax.plot(rho, post["q50"], "-", color="C2", lw=1, label="posterior median")
            p = post.get("p_gain_below_tol")
            if p is not None:
                note = f"Pr(gain to density {post['cap']:g} < {post['tol']:g}) = {p:.2f}"
        elif fit and fit.get("identifiable") and xs:
            rho_star = fit.get("rho_star")
            hi = max(max(xs), rho_star if rho_star is not None and math.isfinite(rho_star) else 0.0)
            grid = np.geomspace(min(xs), hi, 200)
            ax.plot(grid, saturation_curve(fit, grid), "--", label="fit P0+A(1-e^-βρ)")
            if rho_star is not None and math.isfinite(rho_star):
                ax.axvline(rho_star, color="gray", ls=":", label=f"ρ* = {rho_star:.3f}")
        elif phases:
            note = "no fit: " + (last.get("fit_status") or "too few points")
        tol = last.get("stop_tol_used")
        if tol is not None and phases:  # the gain the stop rule decided at (docs/method.md, "gain")
            ax.axhline(last["val_acc"] + tol, color="C2", ls="--", lw=0.8,
                       label=f"last + tolerance used ({tol:.3g})")
        guard = last.get("cost_guard")
        if guard and guard.get("over"):
            ax.plot([last["density"]], [last["val_acc"]], "X", ms=11, color="C3", zorder=4,
                    label=f"cost guard: {guard['projected']:.2f} > {guard['limit']:g} dense runs")
        if note:
            ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=7, va="bottom", wrap=True)
        if xs and max(xs) / max(min(xs), 1e-12) > 4 or post:
            from matplotlib.ticker import FuncFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("density")
        ax.set_ylabel("validation accuracy")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        atomic_save_figure(fig, Path(path))
    finally:
        plt.close(fig)
