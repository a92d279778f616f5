"""Score the runs of bench/lm.sh and write bench/results/lm.md and lm.png (called by the script).

Every PWMPR run is scored against the sweep (``pwmpr.discovery.score``, as bench/discovery.py does for
classifiers). IMP is not run here, so a hit is judged on the other three tests: final test accuracy within 1 point
of the sweep's best mean, a discovered density at most 2x the sweep's knee, and a total cost of at most 1.5 dense
runs. PWMPR is compared with one-shot PHEW and RigL at its mean discovered density seed by seed, and every
verdict is computed from those figures, weighed against their standard error over seeds.

    python bench/lm.py --out bench/out/lm --results bench/results/lm.md
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import ROOT, header, mean_std, paired, quote_into  # noqa: E402

RUN_RE = re.compile(r"(?P<kind>pwmpr|phew|rigl)-sd(?P<sd>[0-9.]+)-s(?P<seed>\d+)$")
POINT_RE = re.compile(r"d(?P<density>[0-9.e-]+)-s\d+$")  # a sweep point's folder (pwmpr.sweep.point_name)
KINDS = {"pwmpr": "PWMPR (grown, discovered density)", "phew": "one-shot PHEW at PWMPR's density",
         "rigl": "RigL at PWMPR's density"}


def collect(out: Path) -> tuple[list[dict], dict, list[dict]]:
    """(one row per PWMPR or baseline run, the sweep summary, one row per sweep point)."""
    from pwmpr import rundir
    from pwmpr.discovery import score

    sweep = json.loads((out / "sweep" / "summary.json").read_text())
    points = []
    for p in sorted((out / "sweep" / "runs").glob("*/summary.json")):
        s = json.loads(p.read_text())
        nominal = POINT_RE.match(p.parent.name)  # the grid density the point was drawn at (its mask rounds it)
        points.append({"density": float(nominal["density"]), "seed": s["seed"], "test_acc": s["test_acc"],
                       "test_ppl": s["test_ppl"], "cost_flops": s["cost_flops"]})
    rows = []
    for run in sorted(out.iterdir()):
        m = RUN_RE.match(run.name)
        if not m or not (run / "summary.json").is_file():
            continue
        s = json.loads((run / "summary.json").read_text())
        row = {"kind": m["kind"], "seed_density": float(m["sd"]), "seed": int(m["seed"]),
               "density": s["discovered_density"], "test_acc": s["test_acc"], "test_ppl": s["test_ppl"],
               "cost_flops": s["cost_flops"], "stop_reason": s.get("stop_reason")}
        if m["kind"] == "pwmpr":
            row["score"] = score(s, sweep)
            row["trajectory"] = [(r["density"], r["val_acc"]) for r in rundir.read_history(run)
                                 if r.get("stage") == "phase"]
        rows.append(row)
    return rows, sweep, points


def hit(score: dict) -> bool:
    """A hit without IMP's test: within 1 point of the sweep's best, at most 2x the knee, at most 1.5 dense runs."""
    return bool(score["within_acc"] and score["within_density"] and score["within_cost"])


def compare_at_density(rows: list[dict], sd: float, other: str, key: str) -> tuple[float, float, int] | None:
    """Paired PWMPR minus ``other`` of ``key`` over the seeds, at seed density ``sd``."""
    def by_seed(kind):
        return {r["seed"]: r[key] for r in rows if r["kind"] == kind and r["seed_density"] == sd}
    return paired(by_seed("pwmpr"), by_seed(other))


def beats(diff: tuple[float, float, int] | None, higher_is_better: bool) -> str:
    """Plain words for a paired difference: better or worse when it is over 2 standard errors from 0, else a tie."""
    if diff is None:
        return "not run"
    mean, se, _ = diff
    if math.isnan(se) or abs(mean) <= 2 * se:
        return "no clear difference"
    return "better" if (mean > 0) == higher_is_better else "worse"


def render(rows: list[dict], sweep: dict, points: list[dict], command: str, elapsed: float | None) -> str:
    """The markdown of bench/results/lm.md."""
    pw = [r for r in rows if r["kind"] == "pwmpr"]
    sds = sorted({r["seed_density"] for r in pw})
    dense = [p for p in points if p["density"] == 1]
    knee, best = sweep["knee"], sweep["best"]
    lines = [
        *header(command, f"{elapsed / 60:.0f} min of runs" if elapsed else ""),
        "gpt-mini (4 layers, width 128, causal, byte tokens) on pydoc-text (CPython's documentation, split by "
        "topic), AdamW, the same trainer for every run. **The training is far shorter than a language model "
        "wants** (see the command: a few hundred optimizer steps on a sixth of the training text) so that the "
        "benchmark fits in about an hour on 2 CPU cores: the figures answer how the method behaves at that budget, "
        "not what gpt-mini can reach. Accuracy is next-token accuracy (chance 1/256); perplexity is per byte.",
        "",
        "| run | seed density | runs | density | test accuracy | test perplexity | cost (x dense FLOPs) "
        "| stop reasons |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if dense:
        lines.append(f"| dense (sweep at density 1) | - | {len(dense)} | 1 | "
                     f"{mean_std([100 * p['test_acc'] for p in dense], '.2f')}% | "
                     f"{mean_std([p['test_ppl'] for p in dense], '.2f')} | 1.00 | - |")
    for sd in sds:
        for kind in KINDS:
            rs = [r for r in rows if r["kind"] == kind and r["seed_density"] == sd]
            if not rs:
                continue
            reasons: dict[str, int] = {}
            for r in rs:
                reasons[r["stop_reason"]] = reasons.get(r["stop_reason"], 0) + 1
            lines.append(
                f"| {KINDS[kind]} | {sd:g} | {len(rs)} | {mean_std([r['density'] for r in rs], '.3f')} | "
                f"{mean_std([100 * r['test_acc'] for r in rs], '.2f')}% | "
                f"{mean_std([r['test_ppl'] for r in rs], '.2f')} | "
                f"{statistics.fmean(r['cost_flops'] for r in rs):.2f} | "
                + (", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) if kind == "pwmpr" else "-") + " |")
    def at(density, key, scale=1):
        return mean_std([scale * p[key] for p in points if p["density"] == density], ".2f")

    lines += ["", f"Sweep (one-shot PHEW masks, seeds {sorted({p['seed'] for p in points})}; mean ± std): "
              + ", ".join(f"{c['density']:g}: {at(c['density'], 'test_acc', 100)}% (ppl {at(c['density'], 'test_ppl')})"
                          for c in sweep["curve"])
              + f". Knee (smallest density within 1 point of the best mean): **{knee['density']:g}**; best "
              f"{100 * best['test_acc']:.2f}% at {best['density']:g}. The whole sweep cost "
              f"{sweep['cost_flops_total']:.2f} dense runs.", ""]
    lines += ["Discovery scored against the sweep (IMP not run, so a hit is within 1 point of the sweep's best, "
              "at most 2x its knee, at most 1.5 dense runs):", "",
              "| seed density | hits | density / knee (per seed) | gap to sweep best (points, per seed) | why missed |",
              "|---|---|---|---|---|"]
    for sd in sds:
        sc = [r["score"] for r in pw if r["seed_density"] == sd]
        why = []
        for k, text in (("within_acc", "accuracy"), ("within_density", "density"), ("within_cost", "cost > 1.5")):
            n = sum(1 for s in sc if not s[k])
            if n:
                why.append(f"{text} {n}")
        lines.append(f"| {sd:g} | {sum(hit(s) for s in sc)}/{len(sc)} | "
                     + ", ".join(f"{s['density_over_knee']:.2f}" for s in sc) + " | "
                     + ", ".join(f"{100 * s['gap_to_best']:+.2f}" for s in sc) + f" | {', '.join(why) or '-'} |")
    lines += ["", "PWMPR minus each baseline at the same density, paired by seed (mean ± standard error):", "",
              "| seed density | baseline | test accuracy (points) | test perplexity | verdict (accuracy) |",
              "|---|---|---|---|---|"]
    verdicts = {}
    for sd in sds:
        for other in ("phew", "rigl"):
            acc = compare_at_density(rows, sd, other, "test_acc")
            ppl = compare_at_density(rows, sd, other, "test_ppl")
            verdicts[(sd, other)] = beats(acc, True)
            lines.append(f"| {sd:g} | {KINDS[other]} | {fmt(acc, 100)} | {fmt(ppl)} | PWMPR {verdicts[(sd, other)]} |")
    lines += ["", verdict(pw, sweep, verdicts), ""]
    return "\n".join(lines) + "\n"


def fmt(diff: tuple[float, float, int] | None, scale: float = 1.0) -> str:
    """``mean ± standard error`` of a paired difference, times ``scale``."""
    return "-" if diff is None else f"{scale * diff[0]:.2f} ± {scale * diff[1]:.2f}"


def verdict(pw: list[dict], sweep: dict, verdicts: dict) -> str:
    """The plain-words answer, computed from the figures."""
    sc = [r["score"] for r in pw]
    hits = sum(hit(s) for s in sc)
    ratios = sorted(s["density_over_knee"] for s in sc)
    costs = [s["cost_flops"] for s in sc]
    found = ("finds the knee" if hits == len(sc) else
             "does not find the knee" if hits == 0 else f"finds the knee in {hits} of {len(sc)} runs")
    words = [f"**Verdict (computed):** on this language model, growth-based discovery {found} "
             f"(density / knee from {ratios[0]:.2f} to {ratios[-1]:.2f}, median {statistics.median(ratios):.2f}), "
             f"at a mean cost of {statistics.fmean(costs):.2f} dense runs (range {min(costs):.2f} to "
             f"{max(costs):.2f}) against {sweep['cost_flops_total']:.2f} for the sweep that located the knee."]
    curve, best = sweep["curve"], sweep["best"]
    top = max(curve, key=lambda c: c["density"])
    if top["test_acc"] < best["test_acc"] - 0.01:
        words.append(f"The sweep's curve is not monotone: at density {top['density']:g} it is "
                     f"{100 * (best['test_acc'] - top['test_acc']):.1f} points below its best (at "
                     f"{best['density']:g}), so at this training budget more weights train worse, and its knee marks "
                     "where short one-shot training peaks rather than where capacity saturates.")
    gaps = [100 * s["gap_to_best"] for s in sc]
    if min(gaps) > 0:
        words.append(f"Every PWMPR run ends above the sweep's best ({min(gaps):+.1f} to {max(gaps):+.1f} points): "
                     "it trains for longer (its growth phases, then the final training), which the cost column "
                     "counts.")
    for (sd, other), v in verdicts.items():
        words.append(f"From seed density {sd:g}, PWMPR against {KINDS[other]}: {v} in test accuracy"
                     + (" (the difference is within 2 standard errors over seeds)." if v == "no clear difference"
                        else "."))
    words.append("The baselines train the final training's epochs only, so at equal density they also cost less "
                 "(the cost column); an equal-cost comparison is not part of this benchmark.")
    return " ".join(words)


def plot(rows: list[dict], points: list[dict], path: Path) -> None:
    """Test accuracy and perplexity against density: the sweep (mean ± std), every run, PWMPR's phase curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    dens = sorted({p["density"] for p in points})
    styles = {"pwmpr": ("o", "C0"), "phew": ("s", "C1"), "rigl": ("^", "C2")}
    for ax, key, scale, label in ((axes[0], "test_acc", 100, "test next-token accuracy (%)"),
                                  (axes[1], "test_ppl", 1, "test perplexity (per byte)")):
        mean = [statistics.fmean(scale * p[key] for p in points if p["density"] == d) for d in dens]
        std = [statistics.pstdev([scale * p[key] for p in points if p["density"] == d]) for d in dens]
        ax.errorbar(dens, mean, yerr=std, color="0.3", marker="x", capsize=3, label="sweep: one-shot PHEW (mean ± std)")
        for kind, (marker, color) in styles.items():
            rs = [r for r in rows if r["kind"] == kind]
            if rs:
                ax.scatter([r["density"] for r in rs], [scale * r[key] for r in rs], marker=marker, color=color,
                           label=KINDS[kind], zorder=3)
        if key == "test_acc":
            for i, r in enumerate(r for r in rows if r["kind"] == "pwmpr"):
                d, a = zip(*r["trajectory"], strict=True)
                ax.plot(d, [100 * x for x in a], color="C0", alpha=0.25, lw=0.8,
                        label="PWMPR growth phases (validation)" if i == 0 else None)
        ax.set_xscale("log")
        ax.set_xlabel("density (fraction of prunable weights present)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title("accuracy against density")
    axes[1].set_title("perplexity against density (lower is better)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle("gpt-mini on pydoc-text: growth-based discovery against the sweep")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/lm")
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/lm.md")
    parser.add_argument("--command", default="bash bench/lm.sh")
    parser.add_argument("--elapsed", type=float, default=None)
    args = parser.parse_args()
    if args.elapsed is None and (args.out / "elapsed_s").is_file():  # the wall time bench/lm.sh recorded
        args.elapsed = float((args.out / "elapsed_s").read_text())
    rows, sweep, points = collect(args.out)
    if not any(r["kind"] == "pwmpr" for r in rows):
        sys.exit(f"lm.py: no finished PWMPR run under {args.out}")
    text = render(rows, sweep, points, args.command, args.elapsed)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    plot(rows, points, args.results.with_suffix(".png"))
    args.results.with_suffix(".json").write_text(json.dumps({"rows": rows, "sweep": sweep, "points": points},
                                                             indent=1) + "\n")
    print(text)
    if args.results.resolve() == (ROOT / "bench/results/lm.md").resolve():
        for doc in (ROOT / "bench/RESULTS.md", ROOT / "README.md"):
            quote_into(doc, "lm", text)


if __name__ == "__main__":
    main()
