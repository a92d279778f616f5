"""A sweep's result from its finished points: the curve, the best point, the knee, and the files that show them."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from pwmpr import rundir
from pwmpr.errors import PwmprError
from pwmpr.sweep.config import SWEEP_SUMMARY, SweepConfig, check_points, load_config, point_dir
from pwmpr.sweep.figure import save_curve_png


def read_points(out: Path | str, cfg: SweepConfig | None = None) -> list[dict[str, Any]]:
    """One dict per finished point: density, seed, test accuracy, costs (from each run's summary.json, read
    strictly; a point whose summary.json is damaged is not finished)."""
    out = Path(out)
    cfg = cfg or load_config(out)
    rows = []
    for seed in cfg.seeds:
        for density in cfg.densities:
            s = rundir.finished_summary(point_dir(out, density, seed))
            if s is None or s.get("test_acc") is None:
                continue
            rows.append({"density": density, "seed": seed, "model": str(s.get("model")), "data": str(s.get("data")),
                         "measured_density": s["discovered_density"],
                         "test_acc": s["test_acc"], "val_acc": s.get("val_acc") or 0.0, "cost_flops": s["cost_flops"],
                         "cost_epochs": s["cost_epochs"], "wall_time": s.get("wall_time") or 0.0})
    return rows


def curve(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std of test accuracy per density over seeds, densities ascending."""
    import numpy as np

    out = []
    for density in sorted({r["density"] for r in rows}):
        accs = np.array([r["test_acc"] for r in rows if r["density"] == density])
        out.append({"density": density, "test_acc": float(accs.mean()),
                    "test_acc_std": float(accs.std(ddof=1)) if accs.size > 1 else None, "n_seeds": int(accs.size)})
    return out


def knee(points: list[dict[str, Any]], tol: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(best point, knee point) of a curve: the knee is the smallest density within ``tol`` of the best mean."""
    best = max(points, key=lambda p: p["test_acc"])
    within = [p for p in points if p["test_acc"] >= best["test_acc"] - tol - 1e-12]
    return best, min(within, key=lambda p: p["density"])


def summarise(out: Path | str, cfg: SweepConfig | None = None) -> dict[str, Any]:
    """The sweep summary (curve, best, knee, dense point, costs) computed from the sweep folder's finished points,
    which must have been trained as its sweep.json says; its summary.json is not read."""
    out = Path(out)
    cfg = cfg or load_config(out)
    check_points(out, cfg)
    return _summary(out, cfg, read_points(out, cfg))


def _summary(out: Path, cfg: SweepConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        raise PwmprError(f"sweep {out} has no finished point yet")
    pts = curve(rows)
    best, kn = knee(pts, cfg.tol)
    dense = next((p for p in pts if p["density"] >= 1.0), None)
    summary = {
        "kind": "sweep", "model": rows[0]["model"], "data": rows[0]["data"], "pruner": cfg.pruner,
        "epochs": cfg.base.final_epochs, "tol": cfg.tol, "seeds": cfg.seeds,
        "complete": len(rows) == len(cfg.densities) * len(cfg.seeds),
        "curve": pts, "best": best, "knee": kn, "dense": dense,
        "cost_flops_total": sum(r["cost_flops"] for r in rows) / len(cfg.seeds),
        "cost_epochs_total": sum(r["cost_epochs"] for r in rows) / len(cfg.seeds),
    }
    return summary


def write_summary(out: Path | str, cfg: SweepConfig | None = None) -> dict[str, Any]:
    """Write curve.csv, curve.md, curve.png and summary.json of a sweep folder from its finished points."""
    out = Path(out)
    cfg = cfg or load_config(out)
    rows = read_points(out, cfg)
    summary = _summary(out, cfg, rows)
    lines = ["density,seed,test_acc,val_acc,cost_flops,cost_epochs,wall_time"]
    lines += [f"{r['density']:g},{r['seed']},{r['test_acc']:.6f},{r['val_acc']:.6f},{r['cost_flops']:.6f},"
              f"{r['cost_epochs']:.6f},{r['wall_time']:.3f}" for r in rows]
    rundir.atomic_write_text(out / "curve.csv", "\n".join(lines) + "\n")
    rundir.atomic_write_text(out / "curve.md", curve_markdown(summary))
    rundir.atomic_write_json(out / SWEEP_SUMMARY, summary)
    with contextlib.suppress(ImportError):  # matplotlib missing: the table and csv are the result
        save_curve_png(summary, out / "curve.png")
    return summary


def curve_markdown(summary: dict[str, Any]) -> str:
    """The curve as a markdown table, with the best point and the knee marked."""
    lines = [f"Sweep: {summary['model']} on {summary['data']}, {summary['pruner']} masks, {summary['epochs']} epochs "
             f"per point, seeds {', '.join(map(str, summary['seeds']))}; knee = smallest density within "
             f"{100 * summary['tol']:g} points of the best mean test accuracy.", "",
             "| density | test accuracy (mean ± std) | seeds | |", "|---|---|---|---|"]
    for p in summary["curve"]:
        std = f" ± {100 * p['test_acc_std']:.2f}" if p["test_acc_std"] is not None else ""
        mark = " ".join(m for m, q in (("best", summary["best"]), ("knee", summary["knee"]))
                        if q["density"] == p["density"])
        lines.append(f"| {p['density']:g} | {100 * p['test_acc']:.2f}%{std} | {p['n_seeds']} | {mark} |")
    return "\n".join(lines) + "\n"
