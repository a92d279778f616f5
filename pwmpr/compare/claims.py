"""The paper's claims (docs/method.md, "Judging the paper's claims") checked on grouped runs, against seed spread.

A verdict is "holds" or "does not hold" only beyond one standard error over seeds, else "not distinguishable";
a claim without runs is "not measured".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pwmpr.compare.records import Group, Stat, tau_ratio

LOW_DENSITY = 0.2  # "at densities below 20%" (the random-growth claim)
_MATCH_RTOL = 0.01  # two phase densities within 1% are "the same density"

PAPER = {
    "pwmpr_cost": (1.25, 1.75),  # "about 1.5x dense"
    "imp_cost": (3.0, 4.0),
    "gap_pt": (0.5, 1.0),
}



@dataclass
class Claim:
    """A claim of the paper with what was measured here."""

    name: str
    paper: str
    measured: str  # the measured values, in words; "not measured" when the runs are missing
    verdict: str  # holds / partly holds / does not hold / not distinguishable / not measured
    values: dict[str, Any] = field(default_factory=dict)


def _not_measured(name: str, paper: str, missing: str) -> Claim:
    return Claim(name, paper, f"not measured: {missing}", "not measured")


def _in(value: float, lo_hi: tuple[float, float]) -> bool:
    return lo_hi[0] <= value <= lo_hi[1]


NOT_DISTINGUISHABLE = "not distinguishable"


def range_side(stat: Stat, lo_hi: tuple[float, float]) -> str:
    """"in", "out" or "unclear": where mean ± s.e. lies against the range ``lo_hi``."""
    se = stat.sem or 0.0
    lo, hi = lo_hi
    if lo <= stat.mean - se and stat.mean + se <= hi:
        return "in"
    if stat.mean + se < lo or stat.mean - se > hi:
        return "out"
    return "unclear"


def sign_verdict(diff: Stat) -> str:
    """"holds" / "does not hold" when a per-seed difference's mean is beyond ± its s.e., else "not distinguishable"."""
    if diff.mean is None or diff.n < 2:
        return NOT_DISTINGUISHABLE
    se = diff.sem or 0.0
    if diff.mean > se:
        return "holds"
    if diff.mean < -se:
        return "does not hold"
    return NOT_DISTINGUISHABLE


def _find(groups: Sequence[Group], method: str, variant: str | None = None) -> Group | None:
    found = [g for g in groups if g.method == method and (variant is None or g.variant == variant)]
    return max(found, key=lambda g: len(g.runs)) if found else None


def _phase_points(group: Group, key: str) -> dict[int, list[tuple[float, float]]]:
    """Per seed, the (density, value) points of the phases that have ``key``."""
    out: dict[int, list[tuple[float, float]]] = {}
    for r in group.runs:
        pts = []
        for x in r.phases():
            v = tau_ratio(x) if key == "tau" else x.get(key)
            if v is not None:
                pts.append((float(x["density"]), float(v)))
        out[r.seed] = pts
    return out


def matched_differences(a: Group, b: Group, key: str, max_density: float = 1.0) -> list[dict[str, Any]]:
    """Per seed, ``a - b`` of ``key`` (val_acc or tau) at densities both reached (within 1%) below ``max_density``."""
    pa, pb = _phase_points(a, key), _phase_points(b, key)
    buckets: dict[float, dict[str, list[float]]] = {}
    for seed in sorted(set(pa) & set(pb)):
        for da, va in pa[seed]:
            if da >= max_density:
                continue
            for db, vb in pb[seed]:
                if abs(da - db) <= _MATCH_RTOL * max(da, db):
                    key_d = next((d for d in buckets if abs(d - da) <= _MATCH_RTOL * max(d, da)), da)
                    bucket = buckets.setdefault(key_d, {"a": [], "b": []})
                    bucket["a"].append(va)
                    bucket["b"].append(vb)
                    break
    out = []
    for d in sorted(buckets):
        ma, mb = statistics.fmean(buckets[d]["a"]), statistics.fmean(buckets[d]["b"])
        out.append({"density": d, "a": ma, "b": mb, "diff": ma - mb, "n": len(buckets[d]["a"])})
    return out


def _seed_mean_diff(a: Group, b: Group, seed: int, key: str, max_density: float) -> float | None:
    """Mean over matched phase densities of ``a - b`` for one seed (None when that seed has no match)."""
    sub = [Group(g.label, g.method, g.variant, g.setting, [r for r in g.runs if r.seed == seed]) for g in (a, b)]
    diffs = matched_differences(sub[0], sub[1], key, max_density)
    return statistics.fmean(x["diff"] for x in diffs) if diffs else None


def _cost_claim(name: str, paper: str, rng: tuple[float, float], flops: Stat, epochs: Stat, where: str,
                extra: dict[str, Any]) -> Claim:
    sides = (range_side(flops, rng), range_side(epochs, rng))
    fl, ep = (side == "in" for side in sides)
    verdict = ("holds" if sides == ("in", "in") else "does not hold" if sides == ("out", "out")
               else "partly holds" if set(sides) == {"in", "out"} else NOT_DISTINGUISHABLE)
    which = " and ".join(n for n, ok in (("FLOPs", fl), ("epochs", ep)) if ok)
    spread = f"; s.e. over seeds {flops.sem or 0.0:.3f}x / {epochs.sem or 0.0:.2f}x" if flops.n > 1 else ""
    measured = (f"{flops.mean:.3f}x (density-weighted FLOPs) · {epochs.mean:.2f}x (epoch-equivalents) {where}"
                + (f"; inside {rng[0]:g}-{rng[1]:g}x under {which}" if which else
                   f"; not inside {rng[0]:g}-{rng[1]:g}x beyond its s.e. in either convention") + spread)
    return Claim(name, paper, measured, verdict,
                 {"cost_flops": asdict(flops), "cost_epochs": asdict(epochs), "range": list(rng), **extra})


def check_claims(groups: Sequence[Group]) -> list[Claim]:
    """The paper's claims checked on ``groups`` (all of one model and data set)."""
    claims: list[Claim] = []
    pwmpr = _find(groups, "pwmpr", "pwmp")
    imps = [g for g in groups if g.method == "imp"]

    # 1. PWMPR cost / dense.
    name, paper = "PWMPR training cost / dense", "about 1.5x (taken as 1.25-1.75x)"
    if pwmpr is None:
        claims.append(_not_measured(name, paper, "no PWMPR run (pwmpr grow --growth pwmp)"))
    else:
        claims.append(_cost_claim(name, paper, PAPER["pwmpr_cost"], pwmpr.stat("cost_flops"),
                                  pwmpr.stat("cost_epochs"), f"over {len(pwmpr.runs)} seed(s)",
                                  {"group": pwmpr.label}))

    # 2. IMP cost / dense: to the level nearest PWMPR's density, and for the whole run.
    paper = "3-4x"
    if not imps:
        claims.append(_not_measured("IMP-C training cost / dense", paper, "no IMP run (pwmpr baseline imp)"))
    for g in imps:
        name = f"IMP-C training cost / dense [{g.label}]"
        levels = g.levels()
        if pwmpr is not None and levels:
            target = pwmpr.stat("discovered_density").mean
            lvl = min(levels, key=lambda x: abs(math.log(x["density"].mean / target)))
            where = (f"to level {lvl['level']} (density {lvl['density'].mean:.4f}, nearest PWMPR's "
                     f"{target:.4f}); the whole run to density {g.stat('discovered_density').mean:.4f} costs "
                     f"{g.stat('cost_flops').mean:.3f}x / {g.stat('cost_epochs').mean:.2f}x")
            claims.append(_cost_claim(name, paper, PAPER["imp_cost"], lvl["cost_flops"], lvl["cost_epochs"], where,
                                      {"group": g.label, "level": lvl["level"], "level_density": lvl["density"].mean,
                                       "pwmpr_density": target, "run_cost_flops": g.stat("cost_flops").mean,
                                       "run_cost_epochs": g.stat("cost_epochs").mean}))
        else:
            claims.append(_cost_claim(name, paper, PAPER["imp_cost"], g.stat("cost_flops"), g.stat("cost_epochs"),
                                      f"for the whole run to density {g.stat('discovered_density').mean:.4f} "
                                      "(no PWMPR run to match densities)", {"group": g.label}))

    # 3. Accuracy gap: IMP's best ticket minus PWMPR.
    paper = "PWMPR 0.5-1.0 pt below IMP's best ticket (at a higher density)"
    if pwmpr is None or not imps:
        missing = "no PWMPR run" if pwmpr is None else "no IMP run"
        claims.append(_not_measured("Accuracy gap PWMPR vs IMP's best ticket", paper, missing))
    for g in imps if pwmpr is not None else []:
        name = f"Accuracy gap PWMPR vs IMP's best ticket [{g.label}]"
        tickets = g.best_tickets()
        if not tickets:
            claims.append(_not_measured(name, paper, f"{g.label} has no per-level test accuracy"))
            continue
        imp_acc = Stat.of(t["test_acc"] for t in tickets)
        imp_d = Stat.of(t["density"] for t in tickets)
        pw_acc, pw_d = pwmpr.stat("test_acc"), pwmpr.stat("discovered_density")
        gap = (imp_acc.mean - pw_acc.mean) * 100
        se = math.hypot(imp_acc.sem or 0.0, pw_acc.sem or 0.0) * 100
        # IMP at PWMPR's density too: the paper's "approaches IMP" is at a higher density than the ticket's.
        curve = [x for x in g.levels() if x["test_acc"].mean is not None]
        near = min(curve, key=lambda x: abs(math.log(x["density"].mean / pw_d.mean)))
        matched_gap = (near["test_acc"].mean - pw_acc.mean) * 100
        # "holds": PWMPR no more than 1 point behind, beyond the standard error of the gap (both sides need 2 seeds).
        if imp_acc.n < 2 or pw_acc.n < 2:
            verdict = NOT_DISTINGUISHABLE
        else:
            verdict = ("holds" if gap + se <= PAPER["gap_pt"][1] else "does not hold"
                       if gap - se > PAPER["gap_pt"][1] else NOT_DISTINGUISHABLE)
        side = "PWMPR is ahead" if gap < 0 else "inside the paper's 0.5-1.0" if _in(gap, PAPER["gap_pt"]) else (
            "PWMPR closer than the paper says" if gap < PAPER["gap_pt"][0] else "PWMPR further behind")
        measured = (f"gap {gap:+.2f} ± {se:.2f} pt (IMP best ticket {imp_acc.mean * 100:.2f}% at density "
                    f"{imp_d.mean:.4f}, PWMPR {pw_acc.mean * 100:.2f}% at density {pw_d.mean:.4f}; {side}); "
                    f"at PWMPR's density IMP (level {near['level']}, density {near['density'].mean:.4f}) has "
                    f"{near['test_acc'].mean * 100:.2f}%, a gap of {matched_gap:+.2f} pt")
        claims.append(Claim(name, paper, measured, verdict,
                            {"gap_pt": gap, "gap_se_pt": se, "matched_gap_pt": matched_gap,
                             "matched_level": near["level"], "imp_best_test_acc": asdict(imp_acc),
                             "imp_best_density": asdict(imp_d), "pwmpr_test_acc": asdict(pw_acc),
                             "pwmpr_density": asdict(pw_d), "tickets": tickets}))

    # 4. PWMPR vs random growth below 20% density.
    name, paper = "PWMPR vs random growth below 20% density", "PWMPR more accurate"
    rand = _find(groups, "pwmpr", "random")
    if pwmpr is None or rand is None:
        claims.append(_not_measured(name, paper, "needs pwmpr/pwmp and pwmpr/random runs"))
    else:
        diffs = matched_differences(pwmpr, rand, "val_acc", LOW_DENSITY)
        if not diffs:
            claims.append(_not_measured(name, paper, "no phase densities below 20% that both runs reached"))
        else:
            mean = statistics.fmean(x["diff"] for x in diffs) * 100
            wins = sum(x["diff"] > 0 for x in diffs)
            per_seed = Stat.of(None if (d := _seed_mean_diff(pwmpr, rand, seed, "val_acc", LOW_DENSITY)) is None
                               else d * 100 for seed in pwmpr.seeds)  # in points
            final = (pwmpr.stat("test_acc").mean - rand.stat("test_acc").mean) * 100
            verdict = sign_verdict(per_seed)
            spread = f" (per seed {per_seed.mean:+.2f} ± {per_seed.sem:.2f} pt, mean ± sem over " \
                f"{per_seed.n} seeds)" if per_seed.n > 1 else " (one seed: no spread to weigh)"
            measured = (f"rough-phase validation accuracy {mean:+.2f} pt on average over {len(diffs)} matched "
                        f"densities {diffs[0]['density']:.4f}-{diffs[-1]['density']:.4f}{spread}, PWMPR ahead at "
                        f"{wins} of them; "
                        f"final test accuracy {final:+.2f} pt (PWMPR at {pwmpr.stat('discovered_density').mean:.4f}, "
                        f"random at {rand.stat('discovered_density').mean:.4f})")
            claims.append(Claim(name, paper, measured, verdict,
                                {"mean_diff_pt": mean, "wins": wins, "n_matched": len(diffs), "matched": diffs,
                                 "per_seed_diff_pt": asdict(per_seed),
                                 "final_test_diff_pt": final}))

    # 5. Tau-core: sampled vs top-k growth.
    name, paper = "tau-core of sampled vs top-k PWMP growth", "top-k funnels paths: smaller tau-core than sampled"
    topk = _find(groups, "pwmpr", "pwmp-topk")
    if pwmpr is None or topk is None:
        claims.append(_not_measured(name, paper, "needs pwmpr/pwmp and pwmpr/pwmp-topk runs with tau-core"))
    else:
        diffs = matched_differences(pwmpr, topk, "tau")
        if not diffs:
            claims.append(_not_measured(name, paper, "no matched densities with a tau-core measurement"))
        else:
            mean = statistics.fmean(x["diff"] for x in diffs)
            larger = sum(x["diff"] > 0 for x in diffs)
            per_seed = Stat.of(_seed_mean_diff(pwmpr, topk, seed, "tau", 1.0) for seed in pwmpr.seeds)
            verdict = sign_verdict(per_seed)
            ra, rb = statistics.fmean(x["a"] for x in diffs), statistics.fmean(x["b"] for x in diffs)
            spread = (f" (per seed {per_seed.mean:+.3f} ± {per_seed.sem:.3f}, mean ± sem over {per_seed.n} seeds)"
                      if per_seed.n > 1 else " (one seed: no spread to weigh)")
            measured = (f"core / hidden units {ra:.3f} (sampled) vs {rb:.3f} (top-k), difference {mean:+.3f}, "
                        f"over {len(diffs)} matched densities{spread}; sampled larger at {larger}")
            claims.append(Claim(name, paper, measured, verdict,
                                {"mean_diff": mean, "sampled": ra, "topk": rb, "larger": larger, "matched": diffs,
                                 "per_seed_diff": asdict(per_seed)}))
    return claims

