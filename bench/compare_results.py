"""Publish one `bench/compare.sh` comparison: its table, claim verdicts and a short summary, all from compare.json.

Run:  python bench/compare_results.py --out bench/compare --name compare-seed01 --command "..." --elapsed 179
Called by bench/compare.sh after `pwmpr compare`. Writes bench/results/<name>.md (the whole `compare.md` that
`pwmpr compare` wrote, with the command and machine) and quotes it into bench/RESULTS.md; writes
bench/results/<name>-summary.md (PWMPR against IMP-C, one-shot PHEW at the same density and dense, and the claim
verdicts) and quotes that into README.md. Every figure is read from the comparison's files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import header, publish  # noqa: E402


def _pct(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean * 100:.2f} ± {(std or 0.0) * 100:.2f}%"


def summary(data: dict, seed_density: str) -> str:
    """PWMPR (sampled PWMP growth) against IMP-C, one-shot PHEW and dense, and the verdict of each claim."""
    rows = {r["group"]: r for r in data["rows"]}
    pw, imp, dense = rows.get("pwmpr/pwmp"), rows.get("imp/lr-rewind"), rows.get("dense")
    one = next((r for g, r in rows.items() if g.startswith("oneshot/")), None)
    lines = [f"Seed density {seed_density}: mean ± std over {pw['n_seeds'] if pw else 0} seeds.", "",
             "| run | density | test accuracy | cost (FLOPs / epochs, x dense) |", "|---|---|---|---|"]
    for label, r in (("PWMPR (`pwmp`)", pw), ("IMP-C (`lr-rewind`), last level", imp),
                     ("one-shot PHEW at PWMPR's density", one), ("dense", dense)):
        if r is not None:
            lines.append(f"| {label} | {r['density']:.4f} | {_pct(r['test_acc'], r['test_acc_std'])} | "
                         f"{r['cost_flops']:.3f}x / {r['cost_epochs']:.2f}x |")
    lines += ["", "| claim of the paper | verdict (weighed against the spread over seeds) |", "|---|---|"]
    for claims in data["claims"].values():
        lines += [f"| {c['name']} | {c['verdict']} |" for c in claims]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the comparison folder (compare.json, compare.md)")
    ap.add_argument("--name", required=True, help="results file name and marker name, e.g. compare-seed01")
    ap.add_argument("--command", required=True, help="the bench/compare.sh command that made the runs")
    ap.add_argument("--elapsed", type=int, required=True, help="seconds this invocation's runs took")
    ap.add_argument("--jobs", type=int, required=True, help="runs trained at a time")
    ap.add_argument("--seed-density", required=True)
    args = ap.parse_args()
    data = json.loads((args.out / "compare.json").read_text())
    md = (args.out / "compare.md").read_text().replace("# pwmpr compare\n", "", 1).strip()
    extra = (f"the runs of this invocation took {args.elapsed} s wall, {args.jobs} at a time (runs finished by an "
             "earlier invocation are reused, not timed); wall times depend on the load")
    full = "\n".join(header(args.command, extra)) + "\n" + md + "\n"
    publish(args.name, full, docs=("bench/RESULTS.md",))
    short = "\n".join(header(args.command, extra)) + "\n" + summary(data, args.seed_density)
    path = publish(f"{args.name}-summary", short, docs=("README.md",))
    print(f"bench/compare_results.py: wrote bench/results/{args.name}.md and {path.name}")


if __name__ == "__main__":
    main()
