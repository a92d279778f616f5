"""Comparison of finished run folders: one table, two plots and the paper's claims checked with measured values.

Beside the pipeline (it reads run folders, never trains). Runs are grouped by their config minus the seed (and
the device and data folder, which do not change the result), so several seeds of one configuration become one
row with a mean and a standard deviation. Every number comes from the run folders' ``summary.json`` and
``history.jsonl``; a claim whose runs are missing is reported as "not measured", never estimated.

Claims (spec sections 7-10), each a :class:`Claim` with the measured values and a verdict:

- PWMPR training cost / dense, paper about 1.5x (both conventions of spec section 8);
- IMP-C training cost / dense, paper 3-4x (to the level nearest PWMPR's density, and to the last level);
- accuracy gap between IMP's best ticket (chosen by validation accuracy) and PWMPR, paper 0.5-1.0 points;
- PWMPR (sampled PWMP growth) vs random growth at matched densities below 20% (rough-phase validation accuracy);
- tau-core ratio of sampled vs top-k PWMP growth at matched densities (paper: top-k funnels paths, smaller core).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pwmpr import rundir
from pwmpr.errors import PwmprError

# Config keys that never change what a run computes: runs differing only in these are seeds of one configuration.
_NOT_CONFIG = ("seed", "device", "data_dir", "version")
LOW_DENSITY = 0.2  # "at densities below 20%" (the random-growth claim)
_MATCH_RTOL = 0.01  # two phase densities within 1% are "the same density"

PAPER = {
    "pwmpr_cost": (1.25, 1.75),  # "about 1.5x dense"
    "imp_cost": (3.0, 4.0),
    "gap_pt": (0.5, 1.0),
}


# -- reading ----------------------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """One finished run folder: its config, summary and history as written by the runner."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]]

    @property
    def method(self) -> str:
        return self.config.get("method", self.summary.get("method", "?"))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", self.summary.get("seed", 0)))

    @property
    def options(self) -> dict[str, Any]:
        return self.config.get("options") or {}

    @property
    def variant(self) -> str:
        """The growth rule (pwmpr), IMP variant or one-shot pruner; empty for dense."""
        if self.method == "pwmpr":
            return (self.config.get("growth") or {}).get("rule", "pwmp")
        if self.method == "imp":
            return self.options.get("variant", "lr-rewind")
        if self.method == "oneshot":
            return f"{self.options.get('pruner', 'phew')}@{self.options.get('density', 0.1):.3g}"
        return ""

    @property
    def setting(self) -> tuple[str, str]:
        """(model, data): only runs of one setting are compared in a claim."""
        return (str(self.config.get("model", self.summary.get("model"))),
                str(self.config.get("data", self.summary.get("data"))))

    def group_key(self) -> str:
        """The config minus seed, device and data folder, as canonical JSON."""
        cfg = {k: v for k, v in self.config.items() if k not in _NOT_CONFIG}
        return json.dumps(cfg, sort_keys=True)

    def phases(self) -> list[dict[str, Any]]:
        """History rows of the phases (IMP levels, growth phases), without the final training."""
        return [r for r in self.history if r.get("stage") == "phase"]


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PwmprError(f"cannot read {what} {path}: {exc}") from None


def read_run(path: Path | str) -> RunRecord:
    """Read a finished run folder; anything else raises PwmprError naming the folder and what it lacks."""
    path = Path(path)
    if not path.is_dir():
        raise PwmprError(f"{path} is not a run folder (not a directory)")
    if not (path / rundir.CONFIG).is_file():
        raise PwmprError(f"{path} is not a run folder: it has no {rundir.CONFIG}")
    if not (path / rundir.SUMMARY).is_file():
        raise PwmprError(f"{path} has no {rundir.SUMMARY}: the run has not finished (continue it with --resume)")
    config = _read_json(path / rundir.CONFIG, "config")
    summary = _read_json(path / rundir.SUMMARY, "summary")
    if not isinstance(config, dict) or not isinstance(summary, dict):
        raise PwmprError(f"{path}: {rundir.CONFIG} and {rundir.SUMMARY} must hold JSON objects")
    try:
        history = rundir.read_history(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PwmprError(f"cannot read {path / rundir.HISTORY}: {exc}") from None
    for key in ("discovered_density", "test_acc", "cost_flops", "cost_epochs"):
        if not isinstance(summary.get(key), (int, float)):
            raise PwmprError(f"{path / rundir.SUMMARY} lacks a number for {key!r}")
    return RunRecord(path, config, summary, history)


# -- statistics -------------------------------------------------------------------------------------------------
@dataclass
class Stat:
    """Mean and sample standard deviation (0 for one value) of the values that were present."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not vals:
            return cls(None, None, 0)
        return cls(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals))

    @property
    def sem(self) -> float | None:
        """Standard error of the mean (None without values)."""
        if self.mean is None or self.std is None:
            return None
        return self.std / math.sqrt(self.n)


def _tau(row_or_summary: dict[str, Any]) -> float | None:
    tc = row_or_summary.get("tau_core")
    return tc.get("ratio") if isinstance(tc, dict) else None


@dataclass
class Group:
    """The runs of one configuration (several seeds): one row of the table."""

    label: str
    method: str
    variant: str
    setting: tuple[str, str]
    runs: list[RunRecord]

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    def stat(self, key: str) -> Stat:
        """Mean and std over the runs of ``summary[key]``."""
        return Stat.of(r.summary.get(key) for r in self.runs)

    def tau_ratio(self) -> Stat:
        """Tau-core ratio (core size / hidden units) of the final networks."""
        return Stat.of(_tau(r.summary) for r in self.runs)

    def reference_epochs(self) -> list[int]:
        return sorted({int(r.summary.get("dense_reference_epochs") or 0) for r in self.runs})

    def levels(self) -> list[dict[str, Any]]:
        """The accuracy-density curve of the phases, averaged over seeds level by level (for IMP: the tickets).

        Each entry: ``level``, ``density``, ``test_acc`` / ``val_acc`` / ``cost_flops`` / ``cost_epochs`` /
        ``tau`` as :class:`Stat`. Levels reached by only some seeds average over those.
        """
        n = max((len(r.phases()) for r in self.runs), default=0)
        out = []
        for i in range(n):
            rows = [r.phases()[i] for r in self.runs if len(r.phases()) > i]
            out.append({
                "level": i,
                "density": Stat.of(x["density"] for x in rows),
                "test_acc": Stat.of(x.get("test_acc") for x in rows),
                "val_acc": Stat.of(x.get("val_acc") for x in rows),
                "cost_flops": Stat.of(x.get("cost_flops") for x in rows),
                "cost_epochs": Stat.of(x.get("cost_epochs") for x in rows),
                "tau": Stat.of(_tau(x) for x in rows),
            })
        return out

    def best_tickets(self) -> list[dict[str, Any]]:
        """Per run, the phase with the highest validation accuracy (IMP's best ticket) that has a test accuracy."""
        best = []
        for r in self.runs:
            rows = [x for x in r.phases() if x.get("test_acc") is not None]
            if rows:
                b = max(rows, key=lambda x: (x["val_acc"], -x["density"]))
                best.append({"seed": r.seed, "level": r.phases().index(b), "density": b["density"],
                             "val_acc": b["val_acc"], "test_acc": b["test_acc"], "cost_flops": b["cost_flops"],
                             "cost_epochs": b["cost_epochs"]})
        return best


def _label(run: RunRecord) -> str:
    return f"{run.method}/{run.variant}" if run.variant else run.method


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """Group runs by config minus seed; labels are ``method/variant``, made unique with a config hash."""
    by_key: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_key.setdefault(r.group_key(), []).append(r)
    groups = [Group(_label(rs[0]), rs[0].method, rs[0].variant, rs[0].setting, sorted(rs, key=lambda r: r.seed))
              for rs in by_key.values()]
    settings = {g.setting for g in groups}
    for g in groups:
        if len(settings) > 1:
            g.label = f"{g.label} [{g.setting[0]}·{g.setting[1]}]"
    counts: dict[str, int] = {}
    for g in groups:
        counts[g.label] = counts.get(g.label, 0) + 1
    for key, g in zip(by_key, groups, strict=True):
        if counts[g.label] > 1:
            g.label = f"{g.label}#{hashlib.md5(key.encode()).hexdigest()[:6]}"
    order = {"pwmpr": 0, "imp": 1, "oneshot": 2, "dense": 3}
    return sorted(groups, key=lambda g: (g.setting, order.get(g.method, 9), g.label))


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


# -- the claims -------------------------------------------------------------------------------------------------
@dataclass
class Claim:
    """A claim of the paper with what was measured here."""

    name: str
    paper: str
    measured: str  # the measured values, in words; "not measured" when the runs are missing
    verdict: str  # holds / partly holds / does not hold / not measured
    values: dict[str, Any] = field(default_factory=dict)


def _not_measured(name: str, paper: str, missing: str) -> Claim:
    return Claim(name, paper, f"not measured: {missing}", "not measured")


def _in(value: float, lo_hi: tuple[float, float]) -> bool:
    return lo_hi[0] <= value <= lo_hi[1]


def _find(groups: Sequence[Group], method: str, variant: str | None = None) -> Group | None:
    found = [g for g in groups if g.method == method and (variant is None or g.variant == variant)]
    return max(found, key=lambda g: len(g.runs)) if found else None


def _phase_points(group: Group, key: str) -> dict[int, list[tuple[float, float]]]:
    """Per seed, the (density, value) points of the phases that have ``key``."""
    out: dict[int, list[tuple[float, float]]] = {}
    for r in group.runs:
        pts = []
        for x in r.phases():
            v = _tau(x) if key == "tau" else x.get(key)
            if v is not None:
                pts.append((float(x["density"]), float(v)))
        out[r.seed] = pts
    return out


def matched_differences(a: Group, b: Group, key: str, max_density: float = 1.0) -> list[dict[str, Any]]:
    """Phase-by-phase ``a - b`` of ``key`` (val_acc or tau) at the densities both reached, seed by seed.

    Two phases match when their densities agree within 1% (growth from one seed density by one gamma visits the
    same densities whatever the rule). Only densities below ``max_density`` count. Each entry holds the
    density, the mean of a and of b over the seeds that reached it, and their difference.
    """
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
    fl, ep = _in(flops.mean, rng), _in(epochs.mean, rng)
    verdict = "holds" if fl and ep else "partly holds" if fl or ep else "does not hold"
    which = " and ".join(n for n, ok in (("FLOPs", fl), ("epochs", ep)) if ok)
    measured = (f"{flops.mean:.3f}x (density-weighted FLOPs) · {epochs.mean:.2f}x (epoch-equivalents) {where}"
                + (f"; inside {rng[0]:g}-{rng[1]:g}x under {which}" if which else
                   f"; outside {rng[0]:g}-{rng[1]:g}x in both conventions"))
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
        verdict = "holds" if gap <= PAPER["gap_pt"][1] else "does not hold"
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
            verdict = "holds" if mean > 0 and wins > len(diffs) / 2 else "does not hold"
            spread = f" (per seed {per_seed.mean:+.2f} ± {per_seed.sem:.2f} pt, mean ± sem over " \
                f"{per_seed.n} seeds)" if per_seed.n > 1 else ""
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
            verdict = "holds" if mean > 0 and larger > len(diffs) / 2 else "does not hold"
            ra, rb = statistics.fmean(x["a"] for x in diffs), statistics.fmean(x["b"] for x in diffs)
            measured = (f"core / hidden units {ra:.3f} (sampled) vs {rb:.3f} (top-k), difference {mean:+.3f}, "
                        f"over {len(diffs)} matched densities; sampled larger at {larger}")
            claims.append(Claim(name, paper, measured, verdict,
                                {"mean_diff": mean, "sampled": ra, "topk": rb, "larger": larger, "matched": diffs}))
    return claims


# -- plots ------------------------------------------------------------------------------------------------------
def _save(fig, path: Path) -> None:
    from pwmpr.rundir import atomic_save_figure

    atomic_save_figure(fig, path)


def _plain_ticks(ax) -> None:
    """Log axes labelled 0.05, 0.1, 2 rather than 5x10^-2, with labels on the minor ticks (2, 3, 5 x 10^k)
    where the axis spans less than about two decades: there a single decade mark such as 1 may be all the
    major ticks there are."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def _num_to_string(self, x, vmin, vmax):
            return f"{x:g}"

    ax.xaxis.set_major_formatter(Plain(labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def plot_comparison(groups: Sequence[Group], out_dir: Path) -> list[Path]:
    """Write ``acc_vs_density.png`` and ``acc_vs_cost.png`` (test accuracy, mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"pwmpr": "o", "imp": "s", "oneshot": "^", "dense": "*"}
    paths = [out_dir / "acc_vs_density.png", out_dir / "acc_vs_cost.png"]
    fig1, ax1 = plt.subplots(figsize=(7, 4.5), dpi=110)
    fig2, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110, sharey=True)
    for i, g in enumerate(groups):
        color = f"C{i % 10}"
        d, acc = g.stat("discovered_density"), g.stat("test_acc")
        cf, ce = g.stat("cost_flops"), g.stat("cost_epochs")
        mk, ms = markers.get(g.method, "o"), 12 if g.method == "dense" else 7
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
                     marker=mk, ms=ms, capsize=3, ls="none", label=g.label)
        for ax, s in zip(axes, (cf, ce), strict=True):
            ax.errorbar([s.mean], [acc.mean * 100], xerr=[s.std or 0.0], yerr=[(acc.std or 0.0) * 100], color=color,
                        marker=mk, ms=ms, capsize=3, ls="none", label=g.label)
    ax1.set_xscale("log")
    _plain_ticks(ax1)
    ax1.set_xlabel("density (fraction of prunable weights kept, log scale)")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title("test accuracy vs density (mean ± std over seeds)", fontsize=10)
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=7, loc="lower right")
    for ax, conv in zip(axes, ("density-weighted training FLOPs", "epoch-equivalents"), strict=True):
        ax.axvline(1.0, color="gray", ls=":", lw=1)
        ax.set_xscale("log")
        _plain_ticks(ax)
        ax.set_xlabel(f"training cost relative to dense ({conv}, log scale)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig2.suptitle("test accuracy vs training cost (dotted line: one dense run)", fontsize=10)
    from pwmpr.rundir import deferred_interrupt

    for fig, path in ((fig1, paths[0]), (fig2, paths[1])):
        with deferred_interrupt():  # a Ctrl-C is raised after the figure is written, never inside matplotlib
            fig.tight_layout()
            _save(fig, path)
        plt.close(fig)
    return paths


# -- the whole comparison ---------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """What ``compare`` produced: the groups, table rows, claims per setting, notes and the files written."""

    groups: list[Group]
    rows: list[dict[str, Any]]
    claims: dict[str, list[Claim]]
    notes: list[str]
    files: list[Path]
    discovery: list[dict[str, Any]] = field(default_factory=list)


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


def compare(paths: Sequence[Path | str], out_dir: Path | str | None = None, *, plots: bool = True) -> Comparison:
    """Read run folders, group seeds, build the table, check the claims, write the files into ``out_dir``.

    Writes ``compare.md`` (table and claims), ``compare.csv`` (full precision), ``compare.json`` (everything,
    claims with their values) and, with ``plots``, ``acc_vs_density.png`` and ``acc_vs_cost.png``.

    Raises:
        PwmprError: a path that is not a finished run folder, or no paths at all.
    """
    if not paths:
        raise PwmprError("give at least one run folder to compare")
    from pwmpr import sweep as sweeps_mod

    sweeps = [Path(p) for p in paths if sweeps_mod.is_sweep(p)]
    runs = [read_run(p) for p in paths if not sweeps_mod.is_sweep(p)]
    if not runs:
        raise PwmprError("give at least one run folder to compare (sweep folders are only the reference)")
    seen: dict[Path, Path] = {}
    for r in runs:
        real = r.path.resolve()
        if real in seen:
            raise PwmprError(f"run folder {r.path} is given twice")
        seen[real] = r.path
    same: dict[tuple[str, int], RunRecord] = {}
    for r in runs:
        twin = same.setdefault((r.group_key(), r.seed), r)
        if twin is not r:
            raise PwmprError(f"{twin.path} and {r.path} are the same configuration with the same seed {r.seed} "
                             "(they differ only in their folder), so they are not two seeds: give one of them")
    groups = group_runs(runs)
    rows = table_rows(groups)
    notes = []
    claims: dict[str, list[Claim]] = {}
    for setting in sorted({g.setting for g in groups}):
        gs = [g for g in groups if g.setting == setting]
        refs = sorted({e for g in gs for e in g.reference_epochs()})
        if len(refs) > 1:
            notes.append(f"{setting[0]} on {setting[1]}: costs are relative to dense runs of different lengths "
                         f"({', '.join(map(str, refs))} epochs); compare cost columns with care")
        claims[f"{setting[0]} on {setting[1]}"] = check_claims(gs)
    discovery = discovery_rows(runs, sweeps)
    files: list[Path] = []
    if out_dir is not None:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise PwmprError(f"output path {out} exists and is not a directory")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PwmprError(f"--out {out} cannot be created: {exc.strerror or exc}") from None
        md = ["# pwmpr compare\n", markdown_table(rows), "\nClaims of the paper, measured:\n", claims_markdown(claims)]
        md += [f"\nNote: {n}\n" for n in notes]
        if discovery:
            from pwmpr.discovery import markdown as discovery_markdown

            md += ["\nDensity discovery against the sweep of the same model and data (hit: within 1 point of the "
                   "sweep's best test accuracy, at most 2x its knee density, cheaper than IMP to the same "
                   "density; `+`: IMP stopped above that density, its cost is a lower bound):\n",
                   discovery_markdown(discovery)]
        if any(g.method == "imp" for g in groups):
            md += ["\nIMP accuracy-density curves (every level is a trained ticket):\n", levels_markdown(groups)]
        rundir.atomic_write_text(out / "compare.md", "\n".join(md))
        rundir.atomic_write_text(out / "compare.csv", csv_text(rows))
        payload = {"rows": rows, "discovery": discovery,
                   "claims": {k: [asdict(c) for c in v] for k, v in claims.items()}, "notes": notes,
                   "levels": {g.label: [{k: (asdict(v) if isinstance(v, Stat) else v) for k, v in x.items()}
                                        for x in g.levels()] for g in groups}}
        rundir.atomic_write_json(out / "compare.json", payload)
        files = [out / "compare.md", out / "compare.csv", out / "compare.json"]
        if plots:
            files += plot_comparison(groups, out)
    return Comparison(groups, rows, claims, notes, files, discovery)


def discovery_rows(runs: Sequence[RunRecord], sweeps: Sequence[Path]) -> list[dict[str, Any]]:
    """``pwmpr.discovery.score`` of every PWMPR run that has a sweep of the same model and data (and the IMP run
    of that setting with the smallest seed, where one is given)."""
    from pwmpr import discovery
    from pwmpr import sweep as sweeps_mod

    def setting(model, config: dict) -> tuple:
        # What makes a sweep the ground truth of a run: model and data, and how the data are split and trained on.
        return (model, config.get("data"), config.get("max_train"), config.get("val_fraction"),
                config.get("final_epochs"))

    by_setting = {}
    for path in sweeps:
        summary = _read_json(path / sweeps_mod.SWEEP_SUMMARY, "sweep summary")
        base = sweeps_mod.load_config(path).base.to_dict()
        by_setting.setdefault(setting(summary["model"], base), summary)
    imps = sorted((r for r in runs if r.method == "imp"), key=lambda r: r.seed)
    out = []
    for r in runs:
        sweep = by_setting.get(setting(r.summary.get("model"), r.config))
        if r.method != "pwmpr" or sweep is None:
            continue
        # IMP of the same setting: the same seed where there is one, else the smallest seed.
        same = [i for i in imps if i.setting == r.setting]
        imp = next((i for i in same if i.seed == r.seed), same[0] if same else None)
        out.append({"run": str(r.path), "seed": r.seed, "sweep_complete": bool(sweep.get("complete")),
                    **discovery.score(r.summary, sweep, imp.history if imp is not None else None)})
    return out
