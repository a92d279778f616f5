"""Engine timings on this machine: phew_masks at 5%, pwmp_scores and one pwmp growth step.

Run:  python bench/engine.py [--models resnet32 resnet18] [--density 0.05] [--repeats 3]
Prints a markdown table (median of --repeats runs) to paste into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from pwmpr import create_model
from pwmpr.growth import grow
from pwmpr.score import pwmp_scores
from pwmpr.seed import phew_masks


def _time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet32", "resnet18"])
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    shape = (3, 32, 32)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("| model | prunable weights | phew_masks (s) | density reached | pwmp_scores (s) | pwmp grow step (s) |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, 10, shape)
        t_seed, masks = _time(lambda m=model: phew_masks(m, args.density, shape, seed=0), args.repeats)
        t_score, scores = _time(lambda m=model, k=masks: pwmp_scores(m, k, shape), args.repeats)
        gen = torch.Generator().manual_seed(0)
        t_grow, _ = _time(lambda k=masks, s=scores, g=gen: grow(k, s, 0.25, rule="pwmp", generator=g), args.repeats)
        print(f"| {name} | {masks.n_total():,} | {t_seed:.2f} | {masks.density():.4f} | {t_score:.2f} | {t_grow:.2f} |")


if __name__ == "__main__":
    main()
