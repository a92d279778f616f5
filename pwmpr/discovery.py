"""How good was a density discovery: a PWMPR run judged against a sweep of the same model and data.

``score`` reports ``density_over_knee``, ``gap_to_best``, ``gap_to_dense``, the cost against IMP's to the same
density, and ``hit`` (within ``acc_tol`` of the best, near the knee, within ``max_cost``, cheaper than IMP).
"""

from __future__ import annotations

from typing import Any

ACC_TOL = 0.01  # one accuracy point
DENSITY_FACTOR = 2.0
MAX_COST = 1.5  # dense runs of training FLOPs: the paper's budget


def imp_cost_to(history: list[dict[str, Any]], density: float) -> tuple[float | None, bool]:
    """IMP's cumulative FLOPs cost (x dense) to reach ``density``, and whether it is exact (False: lower bound)."""
    levels = [r for r in history if r.get("stage") == "phase"]
    for r in levels:
        if r["density"] <= density + 1e-12:
            return float(r["cost_flops"]), True
    return (float(levels[-1]["cost_flops"]), False) if levels else (None, False)


def cost_verdict(cost: float, imp_cost: float | None, exact: bool, max_cost: float = MAX_COST
                 ) -> tuple[bool, bool | None]:
    """``(within max_cost, cheaper than IMP to the same density)`` of a run's total cost; the second is None when it
    cannot be told (no IMP run, or a cost above IMP's lower bound)."""
    if imp_cost is None:
        cheaper = None
    elif cost < imp_cost:
        cheaper = True  # also when imp_cost is a lower bound: IMP's true cost is larger still
    else:
        cheaper = False if exact else None
    return cost <= max_cost + 1e-12, cheaper


def score(summary: dict[str, Any], sweep: dict[str, Any], imp_history: list[dict[str, Any]] | None = None, *,
          acc_tol: float = ACC_TOL, density_factor: float = DENSITY_FACTOR, max_cost: float = MAX_COST
          ) -> dict[str, Any]:
    """Score one PWMPR run (its summary.json) against a sweep summary and, optionally, an IMP run's history."""
    density, acc, cost = summary["discovered_density"], summary["test_acc"], summary["cost_flops"]
    knee, best, dense = sweep["knee"], sweep["best"], sweep.get("dense")
    imp_cost, exact = imp_cost_to(imp_history, density) if imp_history else (None, False)
    within_acc = acc >= best["test_acc"] - acc_tol - 1e-12  # the same slack as the sweep's knee
    within_density = density <= density_factor * knee["density"] + 1e-12
    within_cost, cheaper = cost_verdict(cost, imp_cost, exact, max_cost)
    hit = False if not (within_acc and within_density and within_cost) else cheaper
    return {
        "discovered_density": density, "knee_density": knee["density"],
        "density_over_knee": density / knee["density"], "test_acc": acc, "sweep_best": best["test_acc"],
        "gap_to_best": acc - best["test_acc"], "gap_to_dense": acc - dense["test_acc"] if dense else None,
        "cost_flops": cost, "cost_epochs": summary["cost_epochs"], "imp_cost_flops": imp_cost,
        "imp_cost_exact": exact, "within_acc": within_acc, "within_density": within_density,
        "within_cost": within_cost, "cheaper": cheaper,
        "hit": hit, "stop_reason": summary.get("stop_reason"),
    }


def imp_cost_text(row: dict[str, Any]) -> str:
    """IMP's cost to a run's density as the report writes it: ``2.44``, ``2.95+`` when IMP stopped above that
    density (its last level's cost, a lower bound), ``-`` when there is no IMP run."""
    if row["imp_cost_flops"] is None:
        return "-"
    return f"{row['imp_cost_flops']:.2f}" + ("" if row["imp_cost_exact"] else "+")


#: What ``+`` after IMP's cost means, for every report that writes one.
LOWER_BOUND_NOTE = "`+`: IMP stopped above that density, its cost is a lower bound"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The scores as a markdown table (one row per run)."""
    head = ("| run | stop | density | knee | density / knee | test acc | gap to sweep best | gap to dense | "
            "cost FLOPs (x dense) | IMP to same density | hit |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = []
    for r in rows:
        imp = imp_cost_text(r)
        dense = "-" if r["gap_to_dense"] is None else f"{100 * r['gap_to_dense']:+.2f}"
        hit = {True: "yes", False: "no", None: "?"}[r["hit"]]
        body.append(f"| {r['run']} | {r['stop_reason']} | {r['discovered_density']:.4f} | {r['knee_density']:g} | "
                    f"{r['density_over_knee']:.2f} | {100 * r['test_acc']:.2f}% | {100 * r['gap_to_best']:+.2f} | "
                    f"{dense} | {r['cost_flops']:.3f} | {imp} | {hit} |\n")
    return head + "".join(body)
