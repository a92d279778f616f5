"""Plan the baselines of bench/hybrid.sh and write bench/results/hybrid.md from its runs (called by the script).

    python bench/hybrid.py plan --out bench/out/hybrid --epochs 30 --update-epochs 3   # stage-2 job lines
    python bench/hybrid.py report --out bench/out/hybrid --results bench/results/hybrid.md

``plan`` prints, for every finished hybrid run ``DATA-MODEL/hybrid-sN``, one job line per baseline (folder, then the
pwmpr arguments): IMP (lr-rewind, ``--epochs`` per level) down to the hybrid's final density, and RigL and SET at that
density for as many epochs as the hybrid run's training FLOPs buy at it (its final network's forward FLOPs, x3, per
training sample; at least one epoch). Every cost is against one dense run of ``--epochs`` epochs, the hybrid's
reference. ``report`` writes one table per data/model pair (mean +- std over seeds of the
final density, test accuracy and cost) and the shrink interval of every hybrid run.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import ROOT, finished_run, header, mean_std, paired, quote_into  # noqa: E402

SHRINK_TOL = 0.01  # bench/hybrid.sh runs the shrink stage at pwmpr's default --shrink-tol
RUN_RE = re.compile(r"(?P<kind>plain|hybrid|imp|rigl|set)-s(?P<seed>\d+)$")
LABELS = {"plain": "PWMPR (plain)", "hybrid": "PWMPR hybrid (`--zeta`, `--shrink`)",
          "imp": "IMP ticket (lr-rewind) at the hybrid's density", "rigl": "RigL at the same density and budget",
          "set": "SET at the same density and budget"}


def budget_epochs(summary: dict, rows: list[dict]) -> int:
    """Epochs at the run's final density that its total training FLOPs pay for (at least 1)."""
    last = rows[-1]
    n_train = last["train_flops"] / (3.0 * last["fwd_flops_sparse"] * last["epochs"]) if last["epochs"] else None
    if not n_train:
        return 1
    return max(1, round(summary["train_flops_total"] / (3.0 * last["fwd_flops_sparse"] * n_train)))


def plan(out: Path, epochs: int, update_epochs: int) -> list[str]:
    """Job lines for the baselines of every finished hybrid run."""
    lines = []
    for run in sorted(out.glob("*/hybrid-s*")):
        read = finished_run(run)
        m = RUN_RE.search(run.name)
        if read is None or m is None:
            continue
        summary, rows = read
        data, model = summary["data"], summary["model"]
        density, seed = summary["discovered_density"], m["seed"]
        common = f"--data {data} --model {model} --device cpu -q --no-tau-core --seed {seed} --force"
        imp = run.parent / f"imp-s{seed}"
        lines.append(f"{imp} baseline imp --variant lr-rewind --epochs {epochs} --levels 40 "
                     f"--target-density {density:.6f} {common} --out {imp}")
        e = budget_epochs(summary, rows)
        for kind in ("rigl", "set"):
            d = run.parent / f"{kind}-s{seed}"
            lines.append(f"{d} baseline {kind} --density {density:.6f} --epochs {e} --reference-epochs {epochs} "
                         f"--update-epochs {min(update_epochs, e)} {common} --out {d}")
    return lines


def _imp_kept(rows: list[dict], tol: float) -> float | None:
    """The smallest IMP level density whose validation accuracy is within ``tol`` of its first (dense) level's."""
    levels = [r for r in rows if r.get("stage") == "phase" and r.get("val_acc") is not None]
    if not levels:
        return None
    kept = [r["density"] for r in levels if r["val_acc"] >= levels[0]["val_acc"] - tol]
    return min(kept)


def goals(runs: dict[str, list[tuple[dict, list[dict]]]]) -> list[str]:
    """The issue's goals, computed paired by seed: the hybrid within 0.5 points of IMP's ticket for at most 1/3 of its
    FLOPs, ahead of RigL and of SET beyond the standard error, and where IMP's curve stops keeping its accuracy."""
    by = {k: {r[0]["seed"]: r for r in v} for k, v in runs.items()}
    acc = {k: {seed: 100 * r[0]["test_acc"] for seed, r in v.items()} for k, v in by.items()}
    out = []
    hyb = by.get("hybrid", {})
    if hyb and by.get("imp"):
        gap = paired(acc["imp"], acc["hybrid"])
        ratio = [hyb[k][0]["cost_flops"] / by["imp"][k][0]["cost_flops"] for k in sorted(set(hyb) & set(by["imp"]))]
        if gap is not None:
            m, se, n = gap
            acc_ok = m + (0 if se != se else se) <= 0.5 if n > 1 else False
            cost_ok = max(ratio) <= 1 / 3
            out.append(f"- IMP's ticket minus the hybrid: {m:+.2f} ± {se:.2f} points (mean ± s.e. over {n} paired "
                       f"seeds); the hybrid's FLOPs are {min(ratio):.2f}-{max(ratio):.2f}x IMP's. Goal (within 0.5 "
                       f"points beyond the s.e., at most 1/3 of IMP's FLOPs): "
                       f"{'met' if acc_ok and cost_ok else 'not met'}.")
    for other in ("rigl", "set"):
        if hyb and by.get(other):
            d = paired(acc["hybrid"], acc[other])
            if d is not None:
                m, se, n = d
                ahead = n > 1 and m > se
                out.append(f"- The hybrid minus {other.upper() if other == 'set' else 'RigL'}: {m:+.2f} ± {se:.2f} "
                           f"points over {n} paired seeds: {'ahead' if ahead else 'not ahead'} beyond the s.e.")
    for seed, (summary, _) in sorted(hyb.items()):
        imp = by.get("imp", {}).get(seed)
        tol = SHRINK_TOL
        kept = _imp_kept(imp[1], tol) if imp else None
        if kept is not None and "smallest_density" in summary:
            last = min(r["density"] for r in imp[1] if r.get("stage") == "phase")
            out.append(f"- seed {seed}: the shrink stage's smallest density {summary['smallest_density']:.4f}; IMP "
                       f"keeps its validation accuracy within {100 * tol:g} point(s) of its dense level down to "
                       f"{kept:.4f} (its last level here: {last:.4f})")
    return out


def report(out: Path, command: str, elapsed: float | None) -> str:
    """The results file: per pair, one row per method, then the shrink interval of every hybrid run."""
    lines = header(command, extra=f"{elapsed / 60:.0f} min" if elapsed else "")
    for pair in sorted(p for p in out.iterdir() if p.is_dir()):
        runs: dict[str, list[tuple[dict, list[dict]]]] = {}
        for run in sorted(pair.iterdir()):
            m = RUN_RE.search(run.name)
            read = finished_run(run) if run.is_dir() and m else None
            if read is not None:
                runs.setdefault(m["kind"], []).append(read)
        if not runs:
            continue
        lines += [f"### {pair.name}", "", "| method | runs | density | test accuracy | cost (x dense FLOPs) | "
                  "cost (x dense epochs) |", "|---|---|---|---|---|---|"]
        for kind, label in LABELS.items():
            got = runs.get(kind, [])
            if not got:
                continue
            s = [r[0] for r in got]
            lines.append(f"| {label} | {len(s)} | {mean_std([x['discovered_density'] for x in s], '.3f')} | "
                         f"{mean_std([100 * x['test_acc'] for x in s], '.2f')}% | "
                         f"{mean_std([x['cost_flops'] for x in s], '.2f')} | "
                         f"{mean_std([x['cost_epochs'] for x in s], '.2f')} |")
        lines.append("")
        computed = goals(runs)
        if computed:
            lines += ["Computed, paired by seed:", "", *computed, ""]
        hybrid = runs.get("hybrid", [])
        if hybrid:
            lines += ["Shrink interval of each hybrid run (growth's knee -> the smallest density that kept its "
                      "validation accuracy), with the density plain PWMPR of the same seed discovered:", ""]
            plain = {s["seed"]: s["discovered_density"] for s, _ in runs.get("plain", [])}
            for summary, _ in hybrid:
                if "knee_density" not in summary:
                    continue
                beside = f"; plain PWMPR {plain[summary['seed']]:.4f}" if summary["seed"] in plain else ""
                lines.append(f"- seed {summary['seed']}: {summary['knee_density']:.4f} "
                             f"({100 * summary['knee_val_acc']:.2f}%, growth stop {summary['growth_stop_reason']}"
                             f"{beside}) "
                             f"-> {summary['smallest_density']:.4f} ({100 * summary['smallest_val_acc']:.2f}%), "
                             f"{summary['shrink_kept']} of {summary['shrink_steps']} shrink steps kept, "
                             f"stop {summary['stop_reason']}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    """``plan`` or ``report`` (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("plan", "report"))
    ap.add_argument("--out", type=Path, default=Path("bench/out/hybrid"))
    ap.add_argument("--results", type=Path, default=Path("bench/results/hybrid.md"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--update-epochs", type=int, default=3)
    ap.add_argument("--command", default="bash bench/hybrid.sh")
    ap.add_argument("--elapsed", type=float, default=None)
    args = ap.parse_args()
    if args.what == "plan":
        for line in plan(args.out, args.epochs, args.update_epochs):
            print(line)
        return
    args.results.parent.mkdir(parents=True, exist_ok=True)
    text = report(args.out, args.command, args.elapsed)
    args.results.write_text(text)
    if args.results.resolve() == (ROOT / "bench/results/hybrid.md").resolve():  # the real run: quote it
        quote_into(ROOT / "bench/RESULTS.md", "hybrid", text)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
