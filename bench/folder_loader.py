"""Images/s of pwmpr's image-folder loader against a bare DataLoader loop on the same generated JPEG/PNG folder.

    python bench/folder_loader.py [--images 1500] [--size 64] [--repeats 3] [--workers N]

Generates a Tiny-ImageNet-shaped folder (train/<class>/*.jpg|png, val/<class>/...) of random images under a
temporary directory, then times full epochs of (a) ``pwmpr.data.load_data("tinyimagenet", ...)``'s training loader
(DistributedSampler, per-sample seeding, persistent workers, prefetch) and (b) a bare ``DataLoader(ImageFolder(...),
shuffle=True)`` with the same transforms, worker count and prefetch. Both decode with PIL (torchvision.io's JPEG
decoder does not load on these machines). The repeats interleave (a), (b), (a), (b), ... so load on a shared
machine hits both alike. Writes ``bench/results/folder_loader.md``; the goal is a ratio (a)/(b) >= 0.95.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent


def make_folder(root: Path, n_images: int, size: int, n_classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    per_class = max(1, n_images // n_classes)
    for split, n in (("train", per_class), ("val", max(1, per_class // 10))):
        for c in range(n_classes):
            d = root / split / f"c{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                # Smooth random images compress like photos more than white noise does.
                small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
                img = Image.fromarray(small).resize((size, size), Image.BILINEAR)
                img.save(d / f"{i}.{'png' if i % 4 == 0 else 'jpg'}", quality=90)


def epoch_rate(loader) -> tuple[float, int]:
    n, t0 = 0, time.perf_counter()
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - t0), n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="default: pwmpr's default for this machine")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "folder_loader.md")
    args = ap.parse_args()

    from pwmpr._tv_compat import import_torchvision
    from pwmpr.data import load_data
    from pwmpr.data.folder import default_workers

    tv = import_torchvision()
    workers = default_workers() if args.workers is None else args.workers
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_folder(root, args.images, args.size)
        bundle = load_data("tinyimagenet", str(root), val_fraction=0.1)
        bundle.workers = workers
        ours = bundle.loader("train", args.batch_size, torch.device("cpu"), train=True,
                             generator=torch.Generator().manual_seed(0))
        # The bare loop: the same images (the training split's indices), transforms, workers and prefetch.
        T = tv.transforms
        tf = T.Compose([T.RandomCrop(args.size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
        full = tv.datasets.ImageFolder(str(root / "train"), transform=tf)
        subset = torch.utils.data.Subset(full, list(bundle.train.indices))
        bare = torch.utils.data.DataLoader(subset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                           num_workers=workers, persistent_workers=workers > 0,
                                           prefetch_factor=4 if workers > 0 else None)
        epoch_rate(ours), epoch_rate(bare)  # warm-up: start the workers, fill the page cache
        rates: dict[str, list[float]] = {"pwmpr": [], "bare": []}
        for _ in range(args.repeats):
            rates["pwmpr"].append(epoch_rate(ours)[0])
            rates["bare"].append(epoch_rate(bare)[0])
    ratios = [a / b for a, b in zip(rates["pwmpr"], rates["bare"], strict=True)]
    med = {k: statistics.median(v) for k, v in rates.items()}
    cmd = " ".join(["python", "bench/folder_loader.py", *sys.argv[1:]])
    lines = [
        "# Folder loader: images/s, pwmpr vs a bare DataLoader",
        "",
        f"`{cmd}`: {len(bundle.train)} training images of {args.size}x{args.size} px (random, 3/4 JPEG, 1/4 PNG, "
        f"PIL decode), batch {args.batch_size}, {workers} worker(s), {torch.get_num_threads()} torch threads, "
        f"{args.repeats} timed epochs each (interleaved, after one warm-up epoch). CPU only.",
        "",
        "| loader | min | median | max |",
        "|---|---|---|---|",
        *(f"| {k} (images/s) | {min(v):.0f} | {med[k]:.0f} | {max(v):.0f} |" for k, v in rates.items()),
        f"| ratio pwmpr / bare (per repeat) | {min(ratios):.3f} | {statistics.median(ratios):.3f} | "
        f"{max(ratios):.3f} |",
        "",
        f"Goal: ratio >= 0.95; median ratio {statistics.median(ratios):.3f} "
        f"({'met' if statistics.median(ratios) >= 0.95 else 'not met'}).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
