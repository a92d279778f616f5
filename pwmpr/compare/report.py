"""The comparison as people read it: the table (markdown and CSV), the IMP curves, the claims, and two plots."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pwmpr.compare.claims import Claim
from pwmpr.compare.records import Group
from pwmpr.plot import plain_ticks

# -- the table --------------------------------------------------------------------------------------------------
COLUMNS = ("group", "method", "variant", "model", "data", "n_seeds", "seeds", "density", "density_std", "test_acc",
           "test_acc_std", "cost_flops", "cost_flops_std", "cost_epochs", "cost_epochs_std", "wall_time",
           "wall_time_std", "tau_core_ratio", "reference_epochs", "stop_reasons", "runs")


def table_rows(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """One dict per group with the columns of :data:`COLUMNS` (means and sample stds over seeds)."""
    rows = []
    for g in groups:
        d, acc, cf, ce, wt = (g.stat(k) for k in ("discovered_density", "test_acc", "cost_flops", "cost_epochs",
                                                   "wall_time"))
        rows.append({
            "group": g.label, "method": g.method, "variant": g.variant, "model": g.setting[0], "data": g.setting[1],
            "n_seeds": len(g.runs), "seeds": " ".join(map(str, g.seeds)),
            "density": d.mean, "density_std": d.std, "test_acc": acc.mean, "test_acc_std": acc.std,
            "cost_flops": cf.mean, "cost_flops_std": cf.std, "cost_epochs": ce.mean, "cost_epochs_std": ce.std,
            "wall_time": wt.mean, "wall_time_std": wt.std, "tau_core_ratio": g.tau_ratio().mean,
            "reference_epochs": " ".join(map(str, g.reference_epochs())),
            "stop_reasons": " ".join(sorted({str(r.summary.get("stop_reason", "")) for r in g.runs})),
            "runs": ";".join(str(r.path) for r in g.runs),
        })
    return rows


def _pm(mean: float | None, std: float | None, fmt: str, scale: float = 1.0, n: int = 1) -> str:
    if mean is None:
        return "–"
    text = format(mean * scale, fmt)
    return f"{text} ± {format((std or 0.0) * scale, fmt)}" if n > 1 else text


def display_row(row: dict[str, Any]) -> dict[str, str]:
    n = row["n_seeds"]
    return {
        "run": row["group"],
        "seeds": str(n),
        "density": _pm(row["density"], row["density_std"], ".4f", n=n if (row["density_std"] or 0) > 1e-9 else 1),
        "test acc (%)": _pm(row["test_acc"], row["test_acc_std"], ".2f", 100.0, n),
        "cost FLOPs (x dense)": _pm(row["cost_flops"], row["cost_flops_std"], ".3f", n=n),
        "cost epochs (x dense)": _pm(row["cost_epochs"], row["cost_epochs_std"], ".2f", n=n),
        "train wall (s)": _pm(row["wall_time"], None, ".1f"),
        "tau-core ratio": _pm(row["tau_core_ratio"], None, ".3f"),
    }


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The table as GitHub markdown (means ± sample std over seeds)."""
    shown = [display_row(r) for r in rows]
    if not shown:
        return ""
    head = list(shown[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(s[h] for h in head) + " |" for s in shown]
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """The table as CSV with full-precision numbers (empty cells where a value is missing)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r[k] is None else repr(r[k]) if isinstance(r[k], float) else r[k]) for k in COLUMNS})
    return buf.getvalue()




def levels_markdown(groups: Sequence[Group]) -> str:
    """The accuracy-density curve of every IMP group, level by level (mean ± std over seeds)."""
    parts = []
    for g in groups:
        if g.method != "imp":
            continue
        parts.append(f"**{g.label}** ({len(g.runs)} seed(s))\n\n| level | density | val acc (%) | test acc (%) | "
                     "cost FLOPs (x dense) | cost epochs (x dense) | tau-core ratio |\n| --- | --- | --- | --- | --- | "
                     "--- | --- |\n")
        for x in g.levels():
            n = x["test_acc"].n
            parts.append(f"| {x['level']} | {x['density'].mean:.4f} | "
                         f"{_pm(x['val_acc'].mean, x['val_acc'].std, '.2f', 100.0, n)} | "
                         f"{_pm(x['test_acc'].mean, x['test_acc'].std, '.2f', 100.0, n)} | "
                         f"{_pm(x['cost_flops'].mean, None, '.3f')} | {_pm(x['cost_epochs'].mean, None, '.2f')} | "
                         f"{_pm(x['tau'].mean, None, '.3f')} |\n")
        parts.append("\n")
    return "".join(parts)


def claims_markdown(claims: dict[str, list[Claim]]) -> str:
    """The claims as a markdown table per setting."""
    parts = []
    for setting, cs in claims.items():
        head = f"**{setting}**\n\n" if len(claims) > 1 else ""
        parts.append(head + "| claim | paper | measured here | verdict |\n| --- | --- | --- | --- |\n"
                     + "".join(f"| {c.name} | {c.paper} | {c.measured} | {c.verdict} |\n" for c in cs))
    return "\n".join(parts)


# -- plots ------------------------------------------------------------------------------------------------------
def _save(fig, path: Path) -> None:
    from pwmpr.rundir import atomic_save_figure

    atomic_save_figure(fig, path)


MARKERS = {"pwmpr": "o", "imp": "s", "rigl": "D", "set": "P", "oneshot": "^", "dense": "*"}


def comparison_figures(groups: Sequence[Group], sweeps: Sequence[dict[str, Any]] = ()):
    """The Figures of ``acc_vs_density.png`` and ``acc_vs_cost.png``: test accuracy (mean ± std over seeds) of every
    group, IMP's levels as a curve, and on the first the sweeps given (curve and knee: what runs are scored
    against). Legends sit outside the axes, so that they cover no point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig1, ax1 = plt.subplots(figsize=(9.5, 4.8), dpi=110)
    fig2, axes = plt.subplots(1, 2, figsize=(13, 4.8), dpi=110, sharey=True)
    settings = {g.setting for g in groups}
    for s in sweeps:
        from pwmpr.sweep import draw_sweep

        where = f" {s['model']} on {s['data']}" if len(settings) > 1 or len(sweeps) > 1 else ""
        draw_sweep(ax1, s, scale=100.0, name=f"sweep{where} (the reference): {s['pruner']} masks trained "
                   f"{s['epochs']} epochs at fixed densities")
    for i, g in enumerate(groups):
        color = f"C{i % 10}"
        d, acc = g.stat("discovered_density"), g.stat("test_acc")
        cf, ce = g.stat("cost_flops"), g.stat("cost_epochs")
        mk, ms = MARKERS.get(g.method, "o"), 12 if g.method == "dense" else 7
        curve = g.levels() if g.method == "imp" else []
        if curve:
            # IMP: every level is a trained ticket, so the whole curve is drawn.
            pts = [x for x in curve if x["test_acc"].mean is not None]
            ys = [x["test_acc"].mean * 100 for x in pts]
            es = [(x["test_acc"].std or 0.0) * 100 for x in pts]
            ax1.errorbar([x["density"].mean for x in pts], ys, yerr=es, color=color, marker=mk, ms=4, capsize=2,
                         lw=1, label=f"{g.label} (levels)")
            for ax, key in zip(axes, ("cost_flops", "cost_epochs"), strict=True):
                ax.errorbar([x[key].mean for x in pts], ys, yerr=es, color=color, marker=mk, ms=4, capsize=2, lw=1,
                            label=f"{g.label} (levels)")
            continue
        ax1.errorbar([d.mean], [acc.mean * 100], xerr=[d.std or 0.0], yerr=[(acc.std or 0.0) * 100], color=color,
                     marker=mk, ms=ms, capsize=3, ls="none", label=g.label, zorder=3)
        for ax, s in zip(axes, (cf, ce), strict=True):
            ax.errorbar([s.mean], [acc.mean * 100], xerr=[s.std or 0.0], yerr=[(acc.std or 0.0) * 100], color=color,
                        marker=mk, ms=ms, capsize=3, ls="none", label=g.label)
    ax1.set_xscale("log")
    plain_ticks(ax1)
    ax1.set_xlabel("density (fraction of prunable weights kept, log scale)")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title("test accuracy vs density (mean ± std over seeds)", fontsize=10)
    ax1.grid(alpha=0.3, which="both")
    _legend_outside(ax1)
    fig1.subplots_adjust(left=0.07, right=0.62, top=0.92, bottom=0.12)
    for ax, conv in zip(axes, ("density-weighted training FLOPs", "epoch-equivalents"), strict=True):
        ax.axvline(1.0, color="gray", ls=":", lw=1)
        ax.set_xscale("log")
        plain_ticks(ax)
        ax.set_xlabel(f"training cost / dense\n({conv}, log scale)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("test accuracy (%)")
    _legend_outside(axes[1])
    fig2.suptitle("test accuracy vs training cost (dotted line: one dense run)", fontsize=10)
    fig2.subplots_adjust(left=0.05, right=0.75, top=0.9, bottom=0.15, wspace=0.1)
    return fig1, fig2


def _legend_outside(ax) -> None:
    import textwrap

    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, [textwrap.fill(t, 44) for t in labels], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def plot_comparison(groups: Sequence[Group], out_dir: Path, sweeps: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """Write ``acc_vs_density.png`` and ``acc_vs_cost.png`` (:func:`comparison_figures`)."""
    import matplotlib.pyplot as plt

    from pwmpr.interrupts import deferred_interrupt

    paths = [out_dir / "acc_vs_density.png", out_dir / "acc_vs_cost.png"]
    figs = comparison_figures(groups, sweeps)
    try:
        for fig, path in zip(figs, paths, strict=True):
            with deferred_interrupt():  # a Ctrl-C is raised after the figure is written, never inside matplotlib
                _save(fig, path)
    finally:
        for fig in figs:
            plt.close(fig)
    return paths
