"""curve.png of a run folder: what the run saw, what stopped it, and where it ended.

Accuracy against density (with the stop rule's view, the shrink stage and the discovered density), or against
epochs for a run at one density; a line below says why it stopped. ``plot_curve`` saves ``curve_figure``.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pwmpr.rundir import atomic_save_figure
from pwmpr.stop.decision import growth_rows, shrink_rows


def saturation_curve(fit: dict[str, Any], rho):
    """``P0 + A (1 - exp(-beta rho))`` of a fit as recorded in history.jsonl (``SaturationFit.to_dict``)."""
    import numpy as np

    return fit["p0"] + fit["a"] * -np.expm1(-fit["beta"] * np.asarray(rho, dtype=np.float64))


# -- why a run stopped: one sentence per stop reason, read from the row that decided -------------------------------
def _guard_text(row: dict[str, Any]) -> str:
    g = row.get("cost_guard") or {}
    if "projected" not in g:
        return "the cost guard (--max-cost) stopped growth"
    return (f"the cost guard: one more phase and the final training would cost {g['projected']:.2f} dense runs, "
            f"over --max-cost {g['limit']:g}")


def _failed_candidate(history: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [r["shrink"] for r in history if r.get("shrink", {}).get("kept") is False]
    return failed[-1] if failed else {}


STOP_REASONS: dict[str, Callable[[dict[str, Any], list[dict[str, Any]]], str]] = {
    "saturated": lambda r, h: f"the {r.get('stop_rule', '')} stop rule: {r.get('fit_status', '')}",
    "plateau": lambda r, h: f"the plateau test: {r.get('plateau_status', '')}",
    "max-cost": lambda r, h: _guard_text(r),
    "max-density": lambda r, h: "growth reached --max-density",
    "max-phases": lambda r, h: "growth reached --max-phases",
    "no-growth-candidates": lambda r, h: "no absent edge had a non-zero score left to grow",
    "shrink-tol": lambda r, h: (
        "the shrink candidate of step {step} lost {loss:.1f} pt, over the bound {bound:.1f} pt; the run went back to "
        "the last network that kept the accuracy".format(
            step=_failed_candidate(h).get("step", "?"), loss=100 * _failed_candidate(h).get("loss", math.nan),
            bound=100 * _failed_candidate(h).get("bound", math.nan))),
    "shrink-max-steps": lambda r, h: "the shrink stage used its --shrink-max-steps",
    "shrink-nothing-left": lambda r, h: "a shrink step would remove no edge",
    "budget": lambda r, h: "trained its --epochs at a fixed density",
    "done": lambda r, h: "trained its --epochs",
    "target-density": lambda r, h: "IMP reached its target density",
    "max-levels": lambda r, h: "IMP pruned its --levels",
    "nothing-left-to-prune": lambda r, h: "IMP had nothing left to prune",
}


def _decided(history: list[dict[str, Any]], reason: str) -> dict[str, Any] | None:
    """The last row whose decision was ``reason`` (the row a stop was decided on)."""
    return next((r for r in reversed(history) if r.get("decision") == reason or r.get("growth_stop") == reason), None)


def stop_reason(history: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> str | None:
    """The run's stop reason: the summary's, else the last recorded decision that is a stop; None while running."""
    if summary and summary.get("stop_reason"):
        return str(summary["stop_reason"])
    return next((r["decision"] for r in reversed(history) if r.get("decision") in STOP_REASONS), None)


def explain_stop(history: list[dict[str, Any]], reason: str) -> str:
    """One line saying why the run stopped for ``reason``, from the row that decided it."""
    row = _decided(history, reason) or {}
    why = STOP_REASONS.get(reason)
    return f"stopped: {reason}" + (f" ({why(row, history)})" if why else "")


def discovered_density(history: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> float | None:
    """The density the run ended at: the summary's, else the final training's, else that of the row the stop was
    decided on (the network that goes to final training); None while the run has not stopped."""
    if summary and summary.get("discovered_density") is not None:
        return float(summary["discovered_density"])
    finals = [r for r in history if r.get("stage") == "final"]
    if finals:
        return float(finals[-1]["density"])
    reason = stop_reason(history)
    row = next((r for r in reversed(history) if r.get("decision") == reason), None) if reason else None
    return float(row["density"]) if row else None


def _fixed_density(history: list[dict[str, Any]]) -> bool:
    ds = [r["density"] for r in history if r.get("stage") in ("phase", "final")]
    return bool(ds) and max(ds) - min(ds) <= 1e-9 * max(ds)


def plain_ticks(ax) -> None:
    """Log x axes labelled 0.05, 0.1, 2 rather than 5x10^-2, with labels on the minor ticks (2, 3, 5 x 10^k)
    where the axis spans less than about two decades."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def _num_to_string(self, x, vmin, vmax):
            return f"{x:g}"

    ax.xaxis.set_major_formatter(Plain(labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


# -- the figure --------------------------------------------------------------------------------------------------
def curve_figure(history: list[dict[str, Any]], summary: dict[str, Any] | None = None, title: str = ""):
    """The matplotlib Figure of curve.png for a run's history (and its summary.json once written)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 5), dpi=110)
    notes: list[str] = []
    if _fixed_density(history):
        notes += _draw_epochs(ax, history, summary)
    else:
        notes += _draw_density(ax, history, summary)
    reason = stop_reason(history, summary)
    notes.insert(0, explain_stop(history, reason) if reason else "running: no stop decided yet")
    knee = next((r for r in history if r.get("growth_stop")), None)
    if knee is not None and knee["growth_stop"] != reason:  # the shrink stage: growth stopped first
        notes.insert(1, "growth " + explain_stop(history, knee["growth_stop"]))
    test = (summary or {}).get("test_acc")
    if test is not None:
        notes.insert(1, f"final test accuracy {100 * test:.2f}%"
                     + (f" at density {summary['discovered_density']:.4g}" if summary.get("discovered_density")
                        is not None else ""))
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()  # outside the axes, so that it covers no point
    ax.legend(handles, [textwrap.fill(t, 46) for t in labels], fontsize=7.5, loc="upper left",
              bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    text = "\n".join(textwrap.fill(n, 150, subsequent_indent="    ") for n in notes)
    fig.text(0.01, 0.01, text, fontsize=7.5, va="bottom", ha="left")
    n_lines = text.count("\n") + 1
    fig.subplots_adjust(left=0.08, right=0.68, top=0.93, bottom=0.1 + 0.026 * n_lines)
    return fig


def _draw_epochs(ax, history: list[dict[str, Any]], summary: dict[str, Any] | None) -> list[str]:
    """A run at one density: validation accuracy after each phase against the epochs trained so far; returns
    the notes."""
    phases = [r for r in history if r.get("stage") == "phase"]
    finals = [r for r in history if r.get("stage") == "final"]
    density = history[0]["density"]
    if phases:
        ax.plot([r["epochs_total"] for r in phases], [r["val_acc"] for r in phases], "o-", zorder=3,
                label=f"val acc after each phase (density {density:.4g} throughout)")
    if finals:
        ax.plot([r["epochs_total"] for r in finals], [r["val_acc"] for r in finals], "*", ms=14, zorder=3,
                label="after final training (val acc)")
    test = (summary or {}).get("test_acc")
    if test is not None:
        last = (finals or phases or history)[-1]
        ax.plot([last["epochs_total"]], [test], "D", color="C3", ms=8, zorder=4,
                label=f"test acc at the end ({100 * test:.2f}%)")
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0, 1.06 * max(r["epochs_total"] for r in history))  # from the start, also for a single phase
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epochs trained")
    return ([] if len(phases) > 1 else
            [f"one phase of {phases[0]['epochs_total']} epochs: the history holds its accuracy at the end only"]
            if phases else [])


def _draw_density(ax, history: list[dict[str, Any]], summary: dict[str, Any] | None) -> list[str]:
    """A run whose density changes: accuracy against density with the stop rule's view; returns the notes."""
    import numpy as np

    notes: list[str] = []
    phases = growth_rows(history)
    finals = [r for r in history if r.get("stage") == "final"]
    xs = [r["density"] for r in phases]
    grew = any("stop_rule" in r for r in phases)  # growth phases, or another method's (IMP's levels)
    if phases:
        ax.plot(xs, [r["val_acc"] for r in phases], "o-", zorder=3,
                label="growth phases (val acc)" if grew else "phases in order (val acc)")
    last = phases[-1] if phases else {}
    post, fit = last.get("posterior"), last.get("fit")
    if post and post.get("rho"):
        ax.fill_between(post["rho"], post["q05"], post["q95"], alpha=0.2, color="C2",
                        label="gain rule: posterior 90% band")
        ax.plot(post["rho"], post["q50"], "-", color="C2", lw=1, label="gain rule: posterior median")
        p = post.get("p_gain_below_tol")
        if p is not None:
            notes.append(f"gain rule at the last phase: Pr(gain up to density {post['cap']:g} < "
                         f"{100 * post['tol']:.2g} pt) = {p:.2f}; it stops once this is at least 1 - alpha "
                         f"(--stop-alpha) in consecutive refits")
    elif fit and fit.get("identifiable") and xs:
        rho_star = fit.get("rho_star")
        finite = rho_star is not None and math.isfinite(rho_star)
        grid = np.geomspace(min(xs), max(max(xs), rho_star if finite else 0.0), 200)
        ax.plot(grid, saturation_curve(fit, grid), "--", color="C2", label="last fit P0+A(1-e^-βρ)")
        if finite:
            ax.axvline(rho_star, color="C2", ls=":", label=f"ρ* = {rho_star:.3g}: 95% of the last fit's rise")
        notes += _draw_refits(ax, phases, rho_star if finite else None)
    elif phases and last.get("stop_rule") == "plateau" and last.get("plateau_fit"):
        notes.append(f"plateau rule at the last phase: {last.get('fit_status') or ''}")
    elif phases and last.get("stop_rule"):
        notes.append(f"{last['stop_rule']} rule drew no curve at the last phase: "
                     + (last.get("fit_status") or "too few points"))
        if any(r.get("fit") for r in phases):  # a fitting rule: each refit's verdict all the same
            _draw_refits(ax, phases, None)
    line = last.get("plateau_fit")
    if line and line.get("slope") is not None:  # the plateau test's line over its window (docs/method.md, "plateau")
        grid = np.geomspace(line["from"], line["to"], 20)
        ax.plot(grid, line["y0"] + line["slope"] * (np.log2(grid) - line["x0"]), "-", color="C4", lw=2.5, alpha=0.7,
                label=f"plateau test: {100 * line['slope']:.2f} ± {100 * line['se']:.2f} pt per doubling over the "
                      f"last {_window(phases, line)} points (stops below {100 * line['tol']:.2g} pt"
                      + (f"; its window spans ≥ {line['min_span']:.2g} doublings, what {last.get('val_n')} "
                         f"validation samples resolve" if line.get("min_span") else "") + ")")
    tol = last.get("stop_tol_used")
    if tol is not None and phases:  # the gain the stop rule decided at (docs/method.md, "gain")
        ax.axhline(last["val_acc"] + tol, color="C2", ls="--", lw=0.8,
                   label=f"last growth point + gain tolerance used ({100 * tol:.2g} pt)")
    guard_row = next((r for r in reversed(phases) if (r.get("cost_guard") or {}).get("over")), None)
    if guard_row is not None:
        g = guard_row["cost_guard"]
        ax.plot([guard_row["density"]], [guard_row["val_acc"]], "o", ms=18, mfc="none", mec="C3", mew=2, zorder=6,
                label=f"cost guard decided here: {g['projected']:.2f} > {g['limit']:g} dense runs")
    reach = next((r["cost_guard"]["reach"] for r in reversed(phases) if "reach" in (r.get("cost_guard") or {})), None)
    if reach is not None and guard_row is None:  # where the budget would end growth (recorded only short of the cap)
        ax.axvline(reach, color="C3", ls=":", lw=1.2,
                   label=f"cost guard's reach: about {reach:.2g} (growth by gamma, --max-cost)")
    knee = _draw_shrink(ax, history, summary)
    if finals:
        ax.plot([r["density"] for r in finals], [r["val_acc"] for r in finals], "*", ms=14, color="C1", zorder=5,
                label="after final training (val acc)")
    found = discovered_density(history, summary)
    test = (summary or {}).get("test_acc")
    if found is not None:
        reason = stop_reason(history, summary)
        label = (f"kept: smallest density {found:.4g} that kept the accuracy" if knee is not None
                 else f"{'discovered' if grew else 'final'} density {found:.4g} (stop: {reason})")
        ax.axvline(found, color="C1", ls="-", lw=1.2, alpha=0.8, label=label)
        if test is not None:
            ax.plot([found], [test], "D", color="C3", ms=8, zorder=5, label=f"final test acc ({100 * test:.2f}%)")
    all_x = xs + [r["density"] for r in shrink_rows(history)] + ([found] if found else [])
    if (all_x and max(all_x) / max(min(all_x), 1e-12) > 4) or post:
        ax.set_xscale("log")
        plain_ticks(ax)
    ax.set_xlabel("density")
    return notes


def _window(phases: list[dict[str, Any]], line: dict[str, Any]) -> int:
    return sum(1 for r in phases if line["from"] - 1e-12 <= r["density"] <= line["to"] + 1e-12)


#: What a paper-rule refit said at a phase, and how the strip along the bottom of the axes draws it.
REFIT_VERDICTS = {
    "met": ("o", "C2", "refit: density ≥ its ρ*"),
    "below": ("o", "none", "refit: density < its ρ*"),
    "no estimate": ("x", "gray", "refit: no estimate (keep growing)"),
}


def refit_verdict(row: dict[str, Any]) -> str | None:
    """What the saturation fit made after this phase said: ``met`` (density >= its rho*), ``below``, ``no estimate``
    (a fit the rule may not use), or None when no fit was made (too few points)."""
    fit = row.get("fit")
    if not fit:
        return None
    rho = fit.get("rho_star")
    if not fit.get("identifiable") or rho is None or not math.isfinite(rho):
        return "no estimate"
    return "met" if row["density"] >= rho else "below"


def _draw_refits(ax, phases: list[dict[str, Any]], rho_star: float | None) -> list[str]:
    """The paper rule's verdict at every phase as a strip of markers, and a note on why growth went past rho*."""
    verdicts = [(r, refit_verdict(r)) for r in phases]
    strip = ax.get_xaxis_transform()  # x in data, y in axes fractions
    for key, (marker, color, label) in REFIT_VERDICTS.items():
        rows = [r for r, v in verdicts if v == key]
        if rows:
            ax.plot([r["density"] for r in rows], [0.04] * len(rows), marker, transform=strip, ms=6, ls="none",
                    mfc=color, mec="C2" if color == "none" else color, clip_on=False, zorder=4,
                    label=f"{phases[-1].get('stop_rule', 'paper')} rule, {label}")
    rule = phases[-1].get("stop_rule", "paper")
    if rho_star is None:
        return []
    notes = [f"ρ* is the last fit's; the {rule} rule stops once the density is ≥ the ρ* of the refit made then, in "
             f"consecutive refits (the markers along the bottom: each phase's refit)"]
    past = next((r for r in phases if rho_star is not None and r["density"] >= rho_star), None)
    if past is not None and past is not phases[-1]:
        notes.append(f"why growth went on past ρ*: at density {past['density']:.4g} the rule said "
                     f"\"{past.get('fit_status', '')}\"")
    notes.append(f"{rule} rule at the last phase: {phases[-1].get('fit_status', '')}")
    return notes


def _draw_shrink(ax, history: list[dict[str, Any]], summary: dict[str, Any] | None) -> float | None:
    """The shrink stage as a path from the knee in step order, with the knee marked; returns the knee density."""
    shrinks = shrink_rows(history)
    knee = next((r for r in history if r.get("growth_stop")), None)
    if not shrinks or knee is None:
        return None
    path = [knee, *shrinks]
    px, py = [r["density"] for r in path], [r["val_acc"] for r in path]
    ax.plot(px, py, "v--", color="C3", lw=0.9, ms=5, zorder=3,
            label=f"shrink stage: {sum('kept' in r['shrink'] for r in shrinks)} steps in order from the knee "
                  f"(each trains one more phase)")
    for i in range(1, len(path)):
        ax.annotate("", xy=(px[i], py[i]), xytext=(px[i - 1], py[i - 1]),
                    arrowprops={"arrowstyle": "->", "color": "C3", "lw": 0.8, "shrinkA": 3, "shrinkB": 3})
    failed = [r for r in shrinks if r["shrink"].get("kept") is False]
    if failed:
        ax.plot([r["density"] for r in failed], [r["val_acc"] for r in failed], "x", color="k", ms=8, zorder=4,
                label="shrink candidate that lost the accuracy")
    reason = (summary or {}).get("growth_stop_reason") or knee["growth_stop"]
    kd = float((summary or {}).get("knee_density") or knee["density"])
    ax.axvline(kd, color="C0", ls="-.", lw=1.0, label=f"knee: growth stopped here ({reason}) at {kd:.4g}")
    return kd


def plot_curve(history: list[dict[str, Any]], path: Path, title: str = "",
               summary: dict[str, Any] | None = None) -> None:
    """Draw :func:`curve_figure` and write it to ``path`` atomically."""
    import matplotlib.pyplot as plt

    fig = curve_figure(history, summary, title)
    try:
        atomic_save_figure(fig, Path(path))
    finally:
        plt.close(fig)
