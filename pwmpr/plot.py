"""Accuracy vs density with the fitted saturation curve and rho* marked (curve.png of a run folder)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pwmpr.rundir import atomic_save_figure


def plot_curve(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Draw validation accuracy vs density of the growth phases, the last fit and rho*; write ``path`` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    phases = [r for r in history if r.get("stage") == "phase"]
    finals = [r for r in history if r.get("stage") == "final"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    if phases:
        ax.plot([r["density"] for r in phases], [r["val_acc"] for r in phases], "o-", label="phases (val acc)")
    if finals:
        ax.plot([r["density"] for r in finals], [r["val_acc"] for r in finals], "*", ms=14, label="final (val acc)")
    fits = [r["fit"] for r in phases if r.get("fit") and r["fit"].get("identifiable")]
    if fits:
        fit = fits[-1]
        xs = [r["density"] for r in phases]
        hi = max(max(xs), fit.get("rho_star") or 0) * 1.1
        grid = np.linspace(0, hi, 200)
        ax.plot(grid, fit["p0"] + fit["a"] * (1 - np.exp(-fit["beta"] * grid)), "--", label="fit P0+A(1-e^-βρ)")
        rho = fit.get("rho_star")
        if rho is not None and math.isfinite(rho):
            ax.axvline(rho, color="gray", ls=":", label=f"ρ* = {rho:.3f}")
    ax.set_xlabel("density")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_save_figure(fig, Path(path))
    finally:
        plt.close(fig)
