"""The held-out discovery benchmarks' synthetic data sets, written as ``npz:`` files anyone can regenerate.

    python3 bench/discovery_data.py DIR     # writes DIR/tabular.npz and DIR/gratings.npz (each skipped when there)

``tabular``: scikit-learn's ``make_classification`` (Guyon's hypercube construction: 6 classes, each 3 Gaussian
clusters on the vertices of a 12-dimensional hypercube, 8 redundant linear combinations, 20 noise features, 2% of
the labels flipped), 20,000 samples with a fixed random state. Unlike ``teacher`` its labels come from no network,
and at pwmpr's default splits it has 4,000 test and 1,600 validation samples.

``gratings``: 12,000 noisy 16x16 images of a sinusoidal grating whose orientation is the class (8 classes, k x 22.5
degrees, jittered by up to 2.8 degrees), at a random spatial frequency, phase and contrast, plus Gaussian pixel
noise; an image task (flattened by an MLP, or read as images by a conv net) with 960 validation samples. The
parameters of both were fixed before the benchmarks that read them first ran.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TABULAR = dict(n_samples=20_000, n_features=40, n_informative=12, n_redundant=8, n_classes=6,
               n_clusters_per_class=3, class_sep=1.0, flip_y=0.02, random_state=20261206)


def tabular() -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the ``tabular`` set: float32 features (N, 40) and int64 labels 0..5."""
    from sklearn.datasets import make_classification

    x, y = make_classification(**TABULAR)
    return x.astype(np.float32), y.astype(np.int64)


GRATINGS = dict(n_samples=12_000, side=16, classes=8, jitter=np.pi / 64, freq=(0.15, 0.35), contrast=(0.3, 1.0),
                noise=1.0, seed=20261207)


def gratings() -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the ``gratings`` set: float32 images (N, 1, 16, 16) and int64 labels 0..7 (the orientation)."""
    g = GRATINGS
    rng = np.random.default_rng(g["seed"])
    n, side = g["n_samples"], g["side"]
    y = np.arange(n) % g["classes"]
    rng.shuffle(y)
    theta = y * np.pi / g["classes"] + rng.uniform(-g["jitter"], g["jitter"], n)
    freq = rng.uniform(*g["freq"], n)
    phase = rng.uniform(0.0, 2 * np.pi, n)
    contrast = rng.uniform(*g["contrast"], n)
    r, c = np.meshgrid(np.arange(side) - (side - 1) / 2, np.arange(side) - (side - 1) / 2, indexing="ij")
    along = np.cos(theta)[:, None, None] * c + np.sin(theta)[:, None, None] * r
    x = contrast[:, None, None] * np.sin(2 * np.pi * freq[:, None, None] * along + phase[:, None, None])
    x = x + g["noise"] * rng.standard_normal(x.shape)
    return x[:, None].astype(np.float32), y.astype(np.int64)


SETS = {"tabular": tabular, "gratings": gratings}


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python3 bench/discovery_data.py DIR")
    out = Path(sys.argv[1])
    for name, make in SETS.items():
        path = out / f"{name}.npz"
        if path.is_file():
            continue
        out.mkdir(parents=True, exist_ok=True)
        x, y = make()
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, x=x, y=y)
        tmp.replace(path)
        classes = int(y.max()) + 1
        print(f"bench/discovery_data.py: wrote {path} ({len(y)} samples of shape {x.shape[1:]}, {classes} classes)")


if __name__ == "__main__":
    main()
