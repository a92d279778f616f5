"""Engine timings on this machine: phew_masks at 5%, pwmp_scores and one pwmp growth step.

Run:  python bench/engine.py [--models resnet32 resnet18] [--density 0.05] [--repeats 3] [--note TEXT] [--dry-run]

Each figure is timed ``--repeats`` times after one untimed warm-up call and given as min / median / max; a figure
whose max exceeds its min by more than 20% is flagged as noisy. Writes bench/results/engine.md (command, machine,
repeat count, table and the computed headline) and quotes it into bench/RESULTS.md and README.md between
``<!-- engine:begin -->`` and ``<!-- engine:end -->``. ``--dry-run`` prints it and writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import command, header, mmm, noise_rule, noisy, publish  # noqa: E402

from pwmpr import create_model  # noqa: E402
from pwmpr.growth import grow  # noqa: E402
from pwmpr.score import pwmp_scores  # noqa: E402
from pwmpr.seed import phew_masks  # noqa: E402

SHAPE = (3, 32, 32)
GAMMA = 0.25


def _time(fn, repeats: int) -> tuple[list[float], object]:
    """(seconds of each of ``repeats`` timed calls after one untimed warm-up call, the last result)."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def _cell(values: list[float]) -> str:
    return mmm(values, ".3f") + (" **(noisy)**" if noisy(values) else "")


def measure(name: str, density: float, repeats: int) -> dict:
    """Timings of seeding, scoring and one growth step on ``name`` at its initial weights."""
    torch.manual_seed(0)
    model = create_model(name, 10, SHAPE)
    t_seed, masks = _time(lambda: phew_masks(model, density, SHAPE, seed=0), repeats)
    t_score, scores = _time(lambda: pwmp_scores(model, masks, SHAPE), repeats)
    gen = torch.Generator().manual_seed(0)
    t_grow, _ = _time(lambda: grow(masks, scores, GAMMA, rule="pwmp", generator=gen), repeats)
    return {"model": name, "n_total": masks.n_total(), "density": masks.density(),
            "seed": t_seed, "score": t_score, "grow": t_grow}


def render(rows: list[dict], args: argparse.Namespace) -> str:
    lines = header(command("bench/engine.py"), f"{args.repeats} repeat(s) per figure, "
                   f"{torch.get_num_threads()} torch thread(s)", args.note)
    lines += [f"10 classes, input {SHAPE}, PHEW at {args.density:g} density; `pwmp_scores` is one forward + backward "
              f"of the float64 linear network; the growth step samples round({GAMMA:g} * nnz) edges by Gumbel-top-k "
              "over all absent edges. Each figure is timed after one untimed warm-up call. "
              + noise_rule(args.repeats), "",
              "| model | prunable weights | density reached | phew_masks s | pwmp_scores s | pwmp grow step s |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['n_total']:,} | {r['density']:.4f} | {_cell(r['seed'])} | "
                     f"{_cell(r['score'])} | {_cell(r['grow'])} |")
    flagged = [f"{r['model']} {what}" for r in rows for what in ("seed", "score", "grow") if noisy(r[what])]
    med = {r["model"]: {k: statistics.median(r[k]) for k in ("seed", "score", "grow")} for r in rows}
    largest = max(rows, key=lambda r: r["n_total"])
    s = med[largest["model"]]
    lines += ["", f"Computed: the largest model here, {largest['model']} ({largest['n_total']:,} prunable weights), "
              f"seeds in {s['seed']:.2f} s, scores in {s['score']:.2f} s and grows one step in {s['grow']:.2f} s "
              f"(medians); seeding takes at most {max(m['seed'] for m in med.values()):.2f} s (median) on any model "
              f"here. Noisy figures: {', '.join(flagged) if flagged else 'none'}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet32", "resnet18"])
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--note", default="", help="a provenance note printed under the header (e.g. a shared machine)")
    ap.add_argument("--dry-run", action="store_true", help="print the results, write nothing")
    args = ap.parse_args()
    rows = []
    for name in args.models:
        rows.append(measure(name, args.density, args.repeats))
        print(f"  {name}: done", file=sys.stderr, flush=True)
    text = render(rows, args)
    print(text)
    if not args.dry_run:
        print(f"wrote {publish('engine', text)}")


if __name__ == "__main__":
    main()
