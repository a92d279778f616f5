"""What ``--augment`` does to test accuracy on real handwritten digits, where a mirror changes what a digit is.

    python bench/augment.py [--seeds 0 1 2] [--epochs 30] [--out bench/out/augment]

Trains the dense ``cnn`` (``pwmpr baseline dense``, so the figure is the augmentation's alone, not a mask's) under
each ``--augment`` mode on two real offline data sets: mnist5k, held as tensors (augmented on the device; ``auto`` is
none there), and scikit-learn's 8x8 digits written as PNG class folders and read as ``folder:PATH`` (streamed;
``auto`` crops and flips there, as for any image folder). Writes bench/results/augment.md and quotes it into
bench/RESULTS.md. Runs already in ``--out`` are reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import ROOT, command, header, mean_std, paired, publish  # noqa: E402

MODES = ("none", "crop", "crop-flip")


def digits_folder(root: Path) -> Path:
    """scikit-learn's digits as 8-bit PNGs under ``root/train|test/digit<k>/`` (every fifth image to test)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    if (root / "train").is_dir():
        return root
    d = load_digits()
    for i, (img, label) in enumerate(zip(d.images, d.target, strict=True)):
        folder = root / ("test" if i % 5 == 0 else "train") / f"digit{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255 / 16).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def train(data: str, mode: str, seed: int, epochs: int, out: Path) -> dict:
    """``pwmpr baseline dense`` of ``cnn`` on ``data`` under ``--augment mode``: its summary."""
    if not (out / "summary.json").is_file():
        subprocess.run(["pwmpr", "baseline", "dense", "--data", data, "--model", "cnn", "--epochs", str(epochs),
                        "--augment", mode, "--seed", str(seed), "--device", "cpu", "--no-tau-core", "-q", "--force",
                        "--out", str(out)], check=True)
    return json.loads((out / "summary.json").read_text())


def render(rows: dict[tuple[str, str], dict[int, float]], cases: list[tuple[str, str, str, str]], epochs: int) -> str:
    """The report: test accuracy per data set and mode, and each mode against the data set's ``auto``, paired by
    seed."""
    seeds = sorted(next(iter(rows.values())))
    lines = header(command("bench/augment.py"), f"{epochs} epochs, dense cnn, seeds {' '.join(map(str, seeds))}")
    lines += ["Test accuracy of the dense `cnn` (`pwmpr baseline dense --model cnn`) under each `--augment`, mean ± "
              "std over seeds, and each mode minus the one `auto` stands for on that data set (its own choice), "
              "paired by seed: mean ± standard error of the difference, and the seeds it wins / loses.", "",
              "| data (how it is read) | `--augment` | test accuracy | minus `auto` (points) | wins / losses |",
              "|---|---|---|---|---|"]
    for label, _, how, auto_mode in cases:
        auto = rows[(label, auto_mode)]
        for mode in MODES:
            accs = rows[(label, mode)]
            if mode == auto_mode:
                lines.append(f"| {label} ({how}) | `{mode}` (= `auto`) | "
                             f"{mean_std([100 * a for a in accs.values()], '.2f')}% | - | - |")
                continue
            diff = paired({s: 100 * a for s, a in accs.items()}, {s: 100 * a for s, a in auto.items()})
            wins, losses = sum(accs[s] > auto[s] for s in accs), sum(accs[s] < auto[s] for s in accs)
            lines.append(f"| {label} ({how}) | `{mode}` | {mean_std([100 * a for a in accs.values()], '.2f')}% | "
                         f"{diff[0]:+.2f} ± {diff[1]:.2f} | {wins} / {losses} |")
    best = {label: max(MODES, key=lambda m: statistics.mean(rows[(label, m)].values())) for label, *_ in cases}
    clear = []
    for label, _, _, auto_mode in cases:
        for mode in MODES:
            diff = paired(rows[(label, mode)], rows[(label, auto_mode)]) if mode != auto_mode else None
            if diff and abs(diff[0]) > 2 * diff[1]:
                clear.append(f"`{mode}` {'above' if diff[0] > 0 else 'below'} `auto` on {label}")
    lines += ["", "Computed: the highest mean test accuracy is "
              + "; ".join(f"`{best[label]}`'s on {label}" for label, *_ in cases) + ". Differences from `auto` "
              "beyond two standard errors (the rest are within the spread over seeds): "
              + ("; ".join(clear) if clear else "none") + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "augment")
    args = parser.parse_args()
    folder = digits_folder(args.out / "digits-png")
    cases = [("mnist5k", "mnist5k", "tensors", "none"),
             ("digits", f"folder:{folder}", "PNG class folders, `folder:PATH`", "crop-flip")]
    rows: dict[tuple[str, str], dict[int, float]] = {}
    for label, data, _, _ in cases:
        for mode in MODES:
            for seed in args.seeds:
                summary = train(data, mode, seed, args.epochs, args.out / f"{label}-{mode}-s{seed}")
                rows.setdefault((label, mode), {})[seed] = summary["test_acc"]
                print(f"{label} {mode} seed {seed}: {summary['test_acc']:.4f}", flush=True)
    text = render(rows, cases, args.epochs)
    publish("augment", text, docs=("bench/RESULTS.md",))
    print(text)


if __name__ == "__main__":
    main()
